import { describe, expect, it } from "vitest";
import { quota, quotaAdmissionOfRequest } from "./quota.ts";
import { runPipeline, type PolicyResolver } from "../src/admission/pipeline.ts";
import type { AdmissionRequest } from "../src/admission/types.ts";
import { mergePolicies } from "../src/policy/merge.ts";
import type { EffectivePolicy, Project } from "../src/policy/types.ts";
import { QuotaTotals } from "../src/quota/totals.ts";
import type { QuotaView } from "../src/quota/view.ts";
import { DEFAULT_KNATIVE_FEATURES } from "../src/workload/knative-features.ts";

const policy: EffectivePolicy = mergePolicies(undefined, { metadata: { name: "warn-only" }, spec: { enforcement: "warn" } });

function projectWith(gpuQuota: string | undefined, extra: Partial<Project["spec"]> = {}): Project {
  return { metadata: { name: "team-a" }, spec: { namespaces: ["team-a"], ...(gpuQuota === undefined ? {} : { gpuQuota }), ...extra } };
}

function resolverFor(project: Project): PolicyResolver {
  return { resolve: (ns) => (project.spec.namespaces?.includes(ns) ? { project, policy } : undefined) };
}

const DEPLOYMENTS = { group: "apps", version: "v1", resource: "deployments" };
const SERVICES = { group: "serving.knative.dev", version: "v1", resource: "services" };
const PODS = { group: "", version: "v1", resource: "pods" };

function request(resource: AdmissionRequest["resource"], operation: "CREATE" | "UPDATE", object: any, oldObject?: any, subResource?: string): AdmissionRequest {
  return {
    uid: "u1",
    kind: { group: resource.group, version: resource.version, kind: subResource ? "Scale" : (object.kind ?? "Pod") },
    resource,
    ...(subResource ? { subResource } : {}),
    name: object.metadata?.name,
    namespace: "team-a",
    operation,
    userInfo: { username: "alice" },
    object,
    ...(oldObject ? { oldObject } : {}),
  };
}

function deployment(name: string, replicas: number, gpus: string | undefined, extra: { image?: string; strategy?: any; annotations?: Record<string, string>; revisionOf?: string } = {}): any {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name,
      namespace: "team-a",
      ...(extra.revisionOf
        ? {
            labels: { "serving.knative.dev/service": extra.revisionOf, "serving.knative.dev/revision": name.replace(/-deployment$/, "") },
            ownerReferences: [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: name.replace(/-deployment$/, ""), uid: "r", controller: true }],
          }
        : {}),
    },
    spec: {
      replicas,
      ...(extra.strategy ? { strategy: extra.strategy } : {}),
      template: {
        metadata: { annotations: extra.annotations ?? {} },
        spec: { containers: [{ image: extra.image ?? "vllm:1", resources: gpus ? { limits: { "nvidia.com/gpu": gpus } } : {} }] },
      },
    },
  };
}

function ksvc(name: string, minScale: number, gpus = "1", image = "vllm:1"): any {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name, namespace: "team-a" },
    spec: {
      template: {
        metadata: { annotations: { "autoscaling.knative.dev/min-scale": String(minScale) } },
        spec: { containers: [{ image, resources: { limits: { "nvidia.com/gpu": gpus } } }] },
      },
    },
  };
}

function pod(name: string, annotations: Record<string, string>, owner?: { kind: string; hash?: boolean }): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: "team-a",
      annotations,
      labels: owner?.hash ? { "pod-template-hash": "abc" } : {},
      ...(owner ? { ownerReferences: [{ apiVersion: "apps/v1", kind: owner.kind, name: "o", uid: "o", controller: true }] } : {}),
    },
    spec: { containers: [{ image: "x" }] },
  };
}

function scaleObject(name: string, replicas: number): any {
  return { apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name, namespace: "team-a" }, spec: { replicas } };
}

function admit(project: Project, req: AdmissionRequest, view?: QuotaView) {
  return runPipeline({
    request: req,
    phase: "validate",
    plugins: [quota],
    policies: resolverFor(project),
    cluster: { knativeFeatures: DEFAULT_KNATIVE_FEATURES, ...(view ? { quota: view } : {}) },
  });
}

