import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { PolicyStore } from "../src/policy/store.ts";
import type { InferencePolicySpec, ProjectSpec } from "../src/policy/types.ts";
import { admitter, storeWith } from "../test/support/admission.ts";
import { nodePools, poolPreferences } from "./node-pools.ts";
import { policyRules } from "./policy-rules.ts";

const KEY = "infergate.dev/node-pool";
const REQUIRED = { key: KEY, operator: "In", values: ["h100", "a100"] };
const PREFERRED = [
  { weight: 100, preference: { matchExpressions: [{ key: KEY, operator: "In", values: ["h100"] }] } },
  { weight: 90, preference: { matchExpressions: [{ key: KEY, operator: "In", values: ["a100"] }] } },
];

function store(policy: InferencePolicySpec = {}, project: Partial<ProjectSpec> = {}, knativeFeatures?: Record<string, string>): PolicyStore {
  return storeWith({ policy, project: { nodePools: ["h100", "a100"], ...project }, knativeFeatures });
}

const admit = admitter({ plugins: [nodePools] });

function vllmDeployment(extraSpec: Record<string, unknown> = {}): any {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "llama-3-8b", namespace: "team-a" },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: "llama-3-8b" } },
      template: {
        metadata: { labels: { app: "llama-3-8b" } },
        spec: {
          containers: [{ name: "vllm", image: "vllm/vllm-openai:v0.6.3", args: ["--model", "meta-llama/Meta-Llama-3-8B-Instruct"], resources: { limits: { "nvidia.com/gpu": "1" } } }],
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
    metadata: { name: "llama-predictor", namespace: "team-a" },
    spec: { template: { spec: { containers: [{ name: "kserve-container", image: "kserve/huggingfaceserver:v0.15.0", resources: { limits: { "nvidia.com/gpu": "1" } } }] } } },
  };
}

const KNATIVE_ANTI_AFFINITY = {
  preferredDuringSchedulingIgnoredDuringExecution: [
    {
      weight: 100,
      podAffinityTerm: { labelSelector: { matchLabels: { "serving.knative.dev/revision": "llama-predictor-00001" } }, topologyKey: "kubernetes.io/hostname" },
    },
  ],
};

function knativePod(): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "llama-predictor-00001-deployment-5d8f9c7b6d-x7k2p",
      namespace: "team-a",
      labels: { "serving.knative.dev/revision": "llama-predictor-00001", "serving.knative.dev/service": "llama-predictor" },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "llama-predictor-00001-deployment-5d8f9c7b6d", uid: "3f1b", controller: true }],
    },
    spec: {
      containers: [
        { name: "kserve-container", image: "kserve/huggingfaceserver:v0.15.0", resources: { limits: { "nvidia.com/gpu": "1" } } },
        { name: "queue-proxy", image: "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:6f1d" },
      ],
      affinity: { podAntiAffinity: structuredClone(KNATIVE_ANTI_AFFINITY) },
    },
  };
}

const nodeAffinityOf = (result: { object?: unknown }) => (result.object as any).spec.template.spec.affinity.nodeAffinity;

