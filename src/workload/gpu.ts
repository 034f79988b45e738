// Reading a pod template's GPU request, in every form users write it (PRODUCT.md §3).
import type { ObjectMeta } from "../policy/types.ts";
import { peekTemplate, type Workload } from "./workload.ts";

export const GPU_RESOURCE = "nvidia.com/gpu";
export const ANNOTATION_FRACTION = "gpu-fraction";
export const ANNOTATION_MEMORY = "gpu-memory";
export const ANNOTATION_DEVICES = "gpu-fraction-num-devices";
export const INFERENCE_LABEL = "infergate.dev/inference";
/** HAMi renders a share as `nvidia.com/gpu: 1` plus one of these; that `1` is not a whole GPU. */
const HAMI_SHARE_RESOURCES = ["nvidia.com/gpumem", "nvidia.com/gpumem-percentage"];

export interface GpuRequest {
  /** Sum of whole `nvidia.com/gpu` limits over the containers, excluding a dialect's rendering of a share. */
  wholeGpus: number;
  /** Raw share annotations, as written (strings), with where they were found. */
  fraction?: string;
  memoryMiB?: string;
  devices?: string;
  /** Where the share annotations were read: "template" or "workload" metadata. */
  annotationSource?: "template" | "workload";
}

function shareAnnotations(meta: ObjectMeta | undefined) {
  const a = meta?.annotations;
  if (!a) return undefined;
  if (a[ANNOTATION_FRACTION] === undefined && a[ANNOTATION_MEMORY] === undefined && a[ANNOTATION_DEVICES] === undefined) {
    return undefined;
  }
  return { fraction: a[ANNOTATION_FRACTION], memoryMiB: a[ANNOTATION_MEMORY], devices: a[ANNOTATION_DEVICES] };
}

function containerGpus(c: any, hasShare: boolean): number {
  const res = c?.resources ?? {};
  const limit = res.limits?.[GPU_RESOURCE] ?? res.requests?.[GPU_RESOURCE];
  if (limit === undefined) return 0;
  if (hasShare && HAMI_SHARE_RESOURCES.some((r) => res.limits?.[r] !== undefined)) return 0;
  const n = Number(limit);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** The GPU request of a workload's pod template (or a pod), or undefined for scale. */
export function readGpuRequest(w: Workload): GpuRequest | undefined {
  const template = peekTemplate(w);
  if (!template) return undefined;
  const fromTemplate = shareAnnotations(template.metadata);
  const fromWorkload = w.templatePath ? shareAnnotations(w.object?.metadata) : undefined;
  const share = fromTemplate ?? fromWorkload;
  const containers: any[] = Array.isArray(template.spec?.containers) ? template.spec.containers : [];
  const wholeGpus = containers.reduce((sum, c) => sum + containerGpus(c, share !== undefined), 0);
  const request: GpuRequest = { wholeGpus };
  if (share) {
    if (share.fraction !== undefined) request.fraction = String(share.fraction);
    if (share.memoryMiB !== undefined) request.memoryMiB = String(share.memoryMiB);
    if (share.devices !== undefined) request.devices = String(share.devices);
    request.annotationSource = fromTemplate ? "template" : "workload";
  }
  return request;
}

export function requestsGpu(r: GpuRequest | undefined): boolean {
  return !!r && (r.wholeGpus > 0 || r.fraction !== undefined || r.memoryMiB !== undefined);
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
