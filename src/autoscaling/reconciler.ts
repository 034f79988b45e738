// Keeps the HPAs of autoscaled GPU Deployments (hpa.ts decides which) in the cluster, on the leader
// only: two replicas writing the same HPA would only trade conflicts. Watches start on the first
// round as leader, so a standby replica pays nothing for them. Scale-ups the HPA then makes go through
// `deployments/scale`, where infergate's quota check admits or denies them like any other.
import { AppsV1Api, AutoscalingV2Api, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../observability/log.ts";
import type { PolicyStore } from "../policy/store.ts";
import { watchResource, type WatchedResource } from "../kube/watch.ts";
import { describeProblems, isManaged, mergedHpa, planHpas, upToDate, type HorizontalPodAutoscaler, type HpaPlan, type NamespaceResolver } from "./hpa.ts";

/** The few calls the reconciler makes; an interface so the write path is testable without a cluster. */
export interface HpaApi {
  create(hpa: HorizontalPodAutoscaler): Promise<void>;
  replace(hpa: HorizontalPodAutoscaler): Promise<void>;
  get(namespace: string, name: string): Promise<HorizontalPodAutoscaler | undefined>;
  /** Deletes this HPA, and not a newer one of the same name (UID precondition). */
  remove(hpa: HorizontalPodAutoscaler): Promise<void>;
}

function errorCode(err: any): number | undefined {
  return typeof err?.code === "number" ? err.code : typeof err?.statusCode === "number" ? err.statusCode : undefined;
}

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

const CONFLICT_ATTEMPTS = 3;

const nameOf = (hpa: HorizontalPodAutoscaler) => `${hpa.metadata.namespace}/${hpa.metadata.name}`;

function summary(hpa: HorizontalPodAutoscaler) {
  const metric = hpa.spec.metrics?.[0]?.pods;
  return { hpa: nameOf(hpa), metric: metric?.metric?.name, target: metric?.target?.averageValue, minReplicas: hpa.spec.minReplicas, maxReplicas: hpa.spec.maxReplicas };
}

/** Writes a plan. Errors are logged and left to the next round, which starts from fresher caches. */
export async function applyHpaPlan(plan: HpaPlan, api: HpaApi, logger: Logger): Promise<void> {
  const fail = (action: string, hpa: HorizontalPodAutoscaler, err: unknown) =>
    logger.log("warn", `hpa ${action} failed`, { hpa: nameOf(hpa), error: String((err as any)?.message ?? err) });

  for (const hpa of plan.create) {
    try {
      await api.create(hpa);
      logger.log("info", "hpa created", summary(hpa));
    } catch (err) {
      // 409: made meanwhile (by us a moment ago, or by someone else); the watch will tell whose it is.
      if (errorCode(err) !== 409) fail("create", hpa, err);
    }
  }

  for (const { observed, desired } of plan.update) {
    let current: HorizontalPodAutoscaler | undefined = observed;
    for (let attempt = 1; current && attempt <= CONFLICT_ATTEMPTS; attempt++) {
      try {
        await api.replace(mergedHpa(current, desired));
        logger.log("info", "hpa updated", summary(desired));
        break;
      } catch (err) {
        if (errorCode(err) !== 409 || attempt === CONFLICT_ATTEMPTS) {
          if (errorCode(err) !== 404) fail("update", desired, err);
          break;
        }
        try {
          current = await api.get(desired.metadata.namespace, desired.metadata.name);
        } catch (getErr) {
          fail("update", desired, getErr);
          break;
        }
        // Gone, taken over, or already right: nothing left to write.
        if (current && (!isManaged(current) || upToDate(current, desired))) current = undefined;
      }
    }
  }

  for (const hpa of plan.delete) {
    try {
      await api.remove(hpa);
      logger.log("info", "hpa deleted", { hpa: nameOf(hpa) });
    } catch (err) {
      // 404: garbage collection was quicker; 409: a newer HPA of that name, not this one.
      const code = errorCode(err);
      if (code !== 404 && code !== 409) fail("delete", hpa, err);
    }
  }
}

export interface HpaReconcilerOptions {
  kc: KubeConfig;
  store: PolicyStore;
  logger: Logger;
  isLeader: () => boolean;
  /**
   * True once the policy store holds every Project and InferencePolicy (pass the policy watches'
   * `synced`). Until then a namespace may look like it left its Project, and its HPAs unwanted.
   */
  ready?: () => boolean;
  /** A full comparison runs at least this often, besides after every watched change. */
  resyncEveryMs?: number;
  /** Overrides the API client (tests). */
  api?: HpaApi;
}

const TICK_MS = 1_000;

export function startHpaReconciler(opts: HpaReconcilerOptions): { stop(): Promise<void> } {
  const { kc, store, logger } = opts;
  const apps = kc.makeApiClient(AppsV1Api);
  const autoscaling = kc.makeApiClient(AutoscalingV2Api);
  const api = opts.api ?? kubeHpaApi(kc);
  const ready = opts.ready ?? (() => true);
  const resyncEveryMs = opts.resyncEveryMs ?? 30_000;

  let deployments: WatchedResource<any> | undefined;
  let hpas: WatchedResource<any> | undefined;
  let dirty = true;
  let lastRun = 0;
  let generation = -1;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;
  // Log a Deployment's unusable settings (or its foreign HPA) when that changes, not every round.
  const reported = new Map<string, string>();
  const markDirty = () => {
    dirty = true;
  };

  const startWatches = () => {
    deployments ??= watchResource<any>({
      kc,
      logger,
      name: "deployments (hpa)",
      path: "/apis/apps/v1/deployments",
      list: () => apps.listDeploymentForAllNamespaces() as any,
      onEvent: markDirty,
    });
    hpas ??= watchResource<any>({
      kc,
      logger,
      name: "horizontalpodautoscalers",
      path: "/apis/autoscaling/v2/horizontalpodautoscalers",
      list: () => autoscaling.listHorizontalPodAutoscalerForAllNamespaces() as any,
      onEvent: markDirty,
    });
  };

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

  const reconcile = async () => {
    if (!opts.isLeader() || !ready()) return;
    startWatches();
    if (!deployments?.synced() || !hpas?.synced()) return;
    const due = dirty || store.generation !== generation || performance.now() - lastRun >= resyncEveryMs;
    if (!due) return;
    dirty = false;
    generation = store.generation;
    lastRun = performance.now();
    const resolveNamespace: NamespaceResolver = (ns) => store.resolve(ns);
    const plan = planHpas({ deployments: deployments.list(), hpas: hpas.list() as HorizontalPodAutoscaler[], resolveNamespace });
    report(plan);
    await applyHpaPlan(plan, api, logger);
  };

  const tick = () => {
    if (stopped) return;
    inFlight = reconcile()
      .catch((err) => logger.log("warn", "hpa reconcile failed", { error: String(err?.message ?? err) }))
      .finally(() => {
        inFlight = undefined;
        if (!stopped) timer = setTimeout(tick, TICK_MS);
      });
  };
  tick();

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await inFlight;
      await Promise.all([deployments?.stop(), hpas?.stop()]);
    },
  };
}
