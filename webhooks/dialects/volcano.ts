// Volcano's vGPU device plugin takes a share as integer extended resources on the container:
// `volcano.sh/vgpu-number` devices, each with `volcano.sh/vgpu-memory` MiB.
import { describeContainer, describeShare, setContainerLimit } from "../../src/workload/gpu.ts";
import type { GpuShareDialect, RenderInput } from "./index.ts";

export const VGPU_NUMBER = "volcano.sh/vgpu-number";
export const VGPU_MEMORY = "volcano.sh/vgpu-memory";

/** MiB per device: the requested memory, or the fraction of a device's memory (at least 1 MiB). */
export function vgpuMemoryMiB(input: Pick<RenderInput, "share" | "memoryPerDeviceMiB">): number {
  const { share, memoryPerDeviceMiB } = input;
  return share.memoryMiB !== undefined ? share.memoryMiB : Math.max(1, Math.round(share.fraction * memoryPerDeviceMiB));
}

function render(input: RenderInput): string[] {
  const container = input.template.spec.containers[input.target];
  const messages: string[] = [];
  const wanted: Array<[string, string]> = [
    [VGPU_NUMBER, String(input.share.devices)],
    [VGPU_MEMORY, String(vgpuMemoryMiB(input))],
  ];
  for (const [resource, value] of wanted) {
    if (!setContainerLimit(container, resource, value).changed) continue;
    messages.push(`set ${resource}=${value} on ${describeContainer(container, input.target)} (${describeShare(input.share)})`);
  }
  return messages;
}

export const volcano: GpuShareDialect = {
  profile: "volcano",
  schedulerName: "volcano",
  queue: { on: "annotation", key: "scheduling.volcano.sh/queue-name" },
  supportsFractions: true,
  render,
};
