import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { QuotaTotals, quotaTotalsOf, type ProjectResolver, type WatchEvent } from "./totals.ts";
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
  podCoverage,
  podTerminated,
  workloadOfObject,
} from "./accounting.ts";
import { readGpuRequest } from "../workload/gpu.ts";
import type { Project } from "../policy/types.ts";

const project = (name: string, namespaces: string[], memory?: number): Project => ({
  metadata: { name },
  spec: { namespaces, gpuQuota: "8", ...(memory ? { gpuMemoryPerDeviceMiB: memory } : {}) },
});

function resolverOf(projects: Project[]): ProjectResolver {
  return (ns) => projects.find((p) => p.spec.namespaces?.includes(ns));
}

const limits = (gpus?: string) => (gpus ? { limits: { "nvidia.com/gpu": gpus } } : {});

function deployment(ns: string, name: string, replicas: number, gpus?: string, extra: { status?: any; generation?: number; revisionOf?: string; annotations?: Record<string, string> } = {}): any {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name,
      namespace: ns,
      generation: extra.generation ?? 1,
      ...(extra.revisionOf
        ? {
            labels: { "serving.knative.dev/service": extra.revisionOf, "serving.knative.dev/revision": name.replace(/-deployment$/, "") },
            ownerReferences: [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: name.replace(/-deployment$/, ""), uid: "r", controller: true }],
          }
        : {}),
    },
    spec: { replicas, template: { metadata: { annotations: extra.annotations ?? {} }, spec: { containers: [{ image: "x", resources: limits(gpus) }] } } },
    ...(extra.status ? { status: extra.status } : {}),
  };
}

function pod(ns: string, name: string, gpus: string | undefined, extra: { owner?: string; hash?: boolean; knative?: boolean; phase?: string } = {}): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: ns,
      labels: { ...(extra.hash ? { "pod-template-hash": "abc" } : {}), ...(extra.knative ? { "serving.knative.dev/revision": "r" } : {}) },
      ...(extra.owner ? { ownerReferences: [{ apiVersion: "apps/v1", kind: extra.owner, name: "o", uid: "o", controller: true }] } : {}),
    },
    spec: { containers: [{ image: "x", resources: limits(gpus) }] },
    ...(extra.phase ? { status: { phase: extra.phase } } : {}),
  };
}

/** `status`: Knative's view; `generation` ahead of `observed` means a change it has not seen yet. */
function ksvc(ns: string, name: string, gpus: string, minScale?: number, status?: { generation: number; observed: number; created: string; ready?: string }): any {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name, namespace: ns, ...(status ? { generation: status.generation } : {}) },
    ...(status
      ? { status: { observedGeneration: status.observed, latestCreatedRevisionName: status.created, ...(status.ready ? { latestReadyRevisionName: status.ready } : {}) } }
      : {}),
    spec: {
      template: {
        metadata: { annotations: minScale === undefined ? {} : { "autoscaling.knative.dev/min-scale": String(minScale) } },
        spec: { containers: [{ image: "x", resources: limits(gpus) }] },
      },
    },
  };
}