function clusterWith(project: Project, objects: any[]): QuotaTotals {
  const totals = new QuotaTotals((ns) => (project.spec.namespaces?.includes(ns) ? project : undefined));
  for (const o of objects) totals.apply("ADDED", o);
  return totals;
}

describe("quota plugin: Deployments", () => {
  const project = projectWith("8");

  it("admits a create that fits exactly, and denies one GPU more", () => {
    const totals = clusterWith(project, [deployment("other", 3, "1")]);
    expect(admit(project, request(DEPLOYMENTS, "CREATE", deployment("llm", 5, "1")), totals).response.allowed).toBe(true);
    const denied = admit(project, request(DEPLOYMENTS, "CREATE", deployment("llm", 6, "1")), totals);
    expect(denied.response.allowed).toBe(false);
    expect(denied.response.status?.reason).toBe("QuotaExceeded");
    expect(denied.response.status?.message).toBe(
      'Deployment "llm" is invalid: project team-a: GPU quota exceeded: this create needs 6 GPUs (6 pods × 1 GPU, new Deployment) ' +
        "but 5 of 8 are free (3 allocated). Lower replicas, or ask an admin to raise Project team-a spec.gpuQuota.",
    );
    expect(denied.response.status?.details).toMatchObject({ project: "team-a", requestedGpus: 6, freeGpus: 5, quotaGpus: 8, allocatedGpus: 3, reservedGpus: 0, pods: 6, gpusPerPod: 1 });
    expect(denied.violations[0]).toMatchObject({ plugin: "quota", field: "spec.replicas", value: 6, reason: "QuotaExceeded" });
  });

  it("denies even under enforcement: warn, because quota is not a policy rule", () => {
    const totals = clusterWith(project, [deployment("other", 8, "1")]);
    expect(policy.enforcement).toBe("warn");
    expect(admit(project, request(DEPLOYMENTS, "CREATE", deployment("llm", 1, "1")), totals).response.allowed).toBe(false);
  });

  it("replica change: only the increase must be free", () => {
    const old = deployment("llm", 3, "1");
    const totals = clusterWith(project, [old]);
    expect(admit(project, request(DEPLOYMENTS, "UPDATE", deployment("llm", 8, "1"), old), totals).response.allowed).toBe(true);
    const denied = admit(project, request(DEPLOYMENTS, "UPDATE", deployment("llm", 9, "1"), old), totals);
    expect(denied.response.status?.message).toContain("this update needs 6 GPUs (9 pods × 1 GPU, replicas 3 → 9, less 3 already held) but 5 of 8 are free (3 allocated)");
  });

  it("rollout 3 → 8 replicas × 1 GPU: needs max(3, 8) + maxSurge 2 = 10 pods, 7 more GPUs", () => {
    const old = deployment("llm", 3, "1");
    const totals = clusterWith(project, [old]);
    const update = deployment("llm", 8, "1", { image: "vllm:2" });
    const denied = admit(project, request(DEPLOYMENTS, "UPDATE", update, old), totals);
    expect(denied.response.allowed).toBe(false);
    expect(denied.response.status?.message).toContain(
      "this update needs 7 GPUs (10 pods × 1 GPU, rollout with maxSurge 2, less 3 already held) but 5 of 8 are free (3 allocated). Lower replicas or maxSurge, or ask an admin",
    );
    expect(denied.violations[0]?.field).toBe("spec.template");
    expect(admit(projectWith("10"), request(DEPLOYMENTS, "UPDATE", update, old), totals).response.allowed).toBe(true);
  });

  it("a rollout that fits only without surge: denied with maxSurge, admitted with Recreate or maxSurge 0", () => {
    const quota4 = projectWith("4");
    const old = deployment("llm", 4, "1");
    const totals = clusterWith(quota4, [old]);
    const rolling = deployment("llm", 4, "1", { image: "vllm:2" });
    expect(admit(quota4, request(DEPLOYMENTS, "UPDATE", rolling, old), totals).response.allowed).toBe(false);
    const recreate = deployment("llm", 4, "1", { image: "vllm:2", strategy: { type: "Recreate" } });
    expect(admit(quota4, request(DEPLOYMENTS, "UPDATE", recreate, old), totals).response.allowed).toBe(true);
    const noSurge = deployment("llm", 4, "1", { image: "vllm:2", strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } } });
    expect(admit(quota4, request(DEPLOYMENTS, "UPDATE", noSurge, old), totals).response.allowed).toBe(true);
  });

  it("scale-down is always allowed, even in a project over its quota", () => {
    const old = deployment("llm", 10, "1");
    const totals = clusterWith(project, [old]);
    expect(totals.usage("team-a").allocated).toBe(10);
    expect(admit(project, request(DEPLOYMENTS, "UPDATE", deployment("llm", 9, "1"), old), totals).response.allowed).toBe(true);
    const scaleDown = request(DEPLOYMENTS, "UPDATE", scaleObject("llm", 2), scaleObject("llm", 10), "scale");
    expect(admit(project, scaleDown, totals).response.allowed).toBe(true);
  });
});

