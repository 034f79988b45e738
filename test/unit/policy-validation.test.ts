import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import type { AdmissionRequest, Violation } from "../../src/admission/types.ts";
import { CRD_FILES, PATTERN_TEXT, POLICY_KINDS, crdSchema, validateShape } from "../../src/policy/schema.ts";
import {
  compareDecimals,
  parseGoDuration,
  policyObjectWarnings,
  reviewPolicyRequest,
  validatePolicyObject,
  type ExistingPolicyObjects,
} from "../../src/policy/validation.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { formatViolation } from "../../src/admission/responses.ts";

// The examples of PRODUCT.md §1, verbatim in content.
function project(name = "team-a", spec: Record<string, unknown> = {}): any {
  return {
    apiVersion: "infergate.dev/v1alpha1",
    kind: "Project",
    metadata: { name },
    spec: { namespaces: [name, `${name}-staging`], gpuQuota: "8", nodePools: ["h100", "a100"], queue: name, ...spec },
  };
}

function policy(name = "cluster-default", spec: Record<string, unknown> = {}): any {
  return {
    apiVersion: "infergate.dev/v1alpha1",
    kind: "InferencePolicy",
    metadata: { name },
    spec: {
      projects: [],
      enforcement: "enforce",
      scheduler: { profile: "kai", schedulerName: "" },
      defaults: {
        priorityClassName: "inference",
        tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }],
        autoscaling: { metric: "concurrency", target: 10, minReplicas: 1, maxReplicas: 4, scaleToZeroRetention: "10m" },
        requestTimeoutSeconds: 300,
        initializationTimeoutSeconds: 600,
        labels: {},
        annotations: {},
      },
      rules: {
        gpuFraction: { min: "0.1", max: "1" },
        gpusPerPod: { max: "2" },
        replicas: { max: 16 },
        priorityClassNames: ["inference", "high"],
        requestTimeoutSeconds: { min: 5, max: 600 },
        initializationTimeoutSeconds: { min: 5, max: 3600 },
        imageRegistries: ["registry.example.com/", "nvcr.io/"],
        locked: ["priorityClassName", "tolerations"],
      },
      ...spec,
    },
  };
}

const NONE: ExistingPolicyObjects = { projects: [], policies: [] };

/** Sets `value` at a dotted path (numeric segments index arrays), creating objects on the way. */
function withField(obj: any, path: string, value: unknown): any {
  const copy = structuredClone(obj);
  const keys = path.split(".");
  let node = copy;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  node[keys.at(-1)!] = value;
  return copy;
}

const fieldsOf = (vs: Violation[]) => vs.map((v) => v.field);

describe("valid objects", () => {
  it("accepts the PRODUCT.md examples", () => {
    expect(validatePolicyObject(project(), NONE)).toEqual([]);
    expect(validatePolicyObject(policy(), NONE)).toEqual([]);
  });

  it("accepts a Project with a status as infergate writes it", () => {
    const p = project();
    p.status = {
      allocatedGpus: "5.25",
      reservedGpus: "0",
      availableGpus: "-0.25",
      workloads: 4,
      reservations: [{ key: "team-a/Deployment/llm", gpus: "1", expiresAt: "2026-01-02T15:04:05Z", uid: "kept" }],
      conditions: [{ type: "Ready", status: "True", reason: "Counted", message: "", lastTransitionTime: "2026-01-02T15:04:05Z" }],
    };
    expect(validatePolicyObject(p, NONE)).toEqual([]);
  });

  it("accepts minimal objects: an empty policy spec is a cluster-wide policy with nothing in it", () => {
    expect(validatePolicyObject({ apiVersion: "infergate.dev/v1alpha1", kind: "InferencePolicy", metadata: { name: "p" }, spec: {} }, NONE)).toEqual([]);
    expect(validatePolicyObject({ apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name: "p" }, spec: {} }, NONE)).toEqual([]);
  });
});

