import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  checkQuota,
  deploymentChargePods,
  formatGpus,
  gpusPerPod,
  gpusPerPodMilli,
  knativeHandover,
  knativeInitialScale,
  knativeServiceMilli,
  maxSurgePods,
  parseGpuMilli,
  podCoverage,
  quotaDelta,
  quotaDenial,
  quotaMilliOf,
  workloadOfObject,
} from "./accounting.ts";
import type { ObjectCharge } from "./view.ts";
import type { Workload } from "../workload/workload.ts";

const MEM = 81920;

function deployment(replicas: number, gpus: string | undefined, extra: { strategy?: any; status?: any; generation?: number; annotations?: Record<string, string> } = {}): any {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "llm", namespace: "team-a", generation: extra.generation ?? 1 },
    spec: {
      replicas,
      ...(extra.strategy ? { strategy: extra.strategy } : {}),
      template: {
        metadata: { annotations: extra.annotations ?? {} },
        spec: { containers: [{ name: "c", image: "vllm", resources: gpus ? { limits: { "nvidia.com/gpu": gpus } } : {} }] },
      },
    },
    ...(extra.status ? { status: extra.status } : {}),
  };
}

function ksvc(gpus: string, annotations: Record<string, string> = {}, image = "vllm:1"): any {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name: "chat", namespace: "team-a" },
    spec: { template: { metadata: { annotations }, spec: { containers: [{ image, resources: { limits: { "nvidia.com/gpu": gpus } } }] } } },
  };
}

function pod(owner?: { kind: string; name: string; apiVersion?: string }, labels: Record<string, string> = {}, annotations: Record<string, string> = {}, gpus?: string): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "p",
      namespace: "team-a",
      labels,
      annotations,
      ...(owner ? { ownerReferences: [{ apiVersion: owner.apiVersion ?? "apps/v1", kind: owner.kind, name: owner.name, uid: "u", controller: true }] } : {}),
    },
    spec: { containers: [{ name: "c", image: "x", resources: gpus ? { limits: { "nvidia.com/gpu": gpus } } : {} }] },
  };
}

const w = (kind: "Deployment" | "KnativeService" | "Pod", object: any): Workload => workloadOfObject(kind, object)!;
const scale = (replicas: number): Workload => ({ kind: "Scale", role: "scale", namespace: "team-a", name: "llm", object: { spec: { replicas } }, replicas });

describe("parseGpuMilli and formatGpus", () => {
  it("reads decimal GPUs exactly, rounding fractions up to the milli", () => {
    expect(parseGpuMilli("8")).toBe(8000);
    expect(parseGpuMilli("2.5")).toBe(2500);
    expect(parseGpuMilli("0.125")).toBe(125);
    expect(parseGpuMilli(".5")).toBe(500);
    expect(parseGpuMilli("0.3333")).toBe(334);
    expect(parseGpuMilli("500m")).toBe(500);
    expect(parseGpuMilli(2)).toBe(2000);
    expect(parseGpuMilli(0.1)).toBe(100);
  });
  it("rejects what is not a non-negative decimal", () => {
    for (const bad of ["", "-1", "abc", "1.2.3", ".", "1e3", NaN, -2, null, undefined]) expect(parseGpuMilli(bad)).toBeUndefined();
  });
  it("formats without trailing zeros", () => {
    expect(formatGpus(8000)).toBe("8");
    expect(formatGpus(500)).toBe("0.5");
    expect(formatGpus(2250)).toBe("2.25");
    expect(formatGpus(1)).toBe("0.001");
    expect(formatGpus(0)).toBe("0");
  });
  it("round-trips any milli amount", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 10_000_000 }), (milli) => parseGpuMilli(formatGpus(milli)) === milli));
  });
  it("reads a project's quota; absent or unparseable means no limit", () => {
    expect(quotaMilliOf({ metadata: { name: "a" }, spec: { gpuQuota: "2.5" } })).toBe(2500);
    expect(quotaMilliOf({ metadata: { name: "a" }, spec: {} })).toBeUndefined();
    expect(quotaMilliOf({ metadata: { name: "a" }, spec: { gpuQuota: "lots" } })).toBeUndefined();
  });
});

