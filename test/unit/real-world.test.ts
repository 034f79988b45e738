// Every real-world-shaped manifest in test/fixtures/real-world against every policy there, through the
// exact path `infergate apply` takes (admitOffline: the webhook handler for mutate, the patch applied, the
// handler for validate). Properties, not snapshots: no internal error, the user's own fields survive,
// a second mutation changes nothing, warnings are short, every violation names a field, and a Knative
// Service under Knative's default feature flags gains nothing Knative would refuse.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { admitOffline, offlineDeps, runApply, type OfflineAdmission } from "../../src/cli/apply.ts";
import type { AdmissionRequest } from "../../src/admission/types.ts";
import { readGpuRequest } from "../../src/workload/gpu.ts";
import { toWorkload } from "../../src/workload/workload.ts";
import { WARNED_VIOLATION_MAX, WARNING_MAX } from "../../src/admission/pipeline.ts";
import { loadObjects, loadPolicyInput } from "../../src/policy/sources.ts";
import { parseManifests } from "../../src/policy/files.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { FEATURE_FLAG_OF, knativeAllows, type KnativeFeatures, type PodSpecFeatureField } from "../../src/workload/knative-features.ts";

const FIXTURES = resolve(import.meta.dirname, "../fixtures/real-world");
const POLICIES = join(FIXTURES, "policies");
const manifestFiles = readdirSync(FIXTURES).filter((f) => f.endsWith(".yaml")).sort();
const policyFiles = readdirSync(POLICIES).filter((f) => f.endsWith(".yaml")).sort();

interface Manifest {
  file: string;
  object: any;
}

const manifests: Manifest[] = manifestFiles.flatMap((file) => {
  const loaded = loadObjects({ name: file, text: readFileSync(join(FIXTURES, file), "utf8") });
  if (loaded.errors.length) throw new Error(`${file}: ${loaded.errors.join("; ")}`);
  return loaded.all.map((object) => ({ file, object }));
});

function storeFor(policyFile: string): PolicyStore {
  const input = loadPolicyInput([join(POLICIES, policyFile)]);
  if (input.errors.length) throw new Error(`${policyFile}: ${input.errors.join("; ")}`);
  const store = new PolicyStore();
  input.fill(store);
  return store;
}

/** admitOffline with the handler's error log captured: a logged error is an exception a plugin threw. */
async function admit(store: PolicyStore, object: any): Promise<OfflineAdmission & { internalErrors: string[] }> {
  const internalErrors: string[] = [];
  const deps = offlineDeps(store, [], (line) => {
    if (line.includes('"level":"error"')) internalErrors.push(line);
  });
  return { ...(await admitOffline(structuredClone(object), [], deps)), internalErrors };
}

const isKnativeService = (o: any) => o.kind === "Service" && String(o.apiVersion).startsWith("serving.knative.dev/");
const label = (m: Manifest) => `${m.file}: ${m.object.kind} ${m.object.metadata?.name}`;
const podSpecOf = (o: any) => (o.kind === "Pod" ? o.spec : o.spec?.template?.spec);

// ---- What Knative v1.23 would refuse in a Service (schema, pruning, feature-flagged PodSpec fields) ----

const knativeCrd = parse(readFileSync(resolve(import.meta.dirname, "../../../shared/crds/knative-serving-v1.23.0/service.yaml"), "utf8"));
const serviceSchema = knativeCrd.spec.versions.find((v: any) => v.name === "v1").schema.openAPIV3Schema;
const validateService = new Ajv({ strict: false, allErrors: true, validateFormats: false }).compile(serviceSchema);

function pruned(schema: any, value: any, path: string): string[] {
  if (!schema || schema["x-kubernetes-preserve-unknown-fields"] || value === null || typeof value !== "object") return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => pruned(schema.items, v, `${path}[${i}]`));
  if (schema.additionalProperties) return Object.entries(value).flatMap(([k, v]) => pruned(schema.additionalProperties, v, `${path}[${k}]`));
  return Object.entries(value).flatMap(([k, v]) => {
    const at = path ? `${path}.${k}` : k;
    return schema.properties?.[k] ? pruned(schema.properties[k], v, at) : [at];
  });
}

