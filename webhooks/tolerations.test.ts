import { describe, expect, it } from "vitest";
import type { PolicyStore } from "../src/policy/store.ts";
import type { InferencePolicySpec, Toleration } from "../src/policy/types.ts";
import { admitter, storeWith } from "../test/support/admission.ts";
import { tolerates, tolerations } from "./tolerations.ts";

const GPU_TOLERATION: Toleration = { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" };
const SYSTEM_TOLERATIONS = [
  { key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
  { key: "node.kubernetes.io/unreachable", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
];

function store(policy: InferencePolicySpec, knativeFeatures?: Record<string, string>): PolicyStore {
  return storeWith({ policy, project: { nodePools: ["h100", "a100"] }, knativeFeatures });
}

const admit = admitter({ plugins: [tolerations] });

function vllmDeployment(extraSpec: Record<string, unknown> = {}): any {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "llama-3-8b", namespace: "team-a", labels: { app: "llama-3-8b" } },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: "llama-3-8b" } },
      template: {
        metadata: { labels: { app: "llama-3-8b" } },
        spec: {
          containers: [
            {
              name: "vllm",
              image: "vllm/vllm-openai:v0.6.3",
              args: ["--model", "meta-llama/Meta-Llama-3-8B-Instruct", "--port", "8000"],
              ports: [{ containerPort: 8000, name: "http" }],
              resources: { limits: { "nvidia.com/gpu": "1" } },
            },
          ],
          ...extraSpec,
        },
      },
    },
  };
}

function knativeService(): any {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name: "llama-predictor", namespace: "team-a", labels: { "serving.kserve.io/inferenceservice": "llama", component: "predictor" } },
    spec: {
      template: {
        metadata: { annotations: { "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev", "autoscaling.knative.dev/min-scale": "1" } },
        spec: {
          containerConcurrency: 0,
          containers: [{ name: "kserve-container", image: "kserve/huggingfaceserver:v0.15.0", resources: { limits: { "nvidia.com/gpu": "1" } } }],
        },
      },
    },
  };
}

function knativePod(): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "llama-predictor-00001-deployment-5d8f9c7b6d-x7k2p",
      namespace: "team-a",
      labels: { app: "llama-predictor-00001", "serving.knative.dev/revision": "llama-predictor-00001", "serving.knative.dev/service": "llama-predictor" },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "llama-predictor-00001-deployment-5d8f9c7b6d", uid: "3f1b", controller: true }],
    },
    spec: {
      containers: [
        { name: "kserve-container", image: "kserve/huggingfaceserver:v0.15.0", resources: { limits: { "nvidia.com/gpu": "1" } } },
        { name: "queue-proxy", image: "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:6f1d" },
      ],
      tolerations: structuredClone(SYSTEM_TOLERATIONS),
    },
  };
}

