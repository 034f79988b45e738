// The shape of Projects and InferencePolicies, checked with the CRDs' own OpenAPI schemas so that policy
// files, `infergate apply` and the webhook agree with the API server. Compiled once, when this module
// loads: a CRD that ajv cannot compile stops infergate at start, not at the first admission.
//
// What the API server does that plain JSON Schema does not, and how it is mirrored here:
// - x-kubernetes-list-type: set rejects duplicates → checked by `duplicatesInSets` below (every one,
//   where ajv's uniqueItems stops at the first);
// - pruning silently drops unknown fields → reported here as errors (`additionalProperties: false`),
//   because in a file they are almost always typos;
// - x-kubernetes-validations (CEL) → re-implemented as semantic checks in validation.ts.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { parse } from "yaml";
import type { Violation } from "../admission/types.ts";
import { API_VERSION } from "./types.ts";

export const SCHEMA_PLUGIN = "policy-schema";

export const CRD_DIR = fileURLToPath(new URL("../../manifests/crds/", import.meta.url));

export const CRD_FILES = {
  Project: `${CRD_DIR}projects.infergate.dev.yaml`,
  InferencePolicy: `${CRD_DIR}inferencepolicies.infergate.dev.yaml`,
} as const;

export type PolicyKind = keyof typeof CRD_FILES;
export const POLICY_KINDS = Object.keys(CRD_FILES) as PolicyKind[];

export function isPolicyKind(kind: unknown): kind is PolicyKind {
  return typeof kind === "string" && Object.hasOwn(CRD_FILES, kind);
}

/** The `openAPIV3Schema` of a kind's CRD, exactly as the API server gets it. */
export function crdSchema(kind: PolicyKind): any {
  const crd = parse(readFileSync(CRD_FILES[kind], "utf8"));
  const schema = crd?.spec?.versions?.[0]?.schema?.openAPIV3Schema;
  if (!schema) throw new Error(`${CRD_FILES[kind]}: no spec.versions[0].schema.openAPIV3Schema`);
  return schema;
}

/**
 * Human text for each pattern in the CRDs, so a denial says what is allowed rather than quoting a
 * regular expression. A unit test keeps this table complete.
 */
export const PATTERN_TEXT: Readonly<Record<string, string>> = {
  "^[0-9]+(\\.[0-9]+)?$": 'a non-negative decimal number as a string, e.g. "8" or "2.5"',
  "^-?[0-9]+(\\.[0-9]+)?$": 'a decimal number as a string, e.g. "2.5" or "-1"',
  "^(1(\\.0+)?|0\\.[0-9]*[1-9][0-9]*)$": 'a fraction in (0, 1] as a decimal string, e.g. "0.5" or "1"',
  "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": 'a lowercase RFC 1123 label: a-z, 0-9 and "-", starting and ending with a letter or digit',
  "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$":
    'a lowercase RFC 1123 subdomain: a-z, 0-9, "-" and ".", starting and ending with a letter or digit',
  "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$":
    'empty, or a lowercase RFC 1123 subdomain: a-z, 0-9, "-" and ".", starting and ending with a letter or digit',
  "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$":
    'a label value: A-Z, a-z, 0-9, "-", "_" and ".", starting and ending with a letter or digit',
  "^(([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$":
    "empty, or a label key: an optional DNS subdomain prefix and '/', then a name",
  "^(0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$": 'a Go duration such as "30s", "10m" or "1h30m"',
  "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$":
    "a condition type in CamelCase or foo.example.com/CamelCase",
  "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$": "a CamelCase reason: letters, digits, '_', ',' and ':'",
};

// ajv knows neither x-kubernetes-* keywords nor pruning; see the header for what replaces them.
function forAjv(node: any): any {
  if (Array.isArray(node)) return node.map(forAjv);
  if (node === null || typeof node !== "object") return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith("x-kubernetes-")) continue;
    out[key] =
      key === "properties"
        ? Object.fromEntries(Object.entries(value as object).map(([name, sub]) => [name, forAjv(sub)]))
        : forAjv(value);
  }
  if (node.properties && node.additionalProperties === undefined && node["x-kubernetes-preserve-unknown-fields"] !== true) {
    out.additionalProperties = false;
  }
  return out;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

const ajv = new Ajv({ allErrors: true, verbose: true, strict: true });
ajv.addFormat("date-time", { type: "string", validate: (s: string) => RFC3339.test(s) && !Number.isNaN(Date.parse(s)) });

interface CompiledKind {
  schema: any;
  validate: ValidateFunction;
}

const compiled = Object.fromEntries(
  POLICY_KINDS.map((kind) => {
    const schema = crdSchema(kind);
    return [kind, { schema, validate: ajv.compile(forAjv(schema)) }];
  }),
) as Record<PolicyKind, CompiledKind>;

/** Follows a JSON pointer through the schema, writing the path the way Kubernetes does: `a.b[0].c[key]`. */
function fieldPath(pointer: string, root: any): string {
  let path = "";
  let schema = root;
  for (const raw of pointer.split("/").slice(1)) {
    const segment = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    ({ path, schema } = step(path, schema, segment));
  }
  return path;
}

