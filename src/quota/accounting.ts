// GPU quota accounting (PRODUCT.md §5), as pure functions over plain objects.
// Everything is counted in integer milli-GPUs (1 GPU = 1000), rounding each pod's share up to the milli,
// so that fractions which sum exactly to the quota are admitted and any more is denied — binary floats
// would say 0.1 + 0.2 > 0.3.
import { isDeepStrictEqual } from "node:util";
import type { AdmissionRequest } from "../admission/types.ts";
import type { ObjectMeta, Project } from "../policy/types.ts";
import { memoryPerDeviceMiB, readGpuRequest, type GpuRequest } from "../workload/gpu.ts";
import { toWorkload, type Workload } from "../workload/workload.ts";
import type { ChargedKind, ObjectCharge, ProjectUsage } from "./view.ts";

export const MILLI_PER_GPU = 1000;

const DECIMAL = /^(\d*)(?:\.(\d*))?$/;

/**
 * Decimal GPUs ("2", "0.5", "2.25", "500m", or a number) as milli-GPUs, rounded up to the milli.
 * Undefined for anything else (negative, empty, not a number).
 */
export function parseGpuMilli(value: unknown): number | undefined {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) return undefined;
    return parseGpuMilli(value.toFixed(6));
  }
  if (typeof value !== "string") return undefined;
  const text = value.trim();
  if (text.endsWith("m")) {
    const whole = text.slice(0, -1);
    return /^\d+$/.test(whole) ? Number(whole) : undefined;
  }
  const m = DECIMAL.exec(text);
  if (!m || (m[1] === "" && (m[2] ?? "") === "")) return undefined;
  const whole = Number(m[1] || "0");
  const fraction = m[2] ?? "";
  const milli = Number((fraction + "000").slice(0, 3));
  const beyondMilli = /[1-9]/.test(fraction.slice(3));
  return whole * MILLI_PER_GPU + milli + (beyondMilli ? 1 : 0);
}

/** Milli-GPUs as the shortest decimal: 8000 → "8", 500 → "0.5", 2250 → "2.25". */
export function formatGpus(milli: number): string {
  const sign = milli < 0 ? "-" : "";
  const abs = Math.abs(Math.round(milli));
  const whole = Math.floor(abs / MILLI_PER_GPU);
  const fraction = String(abs % MILLI_PER_GPU).padStart(3, "0").replace(/0+$/, "");
  return `${sign}${whole}${fraction ? `.${fraction}` : ""}`;
}

export function milliToGpus(milli: number): number {
  return milli / MILLI_PER_GPU;
}

/** A project's quota in milli-GPUs; undefined when it sets none (or none that parses): never blocked. */
export function quotaMilliOf(project: Project | undefined): number | undefined {
  const quota = project?.spec?.gpuQuota;
  return quota === undefined || quota === null || quota === "" ? undefined : parseGpuMilli(quota);
}

/** MiB per GPU for converting `gpu-memory` (the Project's setting, default 80 GiB). */
export const memoryPerDeviceOf: (project: Project | undefined) => number = memoryPerDeviceMiB;