describe("shape: field path, value and allowed text", () => {
  const fraction = 'a fraction in (0, 1] as a decimal string, e.g. "0.5" or "1"';
  const cases: Array<[string, any, string, unknown, string]> = [
    ["negative quota", withField(project(), "spec.gpuQuota", "-1"), "spec.gpuQuota", "-1", 'a non-negative decimal number as a string, e.g. "8" or "2.5"'],
    ["unparseable quota", withField(project(), "spec.gpuQuota", "lots"), "spec.gpuQuota", "lots", 'a non-negative decimal number as a string, e.g. "8" or "2.5"'],
    ["unquoted quota", withField(project(), "spec.gpuQuota", 8), "spec.gpuQuota", 8, 'must be of type string; quote it: "8"'],
    ["bad namespace", withField(project(), "spec.namespaces", ["Team_A"]), "spec.namespaces[0]", "Team_A", 'a lowercase RFC 1123 label: a-z, 0-9 and "-", starting and ending with a letter or digit'],
    ["memory per device", withField(project(), "spec.gpuMemoryPerDeviceMiB", 0), "spec.gpuMemoryPerDeviceMiB", 0, "must be greater than or equal to 1"],
    ["enforcement", withField(policy(), "spec.enforcement", "block"), "spec.enforcement", "block", 'supported values: "enforce", "warn"'],
    ["profile", withField(policy(), "spec.scheduler.profile", "slurm"), "spec.scheduler.profile", "slurm", 'supported values: "kai", "volcano", "hami", "coscheduling", "default"'],
    ["metric", withField(policy(), "spec.defaults.autoscaling.metric", "qps"), "spec.defaults.autoscaling.metric", "qps", 'supported values: "concurrency", "rps", "latency"'],
    ["zero target", withField(policy(), "spec.defaults.autoscaling.target", 0), "spec.defaults.autoscaling.target", 0, "must be greater than or equal to 0.01"],
    ["locked item", withField(policy(), "spec.rules.locked", ["priorityClassName", "image"]), "spec.rules.locked[1]", "image", 'supported values: "priorityClassName", "tolerations", "schedulerName", "nodePools", "labels", "annotations"'],
    ["toleration operator", withField(policy(), "spec.defaults.tolerations.0.operator", "In"), "spec.defaults.tolerations[0].operator", "In", 'supported values: "Exists", "Equal"'],
    ["toleration effect", withField(policy(), "spec.defaults.tolerations.0.effect", "NoRun"), "spec.defaults.tolerations[0].effect", "NoRun", 'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'],
    ["fraction zero", withField(policy(), "spec.rules.gpuFraction.min", "0"), "spec.rules.gpuFraction.min", "0", fraction],
    ["fraction above one", withField(policy(), "spec.rules.gpuFraction.max", "1.5"), "spec.rules.gpuFraction.max", "1.5", fraction],
    ["fraction negative", withField(policy(), "spec.rules.gpuFraction.min", "-0.5"), "spec.rules.gpuFraction.min", "-0.5", fraction],
    ["duration words", withField(policy(), "spec.defaults.autoscaling.scaleToZeroRetention", "10 minutes"), "spec.defaults.autoscaling.scaleToZeroRetention", "10 minutes", 'a Go duration such as "30s", "10m" or "1h30m"'],
    ["duration without unit", withField(policy(), "spec.defaults.autoscaling.scaleToZeroRetention", "10"), "spec.defaults.autoscaling.scaleToZeroRetention", "10", 'a Go duration such as "30s", "10m" or "1h30m"'],
    ["label value", withField(policy(), "spec.defaults.labels", { "example.com/team": "a b" }), "spec.defaults.labels[example.com/team]", "a b", 'a label value: A-Z, a-z, 0-9, "-", "_" and ".", starting and ending with a letter or digit'],
    ["timeout type", withField(policy(), "spec.defaults.requestTimeoutSeconds", "300"), "spec.defaults.requestTimeoutSeconds", "300", "must be of type integer"],
    ["duplicate node pool", withField(project(), "spec.nodePools", ["h100", "a100", "h100"]), "spec.nodePools[2]", "h100", "duplicate of spec.nodePools[0]; each value may appear only once"],
    ["duplicate locked", withField(policy(), "spec.rules.locked", ["tolerations", "tolerations"]), "spec.rules.locked[1]", "tolerations", "duplicate of spec.rules.locked[0]; each value may appear only once"],
    ["apiVersion", withField(project(), "apiVersion", "infergate.dev/v1"), "apiVersion", "infergate.dev/v1", 'supported values: "infergate.dev/v1alpha1"'],
  ];

  it.each(cases)("%s", (_name, obj, field, value, allowed) => {
    const violations = validatePolicyObject(obj, NONE);
    expect(violations).toEqual([expect.objectContaining({ field, value, allowed })]);
  });

  it("names unknown fields (pruning would drop them silently) and missing required ones", () => {
    const p = withField(policy(), "spec.rules.gpufraction", { min: "0.5" });
    delete p.spec.rules.gpuFraction;
    const [unknown] = validatePolicyObject(p, NONE);
    expect(unknown!.field).toBe("spec.rules.gpufraction");
    expect(formatViolation(unknown!)).toMatch(/^spec\.rules\.gpufraction: unknown field; supported fields here: gpuFraction, gpusPerPod, /);

    const noSpec = project();
    delete noSpec.spec;
    const [missing] = validatePolicyObject(noSpec, NONE);
    expect(formatViolation(missing!)).toBe("spec: Required value");
  });

  it("reports every duplicate in a set, not only the first", () => {
    const vs = validatePolicyObject(withField(project(), "spec.namespaces", ["a", "b", "a", "b", "a"]), NONE);
    expect(fieldsOf(vs)).toEqual(["spec.namespaces[2]", "spec.namespaces[3]", "spec.namespaces[4]"]);
  });

  it("reports a wrong kind or a non-object without crashing", () => {
    expect(validateShape({ apiVersion: "infergate.dev/v1alpha1", kind: "Queue" })).toEqual([
      expect.objectContaining({ field: "kind", value: "Queue", allowed: 'supported values: "Project", "InferencePolicy"' }),
    ]);
    expect(validatePolicyObject("Project", NONE)).toEqual([expect.objectContaining({ field: "object", value: "Project" })]);
    expect(validatePolicyObject(null, NONE)).toHaveLength(1);
  });

  it("reports every violation of one object together", () => {
    let p = policy();
    p = withField(p, "spec.enforcement", "block");
    p = withField(p, "spec.rules.gpuFraction", { min: "0.8", max: "0.5" });
    p = withField(p, "spec.rules.replicas", { min: 8, max: 4 });
    p = withField(p, "spec.defaults.autoscaling.scaleToZeroRetention", "forever");
    p = withField(p, "spec.defaults.tolerations", [{ operator: "Equal", value: "x" }]);
    p = withField(p, "spec.projects", ["team-a", "team-a"]);
    expect(fieldsOf(validatePolicyObject(p, NONE)).sort()).toEqual(
      [
        "spec.enforcement",
        "spec.rules.gpuFraction.min",
        "spec.rules.replicas.min",
        "spec.defaults.autoscaling.scaleToZeroRetention",
        "spec.defaults.tolerations[0]",
        "spec.projects[1]",
      ].sort(),
    );
  });

  it("reports a field the schema rejects once, in the schema's words", () => {
    const vs = validatePolicyObject(withField(policy(), "spec.rules.gpuFraction", { min: "1.5", max: "0.5" }), NONE);
    expect(vs).toEqual([expect.objectContaining({ field: "spec.rules.gpuFraction.min", allowed: expect.stringMatching(/^a fraction in \(0, 1\]/) })]);
  });
});

