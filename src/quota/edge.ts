// Where quota meets the cluster: running totals fed by watches, reservations written by CAS after the
// pipeline allowed a request, and the status reconciler. Plugins never see any of this I/O.
import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import type { AdmissionRequest, AdmissionResponse } from "../admission/types.ts";
import { deny } from "../admission/responses.ts";
import type { PolicyStore } from "../policy/store.ts";
import type { Project } from "../policy/types.ts";
import type { Logger } from "../observability/log.ts";
import { watchResource, type WatchedResource } from "../kube/watch.ts";
import { toWorkload } from "../workload/workload.ts";
import { quotaAdmissionOfRequest } from "../../webhooks/quota.ts";
import { quotaDenial } from "./accounting.ts";
import type { QuotaTotals } from "./totals.ts";
import type { QuotaLedger, LedgerLookup, ProjectStatusApi } from "./ledger.ts";
import { activeReservations, type Reservation } from "./reservations.ts";
import type { ChargedKind } from "./view.ts";

export function ledgerLookup(totals: QuotaTotals): LedgerLookup {
  return {
    charge: (key) => {
      const c = totals.chargeByKey(key);
      return c && { milli: c.milli, resourceVersion: c.resourceVersion ?? "" };
    },
    allocatedMilli: (project) => totals.allocatedMilli(project),
  };
}

/** Reservations in a Project's status, counted (at read time) for what the cache does not show yet. */
export function refreshReserved(totals: QuotaTotals, project: Project): void {
  totals.setReservations(project.metadata.name ?? "", activeReservations(project.status?.reservations as Reservation[] | undefined, new Date()));
}

export interface QuotaWatches {
  synced(): boolean;
  stop(): Promise<void>;
}

/**
 * Reduces a watched object, in place, to what the watch cache itself needs: its name, namespace and
 * resourceVersion (to skip unchanged objects and to find deletions on a relist). The running totals
 * keep everything quota needs, so keeping whole Deployments and Pods (managed fields, last-applied
 * configuration, container args and env) would only cost memory: ~5 KB per object, 0.5 GB at 100,000.
 */
export function keepIdentityOnly(object: any): void {
  const metadata = object?.metadata;
  if (!metadata) return;
  object.metadata = { name: metadata.name, namespace: metadata.namespace, resourceVersion: metadata.resourceVersion };
  // Assigned rather than deleted: the object keeps its shape, and stays small.
  object.spec = undefined;
  object.status = undefined;
}

export const LIST_PAGE_SIZE = 500;

interface ListPage {
  items?: any[];
  metadata?: { resourceVersion?: string; _continue?: string; continue?: string };
}

/**
 * The first list (and every relist) in pages, each applied to the totals and reduced before the next
 * is fetched: one unpaged list of 100,000 Deployments would hold them all in memory at once (and
 * client-node's typed copies next to them), gigabytes at the peak. The pages come from one consistent
 * snapshot; the result carries only identities and that snapshot's resourceVersion for the watch.
 */
export async function listInPages(fetchPage: (cont: string | undefined) => Promise<ListPage>, apply: (item: any) => void, applied: WeakSet<object>): Promise<ListPage> {
  const items: any[] = [];
  let resourceVersion = "";
  let cont: string | undefined;
  do {
    const page = await fetchPage(cont);
    for (const item of page.items ?? []) {
      apply(item);
      keepIdentityOnly(item);
      applied.add(item);
      items.push(item);
    }
    resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
    cont = page.metadata?._continue || page.metadata?.continue || undefined;
  } while (cont);
  return { items, metadata: { resourceVersion } };
}

