import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Phase, Plugin } from "../src/admission/plugin.ts";
import type { PipelineResult } from "../src/admission/pipeline.ts";
import type { AdmissionRequest } from "../src/admission/types.ts";
import type { InferencePolicySpec, SchedulerProfile } from "../src/policy/types.ts";
import type { PolicyStore } from "../src/policy/store.ts";
import { admissionRequest, mutateThenValidate, runAdmission, storeWith } from "../test/support/admission.ts";
import { gpuShare, INVALID_GPU_REQUEST } from "./gpu-share.ts";
import { scheduler } from "./scheduler.ts";

const PLUGINS: readonly Plugin[] = [scheduler, gpuShare];
const NS = "team-a";

type Annotations = Record<string, string>;
const profile = (p: SchedulerProfile, rest: InferencePolicySpec = {}) => storeWith({ policy: { scheduler: { profile: p }, ...rest } });

function metadata(name: string, annotations?: Annotations, labels?: Record<string, string>) {
  return { name, namespace: NS, ...(labels ? { labels } : {}), ...(annotations ? { annotations } : {}) };
}

function container(name: string, limits?: Record<string, unknown>) {
  return { name, image: "nvcr.io/nim/llm:1", ...(limits ? { resources: { limits } } : {}) };
}

interface Shape {
  annotations?: Annotations;
  templateAnnotations?: Annotations;
  containers?: any[];
  labels?: Record<string, string>;
}

function deployment({ annotations, templateAnnotations, containers = [container("server")], labels }: Shape) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: metadata("llm", annotations, labels),
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: "llm" } },
      template: {
        metadata: { labels: { app: "llm" }, ...(templateAnnotations ? { annotations: templateAnnotations } : {}) },
        // The API server fills this in before admission webhooks see the object.
        spec: { schedulerName: "default-scheduler", containers },
      },
    },
  };
}

function knativeService({ annotations, templateAnnotations, containers = [container("server")] }: Shape) {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: metadata("llm", annotations),
    spec: { template: { ...(templateAnnotations ? { metadata: { annotations: templateAnnotations } } : {}), spec: { containers } } },
  };
}

function pod({ annotations, containers = [container("server")] }: Shape, extraMeta: object = {}) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { ...metadata("llm-x", annotations), ...extraMeta },
    spec: { schedulerName: "default-scheduler", containers },
  };
}

/** Mutation, then validation of the mutated object (what the API server does), then a second mutation. */
const run = (store: PolicyStore, request: AdmissionRequest, phase: Phase): PipelineResult => runAdmission(store, request, phase, PLUGINS);
const admit = (store: PolicyStore, object: any) => mutateThenValidate(store, PLUGINS, object);

function patchOf(result: PipelineResult): unknown[] {
  const patch = result.response.patch;
  return patch ? JSON.parse(Buffer.from(patch, "base64").toString()) : [];
}

function expectIdempotent(again: PipelineResult) {
  expect(again.response.patch).toBeUndefined();
  expect(again.warnings).toEqual([]);
}

function gpuWarnings(result: PipelineResult) {
  return result.warnings.filter((w) => !w.includes("schedulerName") && !w.includes("queue"));
}

