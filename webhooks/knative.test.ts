import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import type { Plugin } from "../src/admission/plugin.ts";
import type { PolicyStore } from "../src/policy/store.ts";
import type { InferencePolicySpec } from "../src/policy/types.ts";
import { FEATURE_FLAG_OF, knativeAllows, parseKnativeFeatures, type KnativeFeatures, type PodSpecFeatureField } from "../src/workload/knative-features.ts";
import { admitter, storeWith } from "../test/support/admission.ts";
import { knative } from "./knative.ts";
import { labels } from "./labels.ts";
import { nodePools } from "./node-pools.ts";
import { policyRules } from "./policy-rules.ts";
import { priority } from "./priority.ts";
import { tolerations } from "./tolerations.ts";

const ALL: Plugin[] = [priority, tolerations, nodePools, labels, knative, policyRules];
const GPU_TOLERATION = { key: "nvidia.com/gpu", operator: "Exists" as const, effect: "NoSchedule" as const };

const POLICY: InferencePolicySpec = {
  scheduler: { profile: "default" },
  defaults: {
    priorityClassName: "inference",
    tolerations: [GPU_TOLERATION],
    autoscaling: { metric: "concurrency", target: 10, minReplicas: 1, maxReplicas: 4, scaleToZeroRetention: "10m" },
    requestTimeoutSeconds: 300,
    initializationTimeoutSeconds: 600,
    labels: { tier: "gold" },
    annotations: { "prometheus.io/scrape": "true" },
  },
  rules: {
    replicas: { max: 16 },
    requestTimeoutSeconds: { min: 5, max: 600 },
    initializationTimeoutSeconds: { min: 5, max: 3600 },
    imageRegistries: ["kserve/", "nvcr.io/"],
  },
};

function withDefaults(change: (spec: InferencePolicySpec) => void): InferencePolicySpec {
  const spec = structuredClone(POLICY);
  change(spec);
  return spec;
}

function store(policy: InferencePolicySpec = POLICY, knativeFeatures?: Record<string, string>): PolicyStore {
  return storeWith({ policy, project: { nodePools: ["h100", "a100"], gpuQuota: "8" }, knativeFeatures });
}

const admit = admitter({ plugins: [knative], username: "system:serviceaccount:kserve:kserve-controller-manager" });

/** A Knative Service shaped like the one KServe creates for an InferenceService predictor. */
function kserveService(annotations?: Record<string, string>): any {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: {
      name: "llama-predictor",
      namespace: "team-a",
      labels: { "serving.kserve.io/inferenceservice": "llama", component: "predictor" },
      annotations: { "serving.knative.dev/creator": "system:serviceaccount:kserve:kserve-controller-manager" },
    },
    spec: {
      template: {
        metadata: {
          labels: { "serving.kserve.io/inferenceservice": "llama", component: "predictor", app: "llama-predictor" },
          ...(annotations ? { annotations } : {}),
        },
        spec: {
          containerConcurrency: 0,
          containers: [
            {
              name: "kserve-container",
              image: "kserve/huggingfaceserver:v0.15.0",
              args: ["--model_name=llama", "--model_id=meta-llama/Meta-Llama-3-8B-Instruct"],
              ports: [{ containerPort: 8080, protocol: "TCP" }],
              resources: { limits: { cpu: "4", memory: "24Gi", "nvidia.com/gpu": "1" }, requests: { cpu: "2", memory: "16Gi", "nvidia.com/gpu": "1" } },
            },
          ],
        },
      },
      traffic: [{ latestRevision: true, percent: 100 }],
    },
  };
}

