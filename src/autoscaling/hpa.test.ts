import { describe, expect, it } from "vitest";
import type { Logger } from "../observability/log.ts";
import { PolicyStore } from "../policy/store.ts";
import type { AutoscalingDefaults, PolicyRules } from "../policy/types.ts";
import {
  AUTOSCALING_MAX_REPLICAS_ANNOTATION,
  AUTOSCALING_METRIC_ANNOTATION,
  AUTOSCALING_MIN_REPLICAS_ANNOTATION,
  AUTOSCALING_TARGET_ANNOTATION,
  autoscalingSettings,
  decideAutoscaling,
  mergedHpa,
  parseQuantity,
  planHpas,
  targetQuantity,
  upToDate,
  type HorizontalPodAutoscaler,
  type NamespaceResolver,
} from "./hpa.ts";
import { applyHpaPlan, type HpaApi } from "./reconciler.ts";

function storeWith(projects: Record<string, { autoscaling?: AutoscalingDefaults; rules?: PolicyRules }>): PolicyStore {
  const store = new PolicyStore();
  for (const [project, spec] of Object.entries(projects)) {
    store.upsertProject({ metadata: { name: project }, spec: { namespaces: [project] } });
    store.upsertPolicy({ metadata: { name: `${project}-policy` }, spec: { projects: [project], defaults: spec.autoscaling ? { autoscaling: spec.autoscaling } : {}, rules: spec.rules ?? {} } });
  }
  return store;
}

const store = storeWith({
  team: { autoscaling: { metric: "latency", target: 200, minReplicas: 1, maxReplicas: 4 } },
  plain: {},
  capped: { autoscaling: { metric: "rps", target: 5, maxReplicas: 20 }, rules: { replicas: { max: 8 } } },
});
const resolve: NamespaceResolver = (ns) => store.resolve(ns);

const gpuContainer = { name: "server", image: "nvcr.io/nim/llm:1", resources: { limits: { "nvidia.com/gpu": "1" } } };

function deployment(name: string, opts: { namespace?: string; annotations?: Record<string, string>; containers?: any[]; owners?: any[]; uid?: string } = {}) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name,
      namespace: opts.namespace ?? "team",
      uid: opts.uid ?? `uid-${name}`,
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
      ...(opts.owners ? { ownerReferences: opts.owners } : {}),
    },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: opts.containers ?? [gpuContainer] } },
    },
  };
}

function hpaOf(d: any): HorizontalPodAutoscaler {
  const decision = decideAutoscaling(d, resolve);
  if (decision.kind !== "hpa") throw new Error(`expected an HPA for ${d.metadata.name}, got ${JSON.stringify(decision)}`);
  return decision.hpa;
}

/** The HPA as the API server stores it: uid, resourceVersion, canonical quantities. */
function stored(hpa: HorizontalPodAutoscaler, extra: { averageValue?: string; behavior?: object } = {}): HorizontalPodAutoscaler {
  const copy = structuredClone(hpa);
  copy.metadata.uid = `hpa-uid-${hpa.metadata.name}`;
  copy.metadata.resourceVersion = "42";
  copy.metadata.managedFields = [{ manager: "infergate" }];
  if (extra.averageValue) copy.spec.metrics![0].pods.target.averageValue = extra.averageValue;
  if (extra.behavior) copy.spec.behavior = extra.behavior;
  return copy;
}

function foreignHpa(name: string, target: string, namespace = "team"): HorizontalPodAutoscaler {
  return {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: { name, namespace, uid: `uid-hpa-${name}` },
    spec: { scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: target }, maxReplicas: 10, metrics: [] },
  };
}

