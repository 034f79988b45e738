// The plugin set, in the order it runs. The shape check comes first: the others only ever see a
// well-formed workload. The scheduler and GPU share come next because later plugins read what they
// decide (the queue, whether a pod is a GPU pod); policy rules and quota validate last, on the object as
// every mutation left it.
import type { Plugin } from "../src/admission/plugin.ts";
import { wellFormed } from "../src/workload/shape.ts";
import { shape } from "./shape.ts";
import { scheduler } from "./scheduler.ts";
import { gpuShare } from "./gpu-share.ts";
import { priority } from "./priority.ts";
import { tolerations } from "./tolerations.ts";
import { nodePools } from "./node-pools.ts";
import { labels } from "./labels.ts";
import { knative } from "./knative.ts";
import { podGroup } from "./pod-group.ts";
import { policyRules } from "./policy-rules.ts";
import { quota } from "./quota.ts";

/** A plugin that skips malformed workloads: `shape` reports them, and a mutation would only hide the mistake. */
function onWellFormed(plugin: Plugin): Plugin {
  return { ...plugin, appliesTo: (ctx) => wellFormed(ctx.workload) && plugin.appliesTo(ctx) };
}

export const plugins: readonly Plugin[] = [
  shape,
  ...[scheduler, gpuShare, priority, tolerations, nodePools, labels, knative, podGroup, policyRules, quota].map(onWellFormed),
];
