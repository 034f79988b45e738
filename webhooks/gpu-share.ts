// GPU shares (PRODUCT.md §3): check the `gpu-fraction` / `gpu-memory` annotations and write them in the
// dialect of the policy's scheduler profile. The annotations stay as the user wrote them: they are what
// quota charges and what a re-invocation renders from again.
import type { Context, Plugin } from "../src/admission/plugin.ts";
import type { DecimalRange } from "../src/policy/types.ts";
import {
  ANNOTATION_CONTAINER,
  ANNOTATION_FRACTION,
  ANNOTATION_MEMORY,
  containerGpuQuantity,
  describeShare,
  GPU_RESOURCE,
  gpusPerPod,
  memoryPerDeviceMiB,
  parseDecimal,
  parseGpuShare,
  readGpuRequest,
  roundGpus,
  shareOfDevice,
  shareTargetIndex,
  type GpuRequest,
  type GpuShare,
} from "../src/workload/gpu.ts";
import { carriesPolicy, peekTemplate } from "../src/workload/workload.ts";
import { dialectFor, FRACTION_PROFILES, type GpuShareDialect } from "./dialects/index.ts";

/**
 * The reason for a share no scheduler could run (malformed, contradictory, or not in this dialect).
 * Not a policy violation, so `enforcement: warn` still denies it.
 */
export const INVALID_GPU_REQUEST = "InvalidGPURequest";

interface Finding {
  field: string;
  value: unknown;
  allowed: string;
  /** True for an unschedulable request (InvalidGPURequest); false for a policy range. */
  invalid: boolean;
}

interface Assessment {
  request: GpuRequest;
  /** Set when the annotations parse; rendering also needs no invalid finding. */
  share?: GpuShare;
  /** Index of the container the share applies to, or -1. */
  target: number;
  memoryPerDeviceMiB: number;
  findings: Finding[];
}

function unsupportedText(dialect: GpuShareDialect): string {
  const profiles = FRACTION_PROFILES.join(", ");
  return `a GPU share needs scheduler profile ${profiles}; profile "${dialect.profile}" places whole GPUs only: set limits ${GPU_RESOURCE} instead`;
}

function rangeText(min: number | string | undefined, max: number | string | undefined): string {
  if (min !== undefined && max !== undefined) return `between ${min} and ${max}`;
  return min !== undefined ? `at least ${min}` : `at most ${max}`;
}

function bounds(range: DecimalRange | undefined): { min?: number; max?: number } {
  return { min: parseDecimal(range?.min), max: parseDecimal(range?.max) };
}

function outside(value: number, { min, max }: { min?: number; max?: number }): boolean {
  return (min !== undefined && value < min) || (max !== undefined && value > max);
}

function gpuField(ctx: Context, container: any, index: number): string {
  const part = container?.resources?.limits?.[GPU_RESOURCE] !== undefined ? "limits" : "requests";
  return ctx.path(`spec.containers[${index}].resources.${part}[${GPU_RESOURCE}]`);
}

