// PodGroups for the coscheduling profile (PRODUCT.md §3). kubernetes-sigs/scheduler-plugins' Coscheduling
// gangs pods by the label `scheduling.x-k8s.io/pod-group`, but nothing creates the PodGroup it names, and
// without one the pods are scheduled one by one (shared/research/gpu-scheduler-conventions.md §5). This
// keeps one PodGroup per Deployment revision (ReplicaSet) and per Knative Revision, under the name the
// pod-group webhook writes on their pods (src/podgroups/names.ts):
// - minMember: the ReplicaSet's spec.replicas, so a scale-up is all-or-nothing; for a Revision
//   max(min-scale, 1), as KAI gangs Knative revisions.
// - A ReplicaSet scaled to 0 (an old revision after a rollout) gets no PodGroup: the CRD requires
//   minMember ≥ 1, and a group with no pods has nothing to gang. Scaling it up again (a rollback) brings
//   the PodGroup back.
// - scheduleTimeoutSeconds 60: how long admitted members wait for the rest of the gang, the plugin's own
//   default permit wait, written so `kubectl get pg -o yaml` says what applies.
// - An ownerReference to the ReplicaSet or Revision, so garbage collection removes the group with it.
// - A template that already names a pod group is the user's own gang: infergate makes none for it, and
//   never touches a PodGroup it did not create (label app.kubernetes.io/managed-by=infergate).
// Pods created in the moment before their PodGroup exists are scheduled without the gang: the webhook
// cannot wait for the reconciler, and Coscheduling treats a missing group as "no gang".
import { AppsV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../observability/log.ts";
import type { EffectivePolicy, ObjectMeta } from "../policy/types.ts";
import type { PolicyStore } from "../policy/store.ts";
import { isInferenceWorkload } from "../workload/gpu.ts";
import type { Workload } from "../workload/workload.ts";
import { applyManagedPlan, errorCode, type ManagedKind, type ManagedObjectApi } from "../kube/managed-objects.ts";
import { startReconcileLoop, type ClusterReconcilerOptions } from "../kube/reconcile-loop.ts";
import { watchResource, type WatchedResource } from "../kube/watch.ts";
import { POD_GROUP_LABEL, podGroupNameForReplicaSet, podGroupNameForRevision } from "./names.ts";

export const PODGROUP_GROUP = "scheduling.x-k8s.io";
export const PODGROUP_VERSION = "v1alpha1";
export const PODGROUP_PLURAL = "podgroups";
export const PODGROUP_API_VERSION = `${PODGROUP_GROUP}/${PODGROUP_VERSION}`;
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
export const MANAGED_BY = "infergate";
export const SCHEDULE_TIMEOUT_SECONDS = 60;

const KNATIVE_GROUP = "serving.knative.dev";
const KNATIVE_VERSION = "v1";
const MIN_SCALE_KEYS = ["autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/minScale"];

interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
}

export interface PodGroup {
  apiVersion: string;
  kind: "PodGroup";
  metadata: Omit<ObjectMeta, "ownerReferences"> & { name: string; namespace: string; ownerReferences?: OwnerReference[]; managedFields?: unknown };
  spec: { minMember: number; scheduleTimeoutSeconds?: number; minResources?: Record<string, unknown> };
  status?: unknown;
}

/** What the reconciler needs of a namespace: its effective policy, or undefined outside every Project. */
export type NamespaceResolver = (namespace: string) => { policy: Pick<EffectivePolicy, "scheduler"> } | undefined;

function isCoscheduling(resolve: NamespaceResolver, namespace: string | undefined): boolean {
  return !!namespace && resolve(namespace)?.policy.scheduler.profile === "coscheduling";
}

function replicasOf(rs: any): number {
  const n = rs?.spec?.replicas;
  // The API server defaults replicas to 1; an object without it has not been through defaulting.
  return typeof n === "number" && Number.isFinite(n) ? n : 1;
}

/** Knative's min-scale (canonical key first, then its legacy alias) raised to 1: a gang needs a member. */
export function revisionMinMember(revision: any): number {
  const annotations = revision?.metadata?.annotations ?? {};
  for (const key of MIN_SCALE_KEYS) {
    const text = annotations[key];
    if (typeof text !== "string" || !/^\s*\d+\s*$/.test(text)) continue;
    return Math.max(Number(text.trim()), 1);
  }
  return 1;
}