describe("gpu-share: kai", () => {
  it("keeps template annotations as they are and writes no resources", () => {
    const { mutated, validated, again, object } = admit(profile("kai"), deployment({ templateAnnotations: { "gpu-fraction": "0.5" } }));
    expect(object.spec.template.metadata.annotations).toEqual({ "gpu-fraction": "0.5" });
    expect(object.spec.template.spec.containers[0].resources).toBeUndefined();
    expect(gpuWarnings(mutated)).toEqual([]);
    expect(validated.response.allowed).toBe(true);
    expect(validated.violations).toEqual([]);
    expectIdempotent(again);
  });

  it("copies workload annotations onto the pod template and keeps the originals", () => {
    const { mutated, validated, again, object } = admit(
      profile("kai"),
      deployment({ annotations: { "gpu-memory": "20480", "gpu-fraction-num-devices": "2" } }),
    );
    expect(object.metadata.annotations).toEqual({ "gpu-memory": "20480", "gpu-fraction-num-devices": "2" });
    expect(object.spec.template.metadata.annotations).toEqual({ "gpu-memory": "20480", "gpu-fraction-num-devices": "2" });
    expect(gpuWarnings(mutated)).toEqual([
      "infergate: copied annotation gpu-memory=20480 onto the pod template (KAI-Scheduler reads it there)",
      "infergate: copied annotation gpu-fraction-num-devices=2 onto the pod template (KAI-Scheduler reads it there)",
    ]);
    expect(validated.violations).toEqual([]);
    expectIdempotent(again);
  });

  it("replaces a stale template copy with the workload's set", () => {
    const { mutated, object, again } = admit(
      profile("kai"),
      deployment({ annotations: { "gpu-fraction": "0.25" }, templateAnnotations: { "gpu-fraction": "0.5", "gpu-fraction-num-devices": "2", other: "kept" } }),
    );
    expect(object.spec.template.metadata.annotations).toEqual({ "gpu-fraction": "0.25", other: "kept" });
    expect(gpuWarnings(mutated)).toEqual([
      "infergate: copied annotation gpu-fraction=0.25 onto the pod template (KAI-Scheduler reads it there)",
      "infergate: removed pod-template annotation gpu-fraction-num-devices: the workload's share annotations replace it",
    ]);
    expectIdempotent(again);
  });

  it("copies annotations of a Knative Service onto its template, which reaches the revision's pods", () => {
    const { object, validated, again } = admit(profile("kai"), knativeService({ annotations: { "gpu-fraction": "0.5" } }));
    expect(object.spec.template.metadata.annotations).toEqual({ "gpu-fraction": "0.5" });
    // schedulerName is refused by Knative while its feature flag is off; the queue label is always allowed.
    expect(object.spec.template.spec.schedulerName).toBeUndefined();
    expect(object.spec.template.metadata.labels).toEqual({ "kai.scheduler/queue": "team-a" });
    expect(validated.violations).toEqual([]);
    expectIdempotent(again);
  });

  it("refuses gpu-fraction 1, which KAI-Scheduler does not accept, even under enforcement: warn", () => {
    const store = profile("kai", { enforcement: "warn" });
    const { validated, object } = admit(store, deployment({ templateAnnotations: { "gpu-fraction": "1" } }));
    expect(validated.response.allowed).toBe(false);
    expect(validated.violations).toEqual([
      {
        field: "spec.template.metadata.annotations[gpu-fraction]",
        value: "1",
        allowed: "gpu-fraction below 1 for KAI-Scheduler; for a whole GPU remove gpu-fraction and set limits nvidia.com/gpu: 1",
        plugin: "gpu-share",
        reason: INVALID_GPU_REQUEST,
      },
    ]);
    expect(object.spec.template.metadata.annotations).toEqual({ "gpu-fraction": "1" });
  });

  it("rejects HAMi's rendering, which KAI would read as a whole-GPU limit next to a fraction", () => {
    const containers = [container("server", { "nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50" })];
    const result = run(profile("kai"), admissionRequest(deployment({ templateAnnotations: { "gpu-fraction": "0.5" }, containers })), "validate");
    expect(result.violations.map((v) => [v.field, v.value, v.reason])).toEqual([
      ["spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]", "1", INVALID_GPU_REQUEST],
    ]);
  });
});

