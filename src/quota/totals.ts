// Per-project GPU usage as running sums, kept current by watch events in O(1) each, so that an
// admission reads usage in O(1) and nothing ever rescans the cluster on the request path.
//
// What is charged (PRODUCT.md §5):
// - every Deployment with GPUs, Knative revision Deployments included: spec.replicas × GPUs per pod,
//   plus maxSurge pods while its status shows a rollout in progress;
// - a Knative Service for its newest revision until that revision carries its own GPUs (see
//   knativeServiceMilli): in full before the revision exists (just admitted, template changed, or read
//   from a file without revisions), then what the revision has not reached yet, then nothing once ready.
//   Older revisions keep their own charge until they scale down. No GPU is counted twice;
// - pods that no Deployment or Knative revision covers (bare pods, pods of other controllers), while
//   they have not finished.
import type { Project } from "../policy/types.ts";
import type { GpuRequest } from "../workload/gpu.ts";
import { readGpuRequest } from "../workload/gpu.ts";
import {
  chargedKindOf,
  deploymentChargePods,
  gpusPerPodMilli,
  knativeHandover,
  knativeInitialScale,
  knativeRevisionOf,
  knativeServiceMilli,
  knativeServiceOf,
  memoryPerDeviceOf,
  milliToGpus,
  podCoverage,
  podTerminated,
  workloadOfObject,
  type KnativeHandover,
} from "./accounting.ts";
import { reservedExtraMilli, type ChargeLookup, type Reservation } from "./reservations.ts";
import { chargeKey, type ChargedKind, type ObjectCharge, type ProjectUsage, type QuotaView } from "./view.ts";

export type WatchEvent = "ADDED" | "MODIFIED" | "DELETED";

/** The project owning a namespace, e.g. PolicyStore.projectOf. */
export type ProjectResolver = (namespace: string) => Project | undefined;

interface Entry extends ObjectCharge {
  /** Kept so that a project or memory-per-device change can re-derive the charge without the object. */
  request: GpuRequest;
  /** Knative Services only. */
  handover?: KnativeHandover;
}

interface Sum {
  milli: number;
  workloads: number;
}

/** One revision Deployment as its Service sees it. */
interface RevisionLink {
  service: string;
  revision: string;
}

interface LinkedDeployment extends RevisionLink {
  /** The Deployment's charge when linked, so unlinking takes back exactly what linking added. */
  milli: number;
}

/** A Knative Service's revision Deployments: how many, and per revision how many and their GPUs. */
interface ServiceRevisions {
  count: number;
  byRevision: Map<string, { count: number; milli: number }>;
}

/** The Service key and revision of a Knative revision Deployment, or undefined for any other Deployment. */
function revisionLinkOf(namespace: string, deployment: any): RevisionLink | undefined {
  const service = knativeServiceOf(deployment);
  if (!service || workloadOfObject("Deployment", deployment)?.role !== "knative-deployment") return undefined;
  return { service: chargeKey("KnativeService", namespace, service), revision: knativeRevisionOf(deployment) ?? "" };
}

export class QuotaTotals implements QuotaView {
  private readonly projectOf: ProjectResolver;
  /** Charged objects by chargeKey; only objects whose pods hold GPUs. */
  private readonly entries = new Map<string, Entry>();
  private readonly sums = new Map<string, Sum>();
  private readonly reserved = new Map<string, number>();
  /**
   * Each project's reservations as its status lists them. What they add is worked out at read time:
   * an object the cache shows since the status was read must not be counted twice in the meantime.
   */
  private readonly reservations = new Map<string, readonly Reservation[]>();
  private readonly lookup: ChargeLookup = {
    charge: (key) => {
      const entry = this.entries.get(key);
      return entry && { milli: entry.milli, resourceVersion: entry.resourceVersion ?? "" };
    },
  };
  /** Every Knative revision Deployment, with GPUs or not, so a Service knows when its revision exists. */
  private readonly links = new Map<string, LinkedDeployment>();
  private readonly revisions = new Map<string, ServiceRevisions>();

  constructor(projectOf: ProjectResolver) {
    this.projectOf = projectOf;
  }

  usage(project: string): ProjectUsage {
    const sum = this.sums.get(project);
    return {
      allocated: milliToGpus(sum?.milli ?? 0),
      reserved: milliToGpus(this.reservedMilli(project)),
      workloads: sum?.workloads ?? 0,
    };
  }