/** The ReplicaSet as the Deployment-shaped workload its pods come from, to ask whether it is inference. */
function replicaSetAsWorkload(rs: any): Workload {
  return { kind: "Deployment", role: "deployment", namespace: rs.metadata?.namespace ?? "", name: rs.metadata?.name ?? "", object: rs, templatePath: "spec.template" };
}

function ownerReference(apiVersion: string, kind: string, object: any): OwnerReference | undefined {
  const name = object?.metadata?.name;
  const uid = object?.metadata?.uid;
  if (!name || !uid) return undefined;
  // No blockOwnerDeletion: setting it needs the finalizers permission on the owner, and nothing here
  // must outlive the owner's deletion anyway.
  return { apiVersion, kind, name, uid, controller: true };
}

function podGroup(name: string, namespace: string, owner: OwnerReference, minMember: number): PodGroup {
  return {
    apiVersion: PODGROUP_API_VERSION,
    kind: "PodGroup",
    metadata: { name, namespace, labels: { [MANAGED_BY_LABEL]: MANAGED_BY }, ownerReferences: [owner] },
    spec: { minMember, scheduleTimeoutSeconds: SCHEDULE_TIMEOUT_SECONDS },
  };
}

/**
 * The PodGroups that should exist: one per scaled-up ReplicaSet of an inference Deployment and one per
 * Knative Revision, in namespaces whose policy profile is coscheduling. Pure.
 */
export function desiredPodGroups(replicaSets: readonly any[], revisions: readonly any[], resolveNamespace: NamespaceResolver): PodGroup[] {
  const desired = new Map<string, PodGroup>();
  const add = (pg: PodGroup) => {
    const key = `${pg.metadata.namespace}/${pg.metadata.name}`;
    if (!desired.has(key)) desired.set(key, pg);
  };

  for (const rs of replicaSets) {
    const namespace = rs?.metadata?.namespace;
    if (!isCoscheduling(resolveNamespace, namespace) || rs.metadata.deletionTimestamp) continue;
    if (rs.spec?.template?.metadata?.labels?.[POD_GROUP_LABEL] !== undefined) continue;
    const replicas = replicasOf(rs);
    if (replicas < 1 || !isInferenceWorkload(replicaSetAsWorkload(rs))) continue;
    const name = podGroupNameForReplicaSet(rs);
    const owner = ownerReference("apps/v1", "ReplicaSet", rs);
    if (name && owner) add(podGroup(name, namespace, owner, replicas));
  }

  for (const revision of revisions) {
    const namespace = revision?.metadata?.namespace;
    if (!isCoscheduling(resolveNamespace, namespace) || revision.metadata.deletionTimestamp) continue;
    // Revision labels come from the Service's template and reach every pod: a group named there is the user's.
    if (revision.metadata.labels?.[POD_GROUP_LABEL] !== undefined) continue;
    const name = podGroupNameForRevision(revision);
    const owner = ownerReference(`${KNATIVE_GROUP}/${KNATIVE_VERSION}`, "Revision", revision);
    if (name && owner) add(podGroup(name, namespace, owner, revisionMinMember(revision)));
  }
  return [...desired.values()];
}

export function isManaged(pg: { metadata?: { labels?: Record<string, string> } } | undefined): boolean {
  return pg?.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY;
}

function sameOwners(a: OwnerReference[] | undefined, b: OwnerReference[] | undefined): boolean {
  const uids = (refs: OwnerReference[] | undefined) => (refs ?? []).map((r) => r.uid).sort().join(",");
  return uids(a) === uids(b);
}

/** Does the existing PodGroup already say what infergate wants? */
export function upToDate(observed: PodGroup, desired: PodGroup): boolean {
  return (
    isManaged(observed) &&
    observed.spec?.minMember === desired.spec.minMember &&
    observed.spec?.scheduleTimeoutSeconds === desired.spec.scheduleTimeoutSeconds &&
    sameOwners(observed.metadata.ownerReferences, desired.metadata.ownerReferences)
  );
}

/** The object to write over `observed`: its metadata and other spec fields kept, infergate's fields set. */
export function mergedPodGroup(observed: PodGroup, desired: PodGroup): PodGroup {
  const { managedFields: _managedFields, ...metadata } = observed.metadata;
  return {
    ...observed,
    apiVersion: desired.apiVersion,
    kind: desired.kind,
    metadata: {
      ...metadata,
      labels: { ...metadata.labels, ...desired.metadata.labels },
      ownerReferences: desired.metadata.ownerReferences,
    },
    spec: { ...observed.spec, ...desired.spec },
  };
}

