import { WARNED_VIOLATION_MAX } from "../src/admission/pipeline.ts";
import { describe, expect, it } from "vitest";
import type { PolicyStore } from "../src/policy/store.ts";
import type { InferencePolicySpec } from "../src/policy/types.ts";
import { admitter, storeWith } from "../test/support/admission.ts";
import { knative } from "./knative.ts";
import { labels } from "./labels.ts";
import { nodePools } from "./node-pools.ts";
import { policyRules } from "./policy-rules.ts";
import { priority } from "./priority.ts";
import { tolerations } from "./tolerations.ts";

const GPU_TOLERATION = { key: "nvidia.com/gpu", operator: "Exists" as const, effect: "NoSchedule" as const };

function store(policy: InferencePolicySpec): PolicyStore {
  return storeWith({ policy, project: { nodePools: ["h100", "a100"] } });
}

const admit = admitter({ plugins: [policyRules], phase: "validate" });

function vllmDeployment(replicas = 2): any {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "llama-3-8b", namespace: "team-a" },
    spec: {
      replicas,
      selector: { matchLabels: { app: "llama-3-8b" } },
      template: {
        metadata: { labels: { app: "llama-3-8b" } },
        spec: {
          initContainers: [{ name: "fetch-model", image: "registry.example.com/tools/model-fetcher:1.4", args: ["s3://models/llama-3-8b", "/models"] }],
          containers: [
            { name: "vllm", image: "registry.example.com/vllm/vllm-openai:v0.6.3", args: ["--model", "/models/llama-3-8b"], resources: { limits: { "nvidia.com/gpu": "1" } } },
          ],
        },
      },
    },
  };
}

function scale(replicas: number): any {
  return { apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name: "llama-3-8b", namespace: "team-a" }, spec: { replicas } };
}

function knativeService(annotations: Record<string, string> = {}, timeoutSeconds?: number): any {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name: "llama-predictor", namespace: "team-a" },
    spec: {
      template: {
        metadata: { annotations },
        spec: {
          ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}),
          containers: [{ name: "kserve-container", image: "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0", resources: { limits: { "nvidia.com/gpu": "1" } } }],
        },
      },
    },
  };
}

