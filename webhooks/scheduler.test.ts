import { describe, expect, it } from "vitest";
import type { Phase, Plugin } from "../src/admission/plugin.ts";
import type { PipelineResult } from "../src/admission/pipeline.ts";
import type { AdmissionRequest } from "../src/admission/types.ts";
import type { InferencePolicySpec, ProjectSpec, SchedulerProfile } from "../src/policy/types.ts";
import type { PolicyStore } from "../src/policy/store.ts";
import { parseKnativeFeatures } from "../src/workload/knative-features.ts";
import { admissionRequest, mutateThenValidate, runAdmission, storeWith } from "../test/support/admission.ts";
import { gpuShare } from "./gpu-share.ts";
import { projectQueue, scheduler, schedulerNameFor } from "./scheduler.ts";

const PLUGINS: readonly Plugin[] = [scheduler, gpuShare];
const NS = "team-a";
const GPU = { "nvidia.com/gpu": "1" };

const profile = (p: SchedulerProfile, rest: InferencePolicySpec = {}, project: ProjectSpec = {}) => storeWith({ policy: { scheduler: { profile: p }, ...rest }, project });

function deployment(opts: { schedulerName?: string; labels?: Record<string, string>; templateLabels?: Record<string, string>; limits?: object } = {}) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "llm", namespace: NS, ...(opts.labels ? { labels: opts.labels } : {}) },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: "llm" } },
      template: {
        metadata: { labels: { app: "llm", ...opts.templateLabels } },
        spec: {
          // The API server fills this in before admission webhooks see the object.
          schedulerName: opts.schedulerName ?? "default-scheduler",
          containers: [{ name: "server", image: "nvcr.io/nim/llm:1", resources: { limits: opts.limits ?? GPU } }],
        },
      },
    },
  };
}

function knativeService() {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name: "llm", namespace: NS },
    spec: { template: { spec: { containers: [{ image: "nvcr.io/nim/llm:1", resources: { limits: GPU } }] } } },
  };
}

function pod(metadataExtra: object) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "llm-abc", namespace: NS, ...metadataExtra },
    spec: { schedulerName: "default-scheduler", containers: [{ name: "server", image: "nvcr.io/nim/llm:1", resources: { limits: GPU } }] },
  };
}

const run = (store: PolicyStore, request: AdmissionRequest, phase: Phase): PipelineResult => runAdmission(store, request, phase, PLUGINS);
const admit = (store: PolicyStore, object: any) => mutateThenValidate(store, PLUGINS, object);

function expectUntouched(result: PipelineResult) {
  expect(result.response.patch).toBeUndefined();
  expect(result.warnings).toEqual([]);
}

describe("schedulerNameFor / projectQueue", () => {
  it("names each profile's scheduler, and lets the policy override it", () => {
    const p = (profile: SchedulerProfile, schedulerName?: string) => ({
      enforcement: "enforce" as const,
      scheduler: { profile, schedulerName },
      defaults: {},
      rules: {},
      sources: [],
    });
    expect(schedulerNameFor(p("kai"))).toBe("kai-scheduler");
    expect(schedulerNameFor(p("volcano"))).toBe("volcano");
    expect(schedulerNameFor(p("hami"))).toBe("hami-scheduler");
    expect(schedulerNameFor(p("coscheduling"))).toBe("scheduler-plugins-scheduler");
    expect(schedulerNameFor(p("coscheduling", "gang"))).toBe("gang");
    expect(schedulerNameFor(p("default"))).toBeUndefined();
    expect(schedulerNameFor(p("default", "custom"))).toBe("custom");
    expect(schedulerNameFor(p("kai", ""))).toBe("kai-scheduler");
  });
  it("takes the project's queue, else its name", () => {
    expect(projectQueue({ metadata: { name: "team-a" }, spec: { queue: "gold" } })).toBe("gold");
    expect(projectQueue({ metadata: { name: "team-a" }, spec: {} })).toBe("team-a");
  });
});