describe("the HPA for a GPU Deployment", () => {
  it("scales on p95 latency in milliseconds from the policy, owned by the Deployment", () => {
    expect(hpaOf(deployment("chat"))).toEqual({
      apiVersion: "autoscaling/v2",
      kind: "HorizontalPodAutoscaler",
      metadata: {
        name: "chat",
        namespace: "team",
        labels: { "app.kubernetes.io/managed-by": "infergate" },
        ownerReferences: [{ apiVersion: "apps/v1", kind: "Deployment", name: "chat", uid: "uid-chat", controller: true }],
      },
      spec: {
        scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "chat" },
        minReplicas: 1,
        maxReplicas: 4,
        metrics: [{ type: "Pods", pods: { metric: { name: "inference_latency_p95_ms" }, target: { type: "AverageValue", averageValue: "200" } } }],
      },
    });
  });

  it("maps concurrency and rps to the adapter's metric names, with fractional targets in milli-units", () => {
    const concurrency = hpaOf(deployment("a", { annotations: { [AUTOSCALING_METRIC_ANNOTATION]: "concurrency", [AUTOSCALING_TARGET_ANNOTATION]: "2.5" } }));
    expect(concurrency.spec.metrics![0].pods).toEqual({ metric: { name: "inference_concurrency" }, target: { type: "AverageValue", averageValue: "2500m" } });
    const rps = hpaOf(deployment("b", { namespace: "capped" }));
    expect(rps.spec.metrics![0].pods).toEqual({ metric: { name: "inference_requests_per_second" }, target: { type: "AverageValue", averageValue: "5" } });
  });

  it("lets annotations override the policy field by field", () => {
    const hpa = hpaOf(deployment("chat", { annotations: { [AUTOSCALING_TARGET_ANNOTATION]: "150", [AUTOSCALING_MAX_REPLICAS_ANNOTATION]: "6", [AUTOSCALING_MIN_REPLICAS_ANNOTATION]: "2" } }));
    expect(hpa.spec).toMatchObject({ minReplicas: 2, maxReplicas: 6 });
    expect(hpa.spec.metrics![0].pods.target.averageValue).toBe("150");
  });

  it("autoscales a Deployment from annotations alone when its policy sets no autoscaling", () => {
    const hpa = hpaOf(
      deployment("solo", {
        namespace: "plain",
        annotations: { [AUTOSCALING_METRIC_ANNOTATION]: "rps", [AUTOSCALING_TARGET_ANNOTATION]: "12", [AUTOSCALING_MAX_REPLICAS_ANNOTATION]: "3" },
      }),
    );
    expect(hpa.spec).toMatchObject({ minReplicas: 1, maxReplicas: 3 });
    expect(hpa.spec.metrics![0].pods.metric.name).toBe("inference_requests_per_second");
  });

  it("turns off with metric none, and never applies to non-GPU, Knative-owned or project-less Deployments", () => {
    expect(decideAutoscaling(deployment("chat", { annotations: { [AUTOSCALING_METRIC_ANNOTATION]: "none" } }), resolve).kind).toBe("off");
    expect(decideAutoscaling(deployment("web", { containers: [{ name: "web", image: "nginx" }] }), resolve).kind).toBe("off");
    const knative = deployment("chat-00001-deployment", { owners: [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "chat-00001", uid: "r1", controller: true }] });
    expect(decideAutoscaling(knative, resolve).kind).toBe("off");
    expect(decideAutoscaling(deployment("chat", { namespace: "elsewhere" }), resolve)).toEqual({ kind: "off", reason: "namespace elsewhere belongs to no Project" });
    expect(decideAutoscaling(deployment("chat", { namespace: "plain" }), resolve).kind).toBe("off");
  });

  it("counts a labelled inference Deployment without GPUs", () => {
    const d = deployment("cpu", { containers: [{ name: "s", image: "x" }] });
    (d.spec.template.metadata as any).labels["infergate.dev/inference"] = "true";
    expect(decideAutoscaling(d, resolve).kind).toBe("hpa");
  });
});