describe("QuotaTotals", () => {
  const projects = [project("team-a", ["a1", "a2"]), project("team-b", ["b1"])];

  it("sums Deployments per project and follows MODIFIED and DELETED", () => {
    const t = new QuotaTotals(resolverOf(projects));
    t.apply("ADDED", deployment("a1", "llm", 3, "1"));
    t.apply("ADDED", deployment("a2", "emb", 2, "0.5"));
    t.apply("ADDED", deployment("b1", "llm", 1, "2"));
    t.apply("ADDED", deployment("a1", "web", 5));
    expect(t.usage("team-a")).toEqual({ allocated: 4, reserved: 0, workloads: 2 });
    expect(t.usage("team-b")).toEqual({ allocated: 2, reserved: 0, workloads: 1 });

    t.apply("MODIFIED", deployment("a1", "llm", 8, "1"));
    expect(t.usage("team-a").allocated).toBe(9);
    t.apply("DELETED", deployment("a1", "llm", 8, "1"));
    expect(t.usage("team-a")).toEqual({ allocated: 1, reserved: 0, workloads: 1 });
    expect(t.usage("nobody")).toEqual({ allocated: 0, reserved: 0, workloads: 0 });
  });

  it("charges the surge while a Deployment's status shows a rollout, and keeps GPUs per pod at 0 replicas", () => {
    const t = new QuotaTotals(resolverOf(projects));
    t.apply("ADDED", deployment("a1", "llm", 4, "1", { generation: 2, status: { replicas: 5, updatedReplicas: 1, observedGeneration: 2 } }));
    expect(t.usage("team-a").allocated).toBe(5);
    expect(t.charge("Deployment", "a1", "llm")).toMatchObject({ replicas: 4, pods: 5, rollingOut: true, gpusPerPodMilli: 1000 });
    t.apply("MODIFIED", deployment("a1", "llm", 0, "1", { generation: 3, status: { replicas: 0, updatedReplicas: 0, observedGeneration: 3 } }));
    expect(t.usage("team-a")).toEqual({ allocated: 0, reserved: 0, workloads: 0 });
    expect(t.charge("Deployment", "a1", "llm")).toMatchObject({ gpusPerPodMilli: 1000, milli: 0 });
  });

  it("charges bare pods and other controllers' pods until they finish; covered pods never", () => {
    const t = new QuotaTotals(resolverOf(projects));
    t.apply("ADDED", pod("a1", "bare", "1"));
    t.apply("ADDED", pod("a1", "sts-0", "2", { owner: "StatefulSet" }));
    t.apply("ADDED", pod("a1", "llm-abc-1", "1", { owner: "ReplicaSet", hash: true }));
    t.apply("ADDED", pod("a1", "chat-1", "1", { owner: "ReplicaSet", hash: true, knative: true }));
    expect(t.usage("team-a").allocated).toBe(3);
    t.apply("MODIFIED", pod("a1", "bare", "1", { phase: "Succeeded" }));
    expect(t.usage("team-a")).toEqual({ allocated: 2, reserved: 0, workloads: 1 });
  });

  it("charges a Knative Service until its revision Deployment exists, then only the revision (never twice)", () => {
    const t = new QuotaTotals(resolverOf(projects));
    t.apply("ADDED", ksvc("a1", "chat", "1", 3));
    expect(t.usage("team-a").allocated).toBe(3);
    t.apply("ADDED", deployment("a1", "chat-00001-deployment", 3, "1", { revisionOf: "chat" }));
    expect(t.usage("team-a")).toEqual({ allocated: 3, reserved: 0, workloads: 1 });
    expect(t.charge("KnativeService", "a1", "chat")?.milli).toBe(0);
    expect(t.charge("Deployment", "a1", "chat-00001-deployment")?.knativeService).toBe("chat");
    t.apply("MODIFIED", deployment("a1", "chat-00001-deployment", 5, "1", { revisionOf: "chat" }));
    expect(t.usage("team-a").allocated).toBe(5);
    t.apply("DELETED", deployment("a1", "chat-00001-deployment", 5, "1", { revisionOf: "chat" }));
    expect(t.usage("team-a").allocated).toBe(3);
    t.apply("DELETED", ksvc("a1", "chat", "1", 3));
    expect(t.usage("team-a").allocated).toBe(0);
  });

  it("hands a template change over to the new revision: in full, then what it has not reached, then nothing", () => {
    const t = new QuotaTotals(resolverOf(projects));
    const rev1 = deployment("a1", "chat-00001-deployment", 3, "1", { revisionOf: "chat" });
    t.apply("ADDED", ksvc("a1", "chat", "1", 3, { generation: 1, observed: 1, created: "chat-00001", ready: "chat-00001" }));
    t.apply("ADDED", rev1);
    expect(t.usage("team-a").allocated).toBe(3);

    // Updated to min-scale 8: until Knative creates the revision, the Service holds all 8; the old keeps 3.
    t.apply("MODIFIED", ksvc("a1", "chat", "1", 8, { generation: 2, observed: 1, created: "chat-00001", ready: "chat-00001" }));
    expect(t.usage("team-a").allocated).toBe(11);
    // The new revision starts at 1 pod (initial-scale): the Service keeps the 7 it has not reached.
    t.apply("MODIFIED", ksvc("a1", "chat", "1", 8, { generation: 2, observed: 2, created: "chat-00002", ready: "chat-00001" }));
    t.apply("ADDED", deployment("a1", "chat-00002-deployment", 1, "1", { revisionOf: "chat" }));
    expect(t.usage("team-a").allocated).toBe(11);
    expect(t.charge("KnativeService", "a1", "chat")).toMatchObject({ milli: 7000, revision: "chat-00002" });
    t.apply("MODIFIED", deployment("a1", "chat-00002-deployment", 8, "1", { revisionOf: "chat" }));
    expect(t.usage("team-a").allocated).toBe(11);
    // Ready: the revision carries its own 8; the old revision's 3 return when it scales down.
    t.apply("MODIFIED", ksvc("a1", "chat", "1", 8, { generation: 2, observed: 2, created: "chat-00002", ready: "chat-00002" }));
    expect(t.usage("team-a").allocated).toBe(11);
    t.apply("MODIFIED", deployment("a1", "chat-00001-deployment", 0, "1", { revisionOf: "chat" }));
    expect(t.usage("team-a")).toEqual({ allocated: 8, reserved: 0, workloads: 1 });
  });

  it("uses the project's memory per device for gpu-memory, and recomputes when Projects change", () => {
    const current = [project("team-a", ["a1"], 40960)];
    const t = new QuotaTotals(resolverOf(current));
    t.apply("ADDED", deployment("a1", "llm", 2, undefined, { annotations: { "gpu-memory": "20480" } }));
    t.apply("ADDED", deployment("x1", "other", 1, "1"));
    expect(t.usage("team-a").allocated).toBe(1);

    current[0] = project("team-a", ["a1", "x1"]);
    t.recomputeProjects();
    expect(t.usage("team-a")).toEqual({ allocated: 1.5, reserved: 0, workloads: 2 });
  });

  it("keeps reservations apart from allocations", () => {
    const t = new QuotaTotals(resolverOf(projects));
    t.setReserved("team-a", 2500);
    expect(t.usage("team-a")).toEqual({ allocated: 0, reserved: 2.5, workloads: 0 });
    t.setReserved("team-a", 0);
    expect(t.usage("team-a").reserved).toBe(0);
  });

  it("counts a reservation only until the cache shows its object, without waiting for a new status", () => {
    const t = new QuotaTotals(resolverOf(projects));
    const expiresAt = new Date(Date.now() + 60_000).toISOString();
    t.setReservations("team-a", [{ key: "Deployment/a1/llm", gpus: "2", replaces: "", expiresAt }]);
    expect(t.usage("team-a")).toEqual({ allocated: 0, reserved: 2, workloads: 0 });
    t.apply("ADDED", deployment("a1", "llm", 2, "1"));
    expect(t.usage("team-a")).toEqual({ allocated: 2, reserved: 0, workloads: 1 });
    t.setReservations("team-a", [{ key: "Deployment/a1/other", gpus: "1", replaces: "", expiresAt: new Date(Date.now() - 1).toISOString() }]);
    expect(t.usage("team-a").reserved).toBe(0);
  });

  it("takes the kind from the informer when list items carry none, and replaces a kind after a relist", () => {
    const t = new QuotaTotals(resolverOf(projects));
    const d = deployment("a1", "llm", 2, "1");
    delete d.kind;
    t.apply("ADDED", d);
    expect(t.usage("team-a").allocated).toBe(0);
    t.apply("ADDED", d, "Deployment");
    expect(t.usage("team-a").allocated).toBe(2);
    t.replace("Deployment", [deployment("a1", "other", 1, "1")]);
    expect(t.usage("team-a").allocated).toBe(1);
    expect(t.charge("Deployment", "a1", "llm")).toBeUndefined();
  });

  it("reads usage from a file's objects, skipping other kinds", () => {
    const t = quotaTotalsOf(
      [project("team-a", ["a1"]), deployment("a1", "llm", 3, "1"), ksvc("a1", "chat", "1", 2), { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "c", namespace: "a1" } }],
      resolverOf(projects),
    );
    expect(t.usage("team-a")).toEqual({ allocated: 5, reserved: 0, workloads: 2 });
  });
});