function revisionPod(): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "llama-predictor-00001-deployment-5d8f9c7b6d-x7k2p",
      namespace: "team-a",
      labels: {
        app: "llama-predictor-00001",
        "serving.knative.dev/revision": "llama-predictor-00001",
        "serving.knative.dev/service": "llama-predictor",
        "serving.knative.dev/configuration": "llama-predictor",
        "pod-template-hash": "5d8f9c7b6d",
      },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "llama-predictor-00001-deployment-5d8f9c7b6d", uid: "3f1b", controller: true }],
    },
    spec: {
      containers: [
        { name: "kserve-container", image: "kserve/huggingfaceserver:v0.15.0", resources: { limits: { "nvidia.com/gpu": "1" } } },
        { name: "queue-proxy", image: "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:6f1d" },
      ],
      affinity: {
        podAntiAffinity: {
          preferredDuringSchedulingIgnoredDuringExecution: [
            { weight: 100, podAffinityTerm: { labelSelector: { matchLabels: { "serving.knative.dev/revision": "llama-predictor-00001" } }, topologyKey: "kubernetes.io/hostname" } },
          ],
        },
      },
      tolerations: [{ key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 }],
    },
  };
}

// ---- What Knative v1.23 with default config would say about a Service --------------------------------

const crd = parse(readFileSync(resolve(import.meta.dirname, "../../shared/crds/knative-serving-v1.23.0/service.yaml"), "utf8"));
const serviceSchema = crd.spec.versions.find((v: any) => v.name === "v1").schema.openAPIV3Schema;
const validateSchema = new Ajv({ strict: false, allErrors: true, validateFormats: false }).compile(serviceSchema);

/** Fields the API server would silently prune: written where the structural schema declares nothing. */
function prunedFields(schema: any, value: any, path: string): string[] {
  if (!schema || schema["x-kubernetes-preserve-unknown-fields"] || value === null || typeof value !== "object") return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => prunedFields(schema.items, v, `${path}[${i}]`));
  if (schema.additionalProperties) return Object.entries(value).flatMap(([k, v]) => prunedFields(schema.additionalProperties, v, `${path}[${k}]`));
  return Object.entries(value).flatMap(([k, v]) => (schema.properties?.[k] ? prunedFields(schema.properties[k], v, path ? `${path}.${k}` : k) : [path ? `${path}.${k}` : k]));
}

const KPA = "kpa.autoscaling.knative.dev";
const HPA = "hpa.autoscaling.knative.dev";

/**
 * The checks Knative's webhook (serving v1.23, default config-defaults / config-autoscaler) applies to
 * what infergate writes: schema, feature-flagged PodSpec fields, autoscaling annotations, timeouts.
 */
function knativeErrors(service: any, features: KnativeFeatures): string[] {
  const errors: string[] = [];
  if (!validateSchema(service)) errors.push(...(validateSchema.errors ?? []).map((e) => `schema ${e.instancePath}: ${e.message}`));
  // The root ObjectMeta is the API server's own (the CRD declares it as a bare object).
  const { metadata: _metadata, ...rest } = service;
  errors.push(...prunedFields(serviceSchema, rest, "").map((p) => `pruned: ${p}`));
  const spec = service.spec?.template?.spec ?? {};
  for (const field of Object.keys(FEATURE_FLAG_OF) as PodSpecFeatureField[]) {
    if (spec[field] !== undefined && !knativeAllows(features, field)) errors.push(`must not set the field(s): spec.template.spec.${field}`);
  }
  for (const key of Object.keys(service.metadata?.annotations ?? {})) {
    if (key.startsWith("autoscaling.knative.dev")) errors.push(`metadata.annotations.${key}: autoscaling annotations must be put under spec.template`);
  }
  const a: Record<string, string> = service.spec?.template?.metadata?.annotations ?? {};
  const get = (key: string, alias?: string) => a[`autoscaling.knative.dev/${key}`] ?? (alias ? a[`autoscaling.knative.dev/${alias}`] : undefined);
  const klass = get("class") ?? KPA;
  if (klass.endsWith("knative.dev") && klass !== KPA && klass !== HPA) errors.push(`invalid class ${klass}`);
  const metric = get("metric");
  if (metric !== undefined && klass === KPA && metric !== "concurrency" && metric !== "rps") errors.push(`invalid metric ${metric} for KPA`);
  if (metric !== undefined && klass === HPA && metric === "") errors.push("empty metric for HPA");
  const target = get("target");
  if (target !== undefined && !(Number(target) >= 0.01)) errors.push(`invalid target ${target}`);
  const int = (v: string | undefined) => (v === undefined ? 0 : /^\d+$/.test(v) ? Number(v) : Number.NaN);
  const min = int(get("min-scale", "minScale"));
  const max = int(get("max-scale", "maxScale"));
  if (Number.isNaN(min) || Number.isNaN(max)) errors.push("min-scale/max-scale must be integers ≥ 0");
  if (max !== 0 && max < min) errors.push(`max-scale=${max} is less than min-scale=${min}`);
  const retention = get("scale-to-zero-pod-retention-period", "scaleToZeroPodRetentionPeriod");
  const retentionMatch = retention === undefined ? undefined : /^(\d+)(s|m|h)$/.exec(retention);
  if (retention !== undefined && (!retentionMatch || Number(retentionMatch[1]) * { s: 1, m: 60, h: 3600 }[retentionMatch[2] as "s"] > 3600)) {
    errors.push(`invalid retention ${retention}`);
  }
  const deadline = a["serving.knative.dev/progress-deadline"];
  if (deadline !== undefined && !/^[1-9]\d*s$/.test(deadline)) errors.push(`invalid progress-deadline ${deadline}`);
  if (spec.timeoutSeconds !== undefined && !(Number.isInteger(spec.timeoutSeconds) && spec.timeoutSeconds >= 0 && spec.timeoutSeconds <= 600)) {
    errors.push(`timeoutSeconds ${spec.timeoutSeconds} out of bounds [0, 600]`);
  }
  return errors;
}