describe("autoscaling settings", () => {
  const policy = store.resolve("team")!.policy;

  it("reports every malformed annotation at once, with its path, value and what is allowed", () => {
    const result = autoscalingSettings(
      { [AUTOSCALING_METRIC_ANNOTATION]: "gpu", [AUTOSCALING_TARGET_ANNOTATION]: "fast", [AUTOSCALING_MIN_REPLICAS_ANNOTATION]: "0", [AUTOSCALING_MAX_REPLICAS_ANNOTATION]: "2.5" },
      policy,
    );
    expect(result).toEqual({
      kind: "invalid",
      problems: [
        { field: 'metadata.annotations["infergate.dev/autoscaling-metric"]', value: "gpu", allowed: "one of concurrency, rps, latency, none" },
        { field: 'metadata.annotations["infergate.dev/autoscaling-target"]', value: "fast", allowed: expect.stringContaining("a decimal number") },
        { field: 'metadata.annotations["infergate.dev/autoscaling-min-replicas"]', value: "0", allowed: "a whole number of at least 1" },
        { field: 'metadata.annotations["infergate.dev/autoscaling-max-replicas"]', value: "2.5", allowed: "a whole number of at least 1" },
      ],
    });
  });

  it("does not reuse the policy's target for a different metric chosen by annotation", () => {
    const result = autoscalingSettings({ [AUTOSCALING_METRIC_ANNOTATION]: "concurrency" }, policy);
    expect(result.kind).toBe("invalid");
    if (result.kind !== "invalid") return;
    expect(result.problems).toEqual([
      { field: 'metadata.annotations["infergate.dev/autoscaling-target"]', value: undefined, allowed: "a target for metric concurrency: the policy's target 200 is for metric latency" },
    ]);
    // Naming the policy's own metric keeps its target.
    expect(autoscalingSettings({ [AUTOSCALING_METRIC_ANNOTATION]: "latency" }, policy)).toEqual({ kind: "on", settings: { metric: "latency", target: 200, minReplicas: 1, maxReplicas: 4 } });
  });

  it("keeps min at most max and max within the policy's replica rule", () => {
    const inverted = autoscalingSettings({ [AUTOSCALING_MIN_REPLICAS_ANNOTATION]: "5" }, policy);
    expect(inverted).toEqual({
      kind: "invalid",
      problems: [{ field: 'metadata.annotations["infergate.dev/autoscaling-min-replicas"]', value: "5", allowed: "min-replicas (5) at most max-replicas (4)" }],
    });
    const capped = store.resolve("capped")!.policy;
    expect(autoscalingSettings({ [AUTOSCALING_MAX_REPLICAS_ANNOTATION]: "9" }, capped)).toEqual({
      kind: "invalid",
      problems: [{ field: 'metadata.annotations["infergate.dev/autoscaling-max-replicas"]', value: "9", allowed: "at most 8 (the policy's rules.replicas.max)" }],
    });
    // The policy's own default of 20 contradicts its rule of 8: the rule wins.
    expect(autoscalingSettings(undefined, capped)).toEqual({ kind: "on", settings: { metric: "rps", target: 5, minReplicas: 1, maxReplicas: 8 } });
  });

  it("needs a maximum from somewhere, and raises a Knative-style minimum of 0 to 1", () => {
    const noMax = { defaults: { autoscaling: { metric: "concurrency" as const, target: 10, minReplicas: 0 } }, rules: {} };
    const result = autoscalingSettings(undefined, noMax);
    expect(result.kind).toBe("invalid");
    const withRule = { ...noMax, rules: { replicas: { max: 3 } } };
    expect(autoscalingSettings(undefined, withRule)).toEqual({ kind: "on", settings: { metric: "concurrency", target: 10, minReplicas: 1, maxReplicas: 3 } });
  });

  it("is off without a metric, and says so when only other annotations are given", () => {
    expect(autoscalingSettings(undefined, store.resolve("plain")!.policy).kind).toBe("off");
    const partial = autoscalingSettings({ [AUTOSCALING_TARGET_ANNOTATION]: "10" }, store.resolve("plain")!.policy);
    expect(partial.kind).toBe("invalid");
  });
});

describe("quantities", () => {
  it("formats targets and compares them as the API server canonicalizes them", () => {
    expect(targetQuantity(200)).toBe("200");
    expect(targetQuantity(0.25)).toBe("250m");
    expect(parseQuantity("1k")).toBe(1000);
    expect(parseQuantity("250m")).toBe(0.25);
    expect(parseQuantity("2Ki")).toBe(2048);
    expect(parseQuantity("1e3")).toBe(1000);
    expect(parseQuantity("12")).toBe(12);
    expect(parseQuantity("1.5")).toBe(1.5);
    expect(parseQuantity("ten")).toBeUndefined();
    expect(parseQuantity(undefined)).toBeUndefined();
  });
});