function deviceCount(devices: string | undefined): number {
  if (devices === undefined) return 1;
  const n = Number(devices);
  // An invalid count is the gpu-share plugin's to reject; quota charges the single device it surely takes.
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

/**
 * GPUs one pod holds, in milli-GPUs: whole `nvidia.com/gpu` limits, plus fraction × devices, or
 * gpu-memory ÷ memory per device × devices. Should both share annotations be present (which the
 * gpu-share plugin rejects), the larger is charged.
 */
export function gpusPerPodMilli(request: GpuRequest | undefined, memoryPerDeviceMiB: number): number {
  if (!request) return 0;
  const whole = parseGpuMilli(request.wholeGpus) ?? 0;
  const devices = deviceCount(request.devices);
  const fraction = request.fraction === undefined ? 0 : (parseGpuMilli(request.fraction) ?? 0);
  const memoryMiB = request.memoryMiB === undefined ? undefined : Number(request.memoryMiB);
  const memory =
    memoryMiB !== undefined && Number.isFinite(memoryMiB) && memoryMiB > 0 && memoryPerDeviceMiB > 0
      ? Math.ceil((memoryMiB * MILLI_PER_GPU) / memoryPerDeviceMiB)
      : 0;
  return whole + Math.max(fraction, memory) * devices;
}

/** GPUs one pod holds, as a number of GPUs (a multiple of 0.001). */
export function gpusPerPod(request: GpuRequest | undefined, memoryPerDeviceMiB: number): number {
  return milliToGpus(gpusPerPodMilli(request, memoryPerDeviceMiB));
}

const RESOURCE_OF: Record<ChargedKind, AdmissionRequest["resource"]> = {
  Deployment: { group: "apps", version: "v1", resource: "deployments" },
  Pod: { group: "", version: "v1", resource: "pods" },
  KnativeService: { group: "serving.knative.dev", version: "v1", resource: "services" },
};

/** The Workload view of an object read from a watch or a file, where there is no AdmissionRequest. */
export function workloadOfObject(kind: ChargedKind, object: any): Workload | undefined {
  const resource = RESOURCE_OF[kind];
  const request: AdmissionRequest = {
    uid: "",
    kind: { group: resource.group, version: resource.version, kind: kind === "KnativeService" ? "Service" : kind },
    resource,
    operation: "CREATE",
    userInfo: {},
    namespace: object?.metadata?.namespace,
    name: object?.metadata?.name,
  };
  return toWorkload(request, object);
}

/** The kind of a watched object, or undefined for kinds quota does not charge. */
export function chargedKindOf(object: any): ChargedKind | undefined {
  const kind = object?.kind;
  const apiVersion: string = object?.apiVersion ?? "";
  if (kind === "Deployment" && (apiVersion === "" || apiVersion.startsWith("apps/"))) return "Deployment";
  if (kind === "Pod" && (apiVersion === "" || apiVersion === "v1")) return "Pod";
  if (kind === "Service" && apiVersion.startsWith("serving.knative.dev/")) return "KnativeService";
  return undefined;
}

function count(v: unknown, fallback: number): number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : fallback;
}

export function isRecreate(deployment: any): boolean {
  return deployment?.spec?.strategy?.type === "Recreate";
}

/**
 * Extra pods a rolling update may create above `replicas` (Kubernetes' maxSurge: an integer or a
 * percentage of replicas rounded up; default 25%). Zero under Recreate.
 */
export function maxSurgePods(deployment: any, replicas: number): number {
  if (isRecreate(deployment)) return 0;
  const raw: unknown = deployment?.spec?.strategy?.rollingUpdate?.maxSurge ?? "25%";
  if (typeof raw === "number") return count(raw, 0);
  if (typeof raw === "string") {
    const percent = /^(\d+)%$/.exec(raw.trim());
    if (percent) return Math.ceil((replicas * Number(percent[1])) / 100);
    if (/^\d+$/.test(raw.trim())) return Number(raw.trim());
  }
  return Math.ceil((replicas * 25) / 100);
}

/**
 * Does a cached Deployment show a rollout in progress? Pods of an older template still running
 * (status.replicas > status.updatedReplicas), or a spec change the controller has not observed yet
 * while pods exist. The second case also fires briefly on a plain scale; over-counting the surge for a
 * moment is safer than letting another admission take GPUs the rollout is about to use.
 */
export function deploymentRollingOut(deployment: any): boolean {
  const status = deployment?.status ?? {};
  const running = count(status.replicas, 0);
  if (running > count(status.updatedReplicas, 0)) return true;
  const generation = deployment?.metadata?.generation;
  const observed = status.observedGeneration;
  return typeof generation === "number" && typeof observed === "number" && observed < generation && running > 0;
}

/**
 * Pods a Deployment is charged for in the cache: spec.replicas, plus maxSurge while its status shows a
 * rollout in progress (nothing for the surge under Recreate).
 */
export function deploymentChargePods(deployment: any): { replicas: number; pods: number; rollingOut: boolean } {
  const replicas = count(deployment?.spec?.replicas, 1);
  const rollingOut = deploymentRollingOut(deployment);
  return { replicas, pods: replicas + (rollingOut ? maxSurgePods(deployment, replicas) : 0), rollingOut };
}

