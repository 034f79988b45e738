// Reading a pod template's GPU request, in every form users write it (PRODUCT.md §3), and writing the
// extended-resource limits the scheduler dialects render a share into.
import { DEFAULT_GPU_MEMORY_PER_DEVICE_MIB, type ObjectMeta, type Project } from "../policy/types.ts";
import { peekTemplate, type Workload } from "./workload.ts";

export const GPU_RESOURCE = "nvidia.com/gpu";
export const ANNOTATION_FRACTION = "gpu-fraction";
export const ANNOTATION_MEMORY = "gpu-memory";
export const ANNOTATION_DEVICES = "gpu-fraction-num-devices";
export const ANNOTATION_CONTAINER = "gpu-fraction-container-name";
/** Every annotation that describes a share, in the order they are copied and reported. */
export const SHARE_ANNOTATIONS = [ANNOTATION_FRACTION, ANNOTATION_MEMORY, ANNOTATION_DEVICES, ANNOTATION_CONTAINER] as const;
export const INFERENCE_LABEL = "infergate.dev/inference";
/** HAMi renders a share as `nvidia.com/gpu: <devices>` plus one of these; that count is not whole GPUs. */
export const HAMI_SHARE_RESOURCES = ["nvidia.com/gpumem", "nvidia.com/gpumem-percentage"] as const;

export interface GpuRequest {
  /** Sum of whole `nvidia.com/gpu` limits over the containers, excluding a dialect's rendering of a share. */
  wholeGpus: number;
  /** Raw share annotations, as written (strings). */
  fraction?: string;
  memoryMiB?: string;
  devices?: string;
  containerName?: string;
  /** Where the share annotations were read: "template" or "workload" metadata. */
  annotationSource?: "template" | "workload";
}

/** A share that passed parsing: a fraction of each device's memory, or MiB of it, on `devices` devices. */
export type GpuShare = { devices: number } & ({ fraction: number; memoryMiB?: undefined } | { memoryMiB: number; fraction?: undefined });

/** What is wrong with one share annotation, for a violation at that annotation's path. */
export interface ShareProblem {
  annotation: (typeof SHARE_ANNOTATIONS)[number];
  value: string;
  allowed: string;
}

const DECIMAL = /^(?:\d+(?:\.\d+)?|\.\d+)$/;
const POSITIVE_INTEGER = /^[1-9]\d*$/;
// Float noise (0.1 × 3 = 0.30000000000000004) must not turn an exact policy bound into a violation.
const GPU_PRECISION = 1e9;

/** A plain decimal ("0.5", "2", ".25"), as KAI and policy ranges write them; no exponents, units or signs. */
export function parseDecimal(text: unknown): number | undefined {
  if (typeof text === "number") return Number.isFinite(text) && text >= 0 ? text : undefined;
  if (typeof text !== "string" || !DECIMAL.test(text)) return undefined;
  return Number(text);
}