function knativeRefusals(service: any, features: KnativeFeatures): string[] {
  const errors: string[] = [];
  if (!validateService(service)) errors.push(...(validateService.errors ?? []).map((e) => `schema ${e.instancePath}: ${e.message}`));
  const { metadata: _apiServersOwn, status: _status, ...rest } = service;
  errors.push(...pruned(serviceSchema, rest, "").map((p) => `pruned ${p}`));
  const spec = service.spec?.template?.spec ?? {};
  for (const field of Object.keys(FEATURE_FLAG_OF) as PodSpecFeatureField[]) {
    if (spec[field] !== undefined && !knativeAllows(features, field)) errors.push(`must not set spec.template.spec.${field}`);
  }
  const a: Record<string, string> = service.spec?.template?.metadata?.annotations ?? {};
  const scale = (key: string) => a[`autoscaling.knative.dev/${key}`];
  const int = (v: string | undefined) => (v === undefined ? 0 : /^\d+$/.test(v) ? Number(v) : Number.NaN);
  const min = int(scale("min-scale") ?? scale("minScale"));
  const max = int(scale("max-scale") ?? scale("maxScale"));
  if (Number.isNaN(min) || Number.isNaN(max)) errors.push("min-scale/max-scale must be whole numbers");
  if (max !== 0 && max < min) errors.push(`max-scale ${max} < min-scale ${min}`);
  const klass = scale("class") ?? "kpa.autoscaling.knative.dev";
  const metric = scale("metric");
  if (klass === "kpa.autoscaling.knative.dev" && metric !== undefined && metric !== "concurrency" && metric !== "rps") errors.push(`metric ${metric} on KPA`);
  const target = scale("target");
  if (target !== undefined && !(Number(target) >= 0.01)) errors.push(`target ${target}`);
  const deadline = a["serving.knative.dev/progress-deadline"];
  if (deadline !== undefined && !/^[1-9]\d*s$/.test(deadline)) errors.push(`progress-deadline ${deadline}`);
  if (spec.timeoutSeconds !== undefined && !(Number.isInteger(spec.timeoutSeconds) && spec.timeoutSeconds >= 0 && spec.timeoutSeconds <= 600)) {
    errors.push(`timeoutSeconds ${spec.timeoutSeconds}`);
  }
  return errors;
}

// ---- The user's own fields -----------------------------------------------------------------------

type Path = Array<string | number>;

/** Every scalar in `value` with its path as keys and indices. */
function leaves(value: unknown, path: Path = []): Array<[Path, unknown]> {
  if (value === null || typeof value !== "object") return [[path, value]];
  if (Array.isArray(value)) return value.flatMap((v, i) => leaves(v, [...path, i]));
  return Object.entries(value).flatMap(([k, v]) => leaves(v, [...path, k]));
}

const at = (value: any, path: Path): unknown => path.reduce((v, key) => (v !== null && typeof v === "object" ? v[key] : undefined), value);
const show = (path: Path) => path.map((k) => (typeof k === "number" ? `[${k}]` : `.${k}`)).join("").slice(1);

const CHANGE_WORDS = ["replaced", "removed", "set "];

/**
 * Scalars of the original that the result no longer has, except where a warning told the user it changed
 * that field (its last key is named in a "replaced", "removed" or "set" warning).
 */
