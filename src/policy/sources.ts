// Policy input from files (serve --policy, apply): objects sorted into what the PolicyStore needs.
import { parseManifests } from "./files.ts";
import type { PolicyStore } from "./store.ts";
import type { InferencePolicy, Project } from "./types.ts";
import { parseKnativeFeatures } from "../workload/knative-features.ts";

export interface PolicySources {
  all: any[];
  projects: Project[];
  policies: InferencePolicy[];
  errors: string[];
  /** Loads projects, policies and Knative's config-features (if present) into the store. */
  fill(store: PolicyStore): void;
}

const isKind = (o: any, apiGroup: string, kind: string) => o?.kind === kind && String(o?.apiVersion ?? "").startsWith(apiGroup);

export function loadPolicySources(files: Array<{ name: string; text: string }>): PolicySources {
  const all: any[] = [];
  const errors: string[] = [];
  for (const f of files) {
    const parsed = parseManifests(f.text, f.name);
    all.push(...parsed.objects);
    errors.push(...parsed.errors);
  }
  const projects = all.filter((o) => isKind(o, "infergate.dev/", "Project")) as Project[];
  const policies = all.filter((o) => isKind(o, "infergate.dev/", "InferencePolicy")) as InferencePolicy[];
  const features = all.find((o) => o?.kind === "ConfigMap" && o?.metadata?.name === "config-features" && o?.metadata?.namespace === "knative-serving");
  return {
    all,
    projects,
    policies,
    errors,
    fill(store) {
      for (const p of projects) store.upsertProject(p);
      for (const p of policies) store.upsertPolicy(p);
      if (features) store.setKnativeFeatures(parseKnativeFeatures(features));
    },
  };
}