  allocatedMilli(project: string): number {
    return this.sums.get(project)?.milli ?? 0;
  }

  charge(kind: ChargedKind, namespace: string, name: string): ObjectCharge | undefined {
    return this.entries.get(chargeKey(kind, namespace, name));
  }

  /** The same lookup by `chargeKey`, the form a reservation ledger stores. */
  chargeByKey(key: string): ObjectCharge | undefined {
    return this.entries.get(key);
  }

  /** A fixed reserved figure in milli-GPUs, added to what the project's reservations hold (tools, tests). */
  setReserved(project: string, milli: number): void {
    if (milli > 0) this.reserved.set(project, milli);
    else this.reserved.delete(project);
  }

  /** The project's open reservations, from its status; expired ones stop counting on their own. */
  setReservations(project: string, list: readonly Reservation[]): void {
    if (list.length > 0) this.reservations.set(project, list);
    else this.reservations.delete(project);
  }

  /** Reserved GPUs the cache does not show yet, in milli-GPUs; O(open reservations of the project). */
  reservedMilli(project: string, now: number = Date.now()): number {
    let milli = this.reserved.get(project) ?? 0;
    for (const r of this.reservations.get(project) ?? []) {
      if (Date.parse(r.expiresAt) > now) milli += reservedExtraMilli(r, this.lookup);
    }
    return milli;
  }

  /**
   * One watch event. `kind` defaults to the object's own kind (list items from the API carry none, so
   * informers pass it). Objects of other kinds are ignored. ADDED and MODIFIED both replace the
   * object's charge; DELETED removes it, whatever the final object says.
   */
  apply(event: WatchEvent, object: any, kind: ChargedKind | undefined = chargedKindOf(object)): void {
    if (!kind) return;
    const namespace: string = object?.metadata?.namespace ?? "";
    const name: string = object?.metadata?.name ?? "";
    if (!name) return;
    const key = chargeKey(kind, namespace, name);

    const previous = this.entries.get(key);
    if (previous) {
      this.add(previous, -1);
      this.entries.delete(key);
    }
    const entry = event === "DELETED" ? undefined : this.build(kind, namespace, name, object);
    if (entry) {
      this.entries.set(key, entry);
      this.add(entry, 1);
    }
    if (kind === "Deployment") {
      this.unlink(key);
      const link = event === "DELETED" ? undefined : revisionLinkOf(namespace, object);
      if (link) this.link(key, link, entry?.milli ?? 0);
    }
  }

  /** Replaces every object of one kind, as after a relist. Rare; rescans that kind. */
  replace(kind: ChargedKind, objects: readonly any[]): void {
    for (const entry of [...this.entries.values()]) {
      if (entry.kind === kind) this.apply("DELETED", { metadata: { namespace: entry.namespace, name: entry.name } }, kind);
    }
    if (kind === "Deployment") for (const key of [...this.links.keys()]) this.unlink(key);
    for (const object of objects) this.apply("ADDED", object, kind);
  }

  /**
   * Re-derives every charge's project and GPUs per pod after Projects changed (namespaces moved,
   * memory per device changed). Rare, so it may rescan.
   */
  recomputeProjects(): void {
    this.sums.clear();
    for (const entry of this.entries.values()) {
      const project = this.projectOf(entry.namespace);
      entry.project = project?.metadata?.name;
      entry.gpusPerPodMilli = gpusPerPodMilli(entry.request, memoryPerDeviceOf(project));
      if (entry.kind !== "KnativeService") entry.milli = entry.pods * entry.gpusPerPodMilli;
    }
    for (const revisions of this.revisions.values()) for (const r of revisions.byRevision.values()) r.milli = 0;
    for (const [key, link] of this.links) {
      link.milli = this.entries.get(key)?.milli ?? 0;
      const r = this.revisions.get(link.service)?.byRevision.get(link.revision);
      if (r) r.milli += link.milli;
    }
    for (const entry of this.entries.values()) {
      if (entry.kind === "KnativeService") entry.milli = this.serviceMilli(entry);
      this.add(entry, 1);
    }
  }

  /** Every cached charge, for status reporting and tests. */
  list(): ObjectCharge[] {
    return [...this.entries.values()];
  }