function lostUserValues(original: any, result: any, warnings: string[]): string[] {
  const told = warnings.filter((w) => CHANGE_WORDS.some((word) => w.includes(word)));
  return leaves(original)
    .filter(([path, value]) => !Object.is(at(result, path), value))
    .filter(([path]) => {
      const key = String(path.findLast((k) => typeof k === "string"));
      return !told.some((w) => w.includes(key));
    })
    // Checked as sets below: a lock may remove entries, which shifts the indices of the rest.
    .filter(([path]) => !path.includes("tolerations") && !path.includes("nodeAffinity"))
    .map(([path, value]) => `${show(path)}=${JSON.stringify(value)} became ${JSON.stringify(at(result, path))}`);
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** The specific checks: containers, volumes, tolerations, affinity and spread constraints survive. */
function structuralLosses(original: any, result: any, warnings: string[]): string[] {
  const losses: string[] = [];
  const before = podSpecOf(original) ?? {};
  const after = podSpecOf(result) ?? {};
  for (const list of ["containers", "initContainers"] as const) {
    const names = (s: any) => (s[list] ?? []).map((c: any) => `${c.name}@${c.image}`);
    if (!sameJson(names(before), names(after))) losses.push(`${list}: ${names(before)} became ${names(after)}`);
    (before[list] ?? []).forEach((c: any, i: number) => {
      const { resources: _resources, ...rest } = c;
      const { resources: _theirs, ...restAfter } = after[list]?.[i] ?? {};
      if (!sameJson(rest, restAfter)) losses.push(`${list}[${i}] changed beyond resources`);
    });
  }
  if (!sameJson(before.volumes, after.volumes)) losses.push("volumes changed");
  if (!sameJson(before.topologySpreadConstraints, after.topologySpreadConstraints)) losses.push("topologySpreadConstraints changed");
  if (!sameJson(before.affinity?.podAntiAffinity, after.affinity?.podAntiAffinity)) losses.push("podAntiAffinity changed");
  if (!sameJson(before.affinity?.podAffinity, after.affinity?.podAffinity)) losses.push("podAffinity changed");
  for (const t of before.tolerations ?? []) {
    const kept = (after.tolerations ?? []).some((x: any) => sameJson(x, t));
    if (!kept && !warnings.some((w) => w.includes("removed toleration") && w.includes(t.key ?? "*"))) losses.push(`toleration ${JSON.stringify(t)} lost silently`);
  }
  const poolChange = warnings.some((w) => w.includes("node-pool") || w.includes("nodeSelector"));
  const required = (s: any) => s.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? [];
  required(before).forEach((term: any, i: number) => {
    const merged = required(after)[i] ?? {};
    for (const part of ["matchExpressions", "matchFields"] as const) {
      for (const e of term[part] ?? []) {
        if (!(merged[part] ?? []).some((x: any) => sameJson(x, e)) && !(poolChange && e.key === "infergate.dev/node-pool")) {
          losses.push(`nodeSelectorTerms[${i}].${part} lost ${JSON.stringify(e)}`);
        }
      }
    }
  });
  const preferred = (s: any) => s.affinity?.nodeAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
  for (const term of preferred(before)) {
    if (!preferred(after).some((x: any) => sameJson(x, term))) losses.push(`preferred node affinity term lost: ${JSON.stringify(term)}`);
  }
  for (const [key, value] of Object.entries(before.nodeSelector ?? {})) {
    if (after.nodeSelector?.[key] !== value && !warnings.some((w) => w.includes(`removed nodeSelector ${key}`))) losses.push(`nodeSelector ${key} lost`);
  }
  return losses;
}

// A field path as Kubernetes writes one: dotted names, [index] or [key] subscripts.
const FIELD_PATH = /^(metadata|spec)(\.[A-Za-z][\w-]*|\[[^\]]+\])*$/;

// ---- The matrix ------------------------------------------------------------------------------------