describe("tolerations plugin", () => {
  it("adds the policy toleration to a GPU Deployment and says so", () => {
    const result = admit(store({ defaults: { tolerations: [GPU_TOLERATION] } }), vllmDeployment());
    expect((result.object as any).spec.template.spec.tolerations).toEqual([GPU_TOLERATION]);
    expect(result.warnings).toEqual(["infergate: added toleration nvidia.com/gpu:NoSchedule op=Exists (policy default)"]);
    const patch = JSON.parse(Buffer.from(result.response.patch!, "base64").toString());
    expect(patch).toEqual([{ op: "add", path: "/spec/template/spec/tolerations", value: [GPU_TOLERATION] }]);
  });

  it("is idempotent: a second pass changes nothing and warns nothing", () => {
    const s = store({ defaults: { tolerations: [GPU_TOLERATION, { key: "dedicated", value: "inference", effect: "NoSchedule" }] } });
    const first = admit(s, vllmDeployment());
    const second = admit(s, first.object);
    expect(second.response.patch).toBeUndefined();
    expect(second.warnings).toEqual([]);
  });

  it("treats a toleration equal up to the default operator as present", () => {
    const s = store({ defaults: { tolerations: [{ key: "dedicated", operator: "Equal", value: "inference", effect: "NoSchedule" }] } });
    const result = admit(s, vllmDeployment({ tolerations: [{ key: "dedicated", value: "inference", effect: "NoSchedule" }] }));
    expect(result.response.patch).toBeUndefined();
    expect(result.warnings).toEqual([]);
  });

  it("adds nothing when the workload tolerates every taint", () => {
    const result = admit(store({ defaults: { tolerations: [GPU_TOLERATION] } }), vllmDeployment({ tolerations: [{ operator: "Exists" }] }));
    expect(result.response.patch).toBeUndefined();
  });

  it("adds only what is missing and keeps the user's own tolerations in place", () => {
    const spot = { key: "cloud.example.com/spot", operator: "Equal", value: "true", effect: "NoSchedule" };
    const s = store({ defaults: { tolerations: [GPU_TOLERATION, { key: "dedicated", value: "inference", effect: "NoSchedule" }] } });
    const result = admit(s, vllmDeployment({ tolerations: [spot, { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }] }));
    expect((result.object as any).spec.template.spec.tolerations).toEqual([
      spot,
      GPU_TOLERATION,
      { key: "dedicated", value: "inference", effect: "NoSchedule" },
    ]);
    expect(result.warnings).toEqual(["infergate: added toleration dedicated=inference:NoSchedule (policy default)"]);
  });

  it("under a lock removes what the policy does not tolerate, keeps Kubernetes' own, and tells the user", () => {
    const s = store({ defaults: { tolerations: [GPU_TOLERATION] }, rules: { locked: ["tolerations"] } });
    const deployment = vllmDeployment({ tolerations: [...structuredClone(SYSTEM_TOLERATIONS), { key: "cloud.example.com/spot", operator: "Exists" }] });
    const result = admit(s, deployment);
    expect((result.object as any).spec.template.spec.tolerations).toEqual([...SYSTEM_TOLERATIONS, GPU_TOLERATION]);
    expect(result.warnings).toEqual([
      "infergate: removed toleration cloud.example.com/spot op=Exists (tolerations locked by policy)",
      "infergate: added toleration nvidia.com/gpu:NoSchedule op=Exists (policy default)",
    ]);
  });

  it("never writes tolerations on a Knative Service while Knative's flag is off, and puts them on its pods", () => {
    const s = store({ defaults: { tolerations: [GPU_TOLERATION] } });
    const service = admit(s, knativeService());
    expect(service.response.patch).toBeUndefined();
    expect((service.object as any).spec.template.spec.tolerations).toBeUndefined();

    const pod = admit(s, knativePod());
    expect((pod.object as any).spec.tolerations).toEqual([...SYSTEM_TOLERATIONS, GPU_TOLERATION]);
    expect(admit(s, pod.object).response.patch).toBeUndefined();
  });

  it("writes tolerations on the Knative Service when kubernetes.podspec-tolerations is enabled, and then not on its pods", () => {
    const s = store({ defaults: { tolerations: [GPU_TOLERATION] } }, { "kubernetes.podspec-tolerations": "enabled" });
    expect((admit(s, knativeService()).object as any).spec.template.spec.tolerations).toEqual([GPU_TOLERATION]);
    expect(admit(s, knativePod()).response.patch).toBeUndefined();
  });

  it("leaves pods of a Deployment infergate mutated, Knative's revision Deployments and non-GPU Deployments alone", () => {
    const s = store({ defaults: { tolerations: [GPU_TOLERATION] } });
    const replicaPod = knativePod();
    delete replicaPod.metadata.labels["serving.knative.dev/revision"];
    replicaPod.metadata.labels["pod-template-hash"] = "5d8f9c7b6d";
    replicaPod.metadata.labels["infergate.dev/project"] = "team-a";
    expect(admit(s, replicaPod).response.patch).toBeUndefined();

    const revisionDeployment = vllmDeployment();
    revisionDeployment.metadata.ownerReferences = [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "llama-predictor-00001", uid: "9c", controller: true }];
    expect(admit(s, revisionDeployment).response.patch).toBeUndefined();

    const web = vllmDeployment();
    delete web.spec.template.spec.containers[0].resources;
    expect(admit(s, web).response.patch).toBeUndefined();
  });

  it("handles pods only when they are created", () => {
    const s = store({ defaults: { tolerations: [GPU_TOLERATION] } });
    const pod = knativePod();
    expect(admit(s, pod, { oldObject: structuredClone(pod) }).response.patch).toBeUndefined();
  });

  it("leaves a malformed tolerations field for the API server to reject", () => {
    const result = admit(store({ defaults: { tolerations: [GPU_TOLERATION] } }), vllmDeployment({ tolerations: { key: "oops" } }));
    expect(result.response.patch).toBeUndefined();
  });
});

describe("tolerates", () => {
  it("follows Kubernetes' matching of keys, operators, values and effects", () => {
    expect(tolerates({ operator: "Exists" }, GPU_TOLERATION)).toBe(true);
    expect(tolerates({ operator: "Exists", effect: "NoExecute" }, GPU_TOLERATION)).toBe(false);
    expect(tolerates({ key: "nvidia.com/gpu", operator: "Exists" }, GPU_TOLERATION)).toBe(true);
    expect(tolerates({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }, { key: "nvidia.com/gpu", operator: "Exists" })).toBe(false);
    expect(tolerates({ key: "nvidia.com/gpu", value: "present" }, GPU_TOLERATION)).toBe(false);
    expect(tolerates({ key: "a", operator: "Equal", value: "" }, { key: "a" })).toBe(true);
    expect(tolerates({ key: "a", value: "x" }, { key: "a", value: "y" })).toBe(false);
  });

  it("does not let a time-limited toleration stand for a longer one", () => {
    const forever = { key: "maintenance", operator: "Exists" as const, effect: "NoExecute" as const };
    expect(tolerates({ ...forever, tolerationSeconds: 60 }, forever)).toBe(false);
    expect(tolerates(forever, { ...forever, tolerationSeconds: 60 })).toBe(true);
    expect(tolerates({ ...forever, tolerationSeconds: 60 }, { ...forever, tolerationSeconds: 30 })).toBe(true);
  });
});