describe("gpu-share: volcano", () => {
  it("renders a fraction as vgpu-number and vgpu-memory limits on a Deployment", () => {
    const { mutated, validated, again, object } = admit(profile("volcano"), deployment({ templateAnnotations: { "gpu-fraction": "0.5" } }));
    expect(object.spec.template.spec.containers[0].resources).toEqual({ limits: { "volcano.sh/vgpu-number": "1", "volcano.sh/vgpu-memory": "40960" } });
    expect(object.spec.template.metadata.annotations).toEqual({ "gpu-fraction": "0.5", "scheduling.volcano.sh/queue-name": "team-a" });
    expect(gpuWarnings(mutated)).toEqual([
      'infergate: set volcano.sh/vgpu-number=1 on container "server" (gpu-fraction 0.5)',
      'infergate: set volcano.sh/vgpu-memory=40960 on container "server" (gpu-fraction 0.5)',
    ]);
    expect(validated.violations).toEqual([]);
    expectIdempotent(again);
  });

  it("renders gpu-memory on several devices on a Knative Service", () => {
    const { validated, again, object } = admit(
      profile("volcano"),
      knativeService({ templateAnnotations: { "gpu-memory": "20480", "gpu-fraction-num-devices": "2" } }),
    );
    expect(object.spec.template.spec.containers[0].resources.limits).toEqual({ "volcano.sh/vgpu-number": "2", "volcano.sh/vgpu-memory": "20480" });
    expect(object.spec.template.metadata.annotations["scheduling.volcano.sh/queue-name"]).toBe("team-a");
    expect(validated.violations).toEqual([]);
    expectIdempotent(again);
  });

  it("uses the project's memory per device for a fraction", () => {
    const store = storeWith({ policy: { scheduler: { profile: "volcano" } }, project: { gpuMemoryPerDeviceMiB: 49152 } });
    const { object } = admit(store, deployment({ templateAnnotations: { "gpu-fraction": "0.25" } }));
    expect(object.spec.template.spec.containers[0].resources.limits["volcano.sh/vgpu-memory"]).toBe("12288");
  });

  it("renders workload-level annotations without moving them", () => {
    const { object, again } = admit(profile("volcano"), deployment({ annotations: { "gpu-fraction": "1" } }));
    expect(object.spec.template.metadata.annotations).toEqual({ "scheduling.volcano.sh/queue-name": "team-a" });
    expect(object.spec.template.spec.containers[0].resources.limits).toEqual({ "volcano.sh/vgpu-number": "1", "volcano.sh/vgpu-memory": "81920" });
    expectIdempotent(again);
  });

  it("writes on the container named by gpu-fraction-container-name", () => {
    const containers = [container("proxy"), container("model")];
    const { object } = admit(
      profile("volcano"),
      deployment({ templateAnnotations: { "gpu-fraction": "0.5", "gpu-fraction-container-name": "model" }, containers }),
    );
    expect(object.spec.template.spec.containers[0].resources).toBeUndefined();
    expect(object.spec.template.spec.containers[1].resources.limits["volcano.sh/vgpu-number"]).toBe("1");
  });

  it("re-renders on UPDATE when the annotation changed", () => {
    const store = profile("volcano");
    const old = admit(store, deployment({ templateAnnotations: { "gpu-fraction": "0.5" } })).object;
    const changed = structuredClone(old);
    changed.spec.template.metadata.annotations["gpu-fraction"] = "0.25";
    const result = run(store, admissionRequest(changed, { oldObject: old }), "mutate");
    expect((result.object as any).spec.template.spec.containers[0].resources.limits["volcano.sh/vgpu-memory"]).toBe("20480");
    expect(result.warnings).toEqual(['infergate: set volcano.sh/vgpu-memory=20480 on container "server" (gpu-fraction 0.25)']);
    expect(patchOf(result)).toEqual([
      { op: "replace", path: "/spec/template/spec/containers/0/resources/limits/volcano.sh~1vgpu-memory", value: "20480" },
    ]);
  });
});