// --- property: running totals always equal a full recomputation from the live objects ---

const NAMESPACES = ["a1", "a2", "b1", "free"];
const GPUS = [undefined, "1", "2", "0.5"];

const deploymentArb = fc
  .record({
    ns: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom("d0", "d1", "chat-00001-deployment", "chat-00002-deployment"),
    replicas: fc.integer({ min: 0, max: 6 }),
    gpus: fc.constantFrom(...GPUS),
    fraction: fc.constantFrom(undefined, "0.25", "0.333"),
    memory: fc.constantFrom(undefined, "20480"),
    rolling: fc.boolean(),
    recreate: fc.boolean(),
    revisionOf: fc.constantFrom(undefined, "chat", "other"),
  })
  .map((r) => {
    const annotations: Record<string, string> = {};
    if (r.fraction) annotations["gpu-fraction"] = r.fraction;
    else if (r.memory) annotations["gpu-memory"] = r.memory;
    const d = deployment(r.ns, r.name, r.replicas, r.fraction || r.memory ? undefined : r.gpus, {
      annotations,
      generation: 2,
      status: r.rolling ? { replicas: r.replicas + 1, updatedReplicas: 0, observedGeneration: 2 } : { replicas: r.replicas, updatedReplicas: r.replicas, observedGeneration: 2 },
      ...(r.revisionOf ? { revisionOf: r.revisionOf } : {}),
    });
    if (r.recreate) d.spec.strategy = { type: "Recreate" };
    return d;
  });

