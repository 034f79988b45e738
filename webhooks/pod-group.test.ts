import { describe, expect, it } from "vitest";
import type { PipelineResult } from "../src/admission/pipeline.ts";
import { LABEL_VALUE_MAX } from "../src/podgroups/names.ts";
import type { SchedulerProfile } from "../src/policy/types.ts";
import type { PolicyStore } from "../src/policy/store.ts";
import { admitter, storeWith } from "../test/support/admission.ts";
import { POD_GROUP_LABEL, podGroup } from "./pod-group.ts";

const NS = "team-a";

function store(profile: SchedulerProfile): PolicyStore {
  return storeWith({ policy: { scheduler: { profile } } });
}

const gpuContainer = { name: "server", image: "nvcr.io/nim/llm:1", resources: { limits: { "nvidia.com/gpu": "1" } } };
const cpuContainer = { name: "server", image: "nginx:1" };

/** A pod as the ReplicaSet controller of Deployment `deployment` submits it. */
function replicaPod(deployment: string, hash: string, opts: { labels?: Record<string, string>; containers?: any[]; namespace?: string } = {}) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      generateName: `${deployment}-${hash}-`,
      namespace: opts.namespace ?? NS,
      labels: { app: deployment, "pod-template-hash": hash, ...opts.labels },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: `${deployment}-${hash}`, uid: "rs-uid", controller: true }],
    },
    spec: { schedulerName: "scheduler-plugins-scheduler", containers: opts.containers ?? [gpuContainer] },
  };
}

/** A pod of Knative revision `revision` (whose Deployment is `<revision>-deployment`). */
function knativePod(revision: string) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      generateName: `${revision}-deployment-5f8d9c7b6-`,
      namespace: NS,
      labels: { app: revision, "pod-template-hash": "5f8d9c7b6", "serving.knative.dev/revision": revision, "serving.knative.dev/service": "chat" },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: `${revision}-deployment-5f8d9c7b6`, uid: "rs-uid", controller: true }],
    },
    spec: { containers: [gpuContainer] },
  };
}

const admit = admitter({ plugins: [podGroup], username: "system:serviceaccount:kube-system:replicaset-controller" });

const labelsOf = (r: PipelineResult) => (r.object as any)?.metadata?.labels ?? {};

describe("pod-group under coscheduling", () => {
  const cosched = store("coscheduling");

  it("labels a GPU Deployment's pod with <deployment>-<pod-template-hash>", () => {
    const result = admit(cosched, replicaPod("llm", "5d9f7c6b8"));
    expect(labelsOf(result)[POD_GROUP_LABEL]).toBe("llm-5d9f7c6b8");
    expect(result.response.patch).toBeDefined();
    expect(result.warnings).toEqual([`infergate: set label ${POD_GROUP_LABEL}=llm-5d9f7c6b8`]);
  });

  it("labels a Knative revision's pod with the revision", () => {
    const result = admit(cosched, knativePod("chat-00002"));
    expect(labelsOf(result)[POD_GROUP_LABEL]).toBe("chat-00002");
    expect(result.warnings).toHaveLength(1);
  });

  it("labels a CPU Deployment's pod that is labelled as inference", () => {
    const result = admit(cosched, replicaPod("embed", "7c9d", { containers: [cpuContainer], labels: { "infergate.dev/inference": "true" } }));
    expect(labelsOf(result)[POD_GROUP_LABEL]).toBe("embed-7c9d");
  });

  it("gives a second pass (reinvocation) no patch and no warning", () => {
    const first = admit(cosched, replicaPod("llm", "5d9f7c6b8"));
    const second = admit(cosched, first.object);
    expect(second.response.patch).toBeUndefined();
    expect(second.warnings).toEqual([]);
  });

  it("keeps a pod group the user set", () => {
    const result = admit(cosched, replicaPod("llm", "5d9f7c6b8", { labels: { [POD_GROUP_LABEL]: "my-gang" } }));
    expect(labelsOf(result)[POD_GROUP_LABEL]).toBe("my-gang");
    expect(result.response.patch).toBeUndefined();
    expect(result.warnings).toEqual([]);
  });

  it("shortens a group name that cannot be a label value, the same way every time", () => {
    const deployment = `a-very-long-deployment-name-for-a-large-language-model-server-${"x".repeat(20)}`;
    const first = labelsOf(admit(cosched, replicaPod(deployment, "5d9f7c6b8")))[POD_GROUP_LABEL];
    const again = labelsOf(admit(cosched, replicaPod(deployment, "5d9f7c6b8")))[POD_GROUP_LABEL];
    const otherHash = labelsOf(admit(cosched, replicaPod(deployment, "6e0a8d7c9")))[POD_GROUP_LABEL];
    expect(first.length).toBeLessThanOrEqual(LABEL_VALUE_MAX);
    expect(first).toMatch(/^a-very-long-deployment-name-.*-[0-9a-f]{10}$/);
    expect(again).toBe(first);
    expect(otherHash).not.toBe(first);
  });

  it("leaves a pod of a Deployment without GPUs or the inference label alone", () => {
    const result = admit(cosched, replicaPod("web", "abc12", { containers: [cpuContainer] }));
    expect(result.response.patch).toBeUndefined();
    expect(result.warnings).toEqual([]);
  });

  it("leaves a bare pod and a pod of another controller alone", () => {
    const bare = { apiVersion: "v1", kind: "Pod", metadata: { name: "solo", namespace: NS }, spec: { containers: [gpuContainer] } };
    expect(admit(cosched, bare).response.patch).toBeUndefined();
    const job = replicaPod("train", "x1");
    job.metadata.ownerReferences = [{ apiVersion: "batch/v1", kind: "Job", name: "train", uid: "job-uid", controller: true }];
    expect(admit(cosched, job).response.patch).toBeUndefined();
  });

  it("does nothing on UPDATE", () => {
    const pod = replicaPod("llm", "5d9f7c6b8");
    const result = admit(cosched, pod, { oldObject: pod });
    expect(result.response.patch).toBeUndefined();
  });

  it("does nothing in a namespace outside every Project", () => {
    const result = admit(cosched, replicaPod("llm", "5d9f7c6b8", { namespace: "elsewhere" }));
    expect(result.skipped).toBe("namespace belongs to no Project");
    expect(result.response.patch).toBeUndefined();
  });
});

describe("pod-group under other profiles", () => {
  it("leaves grouping to KAI's pod-grouper", () => {
    const kai = store("kai");
    expect(admit(kai, replicaPod("llm", "5d9f7c6b8")).response.patch).toBeUndefined();
    expect(admit(kai, knativePod("chat-00002")).response.patch).toBeUndefined();
  });

  it("leaves grouping to Volcano's PodGroup controller, which annotates pods itself", () => {
    const volcano = store("volcano");
    const result = admit(volcano, replicaPod("llm", "5d9f7c6b8"));
    expect(result.response.patch).toBeUndefined();
    expect((result.object as any).metadata.annotations?.["scheduling.k8s.io/group-name"]).toBeUndefined();
  });

  it("does nothing under the default profile", () => {
    expect(admit(store("default"), replicaPod("llm", "5d9f7c6b8")).response.patch).toBeUndefined();
  });
});