describe("semantics", () => {
  it("rejects a namespace another Project owns, naming that Project", () => {
    const existing = { projects: [project("team-b", { namespaces: ["shared", "team-b"] })], policies: [] };
    const vs = validatePolicyObject(project("team-a", { namespaces: ["team-a", "shared"] }), existing);
    expect(vs).toEqual([
      expect.objectContaining({
        field: "spec.namespaces[1]",
        value: "shared",
        allowed: 'namespace already belongs to Project "team-b"; a namespace belongs to at most one Project',
      }),
    ]);
  });

  it("does not count the object's own earlier version (UPDATE)", () => {
    const existing = { projects: [project("team-a")], policies: [policy("cluster-default")] };
    expect(validatePolicyObject(project("team-a", { gpuQuota: "16" }), existing)).toEqual([]);
    expect(validatePolicyObject(policy("cluster-default", { enforcement: "warn" }), existing)).toEqual([]);
  });

  it("rejects a second cluster-wide policy, naming the existing one, whether projects is [] or absent", () => {
    const existing = { projects: [], policies: [policy("cluster-default")] };
    const second = policy("another");
    delete second.spec.projects;
    for (const candidate of [policy("another"), second]) {
      expect(validatePolicyObject(candidate, existing)).toEqual([
        expect.objectContaining({
          field: "spec.projects",
          allowed: expect.stringContaining('InferencePolicy "cluster-default" is already the cluster-wide policy'),
        }),
      ]);
    }
  });

  it("rejects a second policy for one project", () => {
    const existing = { projects: [], policies: [policy("cluster-default"), policy("for-a", { projects: ["team-a"] })] };
    const vs = validatePolicyObject(policy("for-ab", { projects: ["team-b", "team-a"] }), existing);
    expect(vs).toEqual([
      expect.objectContaining({
        field: "spec.projects[1]",
        value: "team-a",
        allowed: 'Project "team-a" already has InferencePolicy "for-a"; a Project may be named by one policy only',
      }),
    ]);
    expect(validatePolicyObject(policy("for-b", { projects: ["team-b"] }), existing)).toEqual([]);
  });

  it("rejects min > max in every range, comparing decimal strings exactly", () => {
    const p = policy("p", {
      rules: {
        gpuFraction: { min: "0.9", max: "0.10" },
        gpusPerPod: { min: "10", max: "9.75" },
        replicas: { min: 3, max: 2 },
        requestTimeoutSeconds: { min: 60, max: 30 },
        initializationTimeoutSeconds: { min: 600, max: 300 },
      },
    });
    p.spec.defaults.autoscaling = { minReplicas: 5, maxReplicas: 2 };
    delete p.spec.defaults.requestTimeoutSeconds;
    delete p.spec.defaults.initializationTimeoutSeconds;
    delete p.spec.defaults.priorityClassName;
    expect(validatePolicyObject(p, NONE).map((v) => [v.field, v.allowed])).toEqual([
      ["spec.rules.gpuFraction.min", 'must be less than or equal to max ("0.10")'],
      ["spec.rules.gpusPerPod.min", 'must be less than or equal to max ("9.75")'],
      ["spec.rules.replicas.min", "must be less than or equal to max (2)"],
      ["spec.rules.requestTimeoutSeconds.min", "must be less than or equal to max (30)"],
      ["spec.rules.initializationTimeoutSeconds.min", "must be less than or equal to max (300)"],
      ["spec.defaults.autoscaling.minReplicas", "must be less than or equal to maxReplicas (2)"],
    ]);
  });

  it("accepts equal bounds written differently", () => {
    const p = policy("p", { rules: { gpuFraction: { min: "0.50", max: "0.5" }, gpusPerPod: { min: "2", max: "2.0" }, replicas: { min: 4, max: 4 } } });
    expect(validatePolicyObject(p, NONE)).toEqual([]);
  });

  it("rejects a duration beyond Go's range, which the pattern cannot see", () => {
    const vs = validatePolicyObject(withField(policy(), "spec.defaults.autoscaling.scaleToZeroRetention", "9999999999h"), NONE);
    expect(vs).toEqual([expect.objectContaining({ field: "spec.defaults.autoscaling.scaleToZeroRetention", value: "9999999999h" })]);
  });

  it("applies Kubernetes' toleration rules to default tolerations", () => {
    const vs = validatePolicyObject(
      withField(policy(), "spec.defaults.tolerations", [
        { operator: "Equal", value: "x" },
        { key: "k", operator: "Exists", value: "v" },
        { key: "k", operator: "Exists", effect: "NoSchedule", tolerationSeconds: 30 },
        { operator: "Exists" },
        { key: "k", operator: "Equal", value: "v", effect: "NoExecute", tolerationSeconds: 30 },
      ]),
      NONE,
    );
    expect(vs.map((v) => [v.field, v.allowed])).toEqual([
      ["spec.defaults.tolerations[0]", "operator must be Exists when key is empty (which tolerates every taint)"],
      ["spec.defaults.tolerations[1].value", "value must be empty when operator is Exists"],
      ["spec.defaults.tolerations[2].tolerationSeconds", "effect must be NoExecute when tolerationSeconds is set"],
    ]);
  });

  it("rejects a fractional latency target (Knative truncates targets)", () => {
    const p = withField(policy(), "spec.defaults.autoscaling", { metric: "latency", target: 250.5 });
    expect(validatePolicyObject(p, NONE)).toEqual([expect.objectContaining({ field: "spec.defaults.autoscaling.target", value: 250.5 })]);
    expect(validatePolicyObject(withField(p, "spec.defaults.autoscaling.target", 250), NONE)).toEqual([]);
  });

  it("rejects defaults that the same policy's rules forbid", () => {
    let p = policy();
    p = withField(p, "spec.defaults.priorityClassName", "batch");
    p = withField(p, "spec.defaults.requestTimeoutSeconds", 900);
    p = withField(p, "spec.defaults.initializationTimeoutSeconds", 1);
    p = withField(p, "spec.defaults.autoscaling.maxReplicas", 32);
    expect(validatePolicyObject(p, NONE).map((v) => [v.field, v.allowed])).toEqual([
      ["spec.defaults.priorityClassName", 'must be one of spec.rules.priorityClassNames: "inference", "high"'],
      ["spec.defaults.requestTimeoutSeconds", "must be ≥ 5 and ≤ 600, the range this policy permits in spec.rules.requestTimeoutSeconds"],
      ["spec.defaults.initializationTimeoutSeconds", "must be ≥ 5 and ≤ 3600, the range this policy permits in spec.rules.initializationTimeoutSeconds"],
      ["spec.defaults.autoscaling.maxReplicas", "must be ≤ 16, the most this policy permits in spec.rules.replicas.max"],
    ]);
  });

  it("requires a Project name that fits in a label value", () => {
    const long = "p".repeat(64);
    expect(validatePolicyObject(project(long, { namespaces: [], queue: "q" }), NONE)).toEqual([
      expect.objectContaining({ field: "metadata.name", value: long }),
    ]);
  });

  it("does not crash on malformed existing objects", () => {
    const existing: any = { projects: [{}, { spec: { namespaces: "x" } }, null], policies: [{ spec: null }, {}] };
    expect(() => validatePolicyObject(project(), existing)).not.toThrow();
    expect(() => validatePolicyObject(policy("p", { projects: ["a"] }), existing)).not.toThrow();
  });
});