describe("nodePools plugin: mutation", () => {
  it("requires the project's pools and prefers them in order", () => {
    const result = admit(store(), vllmDeployment());
    expect(nodeAffinityOf(result)).toEqual({
      requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [REQUIRED] }] },
      preferredDuringSchedulingIgnoredDuringExecution: PREFERRED,
    });
    expect(result.warnings).toEqual([
      "infergate: node affinity requires infergate.dev/node-pool in [h100, a100] (project pools)",
      "infergate: node affinity prefers pools in order h100 > a100",
    ]);
  });

  it("is idempotent", () => {
    const s = store();
    const first = admit(s, vllmDeployment());
    const second = admit(s, first.object);
    expect(second.response.patch).toBeUndefined();
    expect(second.warnings).toEqual([]);
  });

  it("ANDs the pool requirement into every node selector term the user wrote", () => {
    const zone = { key: "topology.kubernetes.io/zone", operator: "In", values: ["us-east-1a"] };
    const byName = { key: "metadata.name", operator: "In", values: ["gpu-node-7"] };
    const deployment = vllmDeployment({
      affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [zone] }, { matchFields: [byName] }] } } },
    });
    const terms = nodeAffinityOf(admit(store(), deployment)).requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
    expect(terms).toEqual([{ matchExpressions: [zone, REQUIRED] }, { matchFields: [byName], matchExpressions: [REQUIRED] }]);
  });

  it("keeps a user's narrower pool choice and their own preferences", () => {
    const narrow = { key: KEY, operator: "In", values: ["a100"] };
    const zonePreference = { weight: 50, preference: { matchExpressions: [{ key: "topology.kubernetes.io/zone", operator: "In", values: ["us-east-1a"] }] } };
    const deployment = vllmDeployment({
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [narrow] }] },
          preferredDuringSchedulingIgnoredDuringExecution: [zonePreference],
        },
      },
    });
    const result = admit(store(), deployment);
    expect(nodeAffinityOf(result)).toEqual({
      requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [narrow] }] },
      preferredDuringSchedulingIgnoredDuringExecution: [zonePreference, ...PREFERRED],
    });
  });

  it("merges with Knative's podAntiAffinity on a revision pod instead of replacing it", () => {
    const result = admit(store(), knativePod());
    const affinity = (result.object as any).spec.affinity;
    expect(affinity.podAntiAffinity).toEqual(KNATIVE_ANTI_AFFINITY);
    expect(affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([{ matchExpressions: [REQUIRED] }]);
  });

  it("never writes affinity on a Knative Service while kubernetes.podspec-affinity is off", () => {
    const result = admit(store(), knativeService());
    expect(result.response.patch).toBeUndefined();
  });

  it("writes affinity on the Knative Service when the flag allows it, and then leaves its pods alone", () => {
    const s = store({}, {}, { "kubernetes.podspec-affinity": "allowed" });
    expect(nodeAffinityOf(admit(s, knativeService())).preferredDuringSchedulingIgnoredDuringExecution).toEqual(PREFERRED);
    expect(admit(s, knativePod()).response.patch).toBeUndefined();
  });

  it("adds only a requirement for a single pool, and nothing for a project without pools", () => {
    const single = admit(store({}, { nodePools: ["l40s"] }), vllmDeployment());
    expect(nodeAffinityOf(single)).toEqual({
      requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: KEY, operator: "In", values: ["l40s"] }] }] },
    });
    expect(admit(store({}, { nodePools: [] }), vllmDeployment()).response.patch).toBeUndefined();
  });

  it("under a lock replaces the user's pool choices and tells the user", () => {
    const s = store({ rules: { locked: ["nodePools"] } });
    const deployment = vllmDeployment({
      nodeSelector: { [KEY]: "a100" },
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: KEY, operator: "In", values: ["a100"] }] }] },
          preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, preference: { matchExpressions: [{ key: KEY, operator: "In", values: ["a100"] }] } }],
        },
      },
    });
    const result = admit(s, deployment);
    const spec = (result.object as any).spec.template.spec;
    expect(spec.nodeSelector).toBeUndefined();
    expect(spec.affinity.nodeAffinity).toEqual({
      requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [REQUIRED] }] },
      preferredDuringSchedulingIgnoredDuringExecution: PREFERRED,
    });
    expect(result.warnings).toEqual([
      "infergate: removed nodeSelector infergate.dev/node-pool=a100 (nodePools locked by policy)",
      "infergate: replaced node-pool requirement with [h100, a100] (nodePools locked by policy)",
      "infergate: removed 1 node-pool preference(s) (nodePools locked by policy)",
      "infergate: node affinity prefers pools in order h100 > a100",
    ]);
    const again = admit(s, result.object);
    expect(again.response.patch).toBeUndefined();
    expect(again.warnings).toEqual([]);
    expect(admit(s, result.object, { phase: "validate", plugins: [nodePools, policyRules] }).violations).toEqual([]);
  });
});

describe("nodePools plugin: validation", () => {
  it("rejects a required pool outside the project's, naming the allowed pools", () => {
    const deployment = vllmDeployment({
      affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: KEY, operator: "In", values: ["a100", "l4"] }] }] } } },
    });
    const result = admit(store(), deployment, { phase: "validate" });
    expect(result.response.allowed).toBe(false);
    expect(result.violations).toMatchObject([
      {
        field: "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values",
        value: ["l4"],
        allowed: 'project team-a may use node pools: "h100", "a100"',
        plugin: "nodePools",
      },
    ]);
    expect(result.response.status?.message).toBe(
      'Deployment "llama-3-8b" is invalid: spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Invalid value: ["l4"]: project team-a may use node pools: "h100", "a100"',
    );
  });

  it("rejects a nodeSelector on another pool, and only warns under enforcement: warn", () => {
    const deployment = vllmDeployment({ nodeSelector: { [KEY]: "l4" } });
    const enforced = admit(store(), deployment, { phase: "validate" });
    expect(enforced.violations.map((v) => v.field)).toEqual(["spec.template.spec.nodeSelector[infergate.dev/node-pool]"]);
    expect(enforced.response.allowed).toBe(false);

    const warned = admit(store({ enforcement: "warn" }), deployment, { phase: "validate" });
    expect(warned.response.allowed).toBe(true);
    expect(warned.response.warnings).toEqual([
      'policy (warn): spec.template.spec.nodeSelector[infergate.dev/node-pool]: Invalid value: "l4": project team-a may use node pools: "h100", "a100"',
    ]);
  });

  it("accepts what the mutation produced", () => {
    const s = store();
    const mutated = admit(s, vllmDeployment()).object;
    expect(admit(s, mutated, { phase: "validate" }).violations).toEqual([]);
  });
});

describe("poolPreferences", () => {
  it("gives distinct positive weights of at most 100, descending in pool order", () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 100 }), (n) => {
        const pools = Array.from({ length: n }, (_, i) => `pool-${i}`);
        const weights = poolPreferences(pools).map((p) => p.weight);
        expect(weights).toHaveLength(n);
        expect(weights[0]).toBe(100);
        for (let i = 1; i < n; i++) expect(weights[i]!).toBeLessThan(weights[i - 1]!);
        expect(weights[n - 1]!).toBeGreaterThanOrEqual(1);
      }),
    );
    expect(poolPreferences(["h100", "a100", "l40s"]).map((p) => p.weight)).toEqual([100, 90, 80]);
  });
});
