import { describe, expect, it } from "vitest";
import type { Logger } from "../observability/log.ts";
import type { SchedulerProfile } from "../policy/types.ts";
import { PolicyStore } from "../policy/store.ts";
import { podGroupNameForPod } from "./names.ts";
import {
  applyPodGroupPlan,
  desiredPodGroups,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  planPodGroups,
  revisionMinMember,
  SCHEDULE_TIMEOUT_SECONDS,
  type NamespaceResolver,
  type PodGroup,
  type PodGroupApi,
  type PodGroupPlan,
} from "./reconciler.ts";

function storeWith(profiles: Record<string, SchedulerProfile>): PolicyStore {
  const store = new PolicyStore();
  for (const [project, profile] of Object.entries(profiles)) {
    store.upsertProject({ metadata: { name: project }, spec: { namespaces: [project] } });
    store.upsertPolicy({ metadata: { name: `${project}-policy` }, spec: { projects: [project], scheduler: { profile } } });
  }
  return store;
}

const store = storeWith({ gang: "coscheduling", kaiteam: "kai" });
const resolve: NamespaceResolver = (ns) => store.resolve(ns);

const gpu = { name: "server", image: "nvcr.io/nim/llm:1", resources: { limits: { "nvidia.com/gpu": "1" } } };

function replicaSet(deployment: string, hash: string, replicas: number, opts: { namespace?: string; uid?: string; templateLabels?: Record<string, string>; containers?: any[] } = {}) {
  return {
    apiVersion: "apps/v1",
    kind: "ReplicaSet",
    metadata: {
      name: `${deployment}-${hash}`,
      namespace: opts.namespace ?? "gang",
      uid: opts.uid ?? `uid-${deployment}-${hash}`,
      labels: { app: deployment, "pod-template-hash": hash },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "Deployment", name: deployment, uid: `uid-${deployment}`, controller: true }],
    },
    spec: {
      replicas,
      template: {
        metadata: { labels: { app: deployment, "pod-template-hash": hash, ...opts.templateLabels } },
        spec: { containers: opts.containers ?? [gpu] },
      },
    },
  };
}

function revision(name: string, annotations: Record<string, string> = {}, namespace = "gang") {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Revision",
    metadata: { name, namespace, uid: `uid-${name}`, annotations, labels: { "serving.knative.dev/service": "chat" } },
    spec: { containers: [gpu] },
  };
}

const summary = (pgs: PodGroup[]) => pgs.map((pg) => `${pg.metadata.namespace}/${pg.metadata.name}:${pg.spec.minMember}`);

describe("desiredPodGroups", () => {
  it("makes one PodGroup per scaled-up ReplicaSet, sized by its replicas and owned by it", () => {
    const [pg] = desiredPodGroups([replicaSet("llm", "5d9f7c6b8", 3)], [], resolve);
    expect(pg).toEqual({
      apiVersion: "scheduling.x-k8s.io/v1alpha1",
      kind: "PodGroup",
      metadata: {
        name: "llm-5d9f7c6b8",
        namespace: "gang",
        labels: { [MANAGED_BY_LABEL]: MANAGED_BY },
        ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "llm-5d9f7c6b8", uid: "uid-llm-5d9f7c6b8", controller: true }],
      },
      spec: { minMember: 3, scheduleTimeoutSeconds: SCHEDULE_TIMEOUT_SECONDS },
    });
  });

  it("names the group as the webhook labels the ReplicaSet's pods", () => {
    const rs = replicaSet("llm", "5d9f7c6b8", 2);
    const pod = {
      metadata: {
        labels: rs.spec.template.metadata.labels,
        ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: rs.metadata.name, uid: rs.metadata.uid, controller: true }],
      },
    };
    expect(desiredPodGroups([rs], [], resolve)[0]!.metadata.name).toBe(podGroupNameForPod(pod));
  });

  it("follows scale changes: minMember is the ReplicaSet's replicas", () => {
    for (const replicas of [1, 4, 16]) {
      expect(summary(desiredPodGroups([replicaSet("llm", "5d9f7c6b8", replicas)], [], resolve))).toEqual([`gang/llm-5d9f7c6b8:${replicas}`]);
    }
  });

  it("drops the PodGroup of a ReplicaSet scaled to 0 (an old revision after a rollout)", () => {
    const old = replicaSet("llm", "aaaa1", 0);
    const current = replicaSet("llm", "bbbb2", 2);
    expect(summary(desiredPodGroups([old, current], [], resolve))).toEqual(["gang/llm-bbbb2:2"]);
  });

  it("ignores namespaces under other profiles and outside every Project", () => {
    const rsList = [replicaSet("llm", "a1", 2, { namespace: "kaiteam" }), replicaSet("llm", "a1", 2, { namespace: "nobody" })];
    const revs = [revision("chat-00001", {}, "kaiteam"), revision("chat-00001", {}, "nobody")];
    expect(desiredPodGroups(rsList, revs, resolve)).toEqual([]);
  });

  it("skips ReplicaSets that are not inference, not a Deployment's, Knative's, or already grouped by the user", () => {
    const cpu = replicaSet("web", "c1", 2, { containers: [{ name: "web", image: "nginx" }] });
    const labelled = replicaSet("embed", "e1", 2, { containers: [{ name: "e", image: "e" }], templateLabels: { "infergate.dev/inference": "true" } });
    const byHand = replicaSet("hand", "h1", 2);
    byHand.metadata.ownerReferences = [];
    const knativeRs = replicaSet("chat-00001-deployment", "k1", 2, { templateLabels: { "serving.knative.dev/revision": "chat-00001" } });
    const userGang = replicaSet("mine", "m1", 2, { templateLabels: { "scheduling.x-k8s.io/pod-group": "my-gang" } });
    expect(summary(desiredPodGroups([cpu, labelled, byHand, knativeRs, userGang], [], resolve))).toEqual(["gang/embed-e1:2"]);
  });

  it("makes one PodGroup per Knative Revision with minMember max(min-scale, 1)", () => {
    const revs = [revision("chat-00001"), revision("chat-00002", { "autoscaling.knative.dev/min-scale": "3" }), revision("chat-00003", { "autoscaling.knative.dev/min-scale": "0" })];
    const pgs = desiredPodGroups([], revs, resolve);
    expect(summary(pgs)).toEqual(["gang/chat-00001:1", "gang/chat-00002:3", "gang/chat-00003:1"]);
    expect(pgs[0]!.metadata.ownerReferences).toEqual([
      { apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "chat-00001", uid: "uid-chat-00001", controller: true },
    ]);
  });

  it("reads min-scale under its legacy alias and ignores values Knative would not parse", () => {
    expect(revisionMinMember(revision("r", { "autoscaling.knative.dev/minScale": "2" }))).toBe(2);
    expect(revisionMinMember(revision("r", { "autoscaling.knative.dev/min-scale": "two" }))).toBe(1);
  });

  it("skips objects being deleted", () => {
    const rs = replicaSet("llm", "a1", 2) as any;
    rs.metadata.deletionTimestamp = "2025-01-01T00:00:00Z";
    const rev = revision("chat-00001") as any;
    rev.metadata.deletionTimestamp = "2025-01-01T00:00:00Z";
    expect(desiredPodGroups([rs], [rev], resolve)).toEqual([]);
  });
});

