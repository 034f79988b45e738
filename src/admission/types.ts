// The admission.k8s.io/v1 wire format, reduced to the fields infergate reads or writes.

export interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

export interface GroupVersionResource {
  group: string;
  version: string;
  resource: string;
}

export type Operation = "CREATE" | "UPDATE" | "DELETE" | "CONNECT";

export interface UserInfo {
  username?: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

export interface AdmissionRequest {
  uid: string;
  kind: GroupVersionKind;
  resource: GroupVersionResource;
  subResource?: string;
  requestKind?: GroupVersionKind;
  requestResource?: GroupVersionResource;
  requestSubResource?: string;
  name?: string;
  namespace?: string;
  operation: Operation;
  userInfo: UserInfo;
  object?: any;
  oldObject?: any;
  dryRun?: boolean;
  options?: any;
}

export interface AdmissionStatus {
  code?: number;
  message?: string;
  reason?: string;
  details?: Record<string, unknown>;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: AdmissionStatus;
  patch?: string;
  patchType?: "JSONPatch";
  warnings?: string[];
  auditAnnotations?: Record<string, string>;
}

export interface AdmissionReview {
  apiVersion: "admission.k8s.io/v1";
  kind: "AdmissionReview";
  request?: AdmissionRequest;
  response?: AdmissionResponse;
}

/** One problem with the admitted object, Kubernetes-style: where, what was found, what is allowed. */
export interface Violation {
  /** Field path in the admitted object, e.g. `spec.template.metadata.annotations[gpu-fraction]`. */
  field: string;
  value: unknown;
  allowed: string;
  /** The plugin that found it. */
  plugin: string;
  /** A reason for the denial counter and `status.reason`, e.g. `PolicyViolation`, `QuotaExceeded`. */
  reason?: string;
  /** A whole sentence that replaces the `field: Invalid value: …` form (quota denials). */
  message?: string;
  /** Extra numbers for tools, copied into `status.details`. */
  details?: Record<string, unknown>;
}