const MIN_SCALE = ["autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/minScale"];
const INITIAL_SCALE = ["autoscaling.knative.dev/initial-scale", "autoscaling.knative.dev/initialScale"];

function scaleAnnotation(annotations: Record<string, string>, keys: string[]): number {
  for (const key of keys) {
    const n = Number(annotations[key]);
    if (annotations[key] !== undefined && Number.isInteger(n) && n >= 0) return n;
  }
  return 0;
}

/** Pods a new Knative revision starts with: max(min-scale, initial-scale, 1), from the revision template. */
export function knativeInitialScale(service: any): number {
  const annotations = service?.spec?.template?.metadata?.annotations ?? {};
  return Math.max(scaleAnnotation(annotations, MIN_SCALE), scaleAnnotation(annotations, INITIAL_SCALE), 1);
}

/** The Knative Service a revision Deployment belongs to (Knative labels it), for the hand-over. */
export function knativeServiceOf(deployment: any): string | undefined {
  return deployment?.metadata?.labels?.["serving.knative.dev/service"] || undefined;
}

/** The Revision a Knative revision Deployment runs: its label, else its owner. */
export function knativeRevisionOf(deployment: any): string | undefined {
  const meta: ObjectMeta | undefined = deployment?.metadata;
  return meta?.labels?.["serving.knative.dev/revision"] || meta?.ownerReferences?.find((o) => o.kind === "Revision")?.name || undefined;
}

/**
 * Where a Knative Service stands in handing its charge over to its newest revision, from its status:
 * - `pending`: a spec change Knative has not observed yet; its new revision does not exist.
 * - `created`: the newest revision exists but is not ready: it is still scaling to its initial scale.
 * - `ready`: the newest revision is ready and carries its own GPUs.
 * - `unknown`: no status (just created, or read from a file): any revision Deployment takes over.
 */
export type KnativeHandover = { state: "unknown" } | { state: "pending" } | { state: "created" | "ready"; revision: string };

export function knativeHandover(service: any): KnativeHandover {
  const status = service?.status;
  const generation = service?.metadata?.generation;
  const observed = status?.observedGeneration;
  if (typeof generation === "number" && typeof observed === "number" && observed < generation) return { state: "pending" };
  const latest = status?.latestCreatedRevisionName;
  if (typeof latest !== "string" || latest === "") return { state: "unknown" };
  return { state: status.latestReadyRevisionName === latest ? "ready" : "created", revision: latest };
}

/**
 * What a Knative Service is charged itself, given its revision Deployments: its first or new revision in
 * full (initial scale × GPUs per pod) until that revision exists, then only what the revision has not
 * reached yet, then nothing once it is ready. So a revision is never counted twice, and its scale-up to
 * the initial scale is never left uncovered.
 */
export function knativeServiceMilli(
  standaloneMilli: number,
  handover: KnativeHandover,
  revisions: { any: boolean; has(revision: string): boolean; milli(revision: string): number },
): number {
  switch (handover.state) {
    case "unknown":
      return revisions.any ? 0 : standaloneMilli;
    case "pending":
      return standaloneMilli;
    case "ready":
      return revisions.has(handover.revision) ? 0 : standaloneMilli;
    case "created":
      return Math.max(0, standaloneMilli - revisions.milli(handover.revision));
  }
}

export interface PodCoverage {
  /** True when a Deployment or a Knative revision already holds this pod's GPUs. */
  covered: boolean;
  /** The pod's controller, for messages; undefined for a bare pod. */
  owner?: { kind: string; name: string };
}

/**
 * Is a pod's GPU charge already carried by its workload? Pods of a Knative revision and of a
 * Deployment's ReplicaSets (which always carry `pod-template-hash`) are. Bare pods, pods of a
 * StatefulSet, Job, DaemonSet, custom controller or a ReplicaSet of no Deployment are not: each is
 * charged at its own CREATE, so no GPU pod escapes the quota.
 */