describe("quota plugin: deployments/scale", () => {
  const project = projectWith("8");

  it("checks a scale-up with the GPUs per pod of the cached Deployment", () => {
    const totals = clusterWith(project, [deployment("llm", 2, undefined, { annotations: { "gpu-fraction": "0.5" } }), deployment("big", 6, "1")]);
    const fits = request(DEPLOYMENTS, "UPDATE", scaleObject("llm", 4), scaleObject("llm", 2), "scale");
    expect(admit(project, fits, totals).response.allowed).toBe(true);
    const tooMany = request(DEPLOYMENTS, "UPDATE", scaleObject("llm", 5), scaleObject("llm", 2), "scale");
    const denied = admit(project, tooMany, totals);
    expect(denied.response.allowed).toBe(false);
    expect(denied.response.status?.message).toContain("this scale-up needs 1.5 GPUs (5 pods × 0.5 GPU, scale 2 → 5, less 1 already held) but 1 of 8 is free (7 allocated)");
  });

  it("checks scale-ups of a Knative revision Deployment (the autoscaler's path)", () => {
    const rev = deployment("chat-00001-deployment", 1, "1", { revisionOf: "chat" });
    const totals = clusterWith(project, [ksvc("chat", 1), rev, deployment("big", 6, "1")]);
    expect(totals.usage("team-a").allocated).toBe(7);
    const up = (n: number) => request(DEPLOYMENTS, "UPDATE", scaleObject("chat-00001-deployment", n), scaleObject("chat-00001-deployment", 1), "scale");
    expect(admit(project, up(2), totals).response.allowed).toBe(true);
    expect(admit(project, up(3), totals).response.allowed).toBe(false);
  });
});