function observedFrom(desired: PodGroup, changes: { minMember?: number; uid?: string; managed?: boolean } = {}): PodGroup {
  return {
    ...structuredClone(desired),
    metadata: {
      ...structuredClone(desired.metadata),
      uid: changes.uid ?? `pg-${desired.metadata.name}`,
      resourceVersion: "7",
      labels: changes.managed === false ? {} : { ...desired.metadata.labels },
    },
    spec: { ...desired.spec, minMember: changes.minMember ?? desired.spec.minMember },
  };
}

const names = (pgs: PodGroup[]) => pgs.map((pg) => pg.metadata.name);

describe("planPodGroups", () => {
  const rs3 = replicaSet("llm", "a1", 3);
  const desired = desiredPodGroups([rs3], [], resolve);
  const owners = new Set([rs3.metadata.uid]);

  it("creates what is missing and leaves what is right alone", () => {
    expect(names(planPodGroups({ desired, observed: [], ownerUids: owners, resolveNamespace: resolve }).create)).toEqual(["llm-a1"]);
    const steady = planPodGroups({ desired, observed: [observedFrom(desired[0]!)], ownerUids: owners, resolveNamespace: resolve });
    expect(steady).toEqual({ create: [], update: [], delete: [], foreign: [] });
  });

  it("updates minMember after a scale change", () => {
    const plan = planPodGroups({ desired, observed: [observedFrom(desired[0]!, { minMember: 1 })], ownerUids: owners, resolveNamespace: resolve });
    expect(plan.update.map((u) => [u.observed.spec.minMember, u.desired.spec.minMember])).toEqual([[1, 3]]);
  });

  it("deletes the PodGroup of a ReplicaSet scaled to 0", () => {
    const scaledDown = replicaSet("llm", "a1", 0);
    const plan = planPodGroups({
      desired: desiredPodGroups([scaledDown], [], resolve),
      observed: [observedFrom(desired[0]!)],
      ownerUids: owners,
      resolveNamespace: resolve,
    });
    expect(names(plan.delete)).toEqual(["llm-a1"]);
  });

  it("deletes when the namespace moves to another profile", () => {
    const switched = storeWith({ gang: "kai" });
    const r: NamespaceResolver = (ns) => switched.resolve(ns);
    const plan = planPodGroups({ desired: desiredPodGroups([rs3], [], r), observed: [observedFrom(desired[0]!)], ownerUids: owners, resolveNamespace: r });
    expect(names(plan.delete)).toEqual(["llm-a1"]);
  });

  it("leaves deletion to garbage collection when the owner is not in the caches, and to no one outside Projects", () => {
    const orphan = planPodGroups({ desired: [], observed: [observedFrom(desired[0]!)], ownerUids: new Set(), resolveNamespace: resolve });
    expect(orphan.delete).toEqual([]);
    const empty = new PolicyStore();
    const unknown = planPodGroups({ desired: [], observed: [observedFrom(desired[0]!)], ownerUids: owners, resolveNamespace: (ns) => empty.resolve(ns) });
    expect(unknown.delete).toEqual([]);
  });

  it("never updates or deletes a PodGroup infergate did not create", () => {
    const users = observedFrom(desired[0]!, { minMember: 9, managed: false });
    const plan = planPodGroups({ desired, observed: [users], ownerUids: owners, resolveNamespace: resolve });
    expect(plan.update).toEqual([]);
    expect(plan.create).toEqual([]);
    expect(names(plan.foreign)).toEqual(["llm-a1"]);
    const noLongerWanted = planPodGroups({ desired: [], observed: [users], ownerUids: owners, resolveNamespace: resolve });
    expect(noLongerWanted.delete).toEqual([]);
  });
});

