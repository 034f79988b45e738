// Named constructors for admission responses, so handlers never assemble them by hand.
import type { AdmissionResponse, Violation } from "./types.ts";
import type { Workload } from "../workload/workload.ts";

export function allow(uid: string, warnings: string[] = [], patch?: unknown[]): AdmissionResponse {
  const response: AdmissionResponse = { uid, allowed: true };
  if (patch && patch.length > 0) {
    response.patchType = "JSONPatch";
    response.patch = Buffer.from(JSON.stringify(patch)).toString("base64");
  }
  if (warnings.length > 0) response.warnings = warnings;
  return response;
}

export function formatViolation(v: Violation): string {
  if (v.message) return v.message;
  return `${v.field}: Invalid value: ${JSON.stringify(v.value) ?? "null"}: ${v.allowed}`;
}

const KIND_NAMES: Record<string, string> = { KnativeService: "Service.serving.knative.dev" };

export function deny(uid: string, workload: Workload, violations: Violation[], warnings: string[] = []): AdmissionResponse {
  return denyObject(uid, { kind: KIND_NAMES[workload.kind] ?? workload.kind, name: workload.name }, violations, warnings);
}

/** The same denial for any object, e.g. a cluster-scoped `Project.infergate.dev` that is no Workload. */
export function denyObject(uid: string, target: { kind: string; name: string }, violations: Violation[], warnings: string[] = []): AdmissionResponse {
  const { kind, name } = target;
  const what = `${kind} "${name}"`;
  const parts = violations.map(formatViolation);
  const message = violations.length === 1 ? `${what} is invalid: ${parts[0]}` : `${what} is invalid: [${parts.join(", ")}]`;
  const reasons = [...new Set(violations.map((v) => v.reason ?? "PolicyViolation"))];
  const details: Record<string, unknown> = {
    name,
    kind,
    causes: violations.map((v) => ({ reason: v.reason ?? "PolicyViolation", message: v.allowed, field: v.field })),
  };
  for (const v of violations) if (v.details) Object.assign(details, v.details);
  // Only wrongly typed fields: the API server's own answer to such an object, 422 Invalid.
  const invalidOnly = reasons.length === 1 && reasons[0] === "Invalid";
  const response: AdmissionResponse = {
    uid,
    allowed: false,
    status: invalidOnly
      ? { code: 422, reason: "Invalid", message, details }
      : { code: 403, reason: reasons.includes("QuotaExceeded") ? "QuotaExceeded" : "Forbidden", message, details },
  };
  if (warnings.length > 0) response.warnings = warnings;
  return response;
}

/** An internal failure inside a handler: never a crash, always an answer the API server can show. */
export function internalError(uid: string, error: unknown): AdmissionResponse {
  const message = error instanceof Error ? error.message : String(error);
  return { uid, allowed: false, status: { code: 500, reason: "InternalError", message: `infergate internal error: ${message}` } };
}
