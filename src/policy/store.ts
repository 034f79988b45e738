// In-memory view of Projects, InferencePolicies and Knative feature flags. Fed by watches (serve) or by
// files (apply, serve --policy); admissions read it in O(1) and never wait on I/O.
import type { PolicyResolver } from "../admission/pipeline.ts";
import type { EffectivePolicy, InferencePolicy, Project } from "./types.ts";
import { mergePolicies } from "./merge.ts";
import { DEFAULT_KNATIVE_FEATURES, type KnativeFeatures } from "../workload/knative-features.ts";

export interface Resolved {
  project: Project;
  policy: EffectivePolicy;
}

export class PolicyStore implements PolicyResolver {
  private projects = new Map<string, Project>();
  private policies = new Map<string, InferencePolicy>();
  private byNamespace = new Map<string, Resolved>();
  private dirty = true;
  knativeFeatures: KnativeFeatures = DEFAULT_KNATIVE_FEATURES;
  /** Bumped on every change, so callers can tell a policy update happened. */
  generation = 0;
  private projectListeners: Array<(previous: Project | undefined, current: Project | undefined) => void> = [];

  /** Called after each Project change, with the old and new object (undefined for created/deleted). */
  onProjectChange(listener: (previous: Project | undefined, current: Project | undefined) => void): void {
    this.projectListeners.push(listener);
  }

  upsertProject(p: Project): void {
    const name = p.metadata.name ?? "";
    const previous = this.projects.get(name);
    this.projects.set(name, p);
    // Status writes (reservations) are frequent and do not move namespaces: skip the rebuild for them.
    if (!previous || JSON.stringify(previous.spec) !== JSON.stringify(p.spec)) this.touch();
    for (const l of this.projectListeners) l(previous, p);
  }
  deleteProject(name: string): void {
    const previous = this.projects.get(name);
    if (!this.projects.delete(name)) return;
    this.touch();
    for (const l of this.projectListeners) l(previous, undefined);
  }
  upsertPolicy(p: InferencePolicy): void {
    this.policies.set(p.metadata.name ?? "", p);
    this.touch();
  }
  deletePolicy(name: string): void {
    if (this.policies.delete(name)) this.touch();
  }
  setKnativeFeatures(features: KnativeFeatures): void {
    this.knativeFeatures = features;
    this.generation++;
  }
  /** Replaces everything at once, as after a relist. */
  replaceAll(projects: Project[], policies: InferencePolicy[]): void {
    this.projects = new Map(projects.map((p) => [p.metadata.name ?? "", p]));
    this.policies = new Map(policies.map((p) => [p.metadata.name ?? "", p]));
    this.touch();
  }

  listProjects(): Project[] {
    return [...this.projects.values()];
  }
  listPolicies(): InferencePolicy[] {
    return [...this.policies.values()];
  }
  getProject(name: string): Project | undefined {
    return this.projects.get(name);
  }

  resolve(namespace: string): Resolved | undefined {
    if (this.dirty) this.rebuild();
    return this.byNamespace.get(namespace);
  }

  /** The project that owns `namespace`, without computing a policy. */
  projectOf(namespace: string): Project | undefined {
    return this.resolve(namespace)?.project;
  }

  private touch(): void {
    this.dirty = true;
    this.generation++;
  }

  // Rebuilt lazily on the first read after a change: changes are rare, reads are per admission.
  private rebuild(): void {
    const clusterWide = [...this.policies.values()]
      .filter((p) => !p.spec?.projects?.length)
      .sort(byCreation)[0];
    const perProject = new Map<string, InferencePolicy>();
    for (const p of [...this.policies.values()].sort(byCreation)) {
      for (const name of p.spec?.projects ?? []) if (!perProject.has(name)) perProject.set(name, p);
    }
    const byNamespace = new Map<string, Resolved>();
    for (const project of [...this.projects.values()].sort(byCreation)) {
      const name = project.metadata.name ?? "";
      const policy = mergePolicies(clusterWide, perProject.get(name));
      for (const ns of project.spec?.namespaces ?? []) {
        // Overlap is rejected at admission; should one slip through (e.g. created while infergate was
        // down), the older Project keeps the namespace, so ownership never flips back and forth.
        if (!byNamespace.has(ns)) byNamespace.set(ns, { project, policy });
      }
    }
    this.byNamespace = byNamespace;
    this.dirty = false;
  }
}

function byCreation(a: { metadata: { creationTimestamp?: string; name?: string } }, b: typeof a): number {
  const ta = a.metadata.creationTimestamp ?? "";
  const tb = b.metadata.creationTimestamp ?? "";
  return ta === tb ? (a.metadata.name ?? "").localeCompare(b.metadata.name ?? "") : ta < tb ? -1 : 1;
}
