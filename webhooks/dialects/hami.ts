// HAMi takes a share as integer limits: `nvidia.com/gpu` counts physical devices (vGPU slots), and
// `nvidia.com/gpumem` (MiB) or `nvidia.com/gpumem-percentage` sizes each one.
import { carriesHamiShare, describeContainer, describeShare, GPU_RESOURCE, removeContainerResource, setContainerLimit } from "../../src/workload/gpu.ts";
import type { GpuShareDialect, RenderInput } from "./index.ts";

export const GPUMEM = "nvidia.com/gpumem";
export const GPUMEM_PERCENTAGE = "nvidia.com/gpumem-percentage";

/** gpumem-percentage for a fraction: HAMi takes whole percents, and 0 would mean no memory at all. */
export function gpumemPercentage(fraction: number): number {
  return Math.min(100, Math.max(1, Math.round(fraction * 100)));
}

function render(input: RenderInput): string[] {
  const { share } = input;
  const container = input.template.spec.containers[input.target];
  const where = describeContainer(container, input.target);
  const [resource, value, other] =
    share.memoryMiB !== undefined
      ? [GPUMEM, String(share.memoryMiB), GPUMEM_PERCENTAGE]
      : [GPUMEM_PERCENTAGE, String(gpumemPercentage(share.fraction)), GPUMEM];
  const messages: string[] = [];
  for (const [r, v] of [[GPU_RESOURCE, String(share.devices)], [resource, value]] as const) {
    if (setContainerLimit(container, r, v).changed) messages.push(`set ${r}=${v} on ${where} (${describeShare(share)})`);
  }
  // HAMi would read both sizes; the other one can only be an earlier rendering of a different share.
  if (removeContainerResource(container, other)) messages.push(`removed ${other} from ${where}: ${resource} replaces it`);
  return messages;
}

export const hami: GpuShareDialect = {
  profile: "hami",
  schedulerName: "hami-scheduler",
  supportsFractions: true,
  ownsGpuLimit: carriesHamiShare,
  render,
};