describe("warnings", () => {
  it("warns when a whole-GPU profile carries a gpuFraction rule", () => {
    const p = withField(policy(), "spec.scheduler.profile", "default");
    expect(validatePolicyObject(p, NONE)).toEqual([]);
    expect(policyObjectWarnings(p, NONE)).toEqual([
      'spec.rules.gpuFraction has no effect under profile "default", which allows whole GPUs only; kai, volcano and hami support fractions',
    ]);
    expect(policyObjectWarnings(withField(p, "spec.scheduler.profile", "kai"), NONE)).toEqual([]);
  });

  it("warns about a policy for a Project that does not exist and a Project claiming kube-system", () => {
    const existing = { projects: [project("team-a")], policies: [] };
    expect(policyObjectWarnings(policy("p", { projects: ["team-a", "team-z"] }), existing)).toEqual([
      'spec.projects: Project "team-z" does not exist (yet); this policy applies once it does',
    ]);
    expect(policyObjectWarnings(project("ops", { namespaces: ["kube-system"] }), NONE)).toHaveLength(1);
  });
});

describe("parseGoDuration", () => {
  it.each([
    ["10m", 600],
    ["1h30m", 5400],
    ["30s", 30],
    ["1.5h", 5400],
    ["300ms", 0.3],
    [".5s", 0.5],
    ["0", 0],
    ["-2m", -120],
    ["1h0m0s", 3600],
  ])("%s = %ss", (text, seconds) => {
    expect(parseGoDuration(text)).toBeCloseTo(seconds, 9);
  });

  it.each(["", "10", "1d", "h", "1.h.", ".s", "1m ", "ten minutes", "00", "9999999999h"])("rejects %j", (text) => {
    expect(parseGoDuration(text)).toBeUndefined();
  });
});

