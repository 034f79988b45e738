// GPU pods of controllers infergate does not mutate (StatefulSet, LeaderWorkerSet, Job, a bare ReplicaSet,
// a Deployment admitted while the mutating webhook was down) get the policy on the pod at CREATE, through
// the real plugin set; pods of a Deployment whose template infergate mutated stay untouched
// (docs/decisions/006-pods-of-other-controllers.md).
import { describe, expect, it } from "vitest";
import { WARNING_MAX, type PipelineResult } from "../../src/admission/pipeline.ts";
import type { InferencePolicySpec } from "../../src/policy/types.ts";
import { quotaDelta, workloadOfObject } from "../../src/quota/accounting.ts";
import { toWorkload } from "../../src/workload/workload.ts";
import { plugins } from "../../webhooks/index.ts";
import { admissionRequest, mutateThenValidate, runAdmission, storeWith } from "../support/admission.ts";

const NS = "team-a";
const GPU = "nvidia.com/gpu";
const GPU_TOLERATION = { key: GPU, operator: "Exists" as const, effect: "NoSchedule" as const };
const POOLS = ["h100", "a100"];
const POOL_LABEL = "infergate.dev/node-pool";
// What the API server has already put on every pod before the webhooks see it.
const SYSTEM_TOLERATIONS = [
  { key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
  { key: "node.kubernetes.io/unreachable", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
];

const POLICY: InferencePolicySpec = {
  scheduler: { profile: "kai" },
  defaults: { priorityClassName: "inference", tolerations: [GPU_TOLERATION], labels: { "cost-center": "ml" } },
};

function store(policy: InferencePolicySpec = POLICY) {
  return storeWith({ policy, project: { nodePools: POOLS, queue: "research" } });
}

interface PodShape {
  name?: string;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  owner: { apiVersion: string; kind: string; name: string };
  image?: string;
  limits?: Record<string, unknown>;
  spec?: Record<string, unknown>;
}

/** A pod as its controller submits it, after the API server's defaulting and built-in admission. */
function pod(shape: PodShape): any {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      ...(shape.name ? { name: shape.name } : { generateName: shape.generateName }),
      namespace: NS,
      labels: shape.labels ?? {},
      ...(shape.annotations ? { annotations: shape.annotations } : {}),
      ownerReferences: [{ ...shape.owner, uid: `${shape.owner.name}-uid`, controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      containers: [{ name: "server", image: shape.image ?? "vllm/vllm-openai:v0.8.5", resources: { limits: shape.limits ?? { [GPU]: "1" } } }],
      schedulerName: "default-scheduler",
      // The Priority admission plugin resolved the pod's (absent) class before the webhook ran.
      priority: 0,
      preemptionPolicy: "PreemptLowerPriority",
      tolerations: structuredClone(SYSTEM_TOLERATIONS),
      ...shape.spec,
    },
  };
}

const statefulSetPod = (labels: Record<string, string> = {}, extra: Partial<PodShape> = {}) =>
  pod({
    name: "llama-70b-0",
    labels: { app: "llama-70b", "controller-revision-hash": "llama-70b-6b8f7c9d5", "apps.kubernetes.io/pod-index": "0", "statefulset.kubernetes.io/pod-name": "llama-70b-0", ...labels },
    owner: { apiVersion: "apps/v1", kind: "StatefulSet", name: "llama-70b" },
    ...extra,
  });

// A multi-node vLLM worker: LeaderWorkerSet makes one worker StatefulSet per group, owned by the group's leader pod.
const lwsWorkerPod = () =>
  pod({
    name: "vllm-0-1",
    labels: {
      "leaderworkerset.sigs.k8s.io/name": "vllm",
      "leaderworkerset.sigs.k8s.io/group-index": "0",
      "leaderworkerset.sigs.k8s.io/worker-index": "1",
      "leaderworkerset.sigs.k8s.io/group-key": "a1b2c3d4e5f6",
      "leaderworkerset.sigs.k8s.io/template-revision-hash": "7d9c8b6f5",
      "statefulset.kubernetes.io/pod-name": "vllm-0-1",
    },
    annotations: { "leaderworkerset.sigs.k8s.io/size": "2", "leaderworkerset.sigs.k8s.io/leader-name": "vllm-0" },
    owner: { apiVersion: "apps/v1", kind: "StatefulSet", name: "vllm-0" },
    limits: { [GPU]: "8" },
  });

const jobPod = () =>
  pod({
    generateName: "eval-llama-",
    labels: { "batch.kubernetes.io/job-name": "eval-llama", "job-name": "eval-llama", "batch.kubernetes.io/controller-uid": "0f1e2d3c", "controller-uid": "0f1e2d3c" },
    owner: { apiVersion: "batch/v1", kind: "Job", name: "eval-llama" },
    spec: { restartPolicy: "Never" },
  });

/** A pod of a Deployment's ReplicaSet: with the project label when infergate mutated the Deployment's template. */
const replicaSetPod = (labels: Record<string, string> = {}) =>
  pod({
    generateName: "llm-5d9f7c6b8-",
    labels: { app: "llm", "pod-template-hash": "5d9f7c6b8", ...labels },
    owner: { apiVersion: "apps/v1", kind: "ReplicaSet", name: "llm-5d9f7c6b8" },
  });

const FOREIGN: Array<[string, () => any]> = [
  ["a StatefulSet's pod", () => statefulSetPod()],
  ["a LeaderWorkerSet worker pod", lwsWorkerPod],
  ["a Job's pod", jobPod],
  ["a pod of a Deployment admitted while the mutating webhook was down (no project label)", () => replicaSetPod()],
];

function expectPolicyOnPod(result: PipelineResult, original: any): void {
  const object = result.object as any;
  expect(object.metadata.labels).toEqual({
    ...original.metadata.labels,
    "infergate.dev/project": "team-a",
    "infergate.dev/queue": "research",
    "kai.scheduler/queue": "research",
    "cost-center": "ml",
  });
  expect(object.metadata.ownerReferences).toEqual(original.metadata.ownerReferences);
  expect(object.spec.priorityClassName).toBe("inference");
  // Left for the API server to resolve again from the class infergate set.
  expect(object.spec.priority).toBeUndefined();
  expect(object.spec.preemptionPolicy).toBeUndefined();
  expect(object.spec.schedulerName).toBe("kai-scheduler");
  expect(object.spec.tolerations).toEqual([...SYSTEM_TOLERATIONS, GPU_TOLERATION]);
  expect(object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
    { matchExpressions: [{ key: POOL_LABEL, operator: "In", values: POOLS }] },
  ]);
  expect(object.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution.map((t: any) => t.preference.matchExpressions[0].values[0])).toEqual(POOLS);
  expect(object.spec.containers).toEqual(original.spec.containers);
}

describe("pods of controllers infergate does not mutate get the policy at CREATE", () => {
  for (const [what, make] of FOREIGN) {
    it(`${what}: priority, scheduler, queue, toleration, pool affinity and labels, each with a short warning`, () => {
      const original = make();
      const { mutated, validated, again } = mutateThenValidate(store(), plugins, original);
      expect(toWorkload(admissionRequest(original), original)?.role).toBe("foreign-pod");
      expectPolicyOnPod(mutated, original);
      expect(mutated.warnings).toEqual([
        "infergate: set schedulerName=kai-scheduler (scheduler profile kai)",
        "infergate: set label kai.scheduler/queue=research (project team-a queue)",
        "infergate: set priorityClassName=inference (policy default)",
        `infergate: added toleration ${GPU}:NoSchedule op=Exists (policy default)`,
        `infergate: node affinity requires ${POOL_LABEL} in [h100, a100] (project pools)`,
        "infergate: node affinity prefers pools in order h100 > a100",
        "infergate: labelled pods infergate.dev/project=team-a, infergate.dev/queue=research",
        "infergate: added template labels cost-center=ml (policy default)",
      ]);
      for (const w of mutated.warnings) expect(w.length, w).toBeLessThanOrEqual(WARNING_MAX);
      expect(validated.response.allowed).toBe(true);
      // Reinvocation: the pod now carries everything, so a second pass changes nothing and says nothing.
      expect(again.response.patch).toBeUndefined();
      expect(again.warnings).toEqual([]);
    });
  }

  it("a kubeai Model's pod and a bare ReplicaSet's pod are foreign pods too", () => {
    const model = pod({ name: "model-llama-3-8b-5d9c7", labels: { "app.kubernetes.io/managed-by": "kubeai", model: "llama-3-8b" }, owner: { apiVersion: "kubeai.org/v1", kind: "Model", name: "llama-3-8b" } });
    const bareReplicaSet = pod({ generateName: "handmade-", labels: { app: "handmade" }, owner: { apiVersion: "apps/v1", kind: "ReplicaSet", name: "handmade" } });
    for (const p of [model, bareReplicaSet]) {
      expect(toWorkload(admissionRequest(p), p)?.role).toBe("foreign-pod");
      expect((runAdmission(store(), admissionRequest(p), "mutate", plugins).object as any).spec.priorityClassName).toBe("inference");
    }
  });

  it("renders a GPU share on a foreign pod in the profile's dialect, once", () => {
    const s = store({ ...POLICY, scheduler: { profile: "hami" } });
    const original = statefulSetPod({}, { annotations: { "gpu-fraction": "0.5" }, limits: {} });
    const { mutated, validated, again } = mutateThenValidate(s, plugins, original);
    const object = mutated.object as any;
    expect(object.spec.containers[0].resources.limits).toEqual({ [GPU]: "1", "nvidia.com/gpumem-percentage": "50" });
    expect(object.spec.schedulerName).toBe("hami-scheduler");
    expect(object.metadata.annotations["gpu-fraction"]).toBe("0.5");
    expect(validated.response.allowed).toBe(true);
    expect(again.response.patch).toBeUndefined();
    expect(again.warnings).toEqual([]);
  });

  it("under coscheduling, a Deployment's foreign pod joins its revision's pod group; a LeaderWorkerSet's pod joins none", () => {
    const s = store({ ...POLICY, scheduler: { profile: "coscheduling", schedulerName: "scheduler-plugins-scheduler" } });
    const outage = runAdmission(s, admissionRequest(replicaSetPod()), "mutate", plugins).object as any;
    expect(outage.metadata.labels["scheduling.x-k8s.io/pod-group"]).toBe("llm-5d9f7c6b8");
    expect(outage.spec.schedulerName).toBe("scheduler-plugins-scheduler");
    const worker = runAdmission(s, admissionRequest(lwsWorkerPod()), "mutate", plugins).object as any;
    expect(worker.metadata.labels["scheduling.x-k8s.io/pod-group"]).toBeUndefined();
    expect(worker.spec.schedulerName).toBe("scheduler-plugins-scheduler");
    expect(worker.spec.priorityClassName).toBe("inference");
  });

  it("keeps every label the pod already has, which its controller may select on, even a locked or infergate's own one", () => {
    const s = store({ ...POLICY, defaults: { ...POLICY.defaults, labels: { tier: "gold" } }, rules: { locked: ["labels"] } });
    const original = statefulSetPod({ tier: "silver", "infergate.dev/project": "team-b" });
    const { mutated, validated } = mutateThenValidate(s, plugins, original);
    const labels = (mutated.object as any).metadata.labels;
    expect(labels.tier).toBe("silver");
    expect(labels["infergate.dev/project"]).toBe("team-b");
    expect(labels["infergate.dev/queue"]).toBe("research");
    expect((mutated.object as any).spec.priorityClassName).toBe("inference");
    // The locked label is then the validator's to report, on the pod's own path.
    expect(validated.response.allowed).toBe(false);
    expect(validated.violations.map((v) => v.field)).toEqual(["metadata.labels[tier]"]);
  });

  it("outside every Project, and on UPDATE, a foreign pod is left alone", () => {
    const elsewhere = statefulSetPod();
    elsewhere.metadata.namespace = "elsewhere";
    expect(runAdmission(store(), admissionRequest(elsewhere), "mutate", plugins).response.patch).toBeUndefined();
    const p = statefulSetPod();
    const update = runAdmission(store(), admissionRequest(p, { oldObject: p }), "mutate", plugins);
    expect(update.response.patch).toBeUndefined();
    expect(update.warnings).toEqual([]);
  });

  it("a foreign pod without GPUs or the inference label is no inference workload: untouched", () => {
    const cpu = statefulSetPod({}, { limits: { cpu: "2" } });
    const result = runAdmission(store(), admissionRequest(cpu), "mutate", plugins);
    expect(result.response.patch).toBeUndefined();
    expect(result.warnings).toEqual([]);
  });
});

describe("pods whose template infergate mutated stay untouched", () => {
  it("a pod of a Deployment's ReplicaSet carrying the project label gets no patch and no warning, even where a field is missing", () => {
    // Its Deployment's template carried the policy; the pod is not inspected again (here it even lacks
    // the toleration and priority class, which only the role can explain).
    const p = replicaSetPod({ "infergate.dev/project": "team-a", "infergate.dev/queue": "research" });
    expect(toWorkload(admissionRequest(p), p)?.role).toBe("replica-pod");
    const { mutated, validated } = mutateThenValidate(store({ ...POLICY, rules: { imageRegistries: ["nvcr.io/"] } }), plugins, p);
    expect(mutated.response.patch).toBeUndefined();
    expect(mutated.warnings).toEqual([]);
    expect(validated.response.allowed).toBe(true);
  });

  it("a StatefulSet's pod infergate mutated keeps its role after the mutation, so the validating webhook still judges it", () => {
    const { object } = mutateThenValidate(store(), plugins, statefulSetPod());
    expect(object.metadata.labels["infergate.dev/project"]).toBe("team-a");
    expect(toWorkload(admissionRequest(object), object)?.role).toBe("foreign-pod");
  });

  it("a Knative revision's pod keeps its own role", () => {
    const p = replicaSetPod({ "serving.knative.dev/revision": "chat-00001" });
    expect(toWorkload(admissionRequest(p), p)?.role).toBe("knative-pod");
  });
});

describe("policy rules on foreign pods name the pod's own fields", () => {
  const rules: InferencePolicySpec = {
    ...POLICY,
    rules: { priorityClassNames: ["inference"], imageRegistries: ["nvcr.io/", "registry.example.com/"], gpusPerPod: { max: "2" } },
  };

  const violating = () =>
    statefulSetPod({}, { image: "docker.io/library/vllm:latest", limits: { [GPU]: "4" }, spec: { priorityClassName: "batch-low", priority: 1000 } });

  it("denies every violation at once, with `spec.…` paths (no template prefix)", () => {
    const { validated, mutated } = mutateThenValidate(store(rules), plugins, violating());
    // The user's class is kept (not locked); the rest of the policy is still injected.
    expect((mutated.object as any).spec.priorityClassName).toBe("batch-low");
    expect(validated.response.allowed).toBe(false);
    expect(validated.violations.map((v) => [v.field, v.value])).toEqual(
      expect.arrayContaining([
        ["spec.priorityClassName", "batch-low"],
        ["spec.containers[0].image", "docker.io/library/vllm:latest"],
        [`spec.containers[0].resources.limits[${GPU}]`, 4],
      ]),
    );
    expect(validated.violations).toHaveLength(3);
    expect(validated.response.status?.message).toMatch(/^Pod "llama-70b-0" is invalid: \[/);
    expect(validated.response.status?.message).toContain('spec.containers[0].image: Invalid value: "docker.io/library/vllm:latest": image must start with one of: "nvcr.io/", "registry.example.com/"');
  });

  it("judges a Job pod that reached the validating webhook without mutation (the mutating webhook was down)", () => {
    const p = jobPod();
    p.spec.containers[0].image = "docker.io/library/vllm:latest";
    const result = runAdmission(store(rules), admissionRequest(p), "validate", plugins);
    expect(result.response.allowed).toBe(false);
    expect(result.violations.map((v) => v.field)).toEqual(["spec.containers[0].image"]);
  });

  it("admits them with warnings under enforcement: warn", () => {
    const { validated } = mutateThenValidate(store({ ...rules, enforcement: "warn" }), plugins, violating());
    expect(validated.response.allowed).toBe(true);
    expect(validated.warnings.filter((w) => w.startsWith("policy (warn): spec."))).toHaveLength(3);
  });
});

describe("quota counts foreign pods as it always did", () => {
  const delta = (p: any) => quotaDelta({ operation: "CREATE", workload: workloadOfObject("Pod", p)!, memoryPerDeviceMiB: 81920 });

  it("charges a StatefulSet, LeaderWorkerSet or Job pod its own GPUs, and nothing for a Deployment's pod, mutated or not", () => {
    expect(delta(statefulSetPod())).toMatchObject({ pods: 1, chargeMilli: 1000, what: "pod of StatefulSet llama-70b" });
    expect(delta(lwsWorkerPod())).toMatchObject({ pods: 1, chargeMilli: 8000 });
    expect(delta(jobPod())).toMatchObject({ pods: 1, chargeMilli: 1000, what: "pod of Job eval-llama" });
    expect(delta(replicaSetPod())).toMatchObject({ deltaMilli: 0, what: "covered by its workload" });
    expect(delta(replicaSetPod({ "infergate.dev/project": "team-a" }))).toMatchObject({ deltaMilli: 0, what: "covered by its workload" });
  });
});