describe("gpu-share: hami", () => {
  it("renders a fraction as nvidia.com/gpu devices plus gpumem-percentage, and validation accepts it", () => {
    const { mutated, validated, again, object } = admit(profile("hami"), deployment({ templateAnnotations: { "gpu-fraction": "0.5" } }));
    expect(object.spec.template.spec.containers[0].resources).toEqual({ limits: { "nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50" } });
    expect(gpuWarnings(mutated)).toEqual([
      'infergate: set nvidia.com/gpu=1 on container "server" (gpu-fraction 0.5)',
      'infergate: set nvidia.com/gpumem-percentage=50 on container "server" (gpu-fraction 0.5)',
    ]);
    expect(validated.response.allowed).toBe(true);
    expect(validated.violations).toEqual([]);
    expectIdempotent(again);
  });

  it("renders gpu-memory as gpumem on each device of a Knative Service", () => {
    const { validated, again, object } = admit(
      profile("hami"),
      knativeService({ templateAnnotations: { "gpu-memory": "20480", "gpu-fraction-num-devices": "2" } }),
    );
    expect(object.spec.template.spec.containers[0].resources.limits).toEqual({ "nvidia.com/gpu": "2", "nvidia.com/gpumem": "20480" });
    expect(validated.violations).toEqual([]);
    expectIdempotent(again);
  });

  it("names an unnamed container by its index", () => {
    const containers = [{ image: "nvcr.io/nim/llm:1" }];
    const { mutated } = admit(profile("hami"), knativeService({ templateAnnotations: { "gpu-memory": "8192" }, containers }));
    expect(gpuWarnings(mutated)).toEqual([
      "infergate: set nvidia.com/gpu=1 on container 0 (gpu-memory 8192 MiB)",
      "infergate: set nvidia.com/gpumem=8192 on container 0 (gpu-memory 8192 MiB)",
    ]);
  });

  it("replaces an earlier memory rendering when the share becomes a fraction", () => {
    const containers = [container("server", { "nvidia.com/gpu": "1", "nvidia.com/gpumem": "20480", cpu: "2" })];
    const { mutated, object, again } = admit(profile("hami"), deployment({ templateAnnotations: { "gpu-fraction": "0.125" }, containers }));
    expect(object.spec.template.spec.containers[0].resources.limits).toEqual({ "nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "13", cpu: "2" });
    expect(gpuWarnings(mutated)).toEqual([
      'infergate: set nvidia.com/gpumem-percentage=13 on container "server" (gpu-fraction 0.125)',
      'infergate: removed nvidia.com/gpumem from container "server": nvidia.com/gpumem-percentage replaces it',
    ]);
    expectIdempotent(again);
  });

  it("renders on a bare pod and reports its annotation paths without a template prefix", () => {
    const store = profile("hami");
    const { object, again } = admit(store, pod({ annotations: { "gpu-fraction": "0.5" } }));
    expect(object.spec.containers[0].resources.limits).toEqual({ "nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50" });
    expect(object.spec.schedulerName).toBe("hami-scheduler");
    expectIdempotent(again);
    const bad = run(store, admissionRequest(pod({ annotations: { "gpu-fraction": "x" } })), "validate");
    expect(bad.violations.map((v) => v.field)).toEqual(["metadata.annotations[gpu-fraction]"]);
  });

  it("leaves pods of a Deployment infergate mutated alone: their template already carries the share", () => {
    const owned = pod(
      { annotations: { "gpu-fraction": "0.5" } },
      {
        labels: { "pod-template-hash": "5d9f7c6b8", "infergate.dev/project": "team-a" },
        ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "llm-5d9f7c6b8", uid: "1", controller: true }],
      },
    );
    const result = run(profile("hami"), admissionRequest(owned), "mutate");
    expect(result.response.patch).toBeUndefined();
    expect(result.warnings).toEqual([]);
  });
});

describe("gpu-share: profiles without fractions", () => {
  for (const p of ["default", "coscheduling"] as const) {
    it(`${p}: writes no share and denies it with the profiles that support fractions`, () => {
      const store = profile(p, { enforcement: "warn" });
      const { mutated, validated, object } = admit(store, deployment({ templateAnnotations: { "gpu-fraction": "0.5" } }));
      expect(object.spec.template.spec.containers[0].resources).toBeUndefined();
      expect(gpuWarnings(mutated)).toEqual([]);
      expect(validated.response.allowed).toBe(false);
      expect(validated.violations).toEqual([
        {
          field: "spec.template.metadata.annotations[gpu-fraction]",
          value: "0.5",
          allowed: `a GPU share needs scheduler profile kai, volcano, hami; profile "${p}" places whole GPUs only: set limits nvidia.com/gpu instead`,
          plugin: "gpu-share",
          reason: INVALID_GPU_REQUEST,
        },
      ]);
    });
  }

  it("default: a whole-GPU Deployment gets no patch at all", () => {
    const containers = [container("server", { "nvidia.com/gpu": "1" })];
    const { mutated, validated } = admit(profile("default"), deployment({ containers }));
    expect(mutated.response.patch).toBeUndefined();
    expect(mutated.warnings).toEqual([]);
    expect(validated.violations).toEqual([]);
  });

  it("reports a workload-level annotation at the workload's path", () => {
    const result = run(profile("default"), admissionRequest(knativeService({ annotations: { "gpu-memory": "1024" } })), "validate");
    expect(result.violations.map((v) => v.field)).toEqual(["metadata.annotations[gpu-memory]"]);
  });
});