describe("compareDecimals", () => {
  it("orders non-negative decimal strings exactly", () => {
    const decimal = fc.tuple(fc.bigInt({ min: 0n, max: 10n ** 12n }), fc.nat({ max: 6 }), fc.nat({ max: 3 }));
    fc.assert(
      fc.property(decimal, decimal, ([a, scaleA, padA], [b, scaleB, padB]) => {
        // a / 10^scaleA written with extra leading and trailing zeros must compare like the exact values.
        const write = (n: bigint, scale: number, pad: number) => {
          const digits = n.toString().padStart(scale + 1, "0");
          const int = "0".repeat(pad) + digits.slice(0, digits.length - scale);
          return scale === 0 ? int : `${int}.${digits.slice(digits.length - scale)}${"0".repeat(pad)}`;
        };
        const exact = a * 10n ** BigInt(scaleB) - b * 10n ** BigInt(scaleA);
        expect(compareDecimals(write(a, scaleA, padA), write(b, scaleB, padB))).toBe(exact === 0n ? 0 : exact < 0n ? -1 : 1);
      }),
    );
  });

  it("declines what is not a decimal string", () => {
    expect(compareDecimals("1e3", "2")).toBeUndefined();
    expect(compareDecimals(1, "2")).toBeUndefined();
    expect(compareDecimals("-1", "2")).toBeUndefined();
  });
});