describe("policyRules: replicas", () => {
  const s = store({ rules: { replicas: { min: 1, max: 16 } } });

  it("denies a Deployment above the maximum, with the field and the range", () => {
    const result = admit(s, vllmDeployment(20));
    expect(result.response.allowed).toBe(false);
    expect(result.response.status?.message).toBe('Deployment "llama-3-8b" is invalid: spec.replicas: Invalid value: 20: must be between 1 and 16');
    expect(result.response.status?.details?.causes).toEqual([{ reason: "PolicyViolation", message: "must be between 1 and 16", field: "spec.replicas" }]);
  });

  it("admits with a warning under enforcement: warn", () => {
    const result = admit(store({ enforcement: "warn", rules: { replicas: { max: 16 } } }), vllmDeployment(20));
    expect(result.response.allowed).toBe(true);
    expect(result.response.warnings).toEqual(["policy (warn): spec.replicas: Invalid value: 20: must be at most 16"]);
  });

  it("keeps a violation under enforcement: warn within the API server's warning limit: a long value is left out", () => {
    const image = `registry.example.com/${"very-long-team-name/".repeat(12)}vllm-openai:v0.11.0`;
    const object = vllmDeployment(2);
    object.spec.template.spec.containers[0].image = image;
    const result = admit(store({ enforcement: "warn", rules: { imageRegistries: ["nvcr.io"] } }), object);
    expect(result.response.allowed).toBe(true);
    const warning = result.response.warnings?.find((w) => w.includes("spec.template.spec.containers[0].image"));
    expect(warning!.length).toBeLessThanOrEqual(WARNED_VIOLATION_MAX);
    expect(warning).toBe('policy (warn): spec.template.spec.containers[0].image: image must start with one of: "nvcr.io"');
  });

  it("checks deployments/scale: a scale-up past the maximum is denied", () => {
    const result = admit(s, scale(17), { oldObject: scale(4) });
    expect(result.response.allowed).toBe(false);
    expect(result.violations).toMatchObject([{ field: "spec.replicas", value: 17, plugin: "policyRules" }]);
    expect(admit(s, scale(8), { oldObject: scale(4) }).response.allowed).toBe(true);
  });

  it("lets an out-of-range workload move toward the range, and unrelated updates through, with a warning", () => {
    const down = admit(s, scale(18), { oldObject: scale(20) });
    expect(down.response.allowed).toBe(true);
    expect(down.warnings).toEqual(["infergate: spec.replicas=18 must be between 1 and 16 (already so before this update)"]);

    const edited = vllmDeployment(20);
    edited.spec.template.spec.containers[0].args.push("--max-model-len", "8192");
    expect(admit(s, edited, { oldObject: vllmDeployment(20) }).response.allowed).toBe(true);
    expect(admit(s, vllmDeployment(21), { oldObject: vllmDeployment(20) }).response.allowed).toBe(false);
  });

  it("denies a scale to zero below the minimum", () => {
    expect(admit(s, scale(0), { oldObject: scale(2) }).violations).toMatchObject([{ field: "spec.replicas", value: 0, allowed: "must be between 1 and 16" }]);
  });

  it("bounds a Knative Service's max-scale, where unset or 0 means unlimited", () => {
    const over = admit(s, knativeService({ "autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "32" }));
    expect(over.violations).toMatchObject([
      { field: "spec.template.metadata.annotations[autoscaling.knative.dev/max-scale]", value: "32", allowed: "must be between 1 and 16 (unset or 0 means unlimited)" },
    ]);
    const unlimited = admit(s, knativeService({ "autoscaling.knative.dev/minScale": "1" }));
    expect(unlimited.violations).toMatchObject([{ field: "spec.template.metadata.annotations[autoscaling.knative.dev/max-scale]", value: null }]);
    const legacy = admit(s, knativeService({ "autoscaling.knative.dev/minScale": "0", "autoscaling.knative.dev/maxScale": "20" }));
    expect(legacy.violations.map((v) => v.field)).toEqual([
      "spec.template.metadata.annotations[autoscaling.knative.dev/maxScale]",
      "spec.template.metadata.annotations[autoscaling.knative.dev/minScale]",
    ]);
    expect(admit(s, knativeService({ "autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "16" })).violations).toEqual([]);
  });
});

describe("policyRules: Knative timeouts", () => {
  const s = store({ rules: { requestTimeoutSeconds: { min: 5, max: 300 }, initializationTimeoutSeconds: { min: 5, max: 3600 } } });

  it("checks timeoutSeconds and the progress deadline against the policy's ranges", () => {
    const result = admit(s, knativeService({ "serving.knative.dev/progress-deadline": "2h" }, 900));
    expect(result.violations).toMatchObject([
      { field: "spec.template.spec.timeoutSeconds", value: 900, allowed: "must be between 5s and 300s (policy requestTimeoutSeconds)" },
      {
        field: "spec.template.metadata.annotations[serving.knative.dev/progress-deadline]",
        value: "2h",
        allowed: "must be between 5s and 3600s (policy initializationTimeoutSeconds)",
      },
    ]);
    expect(admit(s, knativeService({ "serving.knative.dev/progress-deadline": "10m" }, 120)).violations).toEqual([]);
  });
});

describe("policyRules: image registries", () => {
  const s = store({ rules: { imageRegistries: ["registry.example.com/", "nvcr.io/"] } });

  it("reports every image from elsewhere with its own path, in one denial", () => {
    const deployment = vllmDeployment();
    deployment.spec.template.spec.initContainers[0].image = "busybox:1.36";
    deployment.spec.template.spec.containers.push({ name: "metrics-sidecar", image: "docker.io/prom/statsd-exporter:v0.26.0" });
    const result = admit(s, deployment);
    expect(result.violations.map((v) => [v.field, v.value])).toEqual([
      ["spec.template.spec.initContainers[0].image", "busybox:1.36"],
      ["spec.template.spec.containers[1].image", "docker.io/prom/statsd-exporter:v0.26.0"],
    ]);
    expect(result.response.status?.message).toBe(
      'Deployment "llama-3-8b" is invalid: [spec.template.spec.initContainers[0].image: Invalid value: "busybox:1.36": image must start with one of: "registry.example.com/", "nvcr.io/", ' +
        'spec.template.spec.containers[1].image: Invalid value: "docker.io/prom/statsd-exporter:v0.26.0": image must start with one of: "registry.example.com/", "nvcr.io/"]',
    );
  });

  it("accepts allowed registries, and does not judge the sidecars Knative adds to a revision's pods", () => {
    expect(admit(s, vllmDeployment()).violations).toEqual([]);
    expect(admit(s, knativeService()).violations).toEqual([]);
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "llama-predictor-00001-deployment-5d8f9c7b6d-x7k2p", namespace: "team-a", labels: { "serving.knative.dev/revision": "llama-predictor-00001" } },
      spec: {
        containers: [
          { name: "kserve-container", image: "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0" },
          { name: "queue-proxy", image: "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:6f1d" },
        ],
      },
    };
    expect(admit(s, pod).violations).toEqual([]);
  });

  it("lets an update through that keeps an image admitted before the rule, with a warning", () => {
    const old = vllmDeployment();
    old.spec.template.spec.containers[0].image = "vllm/vllm-openai:v0.6.3";
    const updated = structuredClone(old);
    updated.spec.replicas = 3;
    const result = admit(s, updated, { oldObject: old });
    expect(result.response.allowed).toBe(true);
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toMatch(/^infergate: spec\.template\.spec\.containers\[0\]\.image="vllm\/vllm-openai:v0\.6\.3" image must start with/);
  });
});

describe("policyRules: locked defaults", () => {
  const locked: InferencePolicySpec = {
    defaults: { tolerations: [GPU_TOLERATION], labels: { tier: "gold" }, annotations: { "prometheus.io/scrape": "true" } },
    rules: { locked: ["tolerations", "labels", "annotations", "nodePools"] },
  };

  it("reports each override with its path", () => {
    const deployment = vllmDeployment();
    const template = deployment.spec.template;
    template.metadata.labels.tier = "silver";
    template.spec.tolerations = [{ key: "cloud.example.com/spot", operator: "Exists" }];
    template.spec.nodeSelector = { "infergate.dev/node-pool": "a100" };
    const result = admit(store(locked), deployment);
    expect(result.violations.map((v) => [v.field, v.allowed])).toEqual([
      ["spec.template.spec.tolerations[0]", "locked by policy: only the policy's tolerations are allowed (nvidia.com/gpu:NoSchedule op=Exists)"],
      ["spec.template.spec.tolerations", "locked by policy: must include nvidia.com/gpu:NoSchedule op=Exists"],
      ["spec.template.metadata.labels[tier]", 'locked by policy to "gold"'],
      ["spec.template.metadata.annotations[prometheus.io/scrape]", 'locked by policy to "true"'],
      ["spec.template.spec.nodeSelector[infergate.dev/node-pool]", "locked by policy: node pools are chosen by infergate"],
      [
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        'locked by policy: must require infergate.dev/node-pool In ["h100", "a100"]',
      ],
    ]);
  });

  it("passes once the mutating plugins have run, for a Deployment and for a Knative Service", () => {
    const s = store({ ...locked, defaults: { ...locked.defaults, priorityClassName: "inference", requestTimeoutSeconds: 300 } });
    const mutating = [priority, tolerations, nodePools, labels, knative];
    const deployment = vllmDeployment();
    deployment.spec.template.spec.tolerations = [{ key: "cloud.example.com/spot", operator: "Exists" }];
    for (const object of [deployment, knativeService()]) {
      const mutated = admit(s, object, { phase: "mutate", plugins: mutating }).object;
      expect(admit(s, mutated, { plugins: [...mutating, policyRules] }).violations).toEqual([]);
    }
  });

  it("does not ask a Knative Service for tolerations or affinity Knative would refuse", () => {
    const service = knativeService();
    service.spec.template.metadata.labels = { tier: "gold" };
    service.spec.template.metadata.annotations = { "prometheus.io/scrape": "true" };
    expect(admit(store(locked), service).violations).toEqual([]);
  });
});