interface Call {
  op: string;
  name: string;
  minMember?: number;
  resourceVersion?: string;
}

function fakeApi(script: { replaceConflicts?: number; createCode?: number; fresh?: PodGroup; removeCode?: number } = {}) {
  const calls: Call[] = [];
  let conflicts = script.replaceConflicts ?? 0;
  const fail = (code: number) => Object.assign(new Error(`HTTP ${code}`), { code });
  const api: PodGroupApi = {
    async create(pg) {
      calls.push({ op: "create", name: pg.metadata.name, minMember: pg.spec.minMember });
      if (script.createCode) throw fail(script.createCode);
    },
    async replace(pg) {
      calls.push({ op: "replace", name: pg.metadata.name, minMember: pg.spec.minMember, resourceVersion: pg.metadata.resourceVersion });
      if (conflicts-- > 0) throw fail(409);
    },
    async get(_ns, name) {
      calls.push({ op: "get", name });
      return script.fresh;
    },
    async remove(pg) {
      calls.push({ op: "remove", name: pg.metadata.name });
      if (script.removeCode) throw fail(script.removeCode);
    },
  };
  return { api, calls };
}

function recordingLogger() {
  const lines: Array<{ level: string; msg: string }> = [];
  const logger: Logger = { level: "debug", enabled: () => true, log: (level, msg) => void lines.push({ level, msg }) };
  return { logger, warnings: () => lines.filter((l) => l.level === "warn") };
}

describe("applyPodGroupPlan", () => {
  const desired = desiredPodGroups([replicaSet("llm", "a1", 3)], [], resolve)[0]!;
  const empty: PodGroupPlan = { create: [], update: [], delete: [], foreign: [] };

  it("retries a conflicting update from the fresh object", async () => {
    const stale = observedFrom(desired, { minMember: 1 });
    const fresh = { ...observedFrom(desired, { minMember: 2 }), metadata: { ...observedFrom(desired).metadata, resourceVersion: "8" } };
    const { api, calls } = fakeApi({ replaceConflicts: 1, fresh });
    const { logger, warnings } = recordingLogger();
    await applyPodGroupPlan({ ...empty, update: [{ observed: stale, desired }] }, api, logger);
    expect(calls).toEqual([
      { op: "replace", name: "llm-a1", minMember: 3, resourceVersion: "7" },
      { op: "get", name: "llm-a1" },
      { op: "replace", name: "llm-a1", minMember: 3, resourceVersion: "8" },
    ]);
    expect(warnings()).toEqual([]);
  });

  it("stops retrying when the fresh object is no longer infergate's", async () => {
    const { api, calls } = fakeApi({ replaceConflicts: 1, fresh: observedFrom(desired, { managed: false }) });
    await applyPodGroupPlan({ ...empty, update: [{ observed: observedFrom(desired, { minMember: 1 }), desired }] }, api, recordingLogger().logger);
    expect(calls.map((c) => c.op)).toEqual(["replace", "get"]);
  });

  it("takes 'already exists' on create and 'not found' on delete quietly", async () => {
    const created = fakeApi({ createCode: 409 });
    const log1 = recordingLogger();
    await applyPodGroupPlan({ ...empty, create: [desired] }, created.api, log1.logger);
    expect(log1.warnings()).toEqual([]);
    const removed = fakeApi({ removeCode: 404 });
    const log2 = recordingLogger();
    await applyPodGroupPlan({ ...empty, delete: [observedFrom(desired)] }, removed.api, log2.logger);
    expect(removed.calls.map((c) => c.op)).toEqual(["remove"]);
    expect(log2.warnings()).toEqual([]);
  });

  it("logs other failures and carries on with the rest", async () => {
    const { api, calls } = fakeApi({ createCode: 403 });
    const { logger, warnings } = recordingLogger();
    await applyPodGroupPlan({ ...empty, create: [desired], delete: [observedFrom(desired)] }, api, logger);
    expect(calls.map((c) => c.op)).toEqual(["create", "remove"]);
    expect(warnings().map((w) => w.msg)).toEqual(["podgroup create failed"]);
  });
});