describe("real-world manifests through `infergate apply`'s path, under every fixture policy", () => {
  it("has the fixtures the matrix is about", () => {
    expect(manifests.length).toBeGreaterThanOrEqual(12);
    expect(policyFiles).toEqual(["coscheduling-warn.yaml", "default-enforce.yaml", "hami-project-override.yaml", "kai-enforce.yaml", "volcano-warn.yaml"]);
  });

  for (const policyFile of policyFiles) {
    describe(policyFile, () => {
      const store = storeFor(policyFile);

      it.each(manifests.map((m) => [label(m), m] as const))("%s", async (_name, manifest) => {
        const first = await admit(store, manifest.object);
        const mutateWarnings = first.mutated.warnings ?? [];
        const validateWarnings = first.validated.warnings ?? [];

        expect(first.internalErrors).toEqual([]);
        expect(first.mutated.allowed).toBe(true);
        for (const w of mutateWarnings) expect(w.length, w).toBeLessThanOrEqual(WARNING_MAX);
        // Policy (warn) lines keep what is allowed, within the API server's limit.
        for (const w of validateWarnings) expect(w.length, w).toBeLessThanOrEqual(w.startsWith("policy (warn): ") ? WARNED_VIOLATION_MAX : WARNING_MAX);

        if (!first.validated.allowed) {
          const causes: any[] = (first.validated.status?.details as any)?.causes ?? [];
          expect(causes.length).toBeGreaterThan(0);
          for (const cause of causes) expect(cause.field, JSON.stringify(cause)).toMatch(FIELD_PATH);
          for (const cause of causes) expect(first.validated.status?.message).toContain(cause.reason === "QuotaExceeded" ? "GPU quota" : cause.field);
        }
        for (const w of validateWarnings.filter((x) => x.startsWith("policy (warn): "))) {
          expect(w.slice("policy (warn): ".length)).toMatch(/^(metadata|spec)[^ ]*: /);
        }

        const warnings = [...mutateWarnings, ...validateWarnings];
        expect(lostUserValues(manifest.object, first.result, warnings)).toEqual([]);
        expect(structuralLosses(manifest.object, first.result, warnings)).toEqual([]);

        const again = await admit(store, first.result);
        expect(again.internalErrors).toEqual([]);
        expect(again.mutated.patch).toBeUndefined();
        expect(again.mutated.warnings ?? []).toEqual([]);
        expect(again.validated.allowed).toBe(first.validated.allowed);

        if (isKnativeService(manifest.object)) {
          const features = store.knativeFeatures;
          const before = new Set(knativeRefusals(manifest.object, features));
          expect(knativeRefusals(first.result, features).filter((e) => !before.has(e))).toEqual([]);
        }
      });
    });
  }

  it("writes nothing Knative refuses by default into a Service, under any policy", async () => {
    const services = manifests.filter((m) => isKnativeService(m.object));
    expect(services.length).toBeGreaterThanOrEqual(4);
    for (const policyFile of policyFiles.filter((p) => p !== "volcano-warn.yaml")) {
      const store = storeFor(policyFile);
      expect(store.knativeFeatures.flags).toEqual({});
      for (const service of services) {
        const { result } = await admit(store, service.object);
        expect(knativeRefusals(result, store.knativeFeatures), `${policyFile} ${label(service)}`).toEqual([]);
      }
    }
  });
});

// ---- What the matrix found ----------------------------------------------------------------------

describe("bugs the real-world shapes showed", () => {
  it("YAML aliases are copies, as in the JSON kubectl sends: injecting a template label leaves the selector alone", async () => {
    // 11-anchors-and-empty-documents.yaml: one `&labels` anchor for metadata.labels, the selector and the
    // template labels (a kubeai-style model server). Shared objects made the printed selector gain infergate's labels.
    const { objects } = parseManifests(readFileSync(join(FIXTURES, "11-anchors-and-empty-documents.yaml"), "utf8"), "anchors");
    const gemma = objects[0];
    expect(gemma.spec.selector.matchLabels).not.toBe(gemma.spec.template.metadata.labels);
    const { result, validated } = await admit(storeFor("kai-enforce.yaml"), gemma);
    expect(validated.allowed).toBe(true);
    expect(result.spec.template.metadata.labels["infergate.dev/project"]).toBe("ml-serving");
    expect(result.spec.selector.matchLabels).toEqual({ "app.kubernetes.io/managed-by": "kubeai", model: "gemma" });
    expect(result.metadata.labels).toEqual({ "app.kubernetes.io/managed-by": "kubeai", model: "gemma" });
  });

  it("YAML merge keys are resolved, as kubectl resolves them (`<<: *labels` was read as a label named <<)", async () => {
    const { objects } = parseManifests(readFileSync(join(FIXTURES, "11-anchors-and-empty-documents.yaml"), "utf8"), "anchors");
    const gemmaB = objects[1];
    expect(gemmaB.spec.template.metadata.labels).toEqual({ "app.kubernetes.io/managed-by": "kubeai", model: "gemma", variant: "b" });
    expect(gemmaB.spec.selector.matchLabels).toEqual({ "app.kubernetes.io/managed-by": "kubeai", model: "gemma", variant: "b" });
    const { validated } = await admit(storeFor("kai-enforce.yaml"), gemmaB);
    expect(validated.allowed).toBe(true);
  });

  it("non-finite YAML numbers arrive as null, as JSON has no Infinity", () => {
    const { objects, errors } = parseManifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: .inf}\n", "inf");
    expect(errors).toEqual([]);
    expect(objects[0].data.a).toBeNull();
  });
});