describe("GPUs per pod", () => {
  it("counts whole GPUs over all containers", () => {
    expect(gpusPerPodMilli({ wholeGpus: 3 }, MEM)).toBe(3000);
    expect(gpusPerPod({ wholeGpus: 2 }, MEM)).toBe(2);
  });
  it("multiplies a fraction by the device count", () => {
    expect(gpusPerPod({ wholeGpus: 0, fraction: "0.5" }, MEM)).toBe(0.5);
    expect(gpusPerPod({ wholeGpus: 0, fraction: "0.5", devices: "2" }, MEM)).toBe(1);
    expect(gpusPerPod({ wholeGpus: 0, fraction: "0.25", devices: "3" }, MEM)).toBe(0.75);
  });
  it("converts gpu-memory with the memory per device, rounding up to the milli", () => {
    expect(gpusPerPod({ wholeGpus: 0, memoryMiB: "20480" }, 81920)).toBe(0.25);
    expect(gpusPerPod({ wholeGpus: 0, memoryMiB: "20480" }, 40960)).toBe(0.5);
    expect(gpusPerPod({ wholeGpus: 0, memoryMiB: "20480", devices: "2" }, 40960)).toBe(1);
    expect(gpusPerPodMilli({ wholeGpus: 0, memoryMiB: "10000" }, 81920)).toBe(123); // 122.07 → 123
  });
  it("reads the share from a workload's template annotations", () => {
    const d = deployment(1, undefined, { annotations: { "gpu-memory": "40960" } });
    expect(quotaDelta({ operation: "CREATE", workload: w("Deployment", d), memoryPerDeviceMiB: MEM }).gpusPerPodMilli).toBe(500);
  });
  it("charges nothing for no request", () => {
    expect(gpusPerPodMilli(undefined, MEM)).toBe(0);
    expect(gpusPerPodMilli({ wholeGpus: 0 }, MEM)).toBe(0);
  });
});

describe("Deployment charge pieces", () => {
  it("resolves maxSurge: default 25% rounded up, integers, percentages, Recreate", () => {
    expect(maxSurgePods(deployment(8, "1"), 8)).toBe(2);
    expect(maxSurgePods(deployment(3, "1"), 3)).toBe(1);
    expect(maxSurgePods(deployment(4, "1", { strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 0 } } }), 4)).toBe(0);
    expect(maxSurgePods(deployment(4, "1", { strategy: { rollingUpdate: { maxSurge: "50%" } } }), 5)).toBe(3);
    expect(maxSurgePods(deployment(4, "1", { strategy: { type: "Recreate" } }), 4)).toBe(0);
  });
  it("charges the surge in the cache only while status shows a rollout", () => {
    expect(deploymentChargePods(deployment(4, "1"))).toEqual({ replicas: 4, pods: 4, rollingOut: false });
    const settled = { replicas: 4, updatedReplicas: 4, observedGeneration: 1 };
    expect(deploymentChargePods(deployment(4, "1", { status: settled })).pods).toBe(4);
    const rolling = { replicas: 5, updatedReplicas: 2, observedGeneration: 2 };
    expect(deploymentChargePods(deployment(4, "1", { status: rolling, generation: 2 }))).toEqual({ replicas: 4, pods: 5, rollingOut: true });
    const unobserved = { replicas: 4, updatedReplicas: 4, observedGeneration: 1 };
    expect(deploymentChargePods(deployment(4, "1", { status: unobserved, generation: 2 })).pods).toBe(5);
    const recreate = deployment(4, "1", { status: rolling, generation: 2, strategy: { type: "Recreate" } });
    expect(deploymentChargePods(recreate).pods).toBe(4);
  });
  it("defaults missing replicas to 1", () => {
    const d = deployment(1, "1");
    delete d.spec.replicas;
    expect(deploymentChargePods(d).replicas).toBe(1);
  });
});

