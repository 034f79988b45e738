// Admission of infergate's own objects: the CRD schema (schema.ts) plus what a schema cannot say, chiefly
// rules across objects (a namespace in two Projects, a second cluster-wide policy). The CRDs carry CEL
// rules for the single-object checks so the API server enforces them even when this webhook is down;
// they are repeated here because ajv cannot run CEL, and `infergate apply` and policy files have no
// API server.
//
// Warnings versus violations: a violation makes the object wrong whatever else exists; a warning marks
// something that is legal but probably not what the admin meant, e.g. a gpuFraction rule under a profile
// that allows whole GPUs only (the rule could still apply through a Project policy that switches profile).
import type { AdmissionRequest, AdmissionResponse, Violation } from "../admission/types.ts";
import { allow, denyObject, formatViolation } from "../admission/responses.ts";
import type { PolicyStore } from "./store.ts";
import { GROUP, type InferencePolicy, type Project } from "./types.ts";
import { isPolicyKind, validateShape, type PolicyKind } from "./schema.ts";

export const VALIDATION_PLUGIN = "policy-validation";

/** Projects and policies already admitted; the object under review is excluded by name. */
export interface ExistingPolicyObjects {
  projects: readonly Project[];
  policies: readonly InferencePolicy[];
}

// Kubernetes truncates longer warnings; ours stay whole.
const WARNING_LIMIT = 256;
const NOT_TOUCHED_NAMESPACES = ["kube-system"];
const WHOLE_GPU_PROFILES = ["default", "coscheduling"];

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DECIMAL = /^([0-9]+)(?:\.([0-9]+))?$/;

type Report = (field: string, value: unknown, allowed: string) => void;

const isRecord = (x: unknown): x is Record<string, any> => x !== null && typeof x === "object" && !Array.isArray(x);
const nameOf = (o: any): string | undefined => (typeof o?.metadata?.name === "string" ? o.metadata.name : undefined);
const strings = (x: unknown): string[] => (Array.isArray(x) ? x.filter((s): s is string => typeof s === "string") : []);
const isInt = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x);

/** Compares two non-negative decimal strings exactly; undefined when either is not one. */
export function compareDecimals(a: unknown, b: unknown): number | undefined {
  const ma = typeof a === "string" ? DECIMAL.exec(a) : null;
  const mb = typeof b === "string" ? DECIMAL.exec(b) : null;
  if (!ma || !mb) return undefined;
  const ia = ma[1]!.replace(/^0+(?=.)/, "");
  const ib = mb[1]!.replace(/^0+(?=.)/, "");
  if (ia.length !== ib.length) return ia.length < ib.length ? -1 : 1;
  const width = Math.max(ma[2]?.length ?? 0, mb[2]?.length ?? 0);
  const da = ia + (ma[2] ?? "").padEnd(width, "0");
  const db = ib + (mb[2] ?? "").padEnd(width, "0");
  return da === db ? 0 : da < db ? -1 : 1;
}

