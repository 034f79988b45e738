// Wrongly typed input never throws. The real-world fixtures with one value anywhere in them replaced by a
// value of a wrong type (a string where a map belongs, an array for a number, null, …), through
// runPipeline with the real plugins and a realistic policy, mutate then validate. Whatever arrives, the
// pipeline answers: allow, or deny with violations that each name a field path. The API server refuses
// most of these for built-in kinds before a webhook sees them, but not `infergate apply` input, and not
// the looser schema of a Knative Service.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { runPipeline, type PipelineResult } from "../../src/admission/pipeline.ts";
import type { ClusterView } from "../../src/admission/plugin.ts";
import type { AdmissionRequest } from "../../src/admission/types.ts";
import { formatViolation } from "../../src/admission/responses.ts";
import { loadObjects, loadPolicyInput } from "../../src/policy/sources.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { resourceFor } from "../../src/workload/kinds.ts";
import { setContainerLimit } from "../../src/workload/gpu.ts";
import { toWorkload } from "../../src/workload/workload.ts";
import { admitOffline, offlineDeps } from "../../src/cli/apply.ts";
import { parseScale } from "../../webhooks/knative.ts";
import { isSystemToleration } from "../../webhooks/tolerations.ts";
import { plugins } from "../../webhooks/index.ts";

const SEED = 20250611;
const RUNS = 10_000;

const FIXTURES = resolve(import.meta.dirname, "../fixtures/real-world");
const fixtures: any[] = readdirSync(FIXTURES)
  .filter((f) => f.endsWith(".yaml"))
  .sort()
  .flatMap((f) => loadObjects({ name: f, text: readFileSync(join(FIXTURES, f), "utf8") }).all);

function storeFor(policyFile: string): PolicyStore {
  const input = loadPolicyInput([join(FIXTURES, "policies", policyFile)]);
  const store = new PolicyStore();
  input.fill(store);
  return store;
}
const POLICY_FILES = ["kai-enforce.yaml", "volcano-warn.yaml", "hami-project-override.yaml", "coscheduling-warn.yaml", "default-enforce.yaml"];
const stores = POLICY_FILES.map(storeFor);

type Path = Array<string | number>;

/** Every place in an object a value sits at: each key of each map, each index of each list. */
function paths(value: unknown, at: Path = []): Path[] {
  if (value === null || typeof value !== "object") return [];
  const children = Array.isArray(value) ? value.map((v, i) => [i, v] as const) : Object.entries(value);
  return children.flatMap(([k, v]) => [[...at, k], ...paths(v, [...at, k])]);
}

function setAt(object: any, path: Path, value: unknown): any {
  const copy = structuredClone(object);
  let parent = copy;
  for (const key of path.slice(0, -1)) parent = parent[key];
  parent[path.at(-1)!] = value;
  return copy;
}

const typeOf = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

/** A JSON value of another type than `current`: a scalar of each kind, or a small array or map of them. */
function wrongValue(current: unknown): fc.Arbitrary<unknown> {
  const scalar = fc.oneof(fc.string({ maxLength: 8 }), fc.integer({ min: -3, max: 100 }), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null));
  const any = fc.oneof(
    { weight: 4, arbitrary: scalar },
    { weight: 1, arbitrary: fc.array(scalar, { maxLength: 3 }) },
    { weight: 1, arbitrary: fc.dictionary(fc.constantFrom("a", "name", "nvidia.com/gpu", "key", "0"), scalar, { maxKeys: 2 }) },
  );
  return any.filter((v) => typeOf(v) !== typeOf(current));
}

// Where corruption matters most gets picked more often: the pod template and what infergate reads in it.
const INTERESTING = /metadata|template|containers|resources|limits|requests|annotations|labels|ownerReferences|tolerations|affinity|nodeSelector|traffic|spec|replicas|priorityClassName|schedulerName|timeoutSeconds/;

const cases = fc
  .record({ fixture: fc.nat(fixtures.length - 1), store: fc.nat(stores.length - 1), pick: fc.nat(), update: fc.boolean() })
  .chain(({ fixture, store, pick, update }) => {
    const object = fixtures[fixture];
    const all = paths(object).filter((p) => !(p.length === 1 && (p[0] === "apiVersion" || p[0] === "kind")));
    const weighted = [...all, ...all.filter((p) => INTERESTING.test(p.join(".")))];
    const path = weighted[pick % weighted.length]!;
    const current = path.reduce((v: any, k) => v[k], object);
    // Named by fixture and policy, so a counterexample prints short and can be replayed by hand.
    return wrongValue(current).map((value) => ({ fixture: `${object.kind}/${object.metadata.name}`, policy: POLICY_FILES[store]!, path, value, update }));
  });

const cluster = (store: PolicyStore): ClusterView => ({ knativeFeatures: store.knativeFeatures });