/** Everything wrong with the workload's GPU request, with field paths; reads, never writes. */
function assess(ctx: Context): Assessment | undefined {
  const request = readGpuRequest(ctx.workload);
  if (!request) return undefined;
  const listed = peekTemplate(ctx.workload)?.spec?.containers;
  const containers: any[] = Array.isArray(listed) ? listed : [];
  const dialect = dialectFor(ctx.policy.scheduler.profile);
  const perDevice = memoryPerDeviceMiB(ctx.project);
  const findings: Finding[] = [];
  const at = (key: string) => (request.annotationSource === "workload" ? `metadata.annotations[${key}]` : ctx.path(`metadata.annotations[${key}]`));
  const invalid = (field: string, value: unknown, allowed: string) => findings.push({ field, value, allowed, invalid: true });

  const { share, problems } = parseGpuShare(request);
  for (const p of problems) invalid(at(p.annotation), p.value, p.allowed);

  const shareKey = request.fraction !== undefined ? ANNOTATION_FRACTION : request.memoryMiB !== undefined ? ANNOTATION_MEMORY : undefined;
  const shareValue = request.fraction ?? request.memoryMiB;
  let target = -1;
  if (shareKey) {
    if (!dialect.supportsFractions) invalid(at(shareKey), shareValue, unsupportedText(dialect));
    target = shareTargetIndex(containers, request.containerName);
    if (target < 0 && request.containerName) {
      const names = containers.flatMap((c) => (typeof c?.name === "string" && c.name ? [`"${c.name}"`] : []));
      invalid(at(ANNOTATION_CONTAINER), request.containerName, names.length ? `the name of one of the pod's containers: ${names.join(", ")}` : "the name of a container, but the pod's containers have none");
    }
    containers.forEach((c, i) => {
      const quantity = containerGpuQuantity(c);
      if (!(Number(quantity) > 0)) return;
      if (i === target && dialect.ownsGpuLimit?.(c)) return;
      invalid(
        gpuField(ctx, c, i),
        quantity,
        `no ${GPU_RESOURCE} together with ${shareKey}: ask for whole GPUs or for a share, not both`,
      );
    });
    const refusal = share && dialect.refuse?.(share);
    if (refusal) invalid(at(shareKey), shareValue, `${shareKey} ${refusal}`);
  }

  if (share && shareKey) {
    const range = bounds(ctx.policy.rules.gpuFraction);
    const ofDevice = roundGpus(shareOfDevice(share, perDevice));
    if (outside(ofDevice, range)) {
      const allowed =
        share.fraction !== undefined
          ? `${rangeText(range.min, range.max)} (policy rules.gpuFraction)`
          : `${rangeText(
              range.min === undefined ? undefined : Math.ceil(roundGpus(range.min * perDevice)),
              range.max === undefined ? undefined : Math.floor(roundGpus(range.max * perDevice)),
            )} MiB (policy rules.gpuFraction ${rangeText(range.min, range.max)} of a ${perDevice} MiB GPU)`;
      findings.push({ field: at(shareKey), value: shareValue, allowed, invalid: false });
    }
  }

  const total = gpusPerPod(request, perDevice);
  const perPod = bounds(ctx.policy.rules.gpusPerPod);
  if (total > 0 && outside(total, perPod)) {
    const whole = containers.flatMap((c, i) => (Number(containerGpuQuantity(c)) > 0 ? [i] : []));
    const only = whole.length === 1 ? whole[0]! : undefined;
    const field =
      shareKey !== undefined ? at(shareKey) : only !== undefined ? gpuField(ctx, containers[only], only) : ctx.path("spec.containers");
    const asked = share ? ` (asked: ${request.wholeGpus > 0 ? `${request.wholeGpus} whole + ` : ""}${describeShare(share)})` : "";
    findings.push({ field, value: total, allowed: `${rangeText(perPod.min, perPod.max)} GPUs per pod (policy rules.gpusPerPod)${asked}`, invalid: false });
  }

  return { request, share, target, memoryPerDeviceMiB: perDevice, findings };
}

export const gpuShare: Plugin = {
  name: "gpu-share",

  // Pods of a ReplicaSet or a revision got the share with their template; a pod's resources are fixed
  // once it exists, so pods are handled at CREATE only.
  appliesTo: (ctx) => ctx.inference && carriesPolicy(ctx.workload) && (ctx.workload.kind !== "Pod" || ctx.request.operation === "CREATE"),

  mutate(ctx) {
    const dialect = dialectFor(ctx.policy.scheduler.profile);
    if (!dialect.render) return;
    const assessment = assess(ctx);
    // An invalid request is left exactly as written, so the validator reports what the user wrote.
    if (!assessment?.share || assessment.target < 0 || assessment.findings.some((f) => f.invalid)) return;
    const template = peekTemplate(ctx.workload)!;
    const messages = dialect.render({
      template: template as { spec: any },
      workloadMetadata: ctx.workload.templatePath ? ctx.workload.object.metadata : undefined,
      request: assessment.request,
      share: assessment.share,
      target: assessment.target,
      memoryPerDeviceMiB: assessment.memoryPerDeviceMiB,
    });
    for (const message of messages) ctx.warn(`infergate: ${message}`);
  },

  validate(ctx) {
    for (const f of assess(ctx)?.findings ?? []) {
      ctx.violation(f.field, f.value, f.allowed, f.invalid ? { reason: INVALID_GPU_REQUEST } : undefined);
    }
  },
};
