// Precedence (PRODUCT.md §1): a policy that names the project overrides the cluster-wide policy
// field by field, at the level of each key under `scheduler`, `defaults` and `rules`.
import type { EffectivePolicy, InferencePolicy } from "./types.ts";

function overlay<T extends object>(base: T | undefined, top: T | undefined): T {
  const out: Record<string, unknown> = { ...(base ?? {}) };
  for (const [k, v] of Object.entries(top ?? {})) if (v !== undefined) out[k] = v;
  return out as T;
}

export function mergePolicies(clusterWide: InferencePolicy | undefined, forProject: InferencePolicy | undefined): EffectivePolicy {
  const c = clusterWide?.spec ?? {};
  const p = forProject?.spec ?? {};
  const scheduler = overlay(c.scheduler, p.scheduler);
  return {
    enforcement: p.enforcement ?? c.enforcement ?? "enforce",
    scheduler: { ...scheduler, profile: scheduler.profile ?? "default" },
    defaults: overlay(c.defaults, p.defaults),
    rules: overlay(c.rules, p.rules),
    sources: [clusterWide, forProject].filter((x): x is InferencePolicy => !!x).map((x) => x.metadata.name ?? ""),
  };
}