export interface PodGroupPlan {
  create: PodGroup[];
  update: Array<{ observed: PodGroup; desired: PodGroup }>;
  delete: PodGroup[];
  /** Desired names already taken by a PodGroup infergate did not make: left to their owner. */
  foreign: PodGroup[];
}

export interface PlanInput {
  desired: readonly PodGroup[];
  observed: readonly PodGroup[];
  /** UIDs of the ReplicaSets and Revisions in the caches. */
  ownerUids: ReadonlySet<string>;
  resolveNamespace: NamespaceResolver;
}

/**
 * What to change. A managed PodGroup is deleted only when its owner is in the caches and its namespace
 * belongs to a Project, i.e. infergate knows it is unwanted (owner scaled to 0, profile changed); an
 * owner that is gone is left to garbage collection, and a namespace that left every Project to it too,
 * so a cache that is still filling never deletes anything. Pure.
 */
export function planPodGroups(input: PlanInput): PodGroupPlan {
  const plan: PodGroupPlan = { create: [], update: [], delete: [], foreign: [] };
  const key = (pg: PodGroup) => `${pg.metadata.namespace}/${pg.metadata.name}`;
  const observed = new Map(input.observed.map((pg) => [key(pg), pg]));
  const wanted = new Set<string>();
  for (const desired of input.desired) {
    wanted.add(key(desired));
    const existing = observed.get(key(desired));
    if (!existing) plan.create.push(desired);
    else if (!isManaged(existing)) plan.foreign.push(existing);
    else if (!existing.metadata.deletionTimestamp && !upToDate(existing, desired)) plan.update.push({ observed: existing, desired });
  }
  for (const existing of input.observed) {
    if (!isManaged(existing) || wanted.has(key(existing)) || existing.metadata.deletionTimestamp) continue;
    const owned = (existing.metadata.ownerReferences ?? []).some((r) => input.ownerUids.has(r.uid));
    if (owned && input.resolveNamespace(existing.metadata.namespace)) plan.delete.push(existing);
  }
  return plan;
}

/** The few calls the reconciler makes; an interface so the write path is testable without a cluster. */
export type PodGroupApi = ManagedObjectApi<PodGroup>;

export function kubePodGroupApi(kc: KubeConfig): PodGroupApi {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const where = (pg: PodGroup) => ({ group: PODGROUP_GROUP, version: PODGROUP_VERSION, plural: PODGROUP_PLURAL, namespace: pg.metadata.namespace });
  return {
    async create(pg) {
      await custom.createNamespacedCustomObject({ ...where(pg), body: pg });
    },
    async replace(pg) {
      await custom.replaceNamespacedCustomObject({ ...where(pg), name: pg.metadata.name, body: pg });
    },
    async get(namespace, name) {
      try {
        return (await custom.getNamespacedCustomObject({ group: PODGROUP_GROUP, version: PODGROUP_VERSION, plural: PODGROUP_PLURAL, namespace, name })) as PodGroup;
      } catch (err) {
        if (errorCode(err) === 404) return undefined;
        throw err;
      }
    },
    async remove(pg) {
      await custom.deleteNamespacedCustomObject({ ...where(pg), name: pg.metadata.name, body: { preconditions: { uid: pg.metadata.uid } } });
    },
  };
}

const nameOf = (pg: PodGroup) => `${pg.metadata.namespace}/${pg.metadata.name}`;

const POD_GROUP: ManagedKind<PodGroup> = {
  noun: "podgroup",
  identify: (pg) => ({ podGroup: nameOf(pg) }),
  describe: (pg) => ({ podGroup: nameOf(pg), minMember: pg.spec.minMember }),
  merged: mergedPodGroup,
  isManaged,
  upToDate,
};

/** Writes a plan. Errors are logged and left to the next round, which starts from fresher caches. */
export function applyPodGroupPlan(plan: PodGroupPlan, api: PodGroupApi, logger: Logger): Promise<void> {
  return applyManagedPlan(plan, api, POD_GROUP, logger);
}

export interface PodGroupReconcilerOptions extends ClusterReconcilerOptions {
  /** How often to look again whether the PodGroup and Revision APIs are served. */
  probeEveryMs?: number;
  /** Overrides the API client (tests). */
  api?: PodGroupApi;
}