describe("pods of controllers infergate does not mutate (docs/decisions/006)", () => {
  it("get the policy on the pod itself, and the rules judge the pod's own fields", async () => {
    // 17-pods-of-other-controllers.yaml and 12-pods.yaml's kubeai pod: no infergate.dev/project label.
    const store = storeFor("kai-enforce.yaml");
    const pods = manifests.filter((m) => m.file === "17-pods-of-other-controllers.yaml" || m.object.metadata?.name === "model-llama-3-8b-5d9c7");
    expect(pods).toHaveLength(6);
    for (const { object } of pods) {
      const { result, validated } = await admit(store, object);
      const name = object.metadata.name;
      expect(result.metadata.labels, name).toMatchObject({ "infergate.dev/project": "ml-serving", "kai.scheduler/queue": "ml-serving", "cost-center": "ml-platform" });
      expect(result.spec.priorityClassName, name).toBe("inference");
      expect(result.spec.schedulerName, name).toBe("kai-scheduler");
      expect(result.spec.tolerations, name).toContainEqual({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
      expect(result.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms, name).toEqual([
        { matchExpressions: [{ key: "infergate.dev/node-pool", operator: "In", values: ["h100", "a100"] }] },
      ]);
      const multiNode = object.metadata.labels["leaderworkerset.sigs.k8s.io/name"] !== undefined;
      // 8 GPUs per pod against rules.gpusPerPod max 2; the rest keep to the rules.
      expect(validated.allowed, name).toBe(!multiNode);
      if (multiNode) {
        expect((validated.status?.details as any)?.causes).toEqual([
          { reason: "PolicyViolation", field: "spec.containers[0].resources.limits[nvidia.com/gpu]", message: "at most 2 GPUs per pod (policy rules.gpusPerPod)" },
        ]);
      }
    }
  });
});

describe("objects shipped next to the workloads", () => {
  it("leaves cluster-scoped ones (RuntimeClass, PriorityClass) without a namespace, and everything else untouched", async () => {
    // 16-vllm-all-in-one.yaml: `apply` printed `namespace: default` into the RuntimeClass and PriorityClass.
    const store = storeFor("kai-enforce.yaml");
    const others = manifests.filter((m) => m.file === "16-vllm-all-in-one.yaml" && m.object.kind !== "Deployment");
    expect(others.map((m) => m.object.kind)).toEqual(["PersistentVolumeClaim", "Secret", "RuntimeClass", "PriorityClass", "Service"]);
    for (const { object } of others) {
      const { mutated, validated, result } = await admit(store, object);
      expect(mutated.patch).toBeUndefined();
      expect(validated.allowed).toBe(true);
      const clusterScoped = object.kind === "RuntimeClass" || object.kind === "PriorityClass";
      expect(result.metadata.namespace).toBe(clusterScoped ? undefined : "llm-serving");
    }
  });
});

describe("GPUs in init containers, counted as Kubernetes counts a pod's request", () => {
  const request: AdmissionRequest = {
    uid: "u",
    kind: { group: "apps", version: "v1", kind: "Deployment" },
    resource: { group: "apps", version: "v1", resource: "deployments" },
    operation: "CREATE",
    userInfo: {},
    namespace: "llm-serving",
  };
  const gpus = (initContainers: any[], containers: any[]) => {
    const object = { metadata: { name: "x" }, spec: { template: { spec: { initContainers, containers } } } };
    return readGpuRequest(toWorkload({ ...request, object }, object)!)!.wholeGpus;
  };
  const gpu = (n: number, restartPolicy?: string) => ({ ...(restartPolicy ? { restartPolicy } : {}), resources: { limits: { "nvidia.com/gpu": String(n) } } });

  it("an engine-build init container (Triton's TRT-LLM chart) holds its GPUs before the server, not on top", () => {
    const trtllm = manifests.find((m) => m.object.metadata.name === "llama-3-8b-trtllm")!.object;
    expect(readGpuRequest(toWorkload({ ...request, object: trtllm }, trtllm)!)!.wholeGpus).toBe(2);
    expect(gpus([gpu(4)], [gpu(1)])).toBe(4);
  });

  it("a native sidecar (restartPolicy: Always, as llm-d runs its routing proxy) runs alongside: its GPUs add up", () => {
    expect(gpus([gpu(1, "Always")], [gpu(1)])).toBe(2);
    // An init container after a sidecar runs next to it.
    expect(gpus([gpu(1, "Always"), gpu(2)], [gpu(1)])).toBe(3);
    expect(gpus([{ name: "routing-proxy", restartPolicy: "Always" }], [gpu(2)])).toBe(2);
  });
});

describe("infergate apply with input the API server would refuse while decoding", () => {
  it("a name or namespace that is not a string is bad input (exit 2), not an internal failure", async () => {
    const dir = mkdtempSync(join(tmpdir(), "infergate-bad-name-"));
    const resource = join(dir, "r.yaml");
    writeFileSync(resource, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: 1234, namespace: 42}\nspec: {}\n");
    let stderr = "";
    const err = { write: (s: string) => ((stderr += s), true) } as any;
    const code = await runApply(["--policy", join(POLICIES, "kai-enforce.yaml"), "--resource", resource], { write: () => true } as any, err);
    expect(code).toBe(2);
    expect(stderr).toContain("metadata.name: Invalid value: 1234: must be a string");
    expect(stderr).toContain("metadata.namespace: Invalid value: 42: must be a string");
  });
});

describe("an UPDATE against `kubectl get -o yaml` output (status, managedFields, resourceVersion)", () => {
  it("is admitted through the same path, idempotently, for every policy", async () => {
    const cluster = loadObjects({ name: "list", text: readFileSync(join(FIXTURES, "06-kubectl-get-list.yaml"), "utf8") }).all;
    const updated = structuredClone(cluster[0]);
    updated.spec.replicas = 2;
    updated.spec.template.spec.containers[0].image = "vllm/vllm-openai:v0.9.1";
    for (const policyFile of policyFiles) {
      const store = storeFor(policyFile);
      const errors: string[] = [];
      const deps = offlineDeps(store, cluster, (line) => errors.push(line));
      const first = await admitOffline(structuredClone(updated), cluster, deps);
      expect(first.request.operation).toBe("UPDATE");
      expect(errors, policyFile).toEqual([]);
      const again = await admitOffline(first.result, cluster, deps);
      expect(again.mutated.patch, policyFile).toBeUndefined();
    }
  });
});

// ---- The command itself, once over the whole folder ----------------------------------------------

describe("infergate apply as a subprocess over every fixture", () => {
  it("exits 1 when some fixture is denied, 0 when all are admitted, and prints each admitted object", async () => {
    const dir = mkdtempSync(join(tmpdir(), "infergate-real-world-"));
    const stream = join(dir, "all.yaml");
    writeFileSync(stream, manifestFiles.map((f) => readFileSync(join(FIXTURES, f), "utf8")).join("\n---\n"));
    const cli = resolve(import.meta.dirname, "../../src/cli/main.ts");

    for (const policyFile of ["kai-enforce.yaml", "volcano-warn.yaml"]) {
      const store = storeFor(policyFile);
      const expected = await Promise.all(manifests.map((m) => admit(store, m.object)));
      const admitted = expected.filter((e) => e.validated.allowed).length;
      const run = spawnSync(process.execPath, [cli, "apply", "--policy", join(POLICIES, policyFile), "--resource", stream], { encoding: "utf8", timeout: 60_000 });
      expect(run.stderr).not.toContain("internal error");
      expect(run.stderr).not.toContain("bad input");
      expect(run.status, run.stderr).toBe(admitted === manifests.length ? 0 : 1);
      expect(run.stdout.split(/^---$/m).filter((d) => d.trim()).length).toBe(admitted);
    }
    // Warn enforcement admits everything except what no scheduler could run (InvalidGPURequest) and quota.
    const warn = storeFor("volcano-warn.yaml");
    const reasons = (await Promise.all(manifests.map((m) => admit(warn, m.object))))
      .filter((e) => !e.validated.allowed)
      .flatMap((e) => ((e.validated.status?.details as any)?.causes ?? []).map((c: any) => c.reason));
    for (const reason of reasons) expect(["InvalidGPURequest", "QuotaExceeded", "Invalid"]).toContain(reason);
  });
});