describe("scheduler: Deployment", () => {
  const expected: Array<[SchedulerProfile, string | undefined, Record<string, string>, Record<string, string> | undefined]> = [
    ["kai", "kai-scheduler", { app: "llm", "kai.scheduler/queue": "team-a" }, undefined],
    ["volcano", "volcano", { app: "llm" }, { "scheduling.volcano.sh/queue-name": "team-a" }],
    ["hami", "hami-scheduler", { app: "llm" }, undefined],
    ["coscheduling", "scheduler-plugins-scheduler", { app: "llm" }, undefined],
  ];
  for (const [p, name, labels, annotations] of expected) {
    it(`${p}: sets schedulerName ${name} and the queue, once`, () => {
      const { mutated, validated, again, object } = admit(profile(p), deployment());
      const template = object.spec.template;
      expect(template.spec.schedulerName).toBe(name);
      expect(template.metadata.labels).toEqual(labels);
      expect(template.metadata.annotations).toEqual(annotations);
      expect(mutated.warnings[0]).toBe(`infergate: set schedulerName=${name} (scheduler profile ${p})`);
      expect(mutated.warnings).toHaveLength(1 + (p === "kai" || p === "volcano" ? 1 : 0));
      expect(validated.violations).toEqual([]);
      expectUntouched(again);
    });
  }

  it("default: leaves the scheduler alone", () => {
    expectUntouched(run(profile("default"), admissionRequest(deployment()), "mutate"));
  });

  it("default with a policy schedulerName sets that name", () => {
    const { object, again } = admit(storeWith({ policy: { scheduler: { profile: "default", schedulerName: "my-scheduler" } } }), deployment());
    expect(object.spec.template.spec.schedulerName).toBe("my-scheduler");
    expectUntouched(again);
  });

  it("coscheduling takes the scheduler-plugins name from the policy", () => {
    const { object } = admit(storeWith({ policy: { scheduler: { profile: "coscheduling", schedulerName: "gang-scheduler" } } }), deployment());
    expect(object.spec.template.spec.schedulerName).toBe("gang-scheduler");
  });

  it("writes the project's spec.queue", () => {
    const { object, mutated } = admit(profile("kai", {}, { queue: "gold" }), deployment());
    expect(object.spec.template.metadata.labels["kai.scheduler/queue"]).toBe("gold");
    expect(mutated.warnings).toContain("infergate: set label kai.scheduler/queue=gold (project team-a queue)");
  });

  it("does not write a queue that cannot be a label value, which the API server would reject", () => {
    const queue = "q".repeat(64);
    const { object, validated } = admit(profile("kai", {}, { queue }), deployment());
    expect(object.spec.template.metadata.labels).toEqual({ app: "llm" });
    expect(validated.violations).toEqual([]);
    const volcano = admit(profile("volcano", {}, { queue }), deployment());
    expect(volcano.object.spec.template.metadata.annotations).toEqual({ "scheduling.volcano.sh/queue-name": queue });
  });

  it("keeps a scheduler the user chose", () => {
    const { mutated, object, validated } = admit(profile("kai"), deployment({ schedulerName: "my-scheduler" }));
    expect(object.spec.template.spec.schedulerName).toBe("my-scheduler");
    expect(mutated.warnings.filter((w) => w.includes("schedulerName"))).toEqual([]);
    expect(validated.violations).toEqual([]);
  });

  it("replaces a user's scheduler when the policy locks it, and denies it if the replacement did not happen", () => {
    const store = profile("kai", { rules: { locked: ["schedulerName"] } });
    const { mutated, object, validated, again } = admit(store, deployment({ schedulerName: "my-scheduler" }));
    expect(object.spec.template.spec.schedulerName).toBe("kai-scheduler");
    expect(mutated.warnings).toContain("infergate: replaced schedulerName my-scheduler with kai-scheduler (locked by policy)");
    expect(validated.violations).toEqual([]);
    expectUntouched(again);

    const unmutated = run(store, admissionRequest(deployment({ schedulerName: "my-scheduler" })), "validate");
    expect(unmutated.violations).toEqual([
      { field: "spec.template.spec.schedulerName", value: "my-scheduler", allowed: 'locked by policy to "kai-scheduler"', plugin: "scheduler" },
    ]);
  });

  it("keeps a user's queue label but denies one that is not the project's queue", () => {
    const store = profile("kai");
    const own = admit(store, deployment({ templateLabels: { "kai.scheduler/queue": "team-a" } }));
    expect(own.validated.violations).toEqual([]);
    const other = admit(store, deployment({ templateLabels: { "kai.scheduler/queue": "vip" }, labels: { "kai.scheduler/queue": "vip" } }));
    expect(other.object.spec.template.metadata.labels["kai.scheduler/queue"]).toBe("vip");
    expect(other.validated.violations.map((v) => [v.field, v.value, v.allowed])).toEqual([
      ["spec.template.metadata.labels[kai.scheduler/queue]", "vip", 'the queue of project team-a: "team-a"'],
      ["metadata.labels[kai.scheduler/queue]", "vip", 'the queue of project team-a: "team-a"'],
    ]);
  });

  it("denies another volcano queue annotation", () => {
    const object = deployment();
    (object.spec.template.metadata as any).annotations = { "scheduling.volcano.sh/queue-name": "default" };
    const result = run(profile("volcano"), admissionRequest(object), "validate");
    expect(result.violations.map((v) => v.field)).toEqual(["spec.template.metadata.annotations[scheduling.volcano.sh/queue-name]"]);
  });

  it("leaves a Deployment that is not an inference workload alone", () => {
    expectUntouched(run(profile("kai"), admissionRequest(deployment({ limits: { cpu: "1" } })), "mutate"));
  });

  it("leaves a Deployment Knative made for a revision alone", () => {
    const object = deployment();
    (object.metadata as any).ownerReferences = [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "llm-00001", uid: "1", controller: true }];
    expectUntouched(run(profile("kai"), admissionRequest(object), "mutate"));
  });

  it("leaves deployments/scale alone", () => {
    const scale = { apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name: "llm", namespace: NS }, spec: { replicas: 3 } };
    expectUntouched(run(profile("kai"), admissionRequest(scale), "mutate"));
  });
});

