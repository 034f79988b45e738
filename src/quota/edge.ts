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
import { activeReservations, reservedExtraMilli, type Reservation } from "./reservations.ts";
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

/** Reservations in a Project's status, counted for what the cache does not show yet. */
export function refreshReserved(totals: QuotaTotals, project: Project): void {
  const lookup = ledgerLookup(totals);
  const list = activeReservations(project.status?.reservations as Reservation[] | undefined, new Date());
  totals.setReserved(project.metadata.name ?? "", list.reduce((sum, r) => sum + reservedExtraMilli(r, lookup), 0));
}

export interface QuotaWatches {
  synced(): boolean;
  stop(): Promise<void>;
}

/** Deployments, Pods and Knative Services, all namespaces, into the running totals. */
export function watchQuotaObjects(kc: KubeConfig, totals: QuotaTotals, logger: Logger, onChange: () => void): QuotaWatches {
  const apps = kc.makeApiClient(AppsV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const feed = (kind: ChargedKind) => (event: "ADDED" | "MODIFIED" | "DELETED", obj: any) => {
    totals.apply(event, obj, kind);
    onChange();
  };
  const watches: WatchedResource<any>[] = [
    watchResource<any>({ kc, logger, name: "deployments", path: "/apis/apps/v1/deployments", list: () => apps.listDeploymentForAllNamespaces() as any, onEvent: feed("Deployment") }),
    watchResource<any>({ kc, logger, name: "pods", path: "/api/v1/pods", list: () => core.listPodForAllNamespaces() as any, onEvent: feed("Pod") }),
    watchResource<any>({
      kc,
      logger,
      name: "knative services",
      path: "/apis/serving.knative.dev/v1/services",
      // A cluster without Knative has nothing to charge here; that must not keep the webhook unready.
      list: async () => {
        try {
          return (await custom.listClusterCustomObject({ group: "serving.knative.dev", version: "v1", plural: "services" })) as any;
        } catch (err: any) {
          if (err?.code === 404) return { items: [], metadata: { resourceVersion: "" } };
          throw err;
        }
      },
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