  private build(kind: ChargedKind, namespace: string, name: string, object: any): Entry | undefined {
    const workload = workloadOfObject(kind, object);
    const request = workload ? readGpuRequest(workload) : undefined;
    if (!workload || !request) return undefined;
    const project = this.projectOf(namespace);
    const gpp = gpusPerPodMilli(request, memoryPerDeviceOf(project));
    if (gpp <= 0) return undefined;
    const resourceVersion: string | undefined = object?.metadata?.resourceVersion;
    const base = { kind, namespace, name, project: project?.metadata?.name, request, gpusPerPodMilli: gpp, ...(resourceVersion ? { resourceVersion } : {}) };

    switch (kind) {
      case "Deployment": {
        const { replicas, pods, rollingOut } = deploymentChargePods(object);
        const link = workload.role === "knative-deployment" ? revisionLinkOf(namespace, object) : undefined;
        const knative = link ? { knativeService: knativeServiceOf(object), revision: link.revision } : {};
        return { ...base, replicas, pods, rollingOut, milli: pods * gpp, ...knative };
      }
      case "Pod": {
        if (podTerminated(object) || podCoverage(object).covered) return undefined;
        return { ...base, replicas: 1, pods: 1, milli: gpp };
      }
      case "KnativeService": {
        const pods = knativeInitialScale(object);
        const handover = knativeHandover(object);
        const entry: Entry = { ...base, replicas: pods, pods, milli: 0, handover };
        if (handover.state === "created") entry.revision = handover.revision;
        entry.milli = this.serviceMilli(entry);
        return entry;
      }
    }
  }

  private serviceMilli(entry: Entry): number {
    const revisions = this.revisions.get(chargeKey(entry.kind, entry.namespace, entry.name));
    return knativeServiceMilli(entry.pods * entry.gpusPerPodMilli, entry.handover ?? { state: "unknown" }, {
      any: (revisions?.count ?? 0) > 0,
      has: (revision) => (revisions?.byRevision.get(revision)?.count ?? 0) > 0,
      milli: (revision) => revisions?.byRevision.get(revision)?.milli ?? 0,
    });
  }

  private add(entry: Entry, sign: 1 | -1): void {
    if (!entry.project || entry.milli <= 0) return;
    const sum = this.sums.get(entry.project) ?? { milli: 0, workloads: 0 };
    sum.milli += sign * entry.milli;
    sum.workloads += sign;
    if (sum.workloads === 0 && sum.milli === 0) this.sums.delete(entry.project);
    else this.sums.set(entry.project, sum);
  }

  private link(deploymentKey: string, link: RevisionLink, milli: number): void {
    this.links.set(deploymentKey, { ...link, milli });
    const revisions = this.revisions.get(link.service) ?? { count: 0, byRevision: new Map() };
    const r = revisions.byRevision.get(link.revision) ?? { count: 0, milli: 0 };
    r.count += 1;
    r.milli += milli;
    revisions.byRevision.set(link.revision, r);
    revisions.count += 1;
    this.revisions.set(link.service, revisions);
    this.refreshService(link.service);
  }

  private unlink(deploymentKey: string): void {
    const link = this.links.get(deploymentKey);
    if (!link) return;
    this.links.delete(deploymentKey);
    const revisions = this.revisions.get(link.service);
    const r = revisions?.byRevision.get(link.revision);
    if (revisions && r) {
      r.count -= 1;
      r.milli -= link.milli;
      if (r.count === 0) revisions.byRevision.delete(link.revision);
      revisions.count -= 1;
      if (revisions.count === 0) this.revisions.delete(link.service);
    }
    this.refreshService(link.service);
  }

  /** A Service's own charge follows its revisions: re-derive it, in O(1). */
  private refreshService(serviceKey: string): void {
    const service = this.entries.get(serviceKey);
    if (!service) return;
    this.add(service, -1);
    service.milli = this.serviceMilli(service);
    this.add(service, 1);
  }
}

/** Usage from a list of objects, as `infergate apply --cluster FILE` reads them; other kinds are skipped. */
export function quotaTotalsOf(objects: readonly any[], projectOf: ProjectResolver): QuotaTotals {
  const totals = new QuotaTotals(projectOf);
  for (const object of objects) totals.apply("ADDED", object);
  return totals;
}
