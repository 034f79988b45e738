// Keeps the HPAs of autoscaled GPU Deployments (hpa.ts decides which) in the cluster, on the leader
// only: two replicas writing the same HPA would only trade conflicts. Watches start on the first
// round as leader, so a standby replica pays nothing for them. Scale-ups the HPA then makes go through
// `deployments/scale`, where infergate's quota check admits or denies them like any other.
import { AppsV1Api, AutoscalingV2Api, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../observability/log.ts";
import { applyManagedPlan, errorCode, type ManagedKind, type ManagedObjectApi } from "../kube/managed-objects.ts";
import { startReconcileLoop, type ClusterReconcilerOptions } from "../kube/reconcile-loop.ts";
import { watchResource, type WatchedResource } from "../kube/watch.ts";
import type { DeploymentSource } from "./deployment-digest.ts";
import { describeProblems, isManaged, mergedHpa, planHpas, upToDate, type HorizontalPodAutoscaler, type HpaPlan, type NamespaceResolver } from "./hpa.ts";

/** The few calls the reconciler makes; an interface so the write path is testable without a cluster. */
export type HpaApi = ManagedObjectApi<HorizontalPodAutoscaler>;

export function kubeHpaApi(kc: KubeConfig): HpaApi {
  const api = kc.makeApiClient(AutoscalingV2Api);
  return {
    async create(hpa) {
      await api.createNamespacedHorizontalPodAutoscaler({ namespace: hpa.metadata.namespace, body: hpa as any });
    },
    async replace(hpa) {
      await api.replaceNamespacedHorizontalPodAutoscaler({ namespace: hpa.metadata.namespace, name: hpa.metadata.name, body: hpa as any });
    },
    async get(namespace, name) {
      try {
        return (await api.readNamespacedHorizontalPodAutoscaler({ namespace, name })) as unknown as HorizontalPodAutoscaler;
      } catch (err) {
        if (errorCode(err) === 404) return undefined;
        throw err;
      }
    },
    async remove(hpa) {
      await api.deleteNamespacedHorizontalPodAutoscaler({ namespace: hpa.metadata.namespace, name: hpa.metadata.name, body: { preconditions: { uid: hpa.metadata.uid } } });
    },
  };
}

const nameOf = (hpa: HorizontalPodAutoscaler) => `${hpa.metadata.namespace}/${hpa.metadata.name}`;

const HPA: ManagedKind<HorizontalPodAutoscaler> = {
  noun: "hpa",
  identify: (hpa) => ({ hpa: nameOf(hpa) }),
  describe(hpa) {
    const metric = hpa.spec.metrics?.[0]?.pods;
    return { hpa: nameOf(hpa), metric: metric?.metric?.name, target: metric?.target?.averageValue, minReplicas: hpa.spec.minReplicas, maxReplicas: hpa.spec.maxReplicas };
  },
  merged: mergedHpa,
  isManaged,
  upToDate,
};

/** Writes a plan. Errors are logged and left to the next round, which starts from fresher caches. */
export function applyHpaPlan(plan: HpaPlan, api: HpaApi, logger: Logger): Promise<void> {
  return applyManagedPlan(plan, api, HPA, logger);
}

export interface HpaReconcilerOptions extends ClusterReconcilerOptions {
  /** Overrides the API client (tests). */
  api?: HpaApi;
  /** Deployments from a watch the process already runs (serve: the quota watch); else one of its own. */
  deployments?: DeploymentSource;
}

export function startHpaReconciler(opts: HpaReconcilerOptions): { stop(): Promise<void> } {
  const { kc, store, logger } = opts;
  const apps = kc.makeApiClient(AppsV1Api);
  const autoscaling = kc.makeApiClient(AutoscalingV2Api);
  const api = opts.api ?? kubeHpaApi(kc);

  let deployments: Pick<DeploymentSource, "list" | "synced"> | undefined;
  let ownDeployments: WatchedResource<any> | undefined;
  let unsubscribe: (() => void) | undefined;
  let hpas: WatchedResource<any> | undefined;
  // Log a Deployment's unusable settings (or its foreign HPA) when that changes, not every round.
  const reported = new Map<string, string>();

  const report = (plan: HpaPlan) => {
    const now = new Map<string, string>();
    for (const { deployment, problems } of plan.problems) now.set(deployment, `settings ignored, HPA left as it is: ${describeProblems(problems)}`);
    for (const { deployment, hpa } of plan.foreign) now.set(deployment, `HPA ${hpa} is not managed by infergate: infergate does not autoscale this Deployment`);
    for (const [deployment, text] of now) {
      if (reported.get(deployment) !== text) logger.log("warn", "deployment autoscaling", { deployment, problem: text });
    }
    reported.clear();
    for (const [deployment, text] of now) reported.set(deployment, text);
  };

  return startReconcileLoop({
    ...opts,
    name: "hpa",
    prepare(changed) {
      if (!deployments && opts.deployments) {
        unsubscribe = opts.deployments.subscribe(changed);
        deployments = opts.deployments;
      }
      deployments ??= ownDeployments = watchResource<any>({
        kc,
        logger,
        name: "deployments (hpa)",
        path: "/apis/apps/v1/deployments",
        list: () => apps.listDeploymentForAllNamespaces() as any,
        onEvent: changed,
      });
      hpas ??= watchResource<any>({
        kc,
        logger,
        name: "horizontalpodautoscalers",
        path: "/apis/autoscaling/v2/horizontalpodautoscalers",
        list: () => autoscaling.listHorizontalPodAutoscalerForAllNamespaces() as any,
        onEvent: changed,
      });
      return deployments.synced() && hpas.synced() ? { deployments, hpas } : undefined;
    },
    async reconcile(caches) {
      const resolveNamespace: NamespaceResolver = (ns) => store.resolve(ns);
      const plan = planHpas({ deployments: caches.deployments.list(), hpas: caches.hpas.list() as HorizontalPodAutoscaler[], resolveNamespace });
      report(plan);
      await applyHpaPlan(plan, api, logger);
    },
    close: () => {
      unsubscribe?.();
      return Promise.all([ownDeployments?.stop(), hpas?.stop()]);
    },
  });
}
