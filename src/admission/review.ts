// Checks that a request body is an admission.k8s.io/v1 AdmissionReview before anything reads it, and
// wraps responses back into one. Messages name the offending field so a person can fix the sender.
import type { AdmissionRequest, AdmissionResponse, AdmissionReview } from "./types.ts";

const OPERATIONS = ["CREATE", "UPDATE", "DELETE", "CONNECT"];

export type ParsedReview = { ok: true; request: AdmissionRequest } | { ok: false; message: string; uid?: string };

const isObject = (v: unknown): v is Record<string, any> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * No Kubernetes object nests anywhere near this deep (a Pod is about 15 levels), while V8's recursive
 * structuredClone, JSON.stringify and fast-json-patch's compare overflow the stack at 1,600 to 4,500
 * levels: a body deeper than this is refused before anything recursive touches it.
 */
export const MAX_NESTING_DEPTH = 512;

export function parseReview(body: unknown): ParsedReview {
  if (!isObject(body)) return { ok: false, message: `body must be a JSON object (an AdmissionReview), got ${describe(body)}` };
  const problems: string[] = [];
  if (nestedDeeperThan(body, MAX_NESTING_DEPTH)) {
    problems.push(`body: objects and arrays are nested more than ${MAX_NESTING_DEPTH} levels deep; no Kubernetes object is`);
  }
  if (body.apiVersion !== "admission.k8s.io/v1") {
    problems.push(`apiVersion: must be "admission.k8s.io/v1", got ${describe(body.apiVersion)}`);
  }
  if (body.kind !== "AdmissionReview") problems.push(`kind: must be "AdmissionReview", got ${describe(body.kind)}`);
  const r = body.request;
  if (!isObject(r)) {
    problems.push(`request: must be an object, got ${describe(r)}`);
    return { ok: false, message: problems.join("; ") };
  }
  const uid = typeof r.uid === "string" ? r.uid : undefined;
  if (!uid) problems.push(`request.uid: must be a non-empty string, got ${describe(r.uid)}`);
  checkTriple(r.kind, "request.kind", ["group", "version", "kind"], problems);
  checkTriple(r.resource, "request.resource", ["group", "version", "resource"], problems);
  if (!OPERATIONS.includes(r.operation)) {
    problems.push(`request.operation: must be one of ${OPERATIONS.join(", ")}, got ${describe(r.operation)}`);
  }
  for (const f of ["subResource", "name", "namespace"] as const) {
    if (r[f] !== undefined && typeof r[f] !== "string") problems.push(`request.${f}: must be a string, got ${describe(r[f])}`);
  }
  if (r.userInfo !== undefined && !isObject(r.userInfo)) problems.push(`request.userInfo: must be an object, got ${describe(r.userInfo)}`);
  if (r.dryRun !== undefined && typeof r.dryRun !== "boolean") problems.push(`request.dryRun: must be a boolean, got ${describe(r.dryRun)}`);
  for (const f of ["object", "oldObject"] as const) {
    if (r[f] !== undefined && r[f] !== null && !isObject(r[f])) problems.push(`request.${f}: must be an object or null, got ${describe(r[f])}`);
  }
  if ((r.operation === "CREATE" || r.operation === "UPDATE") && !isObject(r.object)) {
    problems.push(`request.object: must be present for ${r.operation}`);
  }
  if (problems.length) return { ok: false, message: problems.join("; "), uid };
  return { ok: true, request: { ...r, userInfo: r.userInfo ?? {} } as AdmissionRequest };
}

// Recursion stops at `levelsLeft`, so measuring cannot overflow the stack however deep the body goes;
// for-in over freshly parsed objects is about twice as fast as an explicit stack of Object.values.
function nestedDeeperThan(value: object, levelsLeft: number): boolean {
  if (levelsLeft === 0) return true;
  if (Array.isArray(value)) {
    for (const child of value) if (typeof child === "object" && child !== null && nestedDeeperThan(child, levelsLeft - 1)) return true;
    return false;
  }
  for (const key in value) {
    const child = (value as Record<string, unknown>)[key];
    if (typeof child === "object" && child !== null && nestedDeeperThan(child, levelsLeft - 1)) return true;
  }
  return false;
}

function checkTriple(v: unknown, path: string, keys: string[], problems: string[]) {
  if (!isObject(v)) {
    problems.push(`${path}: must be an object with ${keys.join(", ")}, got ${describe(v)}`);
    return;
  }
  for (const k of keys) if (typeof v[k] !== "string") problems.push(`${path}.${k}: must be a string, got ${describe(v[k])}`);
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

export function wrapResponse(response: AdmissionResponse): AdmissionReview {
  return { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response };
}
