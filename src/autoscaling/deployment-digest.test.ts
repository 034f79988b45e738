import { describe, expect, it } from "vitest";
import { PolicyStore } from "../policy/store.ts";
import { DeploymentDigest, digestDeployment } from "./deployment-digest.ts";
import { AUTOSCALING_MAX_REPLICAS_ANNOTATION, AUTOSCALING_METRIC_ANNOTATION, AUTOSCALING_TARGET_ANNOTATION, decideAutoscaling, planHpas, type NamespaceResolver } from "./hpa.ts";

const store = new PolicyStore();
store.upsertProject({ metadata: { name: "team" }, spec: { namespaces: ["team"] } });
store.upsertPolicy({ metadata: { name: "team" }, spec: { projects: ["team"], defaults: { autoscaling: { metric: "latency", target: 200, minReplicas: 1, maxReplicas: 4 } }, rules: {} } });
const resolve: NamespaceResolver = (ns) => store.resolve(ns);

const gpu = { limits: { "nvidia.com/gpu": "1" } };

/** A Deployment as the API server stores it: managed fields, last-applied configuration, args, env, status. */
function stored(name: string, opts: { annotations?: Record<string, string>; containers?: any[]; initContainers?: any[]; labels?: Record<string, string>; templateAnnotations?: Record<string, string>; owners?: any[] } = {}) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name,
      namespace: "team",
      uid: `uid-${name}`,
      resourceVersion: "7",
      generation: 1,
      labels: opts.labels,
      annotations: { "kubectl.kubernetes.io/last-applied-configuration": JSON.stringify({ big: "x".repeat(2000) }), ...opts.annotations },
      managedFields: [{ manager: "kubectl", fieldsV1: { "f:spec": {} } }],
      ...(opts.owners ? { ownerReferences: opts.owners } : {}),
    },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name }, annotations: opts.templateAnnotations },
        spec: {
          containers: opts.containers ?? [{ name: "vllm", image: "vllm/vllm-openai:v0.11.0", args: ["--model", "m"], env: [{ name: "HF_HOME", value: "/cache" }], resources: gpu }],
          ...(opts.initContainers ? { initContainers: opts.initContainers } : {}),
        },
      },
    },
    status: { observedGeneration: 1, replicas: 2 },
  };
}

const cases = {
  "GPU in the container limits": stored("chat"),
  "GPU only in an init container": stored("engine", { containers: [{ name: "s", image: "x" }], initContainers: [{ name: "build", image: "trt", resources: gpu }] }),
  "inference label, no GPU": stored("labelled", { containers: [{ name: "s", image: "x" }], labels: { "infergate.dev/inference": "true" } }),
  "gpu-fraction on the template": stored("fraction", { containers: [{ name: "s", image: "x" }], templateAnnotations: { "gpu-fraction": "0.5" } }),
  "own settings": stored("tuned", { annotations: { [AUTOSCALING_TARGET_ANNOTATION]: "300", [AUTOSCALING_MAX_REPLICAS_ANNOTATION]: "3" } }),
  "opted out": stored("quiet", { annotations: { [AUTOSCALING_METRIC_ANNOTATION]: "none" } }),
  "unreadable settings": stored("broken", { annotations: { [AUTOSCALING_TARGET_ANNOTATION]: "soon" } }),
  "no GPU": stored("web", { containers: [{ name: "s", image: "nginx" }] }),
  "a Knative revision's": stored("rev", { owners: [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "r", uid: "u", controller: true }] }),
};

describe("digestDeployment: what HPA planning reads, and no more", () => {
  it.each(Object.entries(cases))("%s: the same decision as for the whole Deployment", (_name, deployment) => {
    expect(decideAutoscaling(digestDeployment(deployment), resolve)).toEqual(decideAutoscaling(deployment, resolve));
  });

  it("plans the same HPAs from digests as from whole Deployments", () => {
    const whole = Object.values(cases);
    expect(planHpas({ deployments: whole.map(digestDeployment), hpas: [], resolveNamespace: resolve })).toEqual(planHpas({ deployments: whole, hpas: [], resolveNamespace: resolve }));
  });

  it("drops the last-applied configuration, managed fields, status and container details", () => {
    const digest = digestDeployment(cases["GPU in the container limits"]);
    expect(digest.metadata.annotations).toEqual({});
    expect(digest.metadata.managedFields).toBeUndefined();
    expect(digest.status).toBeUndefined();
    expect(digest.spec.template.spec.containers).toEqual([{ name: "vllm", resources: gpu }]);
    expect(JSON.stringify(digest).length).toBeLessThan(JSON.stringify(cases["GPU in the container limits"]).length / 5);
  });

  it("keeps only the identity of a Deployment that is no inference workload", () => {
    expect(digestDeployment(cases["no GPU"])).toEqual({ metadata: { name: "web", namespace: "team", uid: "uid-web", resourceVersion: "7", deletionTimestamp: undefined } });
  });

  it("survives a malformed object", () => {
    expect(() => digestDeployment({ metadata: { name: "x", namespace: "team", uid: "u" }, spec: { template: { spec: { containers: "vllm" } } } })).not.toThrow();
    expect(() => digestDeployment(undefined)).not.toThrow();
  });
});

describe("DeploymentDigest", () => {
  it("follows added, modified and deleted Deployments and tells its subscribers", () => {
    let synced = false;
    const digest = new DeploymentDigest(() => synced);
    let changes = 0;
    const unsubscribe = digest.subscribe(() => changes++);
    digest.apply("ADDED", cases["GPU in the container limits"]);
    digest.apply("ADDED", cases["no GPU"]);
    digest.apply("MODIFIED", stored("chat", { containers: [{ name: "s", image: "x" }] }));
    expect(digest.list().map((d) => [d.metadata.name, d.spec === undefined])).toEqual([
      ["chat", true],
      ["web", true],
    ]);
    digest.apply("DELETED", { metadata: { name: "web", namespace: "team" } });
    expect(digest.list().map((d) => d.metadata.name)).toEqual(["chat"]);
    expect(changes).toBe(4);
    unsubscribe();
    digest.apply("DELETED", { metadata: { name: "chat", namespace: "team" } });
    expect(changes).toBe(4);
    expect(digest.synced()).toBe(false);
    synced = true;
    expect(digest.synced()).toBe(true);
  });
});