export function podCoverage(pod: any): PodCoverage {
  const meta: ObjectMeta = pod?.metadata ?? {};
  const ref = meta.ownerReferences?.find((o) => o.controller) ?? meta.ownerReferences?.[0];
  const owner = ref ? { kind: ref.kind, name: ref.name } : undefined;
  if (meta.labels?.["serving.knative.dev/revision"]) return { covered: true, owner };
  const deploymentReplicaSet = ref?.kind === "ReplicaSet" && (ref.apiVersion ?? "").startsWith("apps/") && !!meta.labels?.["pod-template-hash"];
  return { covered: deploymentReplicaSet, owner };
}

/** Pods that have finished hold no GPUs. */
export function podTerminated(pod: any): boolean {
  const phase = pod?.status?.phase;
  return phase === "Succeeded" || phase === "Failed";
}

export function templateChanged(oldObject: any, newObject: any): boolean {
  return !isDeepStrictEqual(oldObject?.spec?.template ?? {}, newObject?.spec?.template ?? {});
}

/** What one admission asks of the quota. */
export interface QuotaNeed {
  /** GPUs to find free beyond what the object holds now; 0 when it needs nothing more (scale-down). */
  deltaMilli: number;
  /** What the object will be charged: pods × gpusPerPodMilli. */
  chargeMilli: number;
  /** What it is charged now, and so already counted in usage.allocated. */
  heldMilli: number;
  pods: number;
  gpusPerPodMilli: number;
  /** The kind of request, in the denial's words. */
  action: "create" | "update" | "scale-up";
  /** What the pods are for, in the denial's words: "new revision", "rollout with maxSurge 2", … */
  what: string;
  /** The field to blame, and its value. */
  field: string;
  value: unknown;
  /** What the user can lower, the first half of the denial's last sentence. */
  advice: string;
}

export interface QuotaDeltaInput {
  operation: "CREATE" | "UPDATE";
  workload: Workload;
  old?: Workload;
  memoryPerDeviceMiB: number;
  /**
   * The cache's charge for the Deployment behind this request (Deployment UPDATE and
   * `deployments/scale`). It is what usage.allocated already counts, and the only source of GPUs per
   * pod for a Scale, which carries no template.
   */
  cached?: ObjectCharge;
  /**
   * For a Knative revision Deployment: what its Service still holds for it (the rest of its initial
   * scale). The autoscaler's scale-up into it needs no new GPUs.
   */
  handedOverMilli?: number;
}

const NOTHING = { deltaMilli: 0, chargeMilli: 0, heldMilli: 0, pods: 0, gpusPerPodMilli: 0 };