function step(path: string, schema: any, segment: string | number): { path: string; schema: any } {
  if (schema?.type === "array") return { path: `${path}[${segment}]`, schema: schema.items };
  const named = schema?.properties?.[segment];
  if (named) return { path: path ? `${path}.${segment}` : String(segment), schema: named };
  if (schema?.additionalProperties && typeof schema.additionalProperties === "object") {
    return { path: `${path}[${segment}]`, schema: schema.additionalProperties };
  }
  return { path: path ? `${path}.${segment}` : String(segment), schema: undefined };
}

function quoted(values: readonly unknown[]): string {
  return values.map((v) => JSON.stringify(v)).join(", ");
}

function shapeViolation(field: string, value: unknown, allowed: string, message?: string): Violation {
  const v: Violation = { field, value, allowed, plugin: SCHEMA_PLUGIN };
  if (message) v.message = message;
  return v;
}

function fromAjv(error: ErrorObject, root: any): Violation {
  const field = fieldPath(error.instancePath, root);
  const p: any = error.params;
  switch (error.keyword) {
    case "required": {
      const missing = step(field, undefined, p.missingProperty).path;
      return shapeViolation(missing, undefined, "required", `${missing}: Required value`);
    }
    case "additionalProperties": {
      const unknown = step(field, undefined, p.additionalProperty).path;
      const known = Object.keys(error.parentSchema?.properties ?? {}).join(", ");
      const allowed = `unknown field; supported fields here: ${known}`;
      return shapeViolation(unknown, (error.data as any)?.[p.additionalProperty], allowed, `${unknown}: ${allowed}`);
    }
    case "type": {
      const quoteHint = p.type === "string" && typeof error.data === "number" ? `; quote it: "${error.data}"` : "";
      return shapeViolation(field, error.data, `must be of type ${p.type}${quoteHint}`);
    }
    case "enum":
      return shapeViolation(field, error.data, `supported values: ${quoted(p.allowedValues)}`);
    case "pattern":
      return shapeViolation(field, error.data, PATTERN_TEXT[p.pattern] ?? `must match the regular expression ${p.pattern}`);
    case "minimum":
      return shapeViolation(field, error.data, `must be greater than or equal to ${p.limit}`);
    case "maximum":
      return shapeViolation(field, error.data, `must be less than or equal to ${p.limit}`);
    case "minLength":
      return shapeViolation(field, error.data, p.limit === 1 ? "must not be empty" : `must be at least ${p.limit} characters`);
    case "maxLength":
      return shapeViolation(field, error.data, `must be at most ${p.limit} characters`);
    case "minItems":
      return shapeViolation(field, error.data, `must have at least ${p.limit} items`);
    case "maxItems":
      return shapeViolation(field, error.data, `must have at most ${p.limit} items`);
    case "maxProperties":
      return shapeViolation(field, error.data, `must have at most ${p.limit} entries`);
    case "format":
      return shapeViolation(field, error.data, p.format === "date-time" ? 'an RFC 3339 date-time, e.g. "2026-01-02T15:04:05Z"' : `must be a ${p.format}`);
    default:
      return shapeViolation(field, error.data, error.message ?? error.keyword);
  }
}

/** Every later duplicate in an `x-kubernetes-list-type: set` list, as the API server reports them. */
function duplicatesInSets(schema: any, data: unknown, path: string, out: Violation[]): void {
  if (!schema || data === null || typeof data !== "object") return;
  if (Array.isArray(data)) {
    if (schema.type !== "array") return;
    if (schema["x-kubernetes-list-type"] === "set") {
      const first = new Map<string, number>();
      data.forEach((item, i) => {
        const key = JSON.stringify(item);
        const earlier = first.get(key);
        if (earlier === undefined) first.set(key, i);
        else out.push(shapeViolation(`${path}[${i}]`, item, `duplicate of ${path}[${earlier}]; each value may appear only once`));
      });
    }
    data.forEach((item, i) => duplicatesInSets(schema.items, item, `${path}[${i}]`, out));
    return;
  }
  for (const [key, value] of Object.entries(data)) {
    const next = step(path, schema, key);
    duplicatesInSets(next.schema, value, next.path, out);
  }
}

/**
 * Checks a Project or InferencePolicy against its CRD schema. Every problem is reported at once, each
 * with its field path (`spec.rules.gpuFraction.min`), the value found and what is allowed.
 */
export function validateShape(obj: unknown): Violation[] {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    return [shapeViolation("object", obj, `a Project or InferencePolicy object (${API_VERSION})`)];
  }
  const o = obj as Record<string, unknown>;
  const violations: Violation[] = [];
  if (o.apiVersion !== API_VERSION) violations.push(shapeViolation("apiVersion", o.apiVersion, `supported values: ${quoted([API_VERSION])}`));
  if (!isPolicyKind(o.kind)) {
    violations.push(shapeViolation("kind", o.kind, `supported values: ${quoted(POLICY_KINDS)}`));
    return violations;
  }
  const { schema, validate } = compiled[o.kind];
  if (!validate(obj)) for (const error of validate.errors ?? []) violations.push(fromAjv(error, schema));
  duplicatesInSets(schema, obj, "", violations);
  return violations;
}
