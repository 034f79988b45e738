import { describe, expect, it } from "vitest";
import { runPipeline } from "../../src/admission/pipeline.ts";
import type { AdmissionRequest } from "../../src/admission/types.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { plugins } from "../../webhooks/index.ts";
import { quotaTotalsOf } from "../../src/quota/totals.ts";
import { DEFAULT_KNATIVE_FEATURES } from "../../src/workload/knative-features.ts";

function store() {
  const s = new PolicyStore();
  s.upsertProject({ metadata: { name: "team-a" }, spec: { namespaces: ["team-a"], gpuQuota: "4" } });
  s.upsertPolicy({ metadata: { name: "p" }, spec: { rules: { replicas: { max: 3 } } } });
  return s;
}

const deployment = (name: string, gpus: number) => ({
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name, namespace: "team-a", resourceVersion: "1" },
  spec: {
    replicas: 1,
    selector: { matchLabels: { app: name } },
    template: {
      metadata: { labels: { app: name } },
      spec: { containers: [{ name: "c", image: "x", resources: gpus ? { limits: { "nvidia.com/gpu": String(gpus) } } : {} }] },
    },
  },
});

function scale(name: string, replicas: number): AdmissionRequest {
  const object = (n: number) => ({ apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name, namespace: "team-a" }, spec: { replicas: n } });
  return {
    uid: "u",
    kind: { group: "autoscaling", version: "v1", kind: "Scale" },
    resource: { group: "apps", version: "v1", resource: "deployments" },
    subResource: "scale",
    name,
    namespace: "team-a",
    operation: "UPDATE",
    userInfo: {},
    object: object(replicas),
    oldObject: object(1),
  };
}

describe("deployments/scale", () => {
  const s = store();
  const cluster = { knativeFeatures: DEFAULT_KNATIVE_FEATURES, quota: quotaTotalsOf([deployment("gpu", 1), deployment("web", 0)], (ns) => s.projectOf(ns)) };
  const validate = (request: AdmissionRequest) => runPipeline({ request, phase: "validate", plugins, policies: s, cluster });

  it("checks a scale of a GPU Deployment against policy and quota, reporting both", () => {
    const result = validate(scale("gpu", 5));
    expect(result.response.allowed).toBe(false);
    const reasons = result.violations.map((v) => v.reason ?? "PolicyViolation").sort();
    expect(reasons).toEqual(["PolicyViolation", "QuotaExceeded"]);
    expect(result.response.status?.message).toContain("spec.replicas");
  });

  it("leaves a scale of a Deployment without GPUs alone", () => {
    const result = validate(scale("web", 5));
    expect(result.response.allowed).toBe(true);
    expect(result.violations).toEqual([]);
  });
});
