// KAI-Scheduler reads the share from pod annotations, so the user's annotations are the rendering. They
// must be on the pod, though: annotations on a Deployment's or Knative Service's own metadata are copied
// down onto the pod template.
import { SHARE_ANNOTATIONS } from "../../src/workload/gpu.ts";
import type { GpuShareDialect, RenderInput } from "./index.ts";

function copyShareDown({ template, workloadMetadata, request }: RenderInput): string[] {
  if (request.annotationSource !== "workload" || !workloadMetadata?.annotations) return [];
  const from = workloadMetadata.annotations;
  const messages: string[] = [];
  for (const key of SHARE_ANNOTATIONS) {
    const wanted = from[key];
    const current = template.metadata?.annotations?.[key];
    if (wanted === current) continue;
    template.metadata ??= {};
    template.metadata.annotations ??= {};
    if (wanted === undefined) {
      // The workload's set replaces the template's as a whole (see readGpuRequest); a leftover key here
      // would change what KAI reads.
      delete template.metadata.annotations[key];
      messages.push(`removed pod-template annotation ${key}: the workload's share annotations replace it`);
    } else {
      template.metadata.annotations[key] = wanted;
      messages.push(`copied annotation ${key}=${wanted} onto the pod template (KAI-Scheduler reads it there)`);
    }
  }
  return messages;
}

export const kai: GpuShareDialect = {
  profile: "kai",
  schedulerName: "kai-scheduler",
  queue: { on: "label", key: "kai.scheduler/queue" },
  supportsFractions: true,
  // KAI's own admission rejects gpu-fraction >= 1 ("a positive number smaller than 1.0").
  refuse: (share) =>
    share.fraction !== undefined && share.fraction >= 1
      ? "below 1 for KAI-Scheduler; for a whole GPU remove gpu-fraction and set limits nvidia.com/gpu: 1"
      : undefined,
  render: copyShareDown,
};