describe("Knative initial scale", () => {
  it("is max(min-scale, initial-scale, 1)", () => {
    expect(knativeInitialScale(ksvc("1"))).toBe(1);
    expect(knativeInitialScale(ksvc("1", { "autoscaling.knative.dev/min-scale": "8" }))).toBe(8);
    expect(knativeInitialScale(ksvc("1", { "autoscaling.knative.dev/initial-scale": "3", "autoscaling.knative.dev/min-scale": "2" }))).toBe(3);
    expect(knativeInitialScale(ksvc("1", { "autoscaling.knative.dev/initial-scale": "0" }))).toBe(1);
    expect(knativeInitialScale(ksvc("1", { "autoscaling.knative.dev/minScale": "4" }))).toBe(4);
  });
});

describe("Knative hand-over", () => {
  const withStatus = (generation: number, observed: number, created?: string, ready?: string) => ({
    ...ksvc("1"),
    metadata: { name: "chat", namespace: "team-a", generation },
    status: { observedGeneration: observed, ...(created ? { latestCreatedRevisionName: created } : {}), ...(ready ? { latestReadyRevisionName: ready } : {}) },
  });

  it("reads where a Service stands from its status", () => {
    expect(knativeHandover(ksvc("1"))).toEqual({ state: "unknown" });
    expect(knativeHandover(withStatus(2, 1, "chat-00001", "chat-00001"))).toEqual({ state: "pending" });
    expect(knativeHandover(withStatus(2, 2, "chat-00002", "chat-00001"))).toEqual({ state: "created", revision: "chat-00002" });
    expect(knativeHandover(withStatus(2, 2, "chat-00002", "chat-00002"))).toEqual({ state: "ready", revision: "chat-00002" });
  });

  it("charges the Service for what its newest revision does not hold yet", () => {
    const revisions = (m: Record<string, number>) => ({ any: Object.keys(m).length > 0, has: (r: string) => r in m, milli: (r: string) => m[r] ?? 0 });
    expect(knativeServiceMilli(8000, { state: "unknown" }, revisions({}))).toBe(8000);
    expect(knativeServiceMilli(8000, { state: "unknown" }, revisions({ r1: 3000 }))).toBe(0);
    expect(knativeServiceMilli(8000, { state: "pending" }, revisions({ r1: 3000 }))).toBe(8000);
    expect(knativeServiceMilli(8000, { state: "created", revision: "r2" }, revisions({ r1: 3000, r2: 1000 }))).toBe(7000);
    expect(knativeServiceMilli(8000, { state: "created", revision: "r2" }, revisions({ r2: 9000 }))).toBe(0);
    expect(knativeServiceMilli(8000, { state: "ready", revision: "r2" }, revisions({ r2: 0 }))).toBe(0);
    expect(knativeServiceMilli(8000, { state: "ready", revision: "r2" }, revisions({ r1: 3000 }))).toBe(8000);
  });
});

describe("pod coverage", () => {
  it("pods of a Deployment's ReplicaSet and of Knative revisions are covered", () => {
    expect(podCoverage(pod({ kind: "ReplicaSet", name: "llm-abc" }, { "pod-template-hash": "abc" })).covered).toBe(true);
    expect(podCoverage(pod({ kind: "ReplicaSet", name: "r-abc" }, { "serving.knative.dev/revision": "r", "pod-template-hash": "abc" })).covered).toBe(true);
  });
  it("bare pods, pods of other controllers and of bare ReplicaSets are charged themselves", () => {
    expect(podCoverage(pod())).toEqual({ covered: false, owner: undefined });
    expect(podCoverage(pod({ kind: "StatefulSet", name: "web" }))).toEqual({ covered: false, owner: { kind: "StatefulSet", name: "web" } });
    expect(podCoverage(pod({ kind: "Job", name: "j", apiVersion: "batch/v1" })).covered).toBe(false);
    expect(podCoverage(pod({ kind: "ReplicaSet", name: "handmade" })).covered).toBe(false);
  });
});

