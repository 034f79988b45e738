// The in-memory store every metrics request reads. Sources (the scraper, or the Prometheus poller)
// write into it in the background and the pod watch keeps its view of pods current; a request only
// computes over memory, so an HPA never waits on a pod or on Prometheus.
import type { MetricName, Observation } from "./mapping.ts";
import { matchesSelector, type Requirement } from "./label-selector.ts";
import { PodHistory, combineWindows, evaluate, type PodWindow } from "./windows.ts";

export const RESOURCES = {
  pods: { kind: "Pod", apiVersion: "v1" },
  "deployments.apps": { kind: "Deployment", apiVersion: "apps/v1" },
  "services.serving.knative.dev": { kind: "Service", apiVersion: "serving.knative.dev/v1" },
  "revisions.serving.knative.dev": { kind: "Revision", apiVersion: "serving.knative.dev/v1" },
} as const;
export type ResourceName = keyof typeof RESOURCES;
export const RESOURCE_NAMES = Object.keys(RESOURCES) as ResourceName[];

export function isResourceName(name: string): name is ResourceName {
  return Object.hasOwn(RESOURCES, name);
}

export const KNATIVE_SERVICE_LABEL = "serving.knative.dev/service";
export const KNATIVE_REVISION_LABEL = "serving.knative.dev/revision";

/** The parts of a Pod the adapter reads; a client-node V1Pod or a raw watch object both fit. */
export interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: Array<{ kind?: string; name?: string; controller?: boolean }>;
    deletionTimestamp?: unknown;
  };
  spec?: { containers?: Array<{ ports?: Array<{ containerPort?: number; name?: string }> }> };
  status?: { phase?: string; podIP?: string; conditions?: Array<{ type?: string; status?: string }> };
}

export interface Reading {
  value: number;
  /** ms since the epoch: the newest sample behind the value. */
  timestamp: number;
}

export type Lookup = { ok: true; reading: Reading } | { ok: false; reason: string };

export interface NamedReading extends Reading {
  name: string;
}

export interface Listing {
  items: NamedReading[];
  /** Why nothing matched, when `items` is empty. */
  reason?: string;
}

/** What the HTTP layer needs; MetricCache implements it, tests may fake it. */
export interface MetricReader {
  readonly windowSeconds: number;
  object(namespace: string, resource: ResourceName, name: string, metric: MetricName): Lookup;
  list(namespace: string, resource: ResourceName, metric: MetricName, selector?: readonly Requirement[]): Listing;
}

interface PodRecord {
  namespace: string;
  name: string;
  uid: string;
  labels: Record<string, string>;
  deployment?: string;
  history?: PodHistory;
  /** A window computed elsewhere (the Prometheus source), with the time it was computed. */
  external?: PodWindow;
  /** Why the pod has no fresh data, as the scraper last saw it. */
  problem?: string;
}

export interface MetricCacheOptions {
  windowMs: number;
  now?: () => number;
}

export class MetricCache implements MetricReader {
  readonly windowMs: number;
  private readonly now: () => number;
  private readonly pods = new Map<string, PodRecord>();

  constructor(options: MetricCacheOptions) {
    this.windowMs = options.windowMs;
    this.now = options.now ?? Date.now;
  }

  get windowSeconds(): number {
    return Math.round(this.windowMs / 1000);
  }

  // --- writes: the pod watch --------------------------------------------------------------

  upsertPod(pod: PodLike): void {
    const namespace = pod.metadata?.namespace;
    const name = pod.metadata?.name;
    if (!namespace || !name) return;
    const key = podKey(namespace, name);
    const uid = pod.metadata?.uid ?? "";
    const existing = this.pods.get(key);
    const labels = { ...(pod.metadata?.labels ?? {}) };
    const deployment = deploymentOf(pod);
    // Same name, new uid: a recreated pod (StatefulSet-style); its counters start over.
    if (existing && existing.uid === uid) {
      existing.labels = labels;
      if (deployment === undefined) delete existing.deployment;
      else existing.deployment = deployment;
      return;
    }
    const record: PodRecord = { namespace, name, uid, labels };
    if (deployment !== undefined) record.deployment = deployment;
    this.pods.set(key, record);
  }

  removePod(namespace: string, name: string): void {
    this.pods.delete(podKey(namespace, name));
  }

  /** After a full relist: forget pods that are gone, add or refresh the rest. */
  retainPods(pods: readonly PodLike[]): void {
    const keep = new Set<string>();
    for (const pod of pods) {
      if (!pod.metadata?.namespace || !pod.metadata?.name) continue;
      keep.add(podKey(pod.metadata.namespace, pod.metadata.name));
      this.upsertPod(pod);
    }
    for (const key of [...this.pods.keys()]) if (!keep.has(key)) this.pods.delete(key);
  }

  podCount(): number {
    return this.pods.size;
  }

  // --- writes: the sources ----------------------------------------------------------------

  /** A successful scrape. Ignored for pods the watch does not (or no longer) know. */
  recordObservation(namespace: string, name: string, uid: string | undefined, observation: Observation): void {
    const record = this.pods.get(podKey(namespace, name));
    if (!record || (uid !== undefined && record.uid !== uid)) return;
    record.history ??= new PodHistory();
    record.history.add(observation, this.windowMs);
    delete record.problem;
  }

  /** Why a pod has no fresh data (scrape failed, not ready, no endpoint); shown in 404 messages. */
  recordProblem(namespace: string, name: string, problem: string): void {
    const record = this.pods.get(podKey(namespace, name));
    if (record) record.problem = problem;
  }

  /** The Prometheus source's results, replacing the previous ones; pods not in `windows` lose theirs. */
  replaceExternalWindows(windows: ReadonlyMap<string, PodWindow>): void {
    for (const [key, record] of this.pods) {
      const window = windows.get(key);
      if (window) record.external = window;
      else delete record.external;
    }
  }

