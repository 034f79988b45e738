import { describe, expect, it } from "vitest";
import type { PolicyStore } from "../src/policy/store.ts";
import type { InferencePolicySpec } from "../src/policy/types.ts";
import { admitter, storeWith } from "../test/support/admission.ts";
import { priority } from "./priority.ts";

function store(policy: InferencePolicySpec): PolicyStore {
  return storeWith({ policy });
}

const admitPod = admitter({ plugins: [priority], username: "system:serviceaccount:kube-system:replicaset-controller" });

/** A Knative revision's pod as the API server hands it to webhooks: Priority already resolved it without a class. */
function revisionPod(spec: Record<string, unknown> = {}): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "qwen-00001-deployment-7d9f-abcde", namespace: "team-a", labels: { "serving.knative.dev/revision": "qwen-00001" } },
    spec: {
      containers: [{ name: "user-container", image: "registry.example.com/vllm:1", resources: { limits: { "nvidia.com/gpu": "1" } } }],
      priority: 0,
      preemptionPolicy: "PreemptLowerPriority",
      ...spec,
    },
  };
}

describe("priority on pods", () => {
  it("drops the priority the API server resolved before the class was set, so it resolves the new class", () => {
    const result = admitPod(store({ defaults: { priorityClassName: "inference" } }), revisionPod());
    const spec = (result.object as any).spec;
    expect(spec.priorityClassName).toBe("inference");
    expect(spec).not.toHaveProperty("priority");
    expect(spec).not.toHaveProperty("preemptionPolicy");
    expect(result.warnings).toEqual(["infergate: set priorityClassName=inference (policy default)"]);
  });

  it("does the same when a lock replaces the pod's class", () => {
    const policy: InferencePolicySpec = { defaults: { priorityClassName: "inference" }, rules: { locked: ["priorityClassName"] } };
    const result = admitPod(store(policy), revisionPod({ priorityClassName: "high", priority: 1000 }));
    const spec = (result.object as any).spec;
    expect(spec.priorityClassName).toBe("inference");
    expect(spec).not.toHaveProperty("priority");
  });

  it("leaves a pod that already has the class alone: no patch", () => {
    const result = admitPod(store({ defaults: { priorityClassName: "inference" } }), revisionPod({ priorityClassName: "inference", priority: 125 }));
    expect(result.response.patch).toBeUndefined();
    expect((result.object as any).spec.priority).toBe(125);
  });
});
