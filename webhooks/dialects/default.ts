// The cluster's default scheduler: whole GPUs only, scheduler name left as it is.
import type { GpuShareDialect } from "./index.ts";

export const defaultProfile: GpuShareDialect = {
  profile: "default",
  supportsFractions: false,
};