  // --- reads ------------------------------------------------------------------------------

  object(namespace: string, resource: ResourceName, name: string, metric: MetricName): Lookup {
    const describe = `${resource} ${namespace}/${name}`;
    if (resource === "pods") {
      const record = this.pods.get(podKey(namespace, name));
      if (!record) return { ok: false, reason: `pod ${namespace}/${name} is not known to the adapter (not running, or not yet seen by its pod watch)` };
      return this.podLookup(record, metric);
    }
    const members = this.membersOf(namespace, resource, name);
    if (members.length === 0) return { ok: false, reason: `${describe} has no pods known to the adapter` };
    return this.groupLookup(members, metric);
  }

  list(namespace: string, resource: ResourceName, metric: MetricName, selector: readonly Requirement[] = []): Listing {
    const inNamespace = [...this.pods.values()].filter((record) => record.namespace === namespace);
    if (resource === "pods") {
      const matching = inNamespace.filter((record) => matchesSelector(selector, record.labels));
      if (matching.length === 0) return { items: [], reason: `no pods in namespace ${namespace} match the selector` };
      const items: NamedReading[] = [];
      const reasons: string[] = [];
      for (const record of matching.sort(byName)) {
        const lookup = this.podLookup(record, metric);
        if (lookup.ok) items.push({ name: record.name, ...lookup.reading });
        else reasons.push(lookup.reason);
      }
      return items.length > 0 ? { items } : { items, reason: summarize(matching.length, reasons) };
    }
    // Deployments and Knative objects are known through their pods; their own labels are not watched.
    const names = new Set(inNamespace.map((record) => ownerName(record, resource)).filter((name): name is string => name !== undefined));
    const items: NamedReading[] = [];
    const reasons: string[] = [];
    for (const name of [...names].sort()) {
      const lookup = this.groupLookup(this.membersOf(namespace, resource, name), metric);
      if (lookup.ok) items.push({ name, ...lookup.reading });
      else reasons.push(`${name}: ${lookup.reason}`);
    }
    if (items.length > 0) return { items };
    return { items, reason: names.size === 0 ? `no pods in namespace ${namespace} belong to any of the ${resource}` : reasons.slice(0, 3).join("; ") };
  }

  /** The window of one pod, for tests and diagnostics. */
  podWindow(namespace: string, name: string): PodWindow | undefined {
    const record = this.pods.get(podKey(namespace, name));
    return record ? this.windowOf(record) : undefined;
  }

  private windowOf(record: PodRecord): PodWindow | undefined {
    const now = this.now();
    if (record.external) return now - record.external.timestamp <= this.windowMs ? record.external : undefined;
    return record.history?.window(now, this.windowMs);
  }

  private podLookup(record: PodRecord, metric: MetricName): Lookup {
    const window = this.windowOf(record);
    const pod = `pod ${record.namespace}/${record.name}`;
    if (!window) {
      const why = record.problem ?? `no metrics collected in the last ${this.windowSeconds}s`;
      return { ok: false, reason: `${pod}: ${why}` };
    }
    const evaluation = evaluate(window, metric);
    if (!evaluation.ok) return { ok: false, reason: `${pod}: ${evaluation.reason}` };
    return { ok: true, reading: { value: evaluation.value, timestamp: window.timestamp } };
  }

  private groupLookup(members: PodRecord[], metric: MetricName): Lookup {
    const windows: PodWindow[] = [];
    const reasons: string[] = [];
    for (const record of members.sort(byName)) {
      const window = this.windowOf(record);
      if (window) windows.push(window);
      else reasons.push(`pod ${record.namespace}/${record.name}: ${record.problem ?? `no metrics collected in the last ${this.windowSeconds}s`}`);
    }
    const combined = combineWindows(windows);
    if (!combined) return { ok: false, reason: summarize(members.length, reasons) };
    const evaluation = evaluate(combined, metric);
    if (!evaluation.ok) return { ok: false, reason: `its pods: ${evaluation.reason}` };
    return { ok: true, reading: { value: evaluation.value, timestamp: combined.timestamp } };
  }

  private membersOf(namespace: string, resource: ResourceName, name: string): PodRecord[] {
    return [...this.pods.values()].filter((record) => record.namespace === namespace && ownerName(record, resource) === name);
  }
}

export function podKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/**
 * The Deployment behind a pod, without watching ReplicaSets: a Deployment names its ReplicaSets
 * `<deployment>-<pod-template-hash>` and stamps that hash on their pods.
 */
export function deploymentOf(pod: PodLike): string | undefined {
  const owner = pod.metadata?.ownerReferences?.find((reference) => reference.controller !== false && reference.kind === "ReplicaSet");
  const hash = pod.metadata?.labels?.["pod-template-hash"];
  if (!owner?.name || !hash) return undefined;
  const suffix = `-${hash}`;
  return owner.name.endsWith(suffix) && owner.name.length > suffix.length ? owner.name.slice(0, -suffix.length) : undefined;
}

function ownerName(record: PodRecord, resource: ResourceName): string | undefined {
  switch (resource) {
    case "pods":
      return record.name;
    case "deployments.apps":
      return record.deployment;
    case "services.serving.knative.dev":
      return record.labels[KNATIVE_SERVICE_LABEL];
    case "revisions.serving.knative.dev":
      return record.labels[KNATIVE_REVISION_LABEL];
  }
}

function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function summarize(podCount: number, reasons: string[]): string {
  const shown = reasons.slice(0, 3).join("; ");
  const more = reasons.length > 3 ? `; and ${reasons.length - 3} more` : "";
  return `none of the ${podCount} pod(s) has a value: ${shown}${more}`;
}
