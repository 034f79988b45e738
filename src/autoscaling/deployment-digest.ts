// The Deployments the HPA reconciler plans from, fed by the quota watch's Deployment events: one
// Deployment watch per process instead of two. Every event of every Deployment was parsed twice before,
// and the API server wrote it to two streams (BENCHMARKS.md, "End-to-end create latency"). Each entry
// keeps only what planning reads, so the leader no longer holds every whole Deployment in memory.
import { isInferenceWorkload } from "../workload/gpu.ts";
import type { Workload } from "../workload/workload.ts";

export interface DeploymentSource {
  /** Every Deployment, reduced to what HPA planning reads. */
  list(): readonly any[];
  /** True once the Deployments' first list has been applied. */
  synced(): boolean;
  /** `changed` runs after every applied event; returns the unsubscribe. */
  subscribe(changed: () => void): () => void;
}

// kubectl's copy of the whole object: the largest annotation by far, and never read here.
const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

function withoutLastApplied(annotations: unknown): Record<string, string> | undefined {
  if (typeof annotations !== "object" || annotations === null) return undefined;
  if (!(LAST_APPLIED in annotations)) return annotations as Record<string, string>;
  const { [LAST_APPLIED]: _dropped, ...rest } = annotations as Record<string, string>;
  return rest;
}

const containerResources = (containers: unknown) =>
  Array.isArray(containers)
    ? containers.map((c: any) => ({ name: c?.name, resources: c?.resources, ...(c?.restartPolicy !== undefined ? { restartPolicy: c.restartPolicy } : {}) }))
    : undefined;

/**
 * What decideAutoscaling and planHpas read of a Deployment: its identity, owners, annotations and labels,
 * and, for an inference workload, the template's metadata and container resources. A Deployment that is
 * no inference workload keeps its identity only: planning then decides "off" for it, as for the whole
 * object, which is what removes an HPA infergate made while it still was one.
 */
export function digestDeployment(deployment: any): any {
  const m = deployment?.metadata ?? {};
  const identity = { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion, deletionTimestamp: m.deletionTimestamp };
  const asWorkload: Workload = { kind: "Deployment", role: "deployment", namespace: m.namespace ?? "", name: m.name ?? "", object: deployment, templatePath: "spec.template" };
  let inference = false;
  try {
    inference = isInferenceWorkload(asWorkload);
  } catch {
    // A shape the API server stored but infergate cannot read is no workload it autoscales.
  }
  if (!inference) return { metadata: identity };
  const template = deployment?.spec?.template;
  return {
    metadata: { ...identity, labels: m.labels, annotations: withoutLastApplied(m.annotations), ownerReferences: m.ownerReferences },
    spec: {
      replicas: deployment?.spec?.replicas,
      template: {
        metadata: { labels: template?.metadata?.labels, annotations: template?.metadata?.annotations },
        spec: { containers: containerResources(template?.spec?.containers), initContainers: containerResources(template?.spec?.initContainers) },
      },
    },
  };
}

/** The digests by namespace/name, kept from watch events; `synced` is the feeding watch's. */
export class DeploymentDigest implements DeploymentSource {
  readonly #byKey = new Map<string, any>();
  readonly #listeners = new Set<() => void>();
  readonly #synced: () => boolean;

  constructor(synced: () => boolean) {
    this.#synced = synced;
  }

  apply(event: "ADDED" | "MODIFIED" | "DELETED", deployment: any): void {
    const key = `${deployment?.metadata?.namespace ?? ""}/${deployment?.metadata?.name ?? ""}`;
    if (event === "DELETED") this.#byKey.delete(key);
    else this.#byKey.set(key, digestDeployment(deployment));
    for (const changed of this.#listeners) changed();
  }

  list(): readonly any[] {
    return [...this.#byKey.values()];
  }

  synced(): boolean {
    return this.#synced();
  }

  subscribe(changed: () => void): () => void {
    this.#listeners.add(changed);
    return () => void this.#listeners.delete(changed);
  }
}
