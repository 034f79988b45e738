// Scheduler dialects: how each scheduler profile (PRODUCT.md §3) names itself, where it reads the queue,
// and how it wants a share of a GPU written. Data plus one small render function each.
import type { ObjectMeta, SchedulerProfile } from "../../src/policy/types.ts";
import type { GpuRequest, GpuShare } from "../../src/workload/gpu.ts";
import { coscheduling } from "./coscheduling.ts";
import { defaultProfile } from "./default.ts";
import { hami } from "./hami.ts";
import { kai } from "./kai.ts";
import { volcano } from "./volcano.ts";

/** Where the scheduler looks for the queue on the pod (template). */
export interface QueuePlacement {
  on: "label" | "annotation";
  key: string;
}

export interface RenderInput {
  /** The pod template (or pod) to write into; it has the target container. */
  template: { metadata?: ObjectMeta; spec: any };
  /** The workload's own metadata when it is not the template's (Deployment, Knative Service). */
  workloadMetadata?: ObjectMeta;
  /** The share annotations as written, and where they were found. */
  request: GpuRequest;
  share: GpuShare;
  /** Index of the container the share applies to. */
  target: number;
  memoryPerDeviceMiB: number;
}

export interface GpuShareDialect {
  profile: SchedulerProfile;
  /** The scheduler's usual name; undefined leaves `schedulerName` alone. */
  schedulerName?: string;
  queue?: QueuePlacement;
  /** Can this scheduler place a share of a GPU? Without it, only whole `nvidia.com/gpu` limits work. */
  supportsFractions: boolean;
  /** A valid share this scheduler still cannot run, as the "allowed" text of a violation. */
  refuse?(share: GpuShare): string | undefined;
  /** Is this `nvidia.com/gpu` limit on the share's container the dialect's own rendering of the share? */
  ownsGpuLimit?(container: any): boolean;
  /** Writes the share into the template; returns one message per value written. Idempotent. */
  render?(input: RenderInput): string[];
}

export const DIALECTS: Readonly<Record<SchedulerProfile, GpuShareDialect>> = {
  kai,
  volcano,
  hami,
  coscheduling,
  default: defaultProfile,
};

export function dialectFor(profile: SchedulerProfile | undefined): GpuShareDialect {
  return DIALECTS[profile ?? "default"] ?? defaultProfile;
}

/** Profiles that place GPU shares, for messages that tell users where fractions work. */
export const FRACTION_PROFILES: readonly SchedulerProfile[] = Object.values(DIALECTS)
  .filter((d) => d.supportsFractions)
  .map((d) => d.profile);