const DEFAULT_FEATURES = parseKnativeFeatures(undefined);
const annotationsOf = (result: { object?: unknown }) => (result.object as any).spec.template.metadata.annotations;

describe("the Knative acceptance check used below", () => {
  it("catches what Knative would reject, so passing it means something", () => {
    const bad = kserveService({ "autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/max-scale": "2" });
    bad.spec.template.spec.tolerations = [GPU_TOLERATION];
    bad.spec.template.spec.timeoutSeconds = "300";
    bad.spec.template.metadata.annotations["serving.knative.dev/progress-deadline"] = "10m";
    bad.metadata.annotations["autoscaling.knative.dev/target"] = "10";
    bad.spec.template.spec.scheduling = { queue: "x" };
    expect(knativeErrors(bad, DEFAULT_FEATURES)).toEqual([
      "schema /spec/template/spec/timeoutSeconds: must be integer",
      "pruned: spec.template.spec.scheduling",
      "must not set the field(s): spec.template.spec.tolerations",
      "metadata.annotations.autoscaling.knative.dev/target: autoscaling annotations must be put under spec.template",
      "max-scale=2 is less than min-scale=3",
      "invalid progress-deadline 10m",
      "timeoutSeconds 300 out of bounds [0, 600]",
    ]);
    expect(knativeErrors(kserveService(), DEFAULT_FEATURES)).toEqual([]);
  });
});