function request(object: any, malformed: any, update: boolean): AdmissionRequest {
  const target = resourceFor(object)!;
  return {
    uid: "5c0ffee0-0000-4000-8000-000000000000",
    kind: target.kind,
    resource: target.resource,
    name: object.metadata.name,
    namespace: object.metadata.namespace ?? "default",
    operation: update ? "UPDATE" : "CREATE",
    userInfo: { username: "fuzz" },
    object: malformed,
    // An UPDATE from the well-formed object, or (less often useful, still must not throw) to it.
    ...(update ? { oldObject: object } : {}),
  };
}

// A field path as violations name one: dotted names and [index] or [key] subscripts.
const FIELD_PATH = /^(metadata|spec)(\.[A-Za-z][\w-]*|\[[^\]]*\])*$/;

function checkAnswer(result: PipelineResult, phase: string): void {
  if (result.response.allowed) return;
  expect(result.violations.length, `${phase} denied without a violation`).toBeGreaterThan(0);
  for (const v of result.violations) expect(v.field, formatViolation(v)).toMatch(FIELD_PATH);
}

describe("wrongly typed fields anywhere in a real-world manifest", () => {
  it(`never make the pipeline throw; denials name the field (${RUNS} cases, seed ${SEED})`, () => {
    fc.assert(
      fc.property(cases, ({ fixture, policy, path, value, update }) => {
        const object = fixtures.find((f) => `${f.kind}/${f.metadata.name}` === fixture);
        const store = stores[POLICY_FILES.indexOf(policy)]!;
        const malformed = setAt(object, path, value);
        const run = (phase: "mutate" | "validate", req: AdmissionRequest) =>
          runPipeline({ request: req, phase, plugins, policies: store, cluster: cluster(store) });
        const mutated = run("mutate", request(object, malformed, update));
        expect(mutated.response.allowed).toBe(true);
        checkAnswer(mutated, "mutate");
        const validated = run("validate", request(object, mutated.object ?? malformed, update));
        checkAnswer(validated, "validate");
        // A malformed part is reported, not patched around: no patch, one short warning.
        if (validated.violations.some((v) => v.reason === "Invalid")) {
          expect(mutated.response.patch).toBeUndefined();
          expect(mutated.warnings.length).toBeLessThanOrEqual(1);
        }
        // Reversed: the malformed object is the one already stored.
        const reverse = run("validate", { ...request(object, object, true), oldObject: malformed });
        checkAnswer(reverse, "validate (old object malformed)");
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
  });
});

// ---- The known throws, one by one: what the user sees now ---------------------------------------

const kai = stores[0]!;
const fixture = (kind: string, name: string) => structuredClone(fixtures.find((f) => f.kind === kind && f.metadata.name === name));

function both(object: any, store = kai) {
  const req = request(object, object, false);
  const mutated = runPipeline({ request: req, phase: "mutate", plugins, policies: store, cluster: cluster(store) });
  const validated = runPipeline({ request: req, phase: "validate", plugins, policies: store, cluster: cluster(store) });
  return { mutated, validated, shown: validated.violations.map((v) => ({ field: v.field, value: v.value, allowed: v.allowed, reason: v.reason })) };
}

describe("a wrongly typed field is a Kubernetes-style violation, and mutation leaves it alone", () => {
  it.each([
    ["spec.template.metadata a string", "Deployment", "tgi-mistral", ["spec", "template", "metadata"], "app=tgi", "spec.template.metadata", "must be an object"],
    ["spec.template.metadata an array", "Deployment", "tgi-mistral", ["spec", "template", "metadata"], [{ labels: {} }], "spec.template.metadata", "must be an object"],
    ["containers not a list", "Deployment", "nim-llama3-8b", ["spec", "template", "spec", "containers"], { name: "nim-llm" }, "spec.template.spec.containers", "must be a list of objects"],
    ["resources.limits a string", "Deployment", "tgi-mistral", ["spec", "template", "spec", "containers", 0, "resources", "limits"], "nvidia.com/gpu=1", "spec.template.spec.containers[0].resources.limits", "must be an object"],
    ["a GPU limit that is no quantity", "Deployment", "tgi-mistral", ["spec", "template", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"], true, "spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]", 'must be a quantity such as "1" or "500m"'],
    ["an annotation that is a number", "Service", "llama-predictor", ["spec", "template", "metadata", "annotations", "autoscaling.knative.dev/min-scale"], 1, "spec.template.metadata.annotations[autoscaling.knative.dev/min-scale]", "must be a string"],
    ["a Knative timeout that is a string", "Service", "hello-gpu", ["spec", "template", "spec", "timeoutSeconds"], "300", "spec.template.spec.timeoutSeconds", "must be a whole number"],
    ["ownerReferences not a list", "Pod", "gpu-sharing", ["metadata", "ownerReferences"], { kind: "ReplicaSet" }, "metadata.ownerReferences", "must be a list of objects"],
    ["a toleration key that is a number", "Deployment", "nim-llama3-8b", ["spec", "template", "spec", "tolerations", 0, "key"], 7, "spec.template.spec.tolerations[0].key", "must be a string"],
  ] as const)("%s", (_name, kind, name, path, value, field, allowed) => {
    const { mutated, validated, shown } = both(setAt(fixture(kind, name), [...path], value));
    expect(shown).toEqual([{ field, value, allowed, reason: "Invalid" }]);
    expect(validated.response.allowed).toBe(false);
    // What the API server answers for a wrongly typed field itself.
    expect(validated.response.status).toMatchObject({ code: 422, reason: "Invalid" });
    expect(validated.response.status?.message).toContain(`${field}: Invalid value: ${JSON.stringify(value)}: ${allowed}`);
    expect(mutated.response.patch).toBeUndefined();
    const warning = `infergate: policy not applied: ${field} ${allowed}`;
    expect(mutated.warnings).toEqual([warning.length <= 120 ? warning : `infergate: policy not applied: ${field} has the wrong type`]);
  });

  it("reports every malformed field at once, and denies under enforcement: warn too", () => {
    const object = fixture("Deployment", "tgi-mistral");
    object.spec.template.spec.tolerations = "nvidia.com/gpu";
    object.spec.template.spec.nodeSelector = { "cloud.google.com/gke-accelerator": ["nvidia-l4"] };
    const warn = stores[POLICY_FILES.indexOf("volcano-warn.yaml")]!;
    const { mutated, validated, shown } = both(object, warn);
    expect(shown.map((v) => v.field)).toEqual(["spec.template.spec.tolerations", "spec.template.spec.nodeSelector[cloud.google.com/gke-accelerator]"]);
    expect(validated.response.allowed).toBe(false);
    expect(mutated.warnings).toEqual(["infergate: policy not applied: spec.template.spec.tolerations must be a list of objects (+1 more)"]);
  });

  it("reports a malformed workload without GPUs too, leaving it as written (the API server refuses it as well)", () => {
    const operator = fixture("Deployment", "kuberay-operator");
    operator.spec.template.spec.tolerations = "all";
    const { mutated, shown } = both(operator);
    expect(mutated.response.patch).toBeUndefined();
    expect(shown).toEqual([{ field: "spec.template.spec.tolerations", value: "all", allowed: "must be a list of objects", reason: "Invalid" }]);
    const fine = both(fixture("Deployment", "kuberay-operator"));
    expect(fine.mutated.warnings).toEqual([]);
    expect(fine.validated.response.allowed).toBe(true);
  });

  it("goes through the webhook handler as `infergate apply` does: no internal error, the field named", async () => {
    const service = fixture("Service", "llama-predictor");
    service.spec.template.spec = "kserve-container";
    const errors: string[] = [];
    const deps = offlineDeps(kai, [], (line) => errors.push(line));
    const { mutated, validated } = await admitOffline(service, [], deps);
    expect(errors).toEqual([]);
    expect(mutated.warnings).toEqual(["infergate: policy not applied: spec.template.spec must be an object"]);
    expect(validated.status?.message).toBe(
      'Service.serving.knative.dev "llama-predictor" is invalid: spec.template.spec: Invalid value: "kserve-container": must be an object',
    );
  });
});

describe("the readers that threw, on their own", () => {
  const podRequest = (pod: any): AdmissionRequest => request(fixture("Pod", "gpu-sharing"), pod, false);

  it("toWorkload reads ownerReferences that are not a list, or hold null, without throwing", () => {
    const pod = fixture("Pod", "model-llama-3-8b-5d9c7");
    pod.metadata.ownerReferences = "Model/llama-3-8b";
    expect(toWorkload(podRequest(pod), pod)?.role).toBe("bare-pod");
    pod.metadata.ownerReferences = [null, 3, { kind: "Model", name: "llama-3-8b", controller: true }];
    expect(toWorkload(podRequest(pod), pod)?.role).toBe("foreign-pod");
    const deployment = fixture("Deployment", "tgi-mistral");
    deployment.metadata.ownerReferences = [{ kind: "Revision", apiVersion: 1, controller: true }];
    expect(toWorkload(request(deployment, deployment, false), deployment)?.role).toBe("deployment");
  });

  it("parseScale takes only strings", () => {
    expect(parseScale(" 3 ")).toBe(3);
    expect(parseScale(3)).toBeUndefined();
    expect(parseScale(null)).toBeUndefined();
    expect(parseScale(["3"])).toBeUndefined();
  });

  it("isSystemToleration takes only string keys", () => {
    expect(isSystemToleration({ key: "node.kubernetes.io/not-ready" })).toBe(true);
    expect(isSystemToleration({ key: 7 } as any)).toBe(false);
  });

  it("setContainerLimit writes nothing into a container, resources or limits of the wrong type", () => {
    for (const container of [5, null, "vllm", { resources: "big" }, { resources: { limits: ["1"] } }]) {
      const before = JSON.stringify(container);
      expect(setContainerLimit(container, "volcano.sh/vgpu-number", "1")).toEqual({ changed: false });
      expect(JSON.stringify(container)).toBe(before);
    }
    const fine = { resources: { limits: null } };
    expect(setContainerLimit(fine, "volcano.sh/vgpu-number", "1").changed).toBe(true);
    expect(fine.resources.limits).toEqual({ "volcano.sh/vgpu-number": "1" });
  });
});