describe("quotaDelta", () => {
  const held = (milli: number, replicas: number, gpp = 1000): ObjectCharge => ({
    kind: "Deployment",
    namespace: "team-a",
    name: "llm",
    project: "team-a",
    gpusPerPodMilli: gpp,
    replicas,
    pods: milli / gpp,
    milli,
  });

  it("Deployment create: replicas × GPUs per pod, no surge", () => {
    const n = quotaDelta({ operation: "CREATE", workload: w("Deployment", deployment(3, "2")), memoryPerDeviceMiB: MEM });
    expect(n).toMatchObject({ deltaMilli: 6000, pods: 3, gpusPerPodMilli: 2000, heldMilli: 0, action: "create", field: "spec.replicas", value: 3 });
  });

  it("Deployment replica change: new replicas less what it holds; scale-down needs nothing", () => {
    const up = quotaDelta({ operation: "UPDATE", workload: w("Deployment", deployment(8, "1")), old: w("Deployment", deployment(3, "1")), memoryPerDeviceMiB: MEM });
    expect(up).toMatchObject({ deltaMilli: 5000, chargeMilli: 8000, heldMilli: 3000, pods: 8, what: "replicas 3 → 8" });
    const down = quotaDelta({ operation: "UPDATE", workload: w("Deployment", deployment(2, "1")), old: w("Deployment", deployment(3, "1")), memoryPerDeviceMiB: MEM });
    expect(down.deltaMilli).toBe(0);
  });

  it("prefers the cache's charge of the old object, which is what allocated counts", () => {
    const n = quotaDelta({
      operation: "UPDATE",
      workload: w("Deployment", deployment(8, "1")),
      old: w("Deployment", deployment(3, "1")),
      memoryPerDeviceMiB: MEM,
      cached: held(4000, 3),
    });
    expect(n).toMatchObject({ heldMilli: 4000, deltaMilli: 4000 });
  });

  it("Deployment rollout 3 → 8 (Run:ai's numbers): max(old, new) + maxSurge pods, less what it holds", () => {
    const oldD = deployment(3, "1");
    const newD = deployment(8, "1");
    newD.spec.template.spec.containers[0].image = "vllm:2";
    const n = quotaDelta({ operation: "UPDATE", workload: w("Deployment", newD), old: w("Deployment", oldD), memoryPerDeviceMiB: MEM });
    expect(n).toMatchObject({ pods: 10, chargeMilli: 10000, heldMilli: 3000, deltaMilli: 7000, what: "rollout with maxSurge 2", field: "spec.template" });
  });

  it("rollout under Recreate: max(old, new), nothing for the surge", () => {
    const oldD = deployment(4, "1", { strategy: { type: "Recreate" } });
    const newD = deployment(4, "1", { strategy: { type: "Recreate" } });
    newD.spec.template.spec.containers[0].image = "vllm:2";
    const n = quotaDelta({ operation: "UPDATE", workload: w("Deployment", newD), old: w("Deployment", oldD), memoryPerDeviceMiB: MEM });
    expect(n).toMatchObject({ pods: 4, deltaMilli: 0, what: "Recreate rollout" });
  });

  it("rollout that changes GPUs per pod charges the larger per pod", () => {
    const oldD = deployment(2, "1", { strategy: { type: "Recreate" } });
    const newD = deployment(2, "2", { strategy: { type: "Recreate" } });
    const n = quotaDelta({ operation: "UPDATE", workload: w("Deployment", newD), old: w("Deployment", oldD), memoryPerDeviceMiB: MEM });
    expect(n).toMatchObject({ pods: 2, gpusPerPodMilli: 2000, heldMilli: 2000, deltaMilli: 2000 });
  });

  it("deployments/scale: (new − old) × GPUs per pod of the cached Deployment", () => {
    const n = quotaDelta({ operation: "UPDATE", workload: scale(5), old: scale(2), memoryPerDeviceMiB: MEM, cached: held(1000, 2, 500) });
    expect(n).toMatchObject({ action: "scale-up", pods: 5, gpusPerPodMilli: 500, heldMilli: 1000, deltaMilli: 1500, field: "spec.replicas" });
    const down = quotaDelta({ operation: "UPDATE", workload: scale(1), old: scale(2), memoryPerDeviceMiB: MEM, cached: held(1000, 2, 500) });
    expect(down.deltaMilli).toBe(0);
  });

  it("deployments/scale of a Deployment the cache does not charge needs nothing", () => {
    expect(quotaDelta({ operation: "UPDATE", workload: scale(5), old: scale(2), memoryPerDeviceMiB: MEM }).deltaMilli).toBe(0);
  });

  it("Knative Service create: the first revision at its initial scale", () => {
    const n = quotaDelta({ operation: "CREATE", workload: w("KnativeService", ksvc("1", { "autoscaling.knative.dev/min-scale": "3" })), memoryPerDeviceMiB: MEM });
    expect(n).toMatchObject({ pods: 3, deltaMilli: 3000, what: "first revision" });
  });

  it("Knative Service template change 3 → 8 needs 8 more GPUs: the new revision in full, the old keeps its own", () => {
    const oldS = ksvc("1", { "autoscaling.knative.dev/min-scale": "3" });
    const newS = ksvc("1", { "autoscaling.knative.dev/min-scale": "8" });
    const n = quotaDelta({ operation: "UPDATE", workload: w("KnativeService", newS), old: w("KnativeService", oldS), memoryPerDeviceMiB: MEM });
    expect(n).toMatchObject({ pods: 8, gpusPerPodMilli: 1000, heldMilli: 0, deltaMilli: 8000, what: "new revision", action: "update" });
  });

  it("Knative Service change outside the template needs nothing", () => {
    const oldS = ksvc("1");
    const newS = { ...ksvc("1"), metadata: { name: "chat", namespace: "team-a", labels: { team: "x" } } };
    expect(quotaDelta({ operation: "UPDATE", workload: w("KnativeService", newS), old: w("KnativeService", oldS), memoryPerDeviceMiB: MEM }).deltaMilli).toBe(0);
  });

  it("Knative revision Deployment: created free (hand-over), replica increases checked", () => {
    const rev = (replicas: number) => ({
      ...deployment(replicas, "1"),
      metadata: { name: "chat-00001-deployment", namespace: "team-a", labels: { "serving.knative.dev/service": "chat" }, ownerReferences: [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "chat-00001", uid: "r", controller: true }] },
    });
    expect(quotaDelta({ operation: "CREATE", workload: w("Deployment", rev(3)), memoryPerDeviceMiB: MEM }).deltaMilli).toBe(0);
    expect(quotaDelta({ operation: "UPDATE", workload: w("Deployment", rev(5)), old: w("Deployment", rev(3)), memoryPerDeviceMiB: MEM }).deltaMilli).toBe(2000);
    expect(quotaDelta({ operation: "UPDATE", workload: w("Deployment", rev(1)), old: w("Deployment", rev(3)), memoryPerDeviceMiB: MEM }).deltaMilli).toBe(0);
  });

  it("a revision's scale-up into what its Service still holds for it needs nothing more", () => {
    const revision = held(1000, 1);
    const n = quotaDelta({ operation: "UPDATE", workload: scale(8), old: scale(1), memoryPerDeviceMiB: MEM, cached: revision, handedOverMilli: 7000 });
    expect(n).toMatchObject({ heldMilli: 8000, deltaMilli: 0 });
    const beyond = quotaDelta({ operation: "UPDATE", workload: scale(9), old: scale(1), memoryPerDeviceMiB: MEM, cached: revision, handedOverMilli: 7000 });
    expect(beyond.deltaMilli).toBe(1000);
  });

  it("pods: bare and other controllers' pods are charged at CREATE; covered pods and updates are not", () => {
    expect(quotaDelta({ operation: "CREATE", workload: w("Pod", pod(undefined, {}, { "gpu-fraction": "0.5" })), memoryPerDeviceMiB: MEM })).toMatchObject({ deltaMilli: 500, what: "bare pod" });
    expect(quotaDelta({ operation: "CREATE", workload: w("Pod", pod({ kind: "StatefulSet", name: "web" }, {}, {}, "2")), memoryPerDeviceMiB: MEM })).toMatchObject({ deltaMilli: 2000, what: "pod of StatefulSet web" });
    expect(quotaDelta({ operation: "CREATE", workload: w("Pod", pod({ kind: "ReplicaSet", name: "llm-abc" }, { "pod-template-hash": "abc" }, {}, "2")), memoryPerDeviceMiB: MEM }).deltaMilli).toBe(0);
    expect(quotaDelta({ operation: "UPDATE", workload: w("Pod", pod(undefined, {}, {}, "2")), old: w("Pod", pod(undefined, {}, {}, "2")), memoryPerDeviceMiB: MEM }).deltaMilli).toBe(0);
  });
});

