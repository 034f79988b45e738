// kubernetes-sigs/scheduler-plugins Coscheduling, usually run as a second scheduler under this name.
// It has no notion of a GPU share: whole GPUs only.
import type { GpuShareDialect } from "./index.ts";

export const coscheduling: GpuShareDialect = {
  profile: "coscheduling",
  schedulerName: "scheduler-plugins-scheduler",
  supportsFractions: false,
};
