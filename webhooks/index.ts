// The plugin set, in the order it runs. The scheduler and GPU share come first because later plugins
// read what they decide (the queue, whether a pod is a GPU pod); policy rules and quota validate last,
// on the object as every mutation left it.
import type { Plugin } from "../src/admission/plugin.ts";
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

export const plugins: readonly Plugin[] = [scheduler, gpuShare, priority, tolerations, nodePools, labels, knative, podGroup, policyRules, quota];