function coschedulingInUse(store: PolicyStore): boolean {
  return store.listProjects().some((p) => (p.spec?.namespaces ?? []).some((ns) => store.resolve(ns)?.policy.scheduler.profile === "coscheduling"));
}

async function served(custom: CustomObjectsApi, group: string, version: string, plural: string): Promise<boolean> {
  try {
    const list = await custom.getAPIResources({ group, version });
    return (list.resources ?? []).some((r) => r.name === plural);
  } catch (err) {
    if (errorCode(err) === 404) return false;
    throw err;
  }
}

/**
 * Keeps PodGroups in step with ReplicaSets and Revisions on the leader. Watches start only once a
 * namespace uses the coscheduling profile and the PodGroup API is served, so clusters on other
 * schedulers pay nothing for it.
 */
export function startPodGroupReconciler(opts: PodGroupReconcilerOptions): { stop(): Promise<void> } {
  const { kc, store, logger } = opts;
  const custom = kc.makeApiClient(CustomObjectsApi);
  const apps = kc.makeApiClient(AppsV1Api);
  const api = opts.api ?? kubePodGroupApi(kc);
  const probeEveryMs = opts.probeEveryMs ?? 60_000;

  let replicaSets: WatchedResource<any> | undefined;
  let podGroups: WatchedResource<any> | undefined;
  let revisions: WatchedResource<any> | undefined;
  let lastProbe = -Infinity;
  let warnedUnserved = false;

  const startWatches = async (changed: () => void) => {
    if (podGroups && revisions) return;
    if (performance.now() - lastProbe < probeEveryMs) return;
    lastProbe = performance.now();
    if (!podGroups) {
      if (!(await served(custom, PODGROUP_GROUP, PODGROUP_VERSION, PODGROUP_PLURAL))) {
        if (!warnedUnserved) {
          logger.log("warn", "coscheduling profile in use but scheduling.x-k8s.io/v1alpha1 PodGroups are not served: pods run without gangs");
          warnedUnserved = true;
        }
        return;
      }
      podGroups = watchResource<any>({
        kc,
        logger,
        name: "podgroups",
        path: `/apis/${PODGROUP_GROUP}/${PODGROUP_VERSION}/${PODGROUP_PLURAL}`,
        list: () => custom.listCustomObjectForAllNamespaces({ group: PODGROUP_GROUP, version: PODGROUP_VERSION, resourcePlural: PODGROUP_PLURAL }) as any,
        onEvent: changed,
      });
      replicaSets = watchResource<any>({
        kc,
        logger,
        name: "replicasets",
        path: "/apis/apps/v1/replicasets",
        list: () => apps.listReplicaSetForAllNamespaces() as any,
        onEvent: changed,
      });
    }
    if (!revisions && (await served(custom, KNATIVE_GROUP, KNATIVE_VERSION, "revisions"))) {
      revisions = watchResource<any>({
        kc,
        logger,
        name: "knative revisions",
        path: `/apis/${KNATIVE_GROUP}/${KNATIVE_VERSION}/revisions`,
        list: () => custom.listCustomObjectForAllNamespaces({ group: KNATIVE_GROUP, version: KNATIVE_VERSION, resourcePlural: "revisions" }) as any,
        onEvent: changed,
      });
    }
  };

  return startReconcileLoop({
    ...opts,
    name: "podgroup",
    async prepare(changed) {
      if (!coschedulingInUse(store) && !podGroups) return undefined;
      await startWatches(changed);
      if (!podGroups?.synced() || !replicaSets?.synced() || (revisions && !revisions.synced())) return undefined;
      return { podGroups, replicaSets, revisions };
    },
    async reconcile({ podGroups, replicaSets, revisions }) {
      const rsList = replicaSets.list();
      const revList = revisions?.list() ?? [];
      const resolveNamespace: NamespaceResolver = (ns) => store.resolve(ns);
      const plan = planPodGroups({
        desired: desiredPodGroups(rsList, revList, resolveNamespace),
        observed: podGroups.list() as PodGroup[],
        ownerUids: new Set([...rsList, ...revList].map((o) => o?.metadata?.uid).filter((uid): uid is string => typeof uid === "string")),
        resolveNamespace,
      });
      await applyPodGroupPlan(plan, api, logger);
    },
    close: () => Promise.all([replicaSets?.stop(), podGroups?.stop(), revisions?.stop()]),
  });
}