describe("gpu-share: invalid requests", () => {
  const marked = { "infergate.dev/inference": "true" };
  const cases: Array<{ name: string; annotations: Annotations; containers?: any[]; field: string; value: unknown; allowed: string }> = [
    {
      name: "an unparseable fraction",
      annotations: { "gpu-fraction": "half" },
      field: "spec.template.metadata.annotations[gpu-fraction]",
      value: "half",
      allowed: 'a decimal number greater than 0 and at most 1, e.g. "0.5"',
    },
    {
      name: "a zero fraction",
      annotations: { "gpu-fraction": "0" },
      field: "spec.template.metadata.annotations[gpu-fraction]",
      value: "0",
      allowed: 'a decimal number greater than 0 and at most 1, e.g. "0.5"',
    },
    {
      name: "a fraction above 1",
      annotations: { "gpu-fraction": "1.5" },
      field: "spec.template.metadata.annotations[gpu-fraction]",
      value: "1.5",
      allowed: 'a decimal number greater than 0 and at most 1, e.g. "0.5"',
    },
    {
      name: "memory with a unit",
      annotations: { "gpu-memory": "20Gi" },
      field: "spec.template.metadata.annotations[gpu-memory]",
      value: "20Gi",
      allowed: 'a positive whole number of MiB, e.g. "20480"',
    },
    {
      name: "both fraction and memory",
      annotations: { "gpu-fraction": "0.5", "gpu-memory": "1024" },
      field: "spec.template.metadata.annotations[gpu-memory]",
      value: "1024",
      allowed: 'set either gpu-fraction or gpu-memory, not both (gpu-fraction is "0.5")',
    },
    {
      name: "zero devices",
      annotations: { "gpu-fraction": "0.5", "gpu-fraction-num-devices": "0" },
      field: "spec.template.metadata.annotations[gpu-fraction-num-devices]",
      value: "0",
      allowed: 'a positive whole number of devices, e.g. "2"',
    },
    {
      name: "devices without a share",
      annotations: { "gpu-fraction-num-devices": "2" },
      field: "spec.template.metadata.annotations[gpu-fraction-num-devices]",
      value: "2",
      allowed: "only together with gpu-fraction or gpu-memory",
    },
    {
      name: "a share next to a whole-GPU limit",
      annotations: { "gpu-fraction": "0.5" },
      containers: [container("server", { "nvidia.com/gpu": "1" })],
      field: "spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]",
      value: "1",
      allowed: "no nvidia.com/gpu together with gpu-fraction: ask for whole GPUs or for a share, not both",
    },
    {
      name: "a container name that matches none",
      annotations: { "gpu-memory": "1024", "gpu-fraction-container-name": "modle" },
      containers: [container("proxy"), container("model")],
      field: "spec.template.metadata.annotations[gpu-fraction-container-name]",
      value: "modle",
      allowed: `the name of one of the pod's containers: "proxy", "model"`,
    },
  ];

  for (const c of cases) {
    for (const kind of ["Deployment", "KnativeService"] as const) {
      it(`${kind}: ${c.name} is denied as InvalidGPURequest and left unrendered, even under enforcement: warn`, () => {
        const store = profile("volcano", { enforcement: "warn" });
        const shape = { templateAnnotations: c.annotations, containers: c.containers, labels: marked };
        const object = kind === "Deployment" ? deployment(shape) : knativeService(shape);
        const { mutated, validated } = admit(store, object);
        expect(gpuWarnings(mutated)).toEqual([]);
        const limits = (mutated.object as any).spec.template.spec.containers.map((x: any) => x.resources?.limits ?? {});
        for (const l of limits) expect(Object.keys(l).filter((k) => k.startsWith("volcano.sh/"))).toEqual([]);
        expect(validated.response.allowed).toBe(false);
        expect(validated.violations).toEqual([{ field: c.field, value: c.value, allowed: c.allowed, plugin: "gpu-share", reason: INVALID_GPU_REQUEST }]);
      });
    }
  }
});