function need(
  base: Pick<QuotaNeed, "action" | "what" | "field" | "value"> & { pods: number; gpusPerPodMilli: number; heldMilli: number; advice?: string },
): QuotaNeed {
  const chargeMilli = base.pods * base.gpusPerPodMilli;
  return { advice: "Lower replicas", ...base, chargeMilli, deltaMilli: Math.max(0, chargeMilli - base.heldMilli) };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/**
 * The GPUs an admission needs beyond what its object already holds (PRODUCT.md §5). The edge reserves
 * exactly `deltaMilli`; a result of 0 (scale-downs, Knative's hand-over, covered pods) needs no check.
 *
 * - Deployment CREATE: replicas × GPUs per pod.
 * - Deployment UPDATE, same template: replicas × GPUs per pod (plus maxSurge if a rollout is already
 *   running), less what it holds.
 * - Deployment UPDATE, new template (a rollout): (max(old, new replicas) + maxSurge) pods, or
 *   max(old, new) under Recreate, each at the larger of the old and new GPUs per pod, less what it holds.
 * - `deployments/scale`: (new − old replicas) × GPUs per pod of the cached Deployment (less, for a
 *   Knative revision, what its Service still holds for it).
 * - Knative Service CREATE, or UPDATE with a new template: the new revision in full, initial scale ×
 *   GPUs per pod; the old revision keeps its GPUs (its own Deployment is charged). Other updates: 0.
 * - Knative revision Deployment CREATE: 0, the Service's admission reserved it (the hand-over). Its
 *   replica increases are checked like a scale, less what its Service still holds for it
 *   (`handedOverMilli`); template changes are Knative's own and cost nothing.
 * - Pod CREATE: GPUs per pod unless a Deployment or Knative revision covers it. Pod UPDATE: 0.
 */
export function quotaDelta(input: QuotaDeltaInput): QuotaNeed {
  const { workload: w, old, operation, memoryPerDeviceMiB: memory, cached } = input;
  const handedOver = input.handedOverMilli ?? 0;
  const perPod = (x: Workload | undefined) => gpusPerPodMilli(x ? readGpuRequest(x) : undefined, memory);
  const action = operation === "CREATE" ? "create" : "update";
  const none = (what: string, field = "spec"): QuotaNeed => ({ ...NOTHING, action, what, field, value: undefined, advice: "" });

  switch (w.role) {
    case "deployment": {
      const replicas = w.replicas ?? 1;
      const gpp = perPod(w);
      if (operation === "CREATE" || !old) {
        return need({ action, what: "new Deployment", field: "spec.replicas", value: replicas, pods: replicas, gpusPerPodMilli: gpp, heldMilli: 0 });
      }
      const oldReplicas = old.replicas ?? 1;
      const oldGpp = perPod(old);
      const held = cached?.milli ?? deploymentChargePods(old.object).pods * oldGpp;
      if (templateChanged(old.object, w.object)) {
        const surge = maxSurgePods(w.object, replicas);
        const what = isRecreate(w.object) ? "Recreate rollout" : `rollout with maxSurge ${surge}`;
        const advice = surge > 0 ? "Lower replicas or maxSurge" : "Lower replicas";
        const pods = Math.max(oldReplicas, replicas) + surge;
        return need({ action, what, advice, field: "spec.template", value: replicas, pods, gpusPerPodMilli: Math.max(gpp, oldGpp), heldMilli: held });
      }
      const surge = deploymentRollingOut(old.object) ? maxSurgePods(w.object, replicas) : 0;
      const what = surge > 0 ? `replicas ${oldReplicas} → ${replicas}, rollout in progress` : `replicas ${oldReplicas} → ${replicas}`;
      return need({ action, what, field: "spec.replicas", value: replicas, pods: replicas + surge, gpusPerPodMilli: gpp, heldMilli: held });
    }
    case "scale": {
      const replicas = w.replicas ?? 0;
      const oldReplicas = old?.replicas ?? cached?.replicas ?? 0;
      const gpp = cached?.gpusPerPodMilli ?? 0;
      const what = `scale ${oldReplicas} → ${replicas}`;
      return need({ action: "scale-up", what, field: "spec.replicas", value: replicas, pods: replicas, gpusPerPodMilli: gpp, heldMilli: oldReplicas * gpp + handedOver });
    }
    case "knative-service": {
      if (operation === "UPDATE" && old && !templateChanged(old.object, w.object)) return none("same revision", "spec.template");
      const pods = knativeInitialScale(w.object);
      const what = operation === "CREATE" ? "first revision" : "new revision";
      return need({ action, what, field: "spec.template", value: pods, pods, gpusPerPodMilli: perPod(w), heldMilli: 0 });
    }
    case "knative-deployment": {
      if (operation === "CREATE" || !old) return none("reserved by its Knative Service");
      const replicas = w.replicas ?? 1;
      const oldReplicas = old.replicas ?? 1;
      const gpp = perPod(w);
      const what = `revision replicas ${oldReplicas} → ${replicas}`;
      return need({ action: "scale-up", what, field: "spec.replicas", value: replicas, pods: replicas, gpusPerPodMilli: gpp, heldMilli: Math.min(oldReplicas, replicas) * gpp + handedOver });
    }
    case "bare-pod":
    case "replica-pod":
    case "foreign-pod":
    case "knative-pod": {
      if (operation !== "CREATE") return none("pod resources cannot grow");
      const coverage = podCoverage(w.object);
      if (coverage.covered) return none("covered by its workload");
      const what = coverage.owner ? `pod of ${coverage.owner.kind} ${coverage.owner.name}` : "bare pod";
      return need({ action, what, advice: "Lower the pod's GPU request", field: "spec.containers", value: undefined, pods: 1, gpusPerPodMilli: perPod(w), heldMilli: 0 });
    }
  }
}

export interface QuotaCheck {
  fits: boolean;
  quotaMilli: number;
  allocatedMilli: number;
  reservedMilli: number;
  /** Quota less allocated and reserved; negative when a project is already over (e.g. after its quota was lowered). */
  freeMilli: number;
}

/**
 * GPUs in steps of 0.001 (usage figures, or the decimal strings this code writes into Project.status)
 * back to integer milli-GPUs before any arithmetic. Missing, empty or unreadable counts as 0.
 */
export function toMilli(gpus: string | number | undefined): number {
  if (gpus === undefined || gpus === "") return 0;
  const n = typeof gpus === "number" ? gpus : Number(gpus);
  return Number.isFinite(n) ? Math.round(n * MILLI_PER_GPU) : 0;
}

/** Does the need fit? Anything that asks for nothing more fits, even in a project over its quota. */
export function checkQuota(need: Pick<QuotaNeed, "deltaMilli">, usage: ProjectUsage, quotaMilli: number): QuotaCheck {
  const allocatedMilli = toMilli(usage.allocated);
  const reservedMilli = toMilli(usage.reserved);
  const freeMilli = quotaMilli - allocatedMilli - reservedMilli;
  return { fits: need.deltaMilli <= 0 || need.deltaMilli <= freeMilli, quotaMilli, allocatedMilli, reservedMilli, freeMilli };
}

function gpus(milli: number): string {
  // "0.5 GPU", "1 GPU", "2 GPUs", "0 GPUs".
  return `${formatGpus(milli)} GPU${milli > 0 && milli <= MILLI_PER_GPU ? "" : "s"}`;
}

export interface QuotaDenial {
  message: string;
  /** The short form for `status.details.causes[].message`. */
  allowed: string;
  /** The numbers, in GPUs, for tools (copied into `status.details`). */
  details: Record<string, unknown>;
}

/**
 * PRODUCT.md §5's denial: what was asked (pods × GPUs), what is free, and what to do, e.g.
 * `project team-a: GPU quota exceeded: this update needs 8 GPUs (8 pods × 1 GPU, new revision) but 5 of 8
 * are free (3 allocated). Lower replicas, or ask an admin to raise Project team-a spec.gpuQuota.`
 */
export function quotaDenial(project: string, need: QuotaNeed, check: QuotaCheck): QuotaDenial {
  const free = Math.max(0, check.freeMilli);
  const held = need.heldMilli > 0 ? `, less ${formatGpus(need.heldMilli)} already held` : "";
  const usage = check.reservedMilli > 0 ? `${formatGpus(check.allocatedMilli)} allocated, ${formatGpus(check.reservedMilli)} reserved` : `${formatGpus(check.allocatedMilli)} allocated`;
  const message =
    `project ${project}: GPU quota exceeded: this ${need.action} needs ${gpus(need.deltaMilli)} ` +
    `(${plural(need.pods, "pod")} × ${gpus(need.gpusPerPodMilli)}, ${need.what}${held}) ` +
    `but ${formatGpus(free)} of ${formatGpus(check.quotaMilli)} ${free === MILLI_PER_GPU ? "is" : "are"} free (${usage}). ` +
    `${need.advice}, or ask an admin to raise Project ${project} spec.gpuQuota.`;
  const allowed = `at most ${formatGpus(free)} more GPUs: project ${project} has quota ${formatGpus(check.quotaMilli)}, ${usage}`;
  const details = {
    project,
    requestedGpus: milliToGpus(need.deltaMilli),
    freeGpus: milliToGpus(free),
    quotaGpus: milliToGpus(check.quotaMilli),
    allocatedGpus: milliToGpus(check.allocatedMilli),
    reservedGpus: milliToGpus(check.reservedMilli),
    heldGpus: milliToGpus(need.heldMilli),
    pods: need.pods,
    gpusPerPod: milliToGpus(need.gpusPerPodMilli),
  };
  return { message, allowed, details };
}
