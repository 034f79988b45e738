// Policy input from files (serve --policy, apply): objects sorted into what the PolicyStore needs.
import { loadPolicyFiles, parseManifests } from "./files.ts";
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

const isKind = (o: any, kind: string) => o?.kind === kind && String(o?.apiVersion ?? "").startsWith("infergate.dev/");

function sources(all: any[], projects: Project[], policies: InferencePolicy[], errors: string[]): PolicySources {
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

/** Policy files an admin wrote: every Project and InferencePolicy is validated as the webhook would. */
export function loadPolicyInput(paths: readonly string[]): PolicySources {
  const files = loadPolicyFiles(paths);
  return sources([...files.projects, ...files.policies, ...files.configMaps, ...files.others], files.projects, files.policies, files.errors);
}

/**
 * Objects as they are (a resource to admit, or `kubectl get -o yaml` output of a cluster): parsed but not
 * validated, since the API server already accepted them.
 */
export function loadObjects(file: { name: string; text: string }): PolicySources {
  const parsed = parseManifests(file.text, file.name);
  const all = parsed.objects;
  return sources(all, all.filter((o) => isKind(o, "Project")), all.filter((o) => isKind(o, "InferencePolicy")), parsed.errors);
}
