// Types for infergate's two CRDs (infergate.dev/v1alpha1), following PRODUCT.md §1.

export const GROUP = "infergate.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }>;
  creationTimestamp?: string;
  deletionTimestamp?: string;
}

export interface ProjectSpec {
  namespaces?: string[];
  /** Decimal GPUs as a string ("2.5"); absent means no limit. */
  gpuQuota?: string;
  /** Node pools in preference order. */
  nodePools?: string[];
  /** Scheduler queue; defaults to metadata.name. */
  queue?: string;
  /** GPU memory per device in MiB, for converting `gpu-memory` requests to GPUs. Default 81920 (80 GiB). */
  gpuMemoryPerDeviceMiB?: number;
}

export interface ProjectStatus {
  allocatedGpus?: string;
  reservedGpus?: string;
  /** gpuQuota − allocatedGpus − reservedGpus (negative after a quota cut); absent without a quota. */
  availableGpus?: string;
  workloads?: number;
  reservations?: unknown[];
  conditions?: unknown[];
}

export interface Project {
  apiVersion?: string;
  kind?: "Project";
  metadata: ObjectMeta;
  spec: ProjectSpec;
  status?: ProjectStatus;
}

export type SchedulerProfile = "kai" | "volcano" | "hami" | "coscheduling" | "default";
export const SCHEDULER_PROFILES: readonly SchedulerProfile[] = ["kai", "volcano", "hami", "coscheduling", "default"];

export type AutoscalingMetric = "concurrency" | "rps" | "latency";
export const AUTOSCALING_METRICS: readonly AutoscalingMetric[] = ["concurrency", "rps", "latency"];

export interface Toleration {
  key?: string;
  operator?: "Exists" | "Equal";
  value?: string;
  effect?: "NoSchedule" | "PreferNoSchedule" | "NoExecute";
  tolerationSeconds?: number;
}

export interface AutoscalingDefaults {
  metric?: AutoscalingMetric;
  target?: number;
  minReplicas?: number;
  maxReplicas?: number;
  /** A Go-style duration, e.g. "10m", "30s". */
  scaleToZeroRetention?: string;
}

export interface PolicyDefaults {
  priorityClassName?: string;
  tolerations?: Toleration[];
  autoscaling?: AutoscalingDefaults;
  requestTimeoutSeconds?: number;
  initializationTimeoutSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface DecimalRange {
  min?: string;
  max?: string;
}
export interface IntRange {
  min?: number;
  max?: number;
}

/** Names of defaults that a `locked` rule may pin. */
export type LockableField = "priorityClassName" | "tolerations" | "schedulerName" | "nodePools" | "labels" | "annotations";
export const LOCKABLE_FIELDS: readonly LockableField[] = [
  "priorityClassName",
  "tolerations",
  "schedulerName",
  "nodePools",
  "labels",
  "annotations",
];

export interface PolicyRules {
  gpuFraction?: DecimalRange;
  gpusPerPod?: DecimalRange;
  replicas?: IntRange;
  priorityClassNames?: string[];
  requestTimeoutSeconds?: IntRange;
  initializationTimeoutSeconds?: IntRange;
  imageRegistries?: string[];
  locked?: LockableField[];
}

export interface SchedulerSettings {
  profile?: SchedulerProfile;
  schedulerName?: string;
}

export type Enforcement = "enforce" | "warn";

export interface InferencePolicySpec {
  projects?: string[];
  enforcement?: Enforcement;
  scheduler?: SchedulerSettings;
  defaults?: PolicyDefaults;
  rules?: PolicyRules;
}

export interface InferencePolicy {
  apiVersion?: string;
  kind?: "InferencePolicy";
  metadata: ObjectMeta;
  spec: InferencePolicySpec;
}

/**
 * The policy in force for one project: the project's own policy laid over the cluster-wide one,
 * field by field (PRODUCT.md §1). `sources` names the policies that contributed, for messages.
 */
export interface EffectivePolicy {
  enforcement: Enforcement;
  scheduler: { profile: SchedulerProfile; schedulerName?: string };
  defaults: PolicyDefaults;
  rules: PolicyRules;
  sources: string[];
}

export const DEFAULT_GPU_MEMORY_PER_DEVICE_MIB = 80 * 1024;
export const DEFAULT_NODE_POOL_LABEL = "infergate.dev/node-pool";