describe("reviewPolicyRequest", () => {
  function request(operation: AdmissionRequest["operation"], object: any, oldObject?: any, extra: Partial<AdmissionRequest> = {}): AdmissionRequest {
    const kind = object?.kind ?? oldObject?.kind ?? "Project";
    return {
      uid: "u1",
      kind: { group: "infergate.dev", version: "v1alpha1", kind },
      resource: { group: "infergate.dev", version: "v1alpha1", resource: kind === "Project" ? "projects" : "inferencepolicies" },
      name: object?.metadata?.name ?? oldObject?.metadata?.name,
      operation,
      userInfo: { username: "admin" },
      object,
      oldObject,
      ...extra,
    };
  }

  function storeWith(projects: any[], policies: any[] = []): PolicyStore {
    const store = new PolicyStore();
    store.replaceAll(projects, policies);
    return store;
  }

  it("leaves other kinds to the rest of infergate", () => {
    const r = request("CREATE", project());
    expect(reviewPolicyRequest({ ...r, kind: { group: "apps", version: "v1", kind: "Deployment" }, resource: { group: "apps", version: "v1", resource: "deployments" } }, new PolicyStore())).toBeUndefined();
  });

  it("denies an overlapping Project with a kubectl-style message and causes", () => {
    const store = storeWith([project("team-a")]);
    const response = reviewPolicyRequest(request("CREATE", project("team-b", { namespaces: ["team-a-staging", "team-b"], gpuQuota: "x" })), store)!;
    expect(response.allowed).toBe(false);
    expect(response.status?.message).toBe(
      'Project.infergate.dev "team-b" is invalid: [spec.gpuQuota: Invalid value: "x": a non-negative decimal number as a string, e.g. "8" or "2.5", ' +
        'spec.namespaces[0]: Invalid value: "team-a-staging": namespace already belongs to Project "team-a"; a namespace belongs to at most one Project]',
    );
    expect((response.status?.details as any).causes.map((c: any) => c.field)).toEqual(["spec.gpuQuota", "spec.namespaces[0]"]);
  });

  it("allows a valid CREATE with its warnings, and an UPDATE of the same object", () => {
    const store = storeWith([project("team-a")], [policy("cluster-default")]);
    const created = reviewPolicyRequest(request("CREATE", policy("for-z", { projects: ["team-z"] })), store)!;
    expect(created).toMatchObject({ uid: "u1", allowed: true, warnings: [expect.stringContaining('Project "team-z" does not exist')] });
    const updated = reviewPolicyRequest(request("UPDATE", project("team-a", { gpuQuota: "4" }), project("team-a")), store)!;
    expect(updated).toEqual({ uid: "u1", allowed: true });
  });

  it("denies a second cluster-wide policy", () => {
    const store = storeWith([], [policy("cluster-default")]);
    const response = reviewPolicyRequest(request("CREATE", policy("second")), store)!;
    expect(response.allowed).toBe(false);
    expect(response.status?.message).toContain('InferencePolicy.infergate.dev "second" is invalid: spec.projects: Invalid value: []: InferencePolicy "cluster-default"');
  });

  it("allows DELETE, status writes and updates of an object being deleted", () => {
    const store = storeWith([project("team-a")]);
    const overlapping = project("team-b", { namespaces: ["team-a"] });
    expect(reviewPolicyRequest(request("DELETE", undefined, overlapping), store)).toEqual({ uid: "u1", allowed: true });
    expect(reviewPolicyRequest(request("UPDATE", overlapping, overlapping, { subResource: "status" }), store)).toEqual({ uid: "u1", allowed: true });
    const deleting = withField(overlapping, "metadata.deletionTimestamp", "2026-01-02T15:04:05Z");
    expect(reviewPolicyRequest(request("UPDATE", deleting, overlapping), store)?.allowed).toBe(true);
  });

  it("does not block an UPDATE on a problem it did not introduce, but names it", () => {
    // team-b came to overlap team-a while infergate was down.
    const store = storeWith([project("team-a")]);
    const before = project("team-b", { namespaces: ["team-a"] });
    const quotaEdit = reviewPolicyRequest(request("UPDATE", withField(before, "spec.namespaces", ["team-b", "team-a"]), before), store)!;
    expect(quotaEdit.allowed).toBe(true);
    expect(quotaEdit.warnings).toEqual([expect.stringMatching(/^unchanged by this update, still to fix: spec\.namespaces\[1\]: Invalid value: "team-a"/)]);

    const newOverlap = reviewPolicyRequest(request("UPDATE", withField(before, "spec.namespaces", ["team-a", "team-a-staging"]), before), store)!;
    expect(newOverlap.allowed).toBe(false);
    expect((newOverlap.status?.details as any).causes).toEqual([
      expect.objectContaining({ field: "spec.namespaces[1]", message: expect.stringContaining('Project "team-a"') }),
    ]);
  });

  it("answers a request without an object with a denial, not a crash", () => {
    const response = reviewPolicyRequest(request("CREATE", undefined), new PolicyStore())!;
    expect(response.allowed).toBe(false);
  });
});