describe("quota plugin: Knative Services", () => {
  const project = projectWith("8");

  it("create: the first revision at max(min-scale, initial-scale, 1)", () => {
    const totals = clusterWith(project, [deployment("big", 4, "1")]);
    expect(admit(project, request(SERVICES, "CREATE", ksvc("chat", 4)), totals).response.allowed).toBe(true);
    expect(admit(project, request(SERVICES, "CREATE", ksvc("chat", 5)), totals).response.allowed).toBe(false);
  });

  it("Run:ai's example: 3 replicas × 1 GPU updated to 8 needs 8 more free GPUs while the old revision keeps its 3", () => {
    const old = ksvc("chat", 3);
    const totals = clusterWith(project, [old, deployment("chat-00001-deployment", 3, "1", { revisionOf: "chat" })]);
    expect(totals.usage("team-a").allocated).toBe(3);
    const denied = admit(project, request(SERVICES, "UPDATE", ksvc("chat", 8), old), totals);
    expect(denied.response.allowed).toBe(false);
    expect(denied.response.status?.message).toBe(
      'Service.serving.knative.dev "chat" is invalid: project team-a: GPU quota exceeded: this update needs 8 GPUs (8 pods × 1 GPU, new revision) ' +
        "but 5 of 8 are free (3 allocated). Lower replicas, or ask an admin to raise Project team-a spec.gpuQuota.",
    );
    expect(admit(projectWith("11"), request(SERVICES, "UPDATE", ksvc("chat", 8), old), totals).response.allowed).toBe(true);
  });

  it("a change outside the template creates no revision and needs nothing", () => {
    const old = ksvc("chat", 8);
    const totals = clusterWith(project, [old, deployment("chat-00001-deployment", 8, "1", { revisionOf: "chat" })]);
    const relabelled = { ...ksvc("chat", 8), metadata: { name: "chat", namespace: "team-a", labels: { tier: "gold" } } };
    expect(admit(project, request(SERVICES, "UPDATE", relabelled, old), totals).response.allowed).toBe(true);
  });

  it("hand-over: the autoscaler's scale-up of a new revision to its min-scale is already paid for", () => {
    const service = { ...ksvc("chat", 8), metadata: { name: "chat", namespace: "team-a", generation: 1 }, status: { observedGeneration: 1, latestCreatedRevisionName: "chat-00001" } };
    const revision = deployment("chat-00001-deployment", 1, "1", { revisionOf: "chat" });
    const totals = clusterWith(project, [service, revision]);
    expect(totals.usage("team-a").allocated).toBe(8);
    // Another workload cannot take the 7 GPUs the revision is about to scale into…
    expect(admit(project, request(DEPLOYMENTS, "CREATE", deployment("llm", 1, "1")), totals).response.allowed).toBe(false);
    // …and Knative's scale-up into them needs nothing new, while going beyond is checked.
    const up = (n: number) => request(DEPLOYMENTS, "UPDATE", scaleObject("chat-00001-deployment", n), scaleObject("chat-00001-deployment", 1), "scale");
    expect(admit(project, up(8), totals).response.allowed).toBe(true);
    expect(quotaAdmissionOfRequest(up(8), project, totals)?.ledger).toEqual({ key: "Deployment/team-a/chat-00001-deployment", targetMilli: 1000, replaces: "" });
    expect(admit(project, up(9), totals).response.allowed).toBe(false);
  });

  it("hand-over: the revision Deployment Knative creates is not charged a second time", () => {
    // The Service's admission reserved its 8 GPUs; the edge holds them as a reservation until the cache sees them.
    const totals = clusterWith(project, []);
    expect(admit(project, request(SERVICES, "CREATE", ksvc("chat", 8)), totals).response.allowed).toBe(true);
    totals.setReserved("team-a", 8000);
    const revision = deployment("chat-00001-deployment", 8, "1", { revisionOf: "chat" });
    const created = admit(project, request(DEPLOYMENTS, "CREATE", revision), totals);
    expect(created.response.allowed).toBe(true);
    expect(quotaAdmissionOfRequest(request(DEPLOYMENTS, "CREATE", revision), project, totals)?.need.deltaMilli).toBe(0);

    // Once the cache sees both, the Service's own charge gives way to its revision: 8 GPUs, not 16.
    totals.setReserved("team-a", 0);
    totals.apply("ADDED", ksvc("chat", 8));
    totals.apply("ADDED", revision);
    expect(totals.usage("team-a")).toEqual({ allocated: 8, reserved: 0, workloads: 1 });
  });
});

describe("quota plugin: pods and fractions", () => {
  const project = projectWith("1");

  it("fractional GPUs summing exactly to the quota are admitted, and any more is denied", () => {
    const totals = clusterWith(project, [pod("a", { "gpu-fraction": "0.1" }), pod("b", { "gpu-fraction": "0.2" })]);
    expect(totals.usage("team-a").allocated).toBeCloseTo(0.3, 10);
    const fits = deployment("llm", 7, undefined, { annotations: { "gpu-fraction": "0.1" } });
    expect(admit(project, request(DEPLOYMENTS, "CREATE", fits), totals).response.allowed).toBe(true);

    totals.apply("ADDED", fits);
    expect(totals.allocatedMilli("team-a")).toBe(1000);
    const denied = admit(project, request(PODS, "CREATE", pod("c", { "gpu-fraction": "0.001" })), totals);
    expect(denied.response.allowed).toBe(false);
    expect(denied.response.status?.message).toContain("this create needs 0.001 GPU (1 pod × 0.001 GPU, bare pod) but 0 of 1 are free (1 allocated). Lower the pod's GPU request");
  });

  it("converts gpu-memory with the project's memory per device", () => {
    const small = projectWith("1", { gpuMemoryPerDeviceMiB: 40960 });
    const totals = clusterWith(small, []);
    const twoHalves = deployment("llm", 2, undefined, { annotations: { "gpu-memory": "20480" } });
    expect(admit(small, request(DEPLOYMENTS, "CREATE", twoHalves), totals).response.allowed).toBe(true);
    const three = deployment("llm", 3, undefined, { annotations: { "gpu-memory": "20480" } });
    const denied = admit(small, request(DEPLOYMENTS, "CREATE", three), totals);
    expect(denied.response.status?.details).toMatchObject({ requestedGpus: 1.5, gpusPerPod: 0.5 });
    // Default 80 GiB per device: 3 × 0.25 fits in 1.
    expect(admit(projectWith("1"), request(DEPLOYMENTS, "CREATE", three), totals).response.allowed).toBe(true);
  });

  it("charges bare pods and pods of other controllers at CREATE, not Deployment pods", () => {
    const totals = clusterWith(project, [deployment("llm", 1, "1")]);
    expect(admit(project, request(PODS, "CREATE", pod("bare", { "gpu-fraction": "0.5" })), totals).response.allowed).toBe(false);
    const sts = admit(project, request(PODS, "CREATE", pod("web-0", { "gpu-fraction": "0.5" }, { kind: "StatefulSet" })), totals);
    expect(sts.response.status?.message).toContain("(1 pod × 0.5 GPU, pod of StatefulSet o)");
    expect(admit(project, request(PODS, "CREATE", pod("llm-abc-x", { "gpu-fraction": "0.5" }, { kind: "ReplicaSet", hash: true })), totals).response.allowed).toBe(true);
  });
});