/** Deployments, Pods and Knative Services, all namespaces, into the running totals. */
export function watchQuotaObjects(
  kc: KubeConfig,
  totals: QuotaTotals,
  logger: Logger,
  onChange: () => void,
  /**
   * Sees every Deployment event (and listed item) whole, before the cache reduces it: other readers of
   * Deployments share this watch instead of opening their own.
   */
  onDeployment?: (event: "ADDED" | "MODIFIED" | "DELETED", deployment: any) => void,
): QuotaWatches {
  const apps = kc.makeApiClient(AppsV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  // List items the paged list already applied: the ListWatch hands each to the callback once more.
  const applied = new WeakSet<object>();
  const feed = (kind: ChargedKind) => (event: "ADDED" | "MODIFIED" | "DELETED", obj: any) => {
    if (applied.has(obj)) applied.delete(obj);
    else {
      totals.apply(event, obj, kind);
      if (kind === "Deployment") onDeployment?.(event, obj);
      // client-node's ListWatch caches the very object it hands to this callback.
      keepIdentityOnly(obj);
    }
    onChange();
  };
  const paged = (kind: ChargedKind, fetchPage: (cont: string | undefined) => Promise<ListPage>) => () =>
    listInPages(
      fetchPage,
      (item) => {
        totals.apply("ADDED", item, kind);
        if (kind === "Deployment") onDeployment?.("ADDED", item);
      },
      applied,
    ) as Promise<any>;
  const watches: WatchedResource<any>[] = [
    watchResource<any>({
      kc,
      logger,
      name: "deployments",
      path: "/apis/apps/v1/deployments",
      list: paged("Deployment", (cont) => apps.listDeploymentForAllNamespaces({ limit: LIST_PAGE_SIZE, _continue: cont }) as Promise<ListPage>),
      onEvent: feed("Deployment"),
    }),
    watchResource<any>({
      kc,
      logger,
      name: "pods",
      path: "/api/v1/pods",
      list: paged("Pod", (cont) => core.listPodForAllNamespaces({ limit: LIST_PAGE_SIZE, _continue: cont }) as Promise<ListPage>),
      onEvent: feed("Pod"),
    }),
    watchResource<any>({
      kc,
      logger,
      name: "knative services",
      path: "/apis/serving.knative.dev/v1/services",
      list: paged("KnativeService", async (cont) => {
        try {
          return (await custom.listClusterCustomObject({ group: "serving.knative.dev", version: "v1", plural: "services", limit: LIST_PAGE_SIZE, _continue: cont })) as ListPage;
        } catch (err: any) {
          // A cluster without Knative has nothing to charge here; that must not keep the webhook unready.
          if (err?.code === 404) return { items: [], metadata: { resourceVersion: "" } };
          throw err;
        }
      }),
      onEvent: feed("KnativeService"),
    }),
  ];
  return { synced: () => watches.every((w) => w.synced()), stop: async () => void (await Promise.all(watches.map((w) => w.stop()))) };
}

/**
 * After the pipeline allowed a request: reserve what it needs in the Project's status by
 * compare-and-swap. Returns a denial when fresher numbers no longer fit, nothing otherwise.
 */
export async function reserveAfterAdmission(
  request: AdmissionRequest,
  store: PolicyStore,
  totals: QuotaTotals,
  ledger: QuotaLedger,
): Promise<AdmissionResponse | undefined> {
  if (request.dryRun || (request.operation !== "CREATE" && request.operation !== "UPDATE")) return undefined;
  const resolved = request.namespace ? store.resolve(request.namespace) : undefined;
  if (!resolved) return undefined;
  const admission = quotaAdmissionOfRequest(request, resolved.project, totals);
  if (!admission || admission.need.deltaMilli <= 0) return undefined;
  const outcome = await ledger.reserve({ project: admission.project, ...admission.ledger });
  if (outcome.ok) return undefined;
  const workload = toWorkload(request, request.object)!;
  if (outcome.reason === "QuotaContention") {
    return deny(request.uid, workload, [{ field: admission.need.field, value: admission.need.value, allowed: outcome.message, message: outcome.message, plugin: "quota", reason: "QuotaContention" }]);
  }
  const check = {
    fits: false,
    quotaMilli: outcome.quotaMilli,
    allocatedMilli: outcome.allocatedMilli,
    reservedMilli: outcome.fit.reservedMilli,
    freeMilli: outcome.fit.freeMilli,
  };
  const denial = quotaDenial(admission.project, { ...admission.need, deltaMilli: outcome.fit.neededMilli }, check);
  return deny(request.uid, workload, [
    { field: admission.need.field, value: admission.need.value, allowed: denial.allowed, message: denial.message, details: denial.details, plugin: "quota", reason: "QuotaExceeded" },
  ]);
}

export type { ProjectStatusApi };
