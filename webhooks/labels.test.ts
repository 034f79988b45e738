import { describe, expect, it } from "vitest";
import type { PolicyStore } from "../src/policy/store.ts";
import type { InferencePolicySpec } from "../src/policy/types.ts";
import { admitter, storeWith } from "../test/support/admission.ts";
import { labels } from "./labels.ts";
import { policyRules } from "./policy-rules.ts";

function store(policy: InferencePolicySpec = {}): PolicyStore {
  return storeWith({ policy, project: { queue: "team-a-inference" } });
}

const admit = admitter({ plugins: [labels] });

function vllmDeployment(templateLabels: Record<string, string> = {}, templateAnnotations?: Record<string, string>): any {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "llama-3-8b", namespace: "team-a", labels: { app: "llama-3-8b" } },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: "llama-3-8b" } },
      template: {
        metadata: { labels: { app: "llama-3-8b", ...templateLabels }, ...(templateAnnotations ? { annotations: templateAnnotations } : {}) },
        spec: { containers: [{ name: "vllm", image: "vllm/vllm-openai:v0.6.3", resources: { limits: { "nvidia.com/gpu": "1" } } }] },
      },
    },
  };
}

function knativeService(): any {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name: "llama-predictor", namespace: "team-a", labels: { "serving.kserve.io/inferenceservice": "llama" } },
    spec: { template: { spec: { containers: [{ name: "kserve-container", image: "kserve/huggingfaceserver:v0.15.0" }] } } },
  };
}

const POLICY: InferencePolicySpec = {
  defaults: { labels: { "cost-center": "ml-platform", tier: "gold" }, annotations: { "prometheus.io/scrape": "true", "prometheus.io/port": "8000" } },
};

describe("labels plugin", () => {
  it("labels the pod template with project and queue and adds the policy's labels and annotations", () => {
    const result = admit(store(POLICY), vllmDeployment());
    const metadata = (result.object as any).spec.template.metadata;
    expect(metadata.labels).toEqual({
      app: "llama-3-8b",
      "infergate.dev/project": "team-a",
      "infergate.dev/queue": "team-a-inference",
      "cost-center": "ml-platform",
      tier: "gold",
    });
    expect(metadata.annotations).toEqual({ "prometheus.io/scrape": "true", "prometheus.io/port": "8000" });
    expect((result.object as any).metadata.labels).toEqual({ app: "llama-3-8b" });
    expect(result.warnings).toEqual([
      "infergate: labelled pods infergate.dev/project=team-a, infergate.dev/queue=team-a-inference",
      "infergate: added template labels cost-center=ml-platform, tier=gold (policy default)",
      "infergate: added template annotations prometheus.io/scrape, prometheus.io/port (policy default)",
    ]);
    for (const w of result.warnings) expect(w.length).toBeLessThanOrEqual(120);
  });

  it("is idempotent", () => {
    const s = store(POLICY);
    const second = admit(s, admit(s, vllmDeployment()).object);
    expect(second.response.patch).toBeUndefined();
    expect(second.warnings).toEqual([]);
  });

  it("keeps the user's own values for policy defaults", () => {
    const result = admit(store(POLICY), vllmDeployment({ tier: "silver" }, { "prometheus.io/port": "9090" }));
    const metadata = (result.object as any).spec.template.metadata;
    expect(metadata.labels.tier).toBe("silver");
    expect(metadata.annotations["prometheus.io/port"]).toBe("9090");
    expect(metadata.annotations["prometheus.io/scrape"]).toBe("true");
  });

  it("replaces a label claiming another project, and says so", () => {
    const result = admit(store(), vllmDeployment({ "infergate.dev/project": "team-b" }));
    expect((result.object as any).spec.template.metadata.labels["infergate.dev/project"]).toBe("team-a");
    expect(result.warnings).toContain("infergate: replaced label infergate.dev/project=team-b with team-a (set by infergate)");
  });

  it("under a lock overwrites the user's values and tells the user, but never a label the selector matches", () => {
    const s = store({ defaults: { labels: { tier: "gold", app: "platform" }, annotations: { "prometheus.io/port": "8000" } }, rules: { locked: ["labels", "annotations"] } });
    const result = admit(s, vllmDeployment({ tier: "silver" }, { "prometheus.io/port": "9090" }));
    const metadata = (result.object as any).spec.template.metadata;
    expect(metadata.labels.tier).toBe("gold");
    expect(metadata.labels.app).toBe("llama-3-8b");
    expect(metadata.annotations["prometheus.io/port"]).toBe("8000");
    expect(result.warnings).toContain("infergate: replaced template label tier=silver with gold (labels locked by policy)");
    expect(result.warnings).toContain("infergate: replaced template annotation prometheus.io/port (annotations locked by policy)");

    // The selector's label stays, so validation reports it rather than the Deployment orphaning its pods.
    const validated = admit(s, result.object, { phase: "validate", plugins: [labels, policyRules] });
    expect(validated.violations).toMatchObject([{ field: "spec.template.metadata.labels[app]", value: "llama-3-8b", allowed: 'locked by policy to "platform"' }]);
  });

  it("writes on a Knative Service's template metadata, never on the Service's own", () => {
    const result = admit(store(POLICY), knativeService());
    const service = result.object as any;
    expect(service.metadata.labels).toEqual({ "serving.kserve.io/inferenceservice": "llama" });
    expect(service.metadata.annotations).toBeUndefined();
    expect(service.spec.template.metadata.labels["infergate.dev/project"]).toBe("team-a");
    expect(service.spec.template.metadata.annotations["prometheus.io/scrape"]).toBe("true");
  });

  it("leaves a Knative revision's pods alone: they inherit the template's labels", () => {
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "llama-predictor-00001-deployment-5d8f9c7b6d-x7k2p", namespace: "team-a", labels: { "serving.knative.dev/revision": "llama-predictor-00001" } },
      spec: { containers: [{ name: "kserve-container", image: "kserve/huggingfaceserver:v0.15.0" }] },
    };
    expect(admit(store(POLICY), pod).response.patch).toBeUndefined();
  });

  it("leaves a malformed labels map for the API server to reject", () => {
    const deployment = vllmDeployment();
    deployment.spec.template.metadata.labels = ["app=llama-3-8b"];
    const result = admit(store(POLICY), deployment);
    expect((result.object as any).spec.template.metadata.labels).toEqual(["app=llama-3-8b"]);
  });
});