describe("quota plugin: when it stays out", () => {
  it("never blocks a project with no gpuQuota", () => {
    const none = projectWith(undefined);
    const totals = clusterWith(none, [deployment("big", 100, "1")]);
    const result = admit(none, request(DEPLOYMENTS, "CREATE", deployment("llm", 50, "8")), totals);
    expect(result.response.allowed).toBe(true);
    expect(result.violations).toEqual([]);
  });

  it("never blocks a namespace of no project", () => {
    const project = projectWith("1");
    const elsewhere = { ...request(DEPLOYMENTS, "CREATE", deployment("llm", 50, "8")), namespace: "outside" };
    elsewhere.object.metadata.namespace = "outside";
    const result = admit(project, elsewhere, clusterWith(project, []));
    expect(result.response.allowed).toBe(true);
    expect(result.skipped).toBe("namespace belongs to no Project");
  });

  it("stays out without usage, and for workloads that are not inference", () => {
    const project = projectWith("1");
    expect(admit(project, request(DEPLOYMENTS, "CREATE", deployment("llm", 50, "8"))).response.allowed).toBe(true);
    expect(admit(project, request(DEPLOYMENTS, "CREATE", deployment("web", 50, undefined)), clusterWith(project, [])).response.allowed).toBe(true);
  });

  it("gives the edge the same decision from a bare AdmissionRequest", () => {
    const project = projectWith("8");
    const old = ksvc("chat", 3);
    const totals = clusterWith(project, [old, deployment("chat-00001-deployment", 3, "1", { revisionOf: "chat" })]);
    const decision = quotaAdmissionOfRequest(request(SERVICES, "UPDATE", ksvc("chat", 4), old), project, totals);
    expect(decision).toMatchObject({ project: "team-a", need: { deltaMilli: 4000, pods: 4 }, check: { fits: true, freeMilli: 5000, quotaMilli: 8000 } });
    // The ledger reserves the Service's charge once admitted: what the cache holds for it (0, its revision holds 3) plus the delta.
    expect(decision?.ledger).toEqual({ key: "Service.serving.knative.dev/team-a/chat", targetMilli: 4000, replaces: "" });
    const oldDeployment = { ...deployment("llm", 2, "1"), metadata: { name: "llm", namespace: "team-a", resourceVersion: "42" } };
    const withLlm = clusterWith(project, [oldDeployment]);
    const scaled = quotaAdmissionOfRequest(request(DEPLOYMENTS, "UPDATE", deployment("llm", 5, "1"), oldDeployment), project, withLlm);
    expect(scaled?.ledger).toEqual({ key: "Deployment/team-a/llm", targetMilli: 5000, replaces: "42" });
    expect(quotaAdmissionOfRequest(request(SERVICES, "UPDATE", ksvc("chat", 4), old), projectWith(undefined), totals)).toBeUndefined();
  });
});