describe("scheduler: Knative", () => {
  it("puts only the queue label on a Knative Service while schedulerName is refused by Knative", () => {
    const { object, mutated, validated, again } = admit(profile("kai"), knativeService());
    expect(object.spec.template.spec.schedulerName).toBeUndefined();
    expect(object.spec.template.metadata).toEqual({ labels: { "kai.scheduler/queue": "team-a" } });
    expect(mutated.warnings).toEqual(["infergate: set label kai.scheduler/queue=team-a (project team-a queue)"]);
    expect(validated.violations).toEqual([]);
    expectUntouched(again);
  });

  it("sets schedulerName on the Knative Service when its feature flag is enabled", () => {
    const store = profile("volcano");
    store.setKnativeFeatures(parseKnativeFeatures({ data: { "kubernetes.podspec-schedulername": "enabled" } }));
    const { object, again } = admit(store, knativeService());
    expect(object.spec.template.spec.schedulerName).toBe("volcano");
    expect(object.spec.template.metadata.annotations).toEqual({ "scheduling.volcano.sh/queue-name": "team-a" });
    expectUntouched(again);
  });

  it("sets schedulerName on a revision's pod at CREATE, and no labels there", () => {
    const revisionPod = pod({ labels: { "serving.knative.dev/revision": "llm-00001" } });
    const { object, mutated, again } = admit(profile("kai"), revisionPod);
    expect(object.spec.schedulerName).toBe("kai-scheduler");
    expect(object.metadata.labels).toEqual({ "serving.knative.dev/revision": "llm-00001" });
    expect(mutated.warnings).toEqual(["infergate: set schedulerName=kai-scheduler (scheduler profile kai)"]);
    expectUntouched(again);
  });

  it("leaves a revision's pod alone when the Knative Service could carry schedulerName itself", () => {
    const store = profile("kai");
    store.setKnativeFeatures(parseKnativeFeatures({ data: { "kubernetes.podspec-schedulername": "allowed" } }));
    expectUntouched(run(store, admissionRequest(pod({ labels: { "serving.knative.dev/revision": "llm-00001" } })), "mutate"));
  });
});

describe("scheduler: pods", () => {
  it("sets schedulerName and queue on a bare pod at CREATE", () => {
    const { object, again } = admit(profile("kai"), pod({}));
    expect(object.spec.schedulerName).toBe("kai-scheduler");
    expect(object.metadata.labels).toEqual({ "kai.scheduler/queue": "team-a" });
    expectUntouched(again);
  });

  it("never writes on a pod UPDATE, where schedulerName is immutable", () => {
    expectUntouched(run(profile("kai"), admissionRequest(pod({}), { operation: "UPDATE" }), "mutate"));
  });

  it("leaves pods of a Deployment infergate mutated alone", () => {
    const owned = pod({
      labels: { "pod-template-hash": "5d9f7c6b8", "infergate.dev/project": "team-a" },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "llm-5d9f7c6b8", uid: "1", controller: true }],
    });
    expectUntouched(run(profile("kai"), admissionRequest(owned), "mutate"));
  });
});