describe("gpu-share: policy ranges", () => {
  const rules = { gpuFraction: { min: "0.1", max: "0.5" }, gpusPerPod: { max: "2" } };

  it("denies a fraction outside rules.gpuFraction as an ordinary policy violation", () => {
    const { validated } = admit(profile("volcano", { rules }), deployment({ templateAnnotations: { "gpu-fraction": "0.05" } }));
    expect(validated.response.allowed).toBe(false);
    expect(validated.response.status?.reason).toBe("Forbidden");
    expect(validated.violations).toEqual([
      {
        field: "spec.template.metadata.annotations[gpu-fraction]",
        value: "0.05",
        allowed: "between 0.1 and 0.5 (policy rules.gpuFraction)",
        plugin: "gpu-share",
      },
    ]);
  });

  it("admits it under enforcement: warn, rendered, with the violation as a warning", () => {
    const { validated, object } = admit(profile("volcano", { rules, enforcement: "warn" }), deployment({ templateAnnotations: { "gpu-fraction": "0.05" } }));
    expect(validated.response.allowed).toBe(true);
    expect(validated.warnings).toEqual([
      'policy (warn): spec.template.metadata.annotations[gpu-fraction]: Invalid value: "0.05": between 0.1 and 0.5 (policy rules.gpuFraction)',
    ]);
    expect(object.spec.template.spec.containers[0].resources.limits["volcano.sh/vgpu-memory"]).toBe("4096");
  });

  it("states the fraction range in MiB for gpu-memory", () => {
    const { validated } = admit(profile("hami", { rules }), knativeService({ templateAnnotations: { "gpu-memory": "4096" } }));
    expect(validated.violations.map((v) => [v.field, v.value, v.allowed])).toEqual([
      [
        "spec.template.metadata.annotations[gpu-memory]",
        "4096",
        "between 8192 and 40960 MiB (policy rules.gpuFraction between 0.1 and 0.5 of a 81920 MiB GPU)",
      ],
    ]);
  });

  it("denies a share whose devices exceed rules.gpusPerPod", () => {
    const { validated } = admit(profile("kai", { rules }), deployment({ templateAnnotations: { "gpu-fraction": "0.5", "gpu-fraction-num-devices": "5" } }));
    expect(validated.violations).toEqual([
      {
        field: "spec.template.metadata.annotations[gpu-fraction]",
        value: 2.5,
        allowed: "at most 2 GPUs per pod (policy rules.gpusPerPod) (asked: gpu-fraction 0.5 × 5 devices)",
        plugin: "gpu-share",
      },
    ]);
  });

  it("applies rules.gpusPerPod to whole GPUs too", () => {
    const containers = [container("server", { "nvidia.com/gpu": "4" })];
    const { validated } = admit(profile("default", { rules }), deployment({ containers }));
    expect(validated.violations.map((v) => [v.field, v.value, v.allowed])).toEqual([
      ["spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]", 4, "at most 2 GPUs per pod (policy rules.gpusPerPod)"],
    ]);
  });

  it("compares decimals without float noise", () => {
    const tight = { gpuFraction: { min: "0.1", max: "0.1" }, gpusPerPod: { max: "0.3" } };
    const { validated } = admit(
      profile("volcano", { rules: tight }),
      deployment({ templateAnnotations: { "gpu-fraction": "0.1", "gpu-fraction-num-devices": "3" } }),
    );
    expect(validated.violations).toEqual([]);
  });
});

describe("gpu-share: property", () => {
  const fractionProfiles = ["kai", "volcano", "hami"] as const;
  const shareArb = fc.record({
    profile: fc.constantFrom(...fractionProfiles),
    kind: fc.constantFrom<"Deployment" | "KnativeService">("Deployment", "KnativeService"),
    onWorkload: fc.boolean(),
    // Thousandths keep the strings plain decimals, as users write them.
    share: fc.oneof(
      fc.integer({ min: 1, max: 1000 }).map((n): Annotations => ({ "gpu-fraction": String(n / 1000) })),
      fc.integer({ min: 1, max: 81920 }).map((n): Annotations => ({ "gpu-memory": String(n) })),
    ),
    devices: fc.option(fc.integer({ min: 1, max: 8 }), { nil: undefined }),
    containerCount: fc.integer({ min: 1, max: 3 }),
    targetIndex: fc.option(fc.nat({ max: 2 }), { nil: undefined }),
  });

  it("mutating twice gives an empty second patch, and validation accepts the result", () => {
    fc.assert(
      fc.property(shareArb, (x) => {
        if (x.profile === "kai" && x.share["gpu-fraction"] === "1") return; // KAI refuses 1: covered above
        const annotations: Annotations = { ...x.share };
        if (x.devices !== undefined) annotations["gpu-fraction-num-devices"] = String(x.devices);
        const containers = Array.from({ length: x.containerCount }, (_, i) => container(`c${i}`, { cpu: "1" }));
        if (x.targetIndex !== undefined && x.targetIndex < x.containerCount) annotations["gpu-fraction-container-name"] = `c${x.targetIndex}`;
        const shape = x.onWorkload ? { annotations, containers } : { templateAnnotations: annotations, containers };
        const object = x.kind === "Deployment" ? deployment(shape) : knativeService(shape);
        const { mutated, validated, again } = admit(profile(x.profile), object);
        expect(mutated.violations).toEqual([]);
        expect(validated.violations).toEqual([]);
        expect(validated.response.allowed).toBe(true);
        expectIdempotent(again);
        const limits = JSON.stringify((mutated.object as any).spec.template.spec.containers.map((c: any) => c.resources.limits));
        expect(limits).not.toMatch(/"nvidia\.com\/gpu":"\d*\.\d+"/);
      }),
      { numRuns: 300 },
    );
  });
});