describe("knative plugin", () => {
  it("fills autoscaling, timeout and progress deadline on a Service that sets none", () => {
    const result = admit(store(), kserveService());
    expect(annotationsOf(result)).toEqual({
      "autoscaling.knative.dev/metric": "concurrency",
      "autoscaling.knative.dev/target": "10",
      "autoscaling.knative.dev/min-scale": "1",
      "autoscaling.knative.dev/max-scale": "4",
      "autoscaling.knative.dev/scale-to-zero-pod-retention-period": "10m",
      "serving.knative.dev/progress-deadline": "600s",
    });
    expect((result.object as any).spec.template.spec.timeoutSeconds).toBe(300);
    expect((result.object as any).metadata.annotations).toEqual(kserveService().metadata.annotations);
    expect(result.warnings).toEqual([
      "infergate: set autoscaling.knative.dev/metric=concurrency (policy default)",
      "infergate: set autoscaling.knative.dev/target=10 (policy default)",
      "infergate: set autoscaling.knative.dev/min-scale=1 (policy default)",
      "infergate: set autoscaling.knative.dev/max-scale=4 (policy default)",
      "infergate: set autoscaling.knative.dev/scale-to-zero-pod-retention-period=10m (policy default)",
      "infergate: set serving.knative.dev/progress-deadline=600s (policy default)",
      "infergate: set spec.template.spec.timeoutSeconds=300 (policy default)",
    ]);
    expect(knativeErrors(result.object, DEFAULT_FEATURES)).toEqual([]);
  });

  it("is idempotent, also on UPDATE", () => {
    const s = store();
    const first = admit(s, kserveService());
    const second = admit(s, first.object, { oldObject: first.object });
    expect(second.response.patch).toBeUndefined();
    expect(second.warnings).toEqual([]);
  });

  it("uses the HPA class and infergate's latency metric, with a whole-millisecond target", () => {
    const s = store(withDefaults((p) => (p.defaults!.autoscaling = { metric: "latency", target: 249.6 })));
    const result = admit(s, kserveService());
    expect(annotationsOf(result)).toMatchObject({
      "autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
      "autoscaling.knative.dev/metric": "inference_latency_p95_ms",
      "autoscaling.knative.dev/target": "250",
    });
    expect(knativeErrors(result.object, DEFAULT_FEATURES)).toEqual([]);
  });

  it("leaves the metric alone where the user chose one, or a target for Knative's default metric", () => {
    const latency = store(withDefaults((p) => (p.defaults!.autoscaling = { metric: "latency", target: 200 })));
    const rps = { "autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/target": "50" };
    const chosen = annotationsOf(admit(latency, kserveService(rps)));
    expect(chosen).toMatchObject(rps);
    expect(chosen["autoscaling.knative.dev/class"]).toBeUndefined();

    const kserveDefaults = { "autoscaling.knative.dev/class": KPA, "autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/target": "5" };
    const result = admit(store(), kserveService(kserveDefaults));
    expect(annotationsOf(result)).toEqual({
      ...kserveDefaults,
      "autoscaling.knative.dev/max-scale": "4",
      "autoscaling.knative.dev/scale-to-zero-pod-retention-period": "10m",
      "serving.knative.dev/progress-deadline": "600s",
    });

    const cpu = { "autoscaling.knative.dev/class": HPA, "autoscaling.knative.dev/metric": "cpu" };
    expect(annotationsOf(admit(store(), kserveService(cpu)))).toMatchObject(cpu);
    expect(annotationsOf(admit(store(), kserveService(cpu)))["autoscaling.knative.dev/target"]).toBeUndefined();
  });

  it("completes the policy's own metric when the user already chose it", () => {
    const result = admit(store(), kserveService({ "autoscaling.knative.dev/metric": "concurrency" }));
    expect(annotationsOf(result)["autoscaling.knative.dev/target"]).toBe("10");
  });

  it("respects the legacy camelCase keys Knative still reads", () => {
    const legacy = { "autoscaling.knative.dev/minScale": "2", "autoscaling.knative.dev/maxScale": "3", "autoscaling.knative.dev/scaleToZeroPodRetentionPeriod": "1m" };
    const annotations = annotationsOf(admit(store(), kserveService(legacy)));
    expect(annotations).toMatchObject(legacy);
    expect(annotations["autoscaling.knative.dev/min-scale"]).toBeUndefined();
    expect(annotations["autoscaling.knative.dev/max-scale"]).toBeUndefined();
    expect(annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"]).toBeUndefined();
  });

  it("keeps min-scale ≥ 1 for KAI's gang of a revision, unless the user set it", () => {
    const kai = store(withDefaults((p) => {
      p.scheduler = { profile: "kai" };
      p.defaults!.autoscaling!.minReplicas = 0;
    }));
    const result = admit(kai, kserveService());
    expect(annotationsOf(result)["autoscaling.knative.dev/min-scale"]).toBe("1");
    expect(result.warnings).toContain("infergate: set autoscaling.knative.dev/min-scale=1 (KAI gang scheduling needs min-scale ≥ 1)");

    const zero = admit(kai, kserveService({ "autoscaling.knative.dev/min-scale": "0" }));
    expect(annotationsOf(zero)["autoscaling.knative.dev/min-scale"]).toBe("0");
  });

  it("never writes scale bounds that contradict the user's", () => {
    const s = store(withDefaults((p) => (p.defaults!.autoscaling = { minReplicas: 3, maxReplicas: 8 })));
    const lowMax = admit(s, kserveService({ "autoscaling.knative.dev/max-scale": "2" }));
    expect(annotationsOf(lowMax)["autoscaling.knative.dev/min-scale"]).toBeUndefined();
    expect(lowMax.warnings).toContain("infergate: min-scale 3 not set: above max-scale 2");
    expect(knativeErrors(lowMax.object, DEFAULT_FEATURES)).toEqual([]);

    const highMin = admit(s, kserveService({ "autoscaling.knative.dev/min-scale": "10" }));
    expect(annotationsOf(highMin)["autoscaling.knative.dev/max-scale"]).toBeUndefined();
    expect(highMin.warnings).toContain("infergate: max-scale 8 not set: below min-scale 10");
  });

  it("falls back to the policy's replica range for max-scale, so the Service stays within it", () => {
    const s = store(withDefaults((p) => (p.defaults!.autoscaling = { metric: "concurrency", target: 10 })));
    expect(annotationsOf(admit(s, kserveService()))["autoscaling.knative.dev/max-scale"]).toBe("16");
  });

  it("skips defaults Knative would reject, with a warning", () => {
    const s = store(withDefaults((p) => {
      p.defaults!.requestTimeoutSeconds = 900;
      p.defaults!.autoscaling!.scaleToZeroRetention = "2h";
    }));
    const result = admit(s, kserveService());
    expect((result.object as any).spec.template.spec.timeoutSeconds).toBeUndefined();
    expect(annotationsOf(result)["autoscaling.knative.dev/scale-to-zero-pod-retention-period"]).toBeUndefined();
    expect(result.warnings).toContain("infergate: timeoutSeconds 900 not set: above Knative's default maximum of 600");
    expect(result.warnings).toContain('infergate: scaleToZeroRetention "2h" not set: Knative needs a duration from 0s to 1h');
  });

  it("keeps the user's timeout and progress deadline", () => {
    const service = kserveService({ "serving.knative.dev/progress-deadline": "1800s" });
    service.spec.template.spec.timeoutSeconds = 120;
    const result = admit(store(), service);
    expect((result.object as any).spec.template.spec.timeoutSeconds).toBe(120);
    expect(annotationsOf(result)["serving.knative.dev/progress-deadline"]).toBe("1800s");
  });

  it("on an UPDATE that keeps a user-chosen revision name, only restores what the previous template had", () => {
    const before = store(withDefaults((p) => {
      p.defaults!.autoscaling = { metric: "concurrency", target: 10, maxReplicas: 3 };
      p.defaults!.labels = {};
    }));
    const named = () => {
      const service = kserveService();
      service.spec.template.metadata.name = "llama-predictor-v1";
      return service;
    };
    const live = admit(before, named(), { plugins: [labels, knative] }).object;

    // The policy changed since; the user replaces the Service with the same manifest and revision name.
    const after = store(POLICY);
    const result = admit(after, named(), { plugins: [labels, knative], oldObject: live });
    expect(annotationsOf({ object: live })["autoscaling.knative.dev/max-scale"]).toBe("3");
    expect((result.object as any).spec.template).toEqual((live as any).spec.template);
    expect(knativeErrors(result.object, DEFAULT_FEATURES)).toEqual([]);

    const renamed = named();
    renamed.spec.template.metadata.name = "llama-predictor-v2";
    const fresh = admit(after, renamed, { plugins: [labels, knative], oldObject: live });
    expect(annotationsOf(fresh)["autoscaling.knative.dev/scale-to-zero-pod-retention-period"]).toBe("10m");
    expect(annotationsOf(fresh)["autoscaling.knative.dev/max-scale"]).toBe("4");
    expect((fresh.object as any).spec.template.metadata.labels.tier).toBe("gold");
  });

  it("leaves Deployments and revision pods alone", () => {
    const deployment = {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "llama-3-8b", namespace: "team-a" },
      spec: { replicas: 1, selector: { matchLabels: { app: "llama" } }, template: { metadata: { labels: { app: "llama" } }, spec: { containers: [{ name: "vllm", image: "vllm/vllm-openai:v0.6.3", resources: { limits: { "nvidia.com/gpu": "1" } } }] } } },
    };
    expect(admit(store(), deployment).response.patch).toBeUndefined();
    expect(admit(store(), revisionPod()).response.patch).toBeUndefined();
  });
});