const podArb = fc
  .record({
    ns: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom("p0", "p1", "p2"),
    gpus: fc.constantFrom(...GPUS),
    owner: fc.constantFrom(undefined, "ReplicaSet", "StatefulSet", "Job"),
    hash: fc.boolean(),
    knative: fc.boolean(),
    phase: fc.constantFrom(undefined, "Running", "Succeeded", "Failed"),
  })
  .map((r) => pod(r.ns, r.name, r.gpus, { ...(r.owner ? { owner: r.owner } : {}), hash: r.hash, knative: r.knative, ...(r.phase ? { phase: r.phase } : {}) }));

const ksvcArb = fc
  .record({
    ns: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom("chat", "other"),
    gpus: fc.constantFrom("1", "0.5", "0"),
    minScale: fc.constantFrom(undefined, 0, 2, 5),
    status: fc.option(
      fc.record({
        generation: fc.constantFrom(1, 2),
        observed: fc.constantFrom(1, 2),
        created: fc.constantFrom("chat-00001", "chat-00002", "other-00001"),
        ready: fc.constantFrom(undefined, "chat-00001", "chat-00002"),
      }),
      { nil: undefined },
    ),
  })
  .map((r) => ksvc(r.ns, r.name, r.gpus, r.minScale, r.status));

const eventArb = fc.record({
  event: fc.constantFrom<WatchEvent>("ADDED", "MODIFIED", "DELETED"),
  object: fc.oneof(deploymentArb, podArb, ksvcArb),
});

