// Knative Serving's `config-features` flags that decide which PodSpec fields a Knative Service may carry.
// Anything other than "disabled" lets the field through (knative/serving pkg/apis/serving/fieldmask.go).

export type PodSpecFeatureField =
  | "affinity"
  | "tolerations"
  | "nodeSelector"
  | "priorityClassName"
  | "schedulerName"
  | "runtimeClassName";

export const FEATURE_FLAG_OF: Record<PodSpecFeatureField, string> = {
  affinity: "kubernetes.podspec-affinity",
  tolerations: "kubernetes.podspec-tolerations",
  nodeSelector: "kubernetes.podspec-nodeselector",
  priorityClassName: "kubernetes.podspec-priorityclassname",
  schedulerName: "kubernetes.podspec-schedulername",
  runtimeClassName: "kubernetes.podspec-runtimeclassname",
};

export type FeatureState = "enabled" | "allowed" | "disabled";

export interface KnativeFeatures {
  /** Flag name → state, exactly as in the ConfigMap. Missing flags take Knative's default ("disabled"). */
  flags: Record<string, FeatureState>;
}

/** Knative's shipped defaults: every PodSpec flag above is disabled. */
export const DEFAULT_KNATIVE_FEATURES: KnativeFeatures = { flags: {} };

export function knativeAllows(features: KnativeFeatures, field: PodSpecFeatureField): boolean {
  const state = features.flags[FEATURE_FLAG_OF[field]] ?? "disabled";
  return state !== "disabled";
}

/** Reads `knative-serving/config-features`. Unknown values count as "disabled", as Knative's own parser falls back. */
export function parseKnativeFeatures(configMap: { data?: Record<string, string> } | undefined): KnativeFeatures {
  const flags: Record<string, FeatureState> = {};
  for (const [key, raw] of Object.entries(configMap?.data ?? {})) {
    const value = String(raw).trim().toLowerCase();
    if (value === "enabled" || value === "allowed" || value === "disabled") flags[key] = value;
  }
  return { flags };
}