describe("a Knative Service through every infergate plugin of this set", () => {
  it("stays valid for Knative with default flags; the refused fields land on the revision's pods", () => {
    const s = store();
    const service = admit(s, kserveService(), { plugins: ALL });
    expect(knativeErrors(service.object, DEFAULT_FEATURES)).toEqual([]);
    const template = (service.object as any).spec.template;
    expect(template.spec.priorityClassName).toBeUndefined();
    expect(template.metadata.labels).toMatchObject({ "infergate.dev/project": "team-a", tier: "gold" });
    expect(admit(s, service.object, { plugins: ALL, phase: "validate" }).violations).toEqual([]);

    const pod = admit(s, revisionPod(), { plugins: ALL });
    const podSpec = (pod.object as any).spec;
    expect(podSpec.priorityClassName).toBe("inference");
    expect(podSpec.tolerations).toContainEqual(GPU_TOLERATION);
    expect(podSpec.affinity.podAntiAffinity).toEqual(revisionPod().spec.affinity.podAntiAffinity);
    expect(podSpec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: "infergate.dev/node-pool", operator: "In", values: ["h100", "a100"] }] },
    ]);
    expect(admit(s, pod.object, { plugins: ALL }).response.patch).toBeUndefined();
    expect(admit(s, pod.object, { plugins: ALL, phase: "validate" }).violations).toEqual([]);
  });

  it("writes the flagged fields on the Service when Knative allows them, still valid, and leaves the pods alone", () => {
    const flags = { "kubernetes.podspec-affinity": "enabled", "kubernetes.podspec-tolerations": "enabled", "kubernetes.podspec-priorityclassname": "enabled" };
    const s = store(POLICY, flags);
    const service = admit(s, kserveService(), { plugins: ALL });
    const spec = (service.object as any).spec.template.spec;
    expect(spec.priorityClassName).toBe("inference");
    expect(spec.tolerations).toEqual([GPU_TOLERATION]);
    expect(spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution).toHaveLength(2);
    expect(knativeErrors(service.object, parseKnativeFeatures({ data: flags }))).toEqual([]);
    expect(admit(s, revisionPod(), { plugins: ALL }).response.patch).toBeUndefined();
  });

  it("stays valid for Knative whatever the policy defaults say", () => {
    const policies: InferencePolicySpec[] = [
      withDefaults((p) => (p.defaults!.autoscaling = { metric: "rps", target: 0.5, minReplicas: 0, maxReplicas: 1, scaleToZeroRetention: "0s" })),
      withDefaults((p) => (p.defaults!.autoscaling = { metric: "latency", target: 0.2, minReplicas: 20, maxReplicas: 2 })),
      withDefaults((p) => {
        p.scheduler = { profile: "kai" };
        p.defaults!.autoscaling = { maxReplicas: 0, scaleToZeroRetention: "90m" };
        p.defaults!.requestTimeoutSeconds = 3600;
      }),
    ];
    const services = [
      kserveService(),
      kserveService({ "autoscaling.knative.dev/max-scale": "1" }),
      kserveService({ "autoscaling.knative.dev/class": HPA, "autoscaling.knative.dev/metric": "memory" }),
    ];
    for (const policy of policies) {
      for (const service of services) {
        const result = admit(store(policy), structuredClone(service), { plugins: ALL });
        expect(knativeErrors(result.object, DEFAULT_FEATURES)).toEqual([]);
      }
    }
  });
});
