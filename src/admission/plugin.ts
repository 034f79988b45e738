// The plugin contract: small objects of pure functions over a Context. No I/O happens here.
import type { AdmissionRequest, Violation } from "./types.ts";
import type { EffectivePolicy, Project } from "../policy/types.ts";
import type { KnativeFeatures } from "../workload/knative-features.ts";
import type { PodField, PodTemplate, Workload } from "../workload/workload.ts";
import type { QuotaView } from "../quota/view.ts";

/** Read-only facts about the cluster beyond the admitted object. */
export interface ClusterView {
  knativeFeatures: KnativeFeatures;
  /** Present where usage is known (watches in `serve`, `--cluster` in `apply`). */
  quota?: QuotaView;
}

export interface Context {
  request: AdmissionRequest;
  workload: Workload;
  /** The object before this UPDATE, as a Workload. */
  old?: Workload;
  project: Project;
  policy: EffectivePolicy;
  cluster: ClusterView;
  /** Is the workload an inference workload (GPU request, label, or a Knative Service)? */
  inference: boolean;
  /** The pod template (or the pod), created on demand. Undefined for `deployments/scale`. */
  template(): PodTemplate | undefined;
  /** May this pod-spec field be written here (Knative feature flags, workload role)? */
  canSet(field: PodField): boolean;
  /** Field path under the pod template, for violations. */
  path(sub: string): string;
  /** Tell the user about an injected default; at most 120 characters. */
  warn(message: string): void;
  violation(field: string, value: unknown, allowed: string, extra?: Partial<Violation>): void;
}

export type Phase = "mutate" | "validate";

export interface Plugin {
  name: string;
  appliesTo(ctx: Context): boolean;
  /** Edits ctx.workload.object in place; calls ctx.warn() for each injected default. */
  mutate?(ctx: Context): void;
  /** Calls ctx.violation() for each problem; never edits the object. */
  validate?(ctx: Context): void;
}