const identity = (o: any) => `${chargedKindOf(o)}/${o.metadata.namespace}/${o.metadata.name}`;

/** The charge of every live object, computed from scratch with no running state. */
function recompute(live: Map<string, any>, projectOf: ProjectResolver) {
  const sums = new Map<string, { milli: number; workloads: number }>();
  const objects = [...live.values()];
  for (const o of objects) {
    const kind = chargedKindOf(o)!;
    const p = projectOf(o.metadata.namespace);
    const gpp = gpusPerPodMilli(readGpuRequest(workloadOfObject(kind, o)!), memoryPerDeviceOf(p));
    let milli = 0;
    if (kind === "Deployment") milli = deploymentChargePods(o).pods * gpp;
    if (kind === "Pod") milli = podTerminated(o) || podCoverage(o).covered ? 0 : gpp;
    if (kind === "KnativeService") {
      const revisions = objects.filter(
        (d) =>
          chargedKindOf(d) === "Deployment" &&
          workloadOfObject("Deployment", d)?.role === "knative-deployment" &&
          d.metadata.namespace === o.metadata.namespace &&
          knativeServiceOf(d) === o.metadata.name,
      );
      const of = (revision: string) => revisions.filter((d) => knativeRevisionOf(d) === revision);
      const deploymentMilli = (d: any) => deploymentChargePods(d).pods * gpusPerPodMilli(readGpuRequest(workloadOfObject("Deployment", d)!), memoryPerDeviceOf(p));
      milli = knativeServiceMilli(knativeInitialScale(o) * gpp, knativeHandover(o), {
        any: revisions.length > 0,
        has: (revision) => of(revision).length > 0,
        milli: (revision) => of(revision).reduce((sum, d) => sum + deploymentMilli(d), 0),
      });
    }
    if (!p || milli <= 0) continue;
    const sum = sums.get(p.metadata.name!) ?? { milli: 0, workloads: 0 };
    sum.milli += milli;
    sum.workloads += 1;
    sums.set(p.metadata.name!, sum);
  }
  return sums;
}

function expectEqualTotals(t: QuotaTotals, live: Map<string, any>, projectOf: ProjectResolver, names: string[]) {
  const expected = recompute(live, projectOf);
  for (const name of names) {
    const e = expected.get(name) ?? { milli: 0, workloads: 0 };
    expect({ milli: t.allocatedMilli(name), workloads: t.usage(name).workloads }).toEqual(e);
  }
}

describe("QuotaTotals property", () => {
  it("after any sequence of ADDED/MODIFIED/DELETED, running totals equal a full recomputation", () => {
    fc.assert(
      fc.property(fc.array(eventArb, { maxLength: 60 }), fc.boolean(), fc.array(eventArb, { maxLength: 30 }), (events, moveNamespace, later) => {
        const projects = [project("team-a", ["a1", "a2"], 40960), project("team-b", ["b1"])];
        const projectOf = resolverOf(projects);
        const t = new QuotaTotals(projectOf);
        const live = new Map<string, any>();
        const play = (sequence: typeof events) => {
          for (const { event, object } of sequence) {
            t.apply(event, object);
            if (event === "DELETED") live.delete(identity(object));
            else live.set(identity(object), object);
          }
        };
        play(events);
        expectEqualTotals(t, live, projectOf, ["team-a", "team-b"]);

        if (moveNamespace) {
          // Namespaces move between projects and memory per device changes: a rare full recomputation.
          projects[1] = project("team-b", ["b1", "a2", "free"], 20480);
          projects[0] = project("team-a", ["a1"]);
          t.recomputeProjects();
          expectEqualTotals(t, live, projectOf, ["team-a", "team-b"]);
        }
        play(later);
        expectEqualTotals(t, live, projectOf, ["team-a", "team-b"]);
      }),
      { numRuns: 300 },
    );
  });
});