describe("checkQuota and quotaDenial", () => {
  it("admits exactly up to the quota, and needing nothing always fits", () => {
    expect(checkQuota({ deltaMilli: 500 }, { allocated: 0.3, reserved: 0.2, workloads: 2 }, 1000).fits).toBe(true);
    expect(checkQuota({ deltaMilli: 501 }, { allocated: 0.3, reserved: 0.2, workloads: 2 }, 1000).fits).toBe(false);
    expect(checkQuota({ deltaMilli: 0 }, { allocated: 12, reserved: 0, workloads: 2 }, 8000)).toMatchObject({ fits: true, freeMilli: -4000 });
  });

  it("words the denial as PRODUCT.md §5 does", () => {
    const oldS = ksvc("1", { "autoscaling.knative.dev/min-scale": "3" });
    const newS = ksvc("1", { "autoscaling.knative.dev/min-scale": "8" });
    const need = quotaDelta({ operation: "UPDATE", workload: w("KnativeService", newS), old: w("KnativeService", oldS), memoryPerDeviceMiB: MEM });
    const check = checkQuota(need, { allocated: 3, reserved: 0, workloads: 1 }, 8000);
    const denial = quotaDenial("team-a", need, check);
    expect(denial.message).toBe(
      "project team-a: GPU quota exceeded: this update needs 8 GPUs (8 pods × 1 GPU, new revision) but 5 of 8 are free (3 allocated). " +
        "Lower replicas, or ask an admin to raise Project team-a spec.gpuQuota.",
    );
    expect(denial.details).toEqual({
      project: "team-a",
      requestedGpus: 8,
      freeGpus: 5,
      quotaGpus: 8,
      allocatedGpus: 3,
      reservedGpus: 0,
      heldGpus: 0,
      pods: 8,
      gpusPerPod: 1,
    });
  });

  it("mentions reservations, what is held, fractions, and never a negative free amount", () => {
    const need = quotaDelta({ operation: "UPDATE", workload: scale(4), old: scale(2), memoryPerDeviceMiB: MEM, cached: held(500, 2) });
    const check = checkQuota(need, { allocated: 2.25, reserved: 0.5, workloads: 3 }, 2000);
    expect(quotaDenial("team-b", need, check).message).toBe(
      "project team-b: GPU quota exceeded: this scale-up needs 0.5 GPU (4 pods × 0.25 GPU, scale 2 → 4, less 0.5 already held) " +
        "but 0 of 2 are free (2.25 allocated, 0.5 reserved). Lower replicas, or ask an admin to raise Project team-b spec.gpuQuota.",
    );

    function held(milli: number, replicas: number) {
      return { kind: "Deployment" as const, namespace: "team-b", name: "llm", gpusPerPodMilli: 250, replicas, pods: replicas, milli };
    }
  });
});