describe("the CRDs themselves", () => {
  const walk = (node: any, path: string, visit: (node: any, path: string) => void) => {
    visit(node, path);
    for (const [name, sub] of Object.entries(node.properties ?? {})) walk(sub, `${path}.${name}`, visit);
    if (node.items) walk(node.items, `${path}[]`, visit);
    if (typeof node.additionalProperties === "object") walk(node.additionalProperties, `${path}{}`, visit);
  };

  it.each(POLICY_KINDS)("%s: structural, described, and every pattern has human text", (kind) => {
    const problems: string[] = [];
    walk(crdSchema(kind), kind, (node, path) => {
      if (!node.type) problems.push(`${path}: no type`);
      if (!node.description && !path.endsWith(".metadata") && path !== kind) problems.push(`${path}: no description`);
      if (node.properties && node.additionalProperties !== undefined) problems.push(`${path}: properties with additionalProperties`);
      if (node.pattern && !PATTERN_TEXT[node.pattern]) problems.push(`${path}: pattern without text`);
      if (node.type === "string" && node.pattern && node.maxLength === undefined) problems.push(`${path}: pattern without maxLength`);
      for (const rule of node["x-kubernetes-validations"] ?? []) if (!rule.message) problems.push(`${path}: CEL rule without message`);
    });
    expect(problems).toEqual([]);
  });

  it("declares the names, scope, printer columns and status subresource of PRODUCT.md §1", () => {
    const crd = (kind: keyof typeof CRD_FILES) => parse(readFileSync(CRD_FILES[kind], "utf8"));
    const project = crd("Project");
    const ipol = crd("InferencePolicy");
    for (const c of [project, ipol]) {
      expect(c.apiVersion).toBe("apiextensions.k8s.io/v1");
      expect(c.spec.group).toBe("infergate.dev");
      expect(c.spec.scope).toBe("Cluster");
      expect(c.spec.versions.map((v: any) => v.name)).toEqual(["v1alpha1"]);
    }
    expect(project.spec.names).toMatchObject({ kind: "Project", plural: "projects", shortNames: ["proj"] });
    expect(ipol.spec.names).toMatchObject({ kind: "InferencePolicy", plural: "inferencepolicies", shortNames: ["ipol"] });
    const columns = (c: any) => c.spec.versions[0].additionalPrinterColumns.filter((col: any) => !col.priority).map((col: any) => [col.name, col.jsonPath]);
    expect(columns(project)).toEqual([
      ["QUOTA", ".spec.gpuQuota"],
      ["ALLOCATED", ".status.allocatedGpus"],
      ["AVAILABLE", ".status.availableGpus"],
      ["AGE", ".metadata.creationTimestamp"],
    ]);
    expect(columns(ipol)).toEqual([
      ["PROFILE", ".spec.scheduler.profile"],
      ["ENFORCEMENT", ".spec.enforcement"],
      ["PROJECTS", ".spec.projects"],
      ["AGE", ".metadata.creationTimestamp"],
    ]);
    expect(project.spec.versions[0].subresources).toEqual({ status: {} });
  });
});
