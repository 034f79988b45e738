// The types of every field infergate reads or writes in a workload, checked once before any plugin does.
// The API server decodes built-in kinds before webhooks see them, but `infergate apply` input and a
// Knative Service (whose schema the API server applies only after mutation) can hold a string where a
// map belongs. Plugins then meet a well-formed object or none: a malformed one is reported here, field by
// field, and left as written. Only types are checked, never values: null counts as absent, as it does for
// the API server, and anything Kubernetes accepts passes.
import type { Workload } from "./workload.ts";

export interface ShapeProblem {
  field: string;
  value: unknown;
  allowed: string;
}

type Report = (field: string, value: unknown, allowed: string) => void;
/**
 * Checks the value at `at.key`. This runs on every admission, so the path string is only built where it
 * is needed: to report a problem, or to descend into a value that is there.
 */
type Check = (value: unknown, at: string, key: string, report: Report) => void;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const absent = (v: unknown) => v === undefined || v === null;
const join = (at: string, key: string) => (at ? `${at}.${key}` : key);

const OBJECT = "must be an object";
const LIST = "must be a list";

/** The object at `field`, or undefined when it is absent or (reported) not an object. */
function object(value: unknown, field: string, report: Report): Record<string, unknown> | undefined {
  if (absent(value)) return undefined;
  if (isRecord(value)) return value;
  report(field, value, OBJECT);
  return undefined;
}

function scalar(ok: (v: unknown) => boolean, allowed: string): Check {
  return (value, at, key, report) => {
    if (!absent(value) && !ok(value)) report(join(at, key), value, allowed);
  };
}

const string = scalar((v) => typeof v === "string", "must be a string");
const integer = scalar(Number.isInteger, "must be a whole number");
const boolean = scalar((v) => typeof v === "boolean", "must be true or false");

/** Checks of the fields of an object. */
function objectOf(checks: Record<string, Check>): Check {
  return (value, at, key, report) => {
    const field = join(at, key);
    const entry = object(value, field, report);
    if (entry) fields(entry, field, report, checks);
  };
}

/** A list whose entries are objects, each checked by `checks`. */
function listOf(checks: Record<string, Check>): Check {
  return (value, at, key, report) => {
    if (absent(value)) return;
    const field = join(at, key);
    if (!Array.isArray(value)) return report(field, value, `${LIST} of objects`);
    value.forEach((entry, i) => {
      if (isRecord(entry)) fields(entry, `${field}[${i}]`, report, checks);
      else report(`${field}[${i}]`, entry, OBJECT);
    });
  };
}

/** A map whose values pass `valueOk`; called (by `fields`) only for a value that is there. */
function mapOf(valueOk: (v: unknown) => boolean, allowed: string): Check {
  return (value, at, key, report) => {
    if (!isRecord(value)) return report(join(at, key), value, OBJECT);
    for (const k in value) {
      const v = value[k];
      if (!absent(v) && !valueOk(v)) report(`${join(at, key)}[${k}]`, v, allowed);
    }
  };
}

const stringMap = mapOf((v) => typeof v === "string", "must be a string");
// Quantities: "1", "500m", "20Gi", or a plain number.
const quantities = mapOf((v) => typeof v === "string" || (typeof v === "number" && Number.isFinite(v)), 'must be a quantity such as "1" or "500m"');

const strings: Check = (value, at, key, report) => {
  if (absent(value)) return;
  if (!Array.isArray(value)) return report(join(at, key), value, `${LIST} of strings`);
  value.forEach((v, i) => {
    if (!absent(v) && typeof v !== "string") report(`${join(at, key)}[${i}]`, v, "must be a string");
  });
};

function fields(entry: Record<string, unknown>, at: string, report: Report, checks: Record<string, Check>): void {
  for (const key in checks) {
    const value = entry[key];
    if (!absent(value)) checks[key]!(value, at, key, report);
  }
}

const container = listOf({ name: string, image: string, restartPolicy: string, resources: objectOf({ limits: quantities, requests: quantities }) });
const toleration = listOf({ key: string, operator: string, value: string, effect: string, tolerationSeconds: integer });
const requirements = listOf({ key: string, operator: string, values: strings });
const selectorTerm = { matchExpressions: requirements, matchFields: requirements };

const affinity = objectOf({
  nodeAffinity: objectOf({
    requiredDuringSchedulingIgnoredDuringExecution: objectOf({ nodeSelectorTerms: listOf(selectorTerm) }),
    preferredDuringSchedulingIgnoredDuringExecution: listOf({ weight: integer, preference: objectOf(selectorTerm) }),
  }),
});

const podSpec = objectOf({
  containers: container,
  initContainers: container,
  tolerations: toleration,
  affinity,
  nodeSelector: stringMap,
  priorityClassName: string,
  schedulerName: string,
  priority: integer,
  timeoutSeconds: integer,
});

const metadata = objectOf({
  name: string,
  namespace: string,
  generateName: string,
  labels: stringMap,
  annotations: stringMap,
  ownerReferences: listOf({ apiVersion: string, kind: string, name: string, controller: boolean }),
});

const podTemplate = { metadata, spec: podSpec };

const workloadSpec = objectOf({
  replicas: integer,
  selector: objectOf({ matchLabels: stringMap, matchExpressions: requirements }),
  strategy: objectOf({}),
  template: objectOf(podTemplate),
});

const scaleSpec = objectOf({ replicas: integer });

/** Every field of the workload's object that has the wrong type for what infergate reads there. */
export function shapeProblems(w: Workload): ShapeProblem[] {
  const problems: ShapeProblem[] = [];
  const report: Report = (field, value, allowed) => problems.push({ field, value, allowed });
  // A pod is its own template; scale carries replicas only.
  const checks = w.templatePath === "" ? podTemplate : { metadata, spec: w.templatePath === undefined ? scaleSpec : workloadSpec };
  fields(w.object, "", report, checks);
  return problems;
}

const checked = new WeakMap<Workload, ShapeProblem[]>();

/** shapeProblems, computed once per Workload: every plugin asks before it reads. */
export function shapeProblemsOf(w: Workload): ShapeProblem[] {
  let problems = checked.get(w);
  if (!problems) {
    problems = shapeProblems(w);
    checked.set(w, problems);
  }
  return problems;
}

export function wellFormed(w: Workload): boolean {
  return shapeProblemsOf(w).length === 0;
}