describe("planning HPA changes", () => {
  const chat = deployment("chat");

  it("creates the HPA a Deployment lacks", () => {
    const plan = planHpas({ deployments: [chat], hpas: [], resolveNamespace: resolve });
    expect(plan.create.map((h) => h.metadata.name)).toEqual(["chat"]);
    expect(plan.update).toEqual([]);
    expect(plan.delete).toEqual([]);
  });

  it("leaves an up-to-date HPA alone even when the API server rewrote its target as 1k", () => {
    const d = deployment("big", { namespace: "capped", annotations: { [AUTOSCALING_TARGET_ANNOTATION]: "1000" } });
    const existing = stored(hpaOf(d), { averageValue: "1k" });
    expect(upToDate(existing, hpaOf(d))).toBe(true);
    const plan = planHpas({ deployments: [d], hpas: [existing], resolveNamespace: resolve });
    expect(plan).toEqual({ create: [], update: [], delete: [], foreign: [], problems: [] });
  });

  it("updates the HPA when the settings change, keeping fields infergate does not own", () => {
    const behavior = { scaleDown: { stabilizationWindowSeconds: 30 } };
    const existing = stored(hpaOf(chat), { behavior });
    const changed = deployment("chat", { annotations: { [AUTOSCALING_TARGET_ANNOTATION]: "300", [AUTOSCALING_MAX_REPLICAS_ANNOTATION]: "3" } });
    const plan = planHpas({ deployments: [changed], hpas: [existing], resolveNamespace: resolve });
    expect(plan.update).toHaveLength(1);
    const written = mergedHpa(plan.update[0]!.observed, plan.update[0]!.desired);
    expect(written.metadata.resourceVersion).toBe("42");
    expect(written.metadata.managedFields).toBeUndefined();
    expect(written.spec).toMatchObject({ maxReplicas: 3, behavior });
    expect(written.spec.metrics![0].pods.target.averageValue).toBe("300");
  });

  it("deletes its HPA when the settings go, the Deployment opts out or its namespace leaves the Project", () => {
    const existing = stored(hpaOf(chat));
    const noGpu = deployment("chat", { containers: [{ name: "s", image: "x" }] });
    expect(planHpas({ deployments: [noGpu], hpas: [existing], resolveNamespace: resolve }).delete).toEqual([existing]);
    const optedOut = deployment("chat", { annotations: { [AUTOSCALING_METRIC_ANNOTATION]: "none" } });
    expect(planHpas({ deployments: [optedOut], hpas: [existing], resolveNamespace: resolve }).delete).toEqual([existing]);
    expect(planHpas({ deployments: [chat], hpas: [existing], resolveNamespace: () => undefined }).delete).toEqual([existing]);
  });

  it("leaves an HPA whose Deployment is not in the cache to garbage collection", () => {
    const existing = stored(hpaOf(chat));
    expect(planHpas({ deployments: [], hpas: [existing], resolveNamespace: resolve }).delete).toEqual([]);
  });

  it("keeps the existing HPA untouched while the Deployment's settings cannot be read", () => {
    const existing = stored(hpaOf(chat));
    const broken = deployment("chat", { annotations: { [AUTOSCALING_TARGET_ANNOTATION]: "soon" } });
    const plan = planHpas({ deployments: [broken], hpas: [existing], resolveNamespace: resolve });
    expect(plan.delete).toEqual([]);
    expect(plan.update).toEqual([]);
    expect(plan.problems).toEqual([{ deployment: "team/chat", problems: [expect.objectContaining({ value: "soon" })] }]);
  });

  it("leaves a Deployment that another HPA scales alone, and removes its own HPA then", () => {
    const mine = stored(hpaOf(chat));
    const theirs = foreignHpa("chat-custom", "chat");
    const plan = planHpas({ deployments: [chat], hpas: [mine, theirs], resolveNamespace: resolve });
    expect(plan.create).toEqual([]);
    expect(plan.delete).toEqual([mine]);
    expect(plan.foreign).toEqual([{ deployment: "team/chat", hpa: "team/chat-custom" }]);
  });

  it("never touches an HPA of the same name that infergate did not make", () => {
    const theirs = foreignHpa("chat", "something-else");
    const plan = planHpas({ deployments: [chat], hpas: [theirs], resolveNamespace: resolve });
    expect(plan).toMatchObject({ create: [], update: [], delete: [], foreign: [{ deployment: "team/chat", hpa: "team/chat" }] });
  });

  it("takes over its HPA for a Deployment recreated under the same name", () => {
    const old = stored(hpaOf(chat));
    const recreated = deployment("chat", { uid: "uid-chat-2" });
    const plan = planHpas({ deployments: [recreated], hpas: [old], resolveNamespace: resolve });
    expect(plan.update).toHaveLength(1);
    expect(mergedHpa(plan.update[0]!.observed, plan.update[0]!.desired).metadata.ownerReferences).toEqual([
      { apiVersion: "apps/v1", kind: "Deployment", name: "chat", uid: "uid-chat-2", controller: true },
    ]);
  });
});

describe("writing a plan", () => {
  const silent: Logger = { level: "error", enabled: () => false, log: () => undefined };

  it("retries an update after a conflict from the fresh object, and tolerates 404 on delete", async () => {
    const chat = deployment("chat");
    const desired = hpaOf(chat);
    const observed = stored(desired, { averageValue: "100" });
    const fresher = { ...stored(desired, { averageValue: "100" }), metadata: { ...observed.metadata, resourceVersion: "43" } };
    const writes: HorizontalPodAutoscaler[] = [];
    let replaceCalls = 0;
    const api: HpaApi = {
      create: async () => undefined,
      replace: async (hpa) => {
        replaceCalls++;
        if (replaceCalls === 1) throw Object.assign(new Error("conflict"), { code: 409 });
        writes.push(hpa);
      },
      get: async () => fresher,
      remove: async () => {
        throw Object.assign(new Error("gone"), { code: 404 });
      },
    };
    const errors: string[] = [];
    const logger: Logger = { ...silent, log: (level, msg) => void (level === "warn" && errors.push(msg)) };
    await applyHpaPlan({ create: [], update: [{ observed, desired }], delete: [observed], foreign: [], problems: [] }, api, logger);
    expect(writes).toHaveLength(1);
    expect(writes[0]!.metadata.resourceVersion).toBe("43");
    expect(writes[0]!.spec.metrics![0].pods.target.averageValue).toBe("200");
    expect(errors).toEqual([]);
  });
});