export function parsePositiveInteger(text: unknown): number | undefined {
  if (typeof text === "number") return Number.isSafeInteger(text) && text > 0 ? text : undefined;
  if (typeof text !== "string" || !POSITIVE_INTEGER.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

export function roundGpus(n: number): number {
  return Math.round(n * GPU_PRECISION) / GPU_PRECISION;
}

/** MiB of memory on one GPU, for converting `gpu-memory` to GPUs (PRODUCT.md §3, default 80 GiB). */
export function memoryPerDeviceMiB(project: Project | undefined): number {
  const configured = project?.spec?.gpuMemoryPerDeviceMiB;
  return typeof configured === "number" && Number.isFinite(configured) && configured > 0 ? configured : DEFAULT_GPU_MEMORY_PER_DEVICE_MIB;
}

function shareAnnotations(meta: ObjectMeta | undefined) {
  const a = meta?.annotations;
  if (!a) return undefined;
  if (a[ANNOTATION_FRACTION] === undefined && a[ANNOTATION_MEMORY] === undefined && a[ANNOTATION_DEVICES] === undefined) {
    return undefined;
  }
  return { fraction: a[ANNOTATION_FRACTION], memoryMiB: a[ANNOTATION_MEMORY], devices: a[ANNOTATION_DEVICES], containerName: a[ANNOTATION_CONTAINER] };
}

/** Index of the container a share applies to: `gpu-fraction-container-name`, else the first; -1 if the name matches none. */
export function shareTargetIndex(containers: readonly any[], containerName: string | undefined): number {
  if (containerName === undefined || containerName === "") return containers.length > 0 ? 0 : -1;
  return containers.findIndex((c) => c?.name === containerName);
}

/** The `nvidia.com/gpu` quantity a container asks for (limit, else request), or undefined. */
export function containerGpuQuantity(c: any): unknown {
  const res = c?.resources ?? {};
  return res.limits?.[GPU_RESOURCE] ?? res.requests?.[GPU_RESOURCE];
}

/** Is this container's `nvidia.com/gpu` HAMi's rendering of a share (it sits next to `gpumem`)? */
export function carriesHamiShare(c: any): boolean {
  const limits = c?.resources?.limits ?? {};
  return HAMI_SHARE_RESOURCES.some((r) => limits[r] !== undefined);
}

function containerGpus(c: any): number {
  const quantity = containerGpuQuantity(c);
  if (quantity === undefined) return 0;
  const n = Number(quantity);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/**
 * GPUs the pod holds, by Kubernetes' rule for a pod's effective request: native sidecars (init containers
 * with restartPolicy Always) run next to the containers and add to them; each other init container runs
 * alone, next to the sidecars started before it, so only the largest of those counts.
 */
function effectiveGpus(initContainers: readonly any[], containersGpus: number): number {
  let sidecars = 0;
  let initPeak = 0;
  for (const c of initContainers) {
    if (c?.restartPolicy === "Always") sidecars += containerGpus(c);
    else initPeak = Math.max(initPeak, sidecars + containerGpus(c));
  }
  return Math.max(initPeak, containersGpus + sidecars);
}

/**
 * The GPU request of a workload's pod template (or a pod), or undefined for scale.
 * Share annotations are read as one set: from the workload's own metadata when it carries any, else from
 * the template. The workload's set wins because the template may hold an older copy of it (the KAI
 * dialect copies workload annotations down, and a later `kubectl apply` changes only the workload's).
 */
export function readGpuRequest(w: Workload): GpuRequest | undefined {
  const template = peekTemplate(w);
  if (!template) return undefined;
  const fromWorkload = w.templatePath ? shareAnnotations(w.object?.metadata) : undefined;
  const fromTemplate = fromWorkload ? undefined : shareAnnotations(template.metadata);
  const share = fromWorkload ?? fromTemplate;
  const containers: any[] = Array.isArray(template.spec?.containers) ? template.spec.containers : [];
  const initContainers: any[] = Array.isArray(template.spec?.initContainers) ? template.spec.initContainers : [];
  // Only the share's own container can hold HAMi's rendering; a `gpumem` elsewhere is HAMi used directly.
  const target = share ? shareTargetIndex(containers, share.containerName === undefined ? undefined : String(share.containerName)) : -1;
  const running = containers.reduce((sum, c, i) => sum + (i === target && carriesHamiShare(c) ? 0 : containerGpus(c)), 0);
  const request: GpuRequest = { wholeGpus: effectiveGpus(initContainers, running) };
  if (share) {
    if (share.fraction !== undefined) request.fraction = String(share.fraction);
    if (share.memoryMiB !== undefined) request.memoryMiB = String(share.memoryMiB);
    if (share.devices !== undefined) request.devices = String(share.devices);
    if (share.containerName !== undefined) request.containerName = String(share.containerName);
    request.annotationSource = fromWorkload ? "workload" : "template";
  }
  return request;
}

export function requestsGpu(r: GpuRequest | undefined): boolean {
  return !!r && (r.wholeGpus > 0 || r.fraction !== undefined || r.memoryMiB !== undefined);
}

/**
 * Parses the share annotations of a request. Every problem is reported, so a user fixes them in one go;
 * `share` is set only when there is none. Policy ranges and dialect support are checked elsewhere.
 */
export function parseGpuShare(r: GpuRequest): { share?: GpuShare; problems: ShareProblem[] } {
  const problems: ShareProblem[] = [];
  if (r.fraction === undefined && r.memoryMiB === undefined && r.devices === undefined) return { problems };

  let fraction: number | undefined;
  if (r.fraction !== undefined) {
    fraction = parseDecimal(r.fraction);
    if (fraction === undefined || fraction <= 0 || fraction > 1) {
      problems.push({ annotation: ANNOTATION_FRACTION, value: r.fraction, allowed: 'a decimal number greater than 0 and at most 1, e.g. "0.5"' });
      fraction = undefined;
    }
  }
  let memoryMiB: number | undefined;
  if (r.memoryMiB !== undefined) {
    memoryMiB = parsePositiveInteger(r.memoryMiB);
    if (memoryMiB === undefined) {
      problems.push({ annotation: ANNOTATION_MEMORY, value: r.memoryMiB, allowed: 'a positive whole number of MiB, e.g. "20480"' });
    }
  }
  if (r.fraction !== undefined && r.memoryMiB !== undefined) {
    problems.push({
      annotation: ANNOTATION_MEMORY,
      value: r.memoryMiB,
      allowed: `set either ${ANNOTATION_FRACTION} or ${ANNOTATION_MEMORY}, not both (${ANNOTATION_FRACTION} is "${r.fraction}")`,
    });
  }
  let devices = 1;
  if (r.devices !== undefined) {
    const parsed = parsePositiveInteger(r.devices);
    if (parsed === undefined) {
      problems.push({ annotation: ANNOTATION_DEVICES, value: r.devices, allowed: 'a positive whole number of devices, e.g. "2"' });
    } else devices = parsed;
    if (r.fraction === undefined && r.memoryMiB === undefined) {
      problems.push({ annotation: ANNOTATION_DEVICES, value: r.devices, allowed: `only together with ${ANNOTATION_FRACTION} or ${ANNOTATION_MEMORY}` });
    }
  }
  if (problems.length > 0) return { problems };
  if (fraction !== undefined) return { share: { fraction, devices }, problems };
  return { share: { memoryMiB: memoryMiB!, devices }, problems };
}

/** GPUs one device's share amounts to: the fraction, or the memory over a device's memory. */
export function shareOfDevice(share: GpuShare, memoryPerDevice: number): number {
  return share.fraction ?? share.memoryMiB! / memoryPerDevice;
}

/** How a share reads in a message: `gpu-fraction 0.5` or `gpu-memory 20480 MiB`, with the device count. */
export function describeShare(share: GpuShare): string {
  const what = share.fraction !== undefined ? `gpu-fraction ${share.fraction}` : `gpu-memory ${share.memoryMiB} MiB`;
  return share.devices > 1 ? `${what} × ${share.devices} devices` : what;
}

/** A container as messages name it: by name, or by index (a Knative Service's single container often has none). */
export function describeContainer(container: any, index: number): string {
  return typeof container?.name === "string" && container.name !== "" ? `container "${container.name}"` : `container ${index}`;
}

/**
 * GPUs per pod for quota (PRODUCT.md §5): whole `nvidia.com/gpu` limits plus fraction × devices, or
 * gpu-memory ÷ memory per device × devices. A share that does not parse counts nothing here: the
 * validator rejects it, so it is never admitted.
 */
export function gpusPerPod(r: GpuRequest | undefined, memoryPerDevice: number = DEFAULT_GPU_MEMORY_PER_DEVICE_MIB): number {
  if (!r) return 0;
  const { share } = parseGpuShare(r);
  const shared = share ? shareOfDevice(share, memoryPerDevice) * share.devices : 0;
  return roundGpus(r.wholeGpus + shared);
}

const isRecord = (v: unknown): v is Record<string, any> => typeof v === "object" && v !== null && !Array.isArray(v);
const isRecordOrAbsent = (v: unknown) => v === undefined || v === null || isRecord(v);

function sameQuantity(current: unknown, wanted: string): boolean {
  if (current === undefined || current === null) return false;
  if (String(current) === wanted) return true;
  const a = Number(current);
  return Number.isFinite(a) && a === Number(wanted);
}

/**
 * Makes a container's limit for `resource` equal `value` (a request for it, if present, follows, since
 * extended resources need requests equal to limits). `previous` is the limit it replaced, if any.
 */
export function setContainerLimit(container: any, resource: string, value: string): { changed: boolean; previous?: unknown } {
  // Nothing is written into a container, resources or limits of the wrong type (see shape.ts).
  if (!isRecord(container) || !isRecordOrAbsent(container.resources) || !isRecordOrAbsent(container.resources?.limits)) return { changed: false };
  container.resources ??= {};
  const res = container.resources;
  const previous = res.limits?.[resource];
  const requestStale = res.requests?.[resource] !== undefined && !sameQuantity(res.requests[resource], value);
  if (sameQuantity(previous, value) && !requestStale) return { changed: false, previous };
  res.limits ??= {};
  res.limits[resource] = value;
  if (requestStale) res.requests[resource] = value;
  return { changed: true, previous };
}

/** Removes `resource` from a container's limits and requests; true if anything was there. */
export function removeContainerResource(container: any, resource: string): boolean {
  const res = container?.resources;
  let removed = false;
  for (const part of ["limits", "requests"] as const) {
    if (res?.[part]?.[resource] === undefined) continue;
    delete res[part][resource];
    removed = true;
  }
  return removed;
}

/**
 * PRODUCT.md §2: every Knative Service; a Deployment (or bare pod) that requests GPUs or carries
 * `infergate.dev/inference: "true"`. On UPDATE the old object counts too, so removing the GPU request
 * cannot slip a workload out of policy unnoticed.
 */
export function isInferenceWorkload(w: Workload, old?: Workload): boolean {
  switch (w.role) {
    case "knative-service":
    case "knative-deployment":
    case "knative-pod":
      return true;
    case "scale":
      return true;
    default: {
      const labelled = (x?: Workload) =>
        x?.object?.metadata?.labels?.[INFERENCE_LABEL] === "true" || peekTemplate(x)?.metadata?.labels?.[INFERENCE_LABEL] === "true";
      return labelled(w) || requestsGpu(readGpuRequest(w)) || (!!old && (labelled(old) || requestsGpu(readGpuRequest(old))));
    }
  }
}