const DURATION_UNIT_SECONDS: Record<string, number> = {
  ns: 1e-9,
  us: 1e-6,
  "µs": 1e-6,
  "μs": 1e-6,
  ms: 1e-3,
  s: 1,
  m: 60,
  h: 3600,
};
const DURATION_TERM = /([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)/y;
const MAX_DURATION_SECONDS = 9223372036.854775807; // Go's time.Duration is int64 nanoseconds

/**
 * Seconds in a Go duration string ("10m", "1h30m", "1.5s", "-2h", "0"), or undefined when Go's
 * time.ParseDuration would reject it (including values beyond its ±292-year range).
 */
export function parseGoDuration(text: unknown): number | undefined {
  if (typeof text !== "string" || text === "") return undefined;
  let rest = text;
  let sign = 1;
  if (rest[0] === "-" || rest[0] === "+") {
    sign = rest[0] === "-" ? -1 : 1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") return undefined;
  let seconds = 0;
  DURATION_TERM.lastIndex = 0;
  while (DURATION_TERM.lastIndex < rest.length) {
    const m = DURATION_TERM.exec(rest);
    if (!m || m[1] === "" || m[1] === ".") return undefined;
    seconds += Number(m[1]) * DURATION_UNIT_SECONDS[m[2]!]!;
  }
  return seconds > MAX_DURATION_SECONDS ? undefined : sign * seconds;
}

function checkIntRange(range: unknown, field: string, report: Report): void {
  if (!isRecord(range) || !isInt(range.min) || !isInt(range.max)) return;
  if (range.min > range.max) report(`${field}.min`, range.min, `must be less than or equal to max (${range.max})`);
}

function checkDecimalRange(range: unknown, field: string, report: Report): void {
  if (!isRecord(range)) return;
  if ((compareDecimals(range.min, range.max) ?? 0) > 0) {
    report(`${field}.min`, range.min, `must be less than or equal to max (${JSON.stringify(range.max)})`);
  }
}

function checkWithin(value: unknown, range: unknown, field: string, rangeField: string, report: Report): void {
  if (!isInt(value) || !isRecord(range)) return;
  const { min, max } = range;
  if ((isInt(min) && value < min) || (isInt(max) && value > max)) {
    const bounds = [isInt(min) ? `≥ ${min}` : "", isInt(max) ? `≤ ${max}` : ""].filter(Boolean).join(" and ");
    report(field, value, `must be ${bounds}, the range this policy permits in ${rangeField}`);
  }
}

// The CRD's CEL rules on tolerations, which are Kubernetes' own pod-spec rules: a default that breaks
// them would make every pod it is injected into invalid.
function checkTolerations(tolerations: unknown, report: Report): void {
  if (!Array.isArray(tolerations)) return;
  tolerations.forEach((t, i) => {
    if (!isRecord(t)) return;
    const field = `spec.defaults.tolerations[${i}]`;
    if (!t.key && t.operator !== "Exists") report(field, t, "operator must be Exists when key is empty (which tolerates every taint)");
    if (t.operator === "Exists" && t.value) report(`${field}.value`, t.value, "value must be empty when operator is Exists");
    if (t.tolerationSeconds !== undefined && t.effect !== "NoExecute") {
      report(`${field}.tolerationSeconds`, t.tolerationSeconds, "effect must be NoExecute when tolerationSeconds is set");
    }
  });
}

function projectProblems(project: Record<string, any>, others: ExistingPolicyObjects, report: Report): void {
  const name = nameOf(project);
  if (name !== undefined && !(name.length <= 63 && DNS_LABEL.test(name))) {
    report("metadata.name", name, "a Project name is written into pod labels: a lowercase RFC 1123 label of at most 63 characters");
  }
  const owner = new Map<string, string>();
  for (const other of others.projects) for (const ns of strings(other?.spec?.namespaces)) if (!owner.has(ns)) owner.set(ns, nameOf(other) ?? "");
  strings(project.spec?.namespaces).forEach((ns, i) => {
    const taken = owner.get(ns);
    if (taken !== undefined) {
      report(`spec.namespaces[${i}]`, ns, `namespace already belongs to Project "${taken}"; a namespace belongs to at most one Project`);
    }
  });
}

function policyProblems(policy: Record<string, any>, others: ExistingPolicyObjects, report: Report): void {
  const spec = isRecord(policy.spec) ? policy.spec : {};
  const projects = strings(spec.projects);
  if (projects.length === 0) {
    const clusterWide = others.policies.find((p) => strings(p?.spec?.projects).length === 0);
    if (clusterWide) {
      const other = nameOf(clusterWide) ?? "";
      report(
        "spec.projects",
        spec.projects ?? [],
        `InferencePolicy "${other}" is already the cluster-wide policy (empty spec.projects); list the Projects this policy is for, or edit "${other}"`,
      );
    }
  } else {
    const policyOf = new Map<string, string>();
    for (const other of others.policies) for (const p of strings(other?.spec?.projects)) if (!policyOf.has(p)) policyOf.set(p, nameOf(other) ?? "");
    projects.forEach((project, i) => {
      const taken = policyOf.get(project);
      if (taken !== undefined) {
        report(`spec.projects[${i}]`, project, `Project "${project}" already has InferencePolicy "${taken}"; a Project may be named by one policy only`);
      }
    });
  }

  const defaults = isRecord(spec.defaults) ? spec.defaults : {};
  const rules = isRecord(spec.rules) ? spec.rules : {};
  const autoscaling = isRecord(defaults.autoscaling) ? defaults.autoscaling : {};

  checkDecimalRange(rules.gpuFraction, "spec.rules.gpuFraction", report);
  checkDecimalRange(rules.gpusPerPod, "spec.rules.gpusPerPod", report);
  checkIntRange(rules.replicas, "spec.rules.replicas", report);
  checkIntRange(rules.requestTimeoutSeconds, "spec.rules.requestTimeoutSeconds", report);
  checkIntRange(rules.initializationTimeoutSeconds, "spec.rules.initializationTimeoutSeconds", report);
  if (isInt(autoscaling.minReplicas) && isInt(autoscaling.maxReplicas) && autoscaling.minReplicas > autoscaling.maxReplicas) {
    report("spec.defaults.autoscaling.minReplicas", autoscaling.minReplicas, `must be less than or equal to maxReplicas (${autoscaling.maxReplicas})`);
  }

  const retention = autoscaling.scaleToZeroRetention;
  if (retention !== undefined) {
    const seconds = parseGoDuration(retention);
    if (seconds === undefined || seconds < 0) {
      report("spec.defaults.autoscaling.scaleToZeroRetention", retention, 'a Go duration such as "30s", "10m" or "1h30m"');
    }
  }
  if (autoscaling.metric === "latency" && typeof autoscaling.target === "number" && !Number.isInteger(autoscaling.target)) {
    report("spec.defaults.autoscaling.target", autoscaling.target, "whole milliseconds for metric latency (Knative truncates targets)");
  }
  checkTolerations(defaults.tolerations, report);

  // Defaults this same policy forbids would get every workload that receives them denied.
  const permitted = strings(rules.priorityClassNames);
  if (typeof defaults.priorityClassName === "string" && permitted.length > 0 && !permitted.includes(defaults.priorityClassName)) {
    report(
      "spec.defaults.priorityClassName",
      defaults.priorityClassName,
      `must be one of spec.rules.priorityClassNames: ${permitted.map((p) => JSON.stringify(p)).join(", ")}`,
    );
  }
  checkWithin(defaults.requestTimeoutSeconds, rules.requestTimeoutSeconds, "spec.defaults.requestTimeoutSeconds", "spec.rules.requestTimeoutSeconds", report);
  checkWithin(
    defaults.initializationTimeoutSeconds,
    rules.initializationTimeoutSeconds,
    "spec.defaults.initializationTimeoutSeconds",
    "spec.rules.initializationTimeoutSeconds",
    report,
  );
  const maxReplicas = isRecord(rules.replicas) ? rules.replicas.max : undefined;
  if (isInt(autoscaling.maxReplicas) && isInt(maxReplicas) && autoscaling.maxReplicas > maxReplicas) {
    report("spec.defaults.autoscaling.maxReplicas", autoscaling.maxReplicas, `must be ≤ ${maxReplicas}, the most this policy permits in spec.rules.replicas.max`);
  }
}

function without(existing: ExistingPolicyObjects, name: string | undefined): ExistingPolicyObjects {
  return {
    projects: existing.projects.filter((p) => nameOf(p) !== name),
    policies: existing.policies.filter((p) => nameOf(p) !== name),
  };
}

/**
 * Everything wrong with a Project or InferencePolicy, all at once: its shape (the CRD schema) and the
 * semantic checks, against the objects that already exist. The object's own earlier version (same
 * name) is not counted as "existing", so an UPDATE never conflicts with itself.
 */
export function validatePolicyObject(obj: unknown, existing: ExistingPolicyObjects): Violation[] {
  const shape = validateShape(obj);
  if (!isRecord(obj) || !isPolicyKind(obj.kind)) return shape;
  const semantic: Violation[] = [];
  const report: Report = (field, value, allowed) => semantic.push({ field, value, allowed, plugin: VALIDATION_PLUGIN });
  if (nameOf(obj) === undefined) report("metadata.name", undefined, "required");
  const others = without(existing, nameOf(obj));
  if (obj.kind === "Project") projectProblems(obj, others, report);
  else policyProblems(obj, others, report);
  // A field the schema already rejected is reported once, with the schema's wording.
  const rejected = new Set(shape.map((v) => v.field));
  return [...shape, ...semantic.filter((v) => !rejected.has(v.field))];
}

/** Legal but probably unintended settings, for admission warnings. */
export function policyObjectWarnings(obj: unknown, existing: ExistingPolicyObjects): string[] {
  if (!isRecord(obj) || !isRecord(obj.spec)) return [];
  const warnings: string[] = [];
  if (obj.kind === "Project") {
    for (const ns of strings(obj.spec.namespaces)) {
      if (NOT_TOUCHED_NAMESPACES.includes(ns)) warnings.push(`spec.namespaces: "${ns}" is excluded from infergate's webhooks; workloads there are never touched`);
    }
  } else if (obj.kind === "InferencePolicy") {
    const profile = obj.spec.scheduler?.profile;
    if (WHOLE_GPU_PROFILES.includes(profile) && obj.spec.rules?.gpuFraction !== undefined) {
      warnings.push(
        `spec.rules.gpuFraction has no effect under profile "${profile}", which allows whole GPUs only; kai, volcano and hami support fractions`,
      );
    }
    const known = new Set(existing.projects.map(nameOf));
    for (const project of strings(obj.spec.projects)) {
      if (!known.has(project)) warnings.push(`spec.projects: Project "${project}" does not exist (yet); this policy applies once it does`);
    }
  }
  return warnings;
}

function policyKindOf(request: AdmissionRequest): PolicyKind | undefined {
  if (request.kind?.group === GROUP && isPolicyKind(request.kind.kind)) return request.kind.kind;
  if (request.resource?.group !== GROUP) return undefined;
  if (request.resource.resource === "projects") return "Project";
  if (request.resource.resource === "inferencepolicies") return "InferencePolicy";
  return undefined;
}

// Ratcheting, as the API server does for CRD fields: a problem the object already had before this
// UPDATE (same field, indices aside, and same value) does not block it. Otherwise two Projects that came
// to overlap while infergate was down could not even have their quota edited.
const problemKey = (v: Violation) => `${v.field.replace(/\[\d+\]/g, "[]")}=${JSON.stringify(v.value)}`;

const clip = (s: string) => (s.length > WARNING_LIMIT ? `${s.slice(0, WARNING_LIMIT - 1)}…` : s);

/**
 * The webhook's answer for a Project or InferencePolicy; undefined when the request is about something
 * else. DELETE is always allowed, and so is status (written by infergate itself and checked against the
 * schema by the API server) and any update of an object being deleted (finalizers must be removable).
 */
export function reviewPolicyRequest(request: AdmissionRequest, store: PolicyStore): AdmissionResponse | undefined {
  const kind = policyKindOf(request);
  if (!kind) return undefined;
  if (request.operation !== "CREATE" && request.operation !== "UPDATE") return allow(request.uid);
  if (request.subResource) return allow(request.uid);
  const object = request.object;
  if (isRecord(object) && object.metadata?.deletionTimestamp) return allow(request.uid);

  const existing: ExistingPolicyObjects = { projects: store.listProjects(), policies: store.listPolicies() };
  let violations = validatePolicyObject(object, existing);
  const warnings = policyObjectWarnings(object, existing);
  if (request.operation === "UPDATE" && request.oldObject !== undefined) {
    const before = new Set(validatePolicyObject(request.oldObject, existing).map(problemKey));
    for (const v of violations) if (before.has(problemKey(v))) warnings.push(`unchanged by this update, still to fix: ${formatViolation(v)}`);
    violations = violations.filter((v) => !before.has(problemKey(v)));
  }
  const clipped = warnings.map(clip);
  if (violations.length === 0) return allow(request.uid, clipped);
  return denyObject(request.uid, { kind: `${kind}.${GROUP}`, name: nameOf(object) ?? request.name ?? "" }, violations, clipped);
}
