// `infergate apply`: offline evaluation, like `kyverno apply`. It builds the AdmissionReview the API
// server would send and runs it through the webhook's own handler, so the two cannot disagree.
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import fastJsonPatch from "fast-json-patch";
import { stringify } from "yaml";
import { handleAdmission, type AdmissionDeps } from "../admission/handler.ts";
import type { AdmissionRequest, AdmissionResponse, AdmissionReview } from "../admission/types.ts";
import { PolicyStore } from "../policy/store.ts";
import { plugins } from "../../webhooks/index.ts";
import { createAdmissionMetrics } from "../observability/metrics.ts";
import { createLogger } from "../observability/log.ts";
import { loadObjects, loadPolicyInput } from "../policy/sources.ts";
import { reviewPolicyRequest } from "../policy/validation.ts";
import { resourceFor, sameObject } from "../workload/kinds.ts";
import { parseFlags, UsageError } from "./flags.ts";
import { offlineQuotaView } from "../quota/offline.ts";

const HELP = `usage: infergate apply --policy FILE... --resource FILE [--cluster FILE]

  --policy FILE     Projects and InferencePolicies (YAML stream or kind: List); repeatable
  --resource FILE   the object(s) to admit, as kubectl would send them
  --cluster FILE    existing objects (kubectl get projects,deployments,ksvc -A -o yaml): usage for quota, the
                    old object for an UPDATE, and knative-serving/config-features if present

Prints each admitted object as YAML on stdout and warnings on stderr, or the denial on stderr.
Exit status: 0 admitted, 1 denied, 2 bad input.`;

export async function runApply(argv: string[], out = process.stdout, err = process.stderr): Promise<number> {
  let flags;
  try {
    flags = parseFlags(
      argv,
      { policy: { type: "string", multiple: true }, resource: { type: "string" }, cluster: { type: "string" }, help: { type: "boolean" } },
      "apply",
    ).values;
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (flags.help) {
    out.write(`${HELP}\n`);
    return 0;
  }
  if (!flags.resource) {
    err.write(`infergate apply: --resource FILE is required\n\n${HELP}\n`);
    return 2;
  }
  const read = (file: string) => {
    try {
      return { name: file, text: readFileSync(file, "utf8") };
    } catch (e) {
      throw new UsageError(`infergate apply: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  let policyInput, clusterInput, resourceInput;
  try {
    policyInput = loadPolicyInput(flags.policy ?? []);
    clusterInput = flags.cluster ? loadObjects(read(flags.cluster)) : undefined;
    resourceInput = loadObjects(read(flags.resource));
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const errors = [...policyInput.errors, ...(clusterInput?.errors ?? []), ...resourceInput.errors];
  if (errors.length) {
    err.write(`infergate apply: bad input:\n  ${errors.join("\n  ")}\n`);
    return 2;
  }
  const resources = resourceInput.all;
  if (resources.length === 0) {
    err.write(`infergate apply: ${flags.resource} holds no object\n`);
    return 2;
  }

  const store = new PolicyStore();
  clusterInput?.fill(store);
  policyInput.fill(store);
  const existing = clusterInput?.all ?? [];
  const deps = offlineDeps(store, existing, (line) => err.write(line));

  let denied = false;
  const admitted: unknown[] = [];
  for (const object of resources) {
    if (!resourceFor(object)) {
      err.write(`infergate apply: ${describe(object)}: needs apiVersion, kind and metadata.name\n`);
      return 2;
    }
    const problems = metadataProblems(object);
    if (problems.length) {
      // The API server refuses these before any webhook sees them (e.g. an unquoted `min-scale: 1`).
      err.write(`infergate apply: ${describe(object)}: ${problems.join("; ")}\n`);
      return 2;
    }
    const { mutated, validated, result } = await admitOffline(object, existing, deps);
    for (const w of [...(mutated.warnings ?? []), ...(validated.warnings ?? [])]) err.write(`Warning: ${w}\n`);
    if (!validated.allowed) {
      denied = true;
      err.write(`Error from server (${validated.status?.reason ?? "Forbidden"}): admission webhook "infergate" denied the request: ${validated.status?.message}\n`);
      continue;
    }
    admitted.push(result);
  }
  out.write(admitted.map((o) => stringify(o)).join("---\n"));
  return denied ? 1 : 0;
}

/** The webhook's handler dependencies over a store filled from files; `existing` is the --cluster stream. */
export function offlineDeps(store: PolicyStore, existing: readonly any[], writeLog: (line: string) => void): AdmissionDeps {
  const quota = offlineQuotaView(existing, store);
  return {
    plugins,
    policies: store,
    cluster: () => ({ knativeFeatures: store.knativeFeatures, quota }),
    metrics: createAdmissionMetrics({ defaults: false }),
    logger: createLogger("error", writeLog),
    reviewOwnKinds: (request) => reviewPolicyRequest(request, store),
  };
}

export interface OfflineAdmission {
  request: AdmissionRequest;
  mutated: AdmissionResponse;
  validated: AdmissionResponse;
  /** The object with the mutation's patch applied: what the API server would store, and `apply` prints. */
  result: any;
}

/**
 * One object through both webhooks, as the API server would send it: the mutating review, its patch
 * applied, then the validating review of the result. An object that matches one in `existing` is an
 * UPDATE of it. `object` needs apiVersion, kind and metadata.name (see resourceFor).
 */
export async function admitOffline(object: any, existing: readonly any[], deps: AdmissionDeps): Promise<OfflineAdmission> {
  const target = resourceFor(object);
  if (!target) throw new UsageError(`infergate apply: ${describe(object)}: needs apiVersion, kind and metadata.name`);
  const old = existing.find((o) => sameObject(o, object));
  if (target.namespaced && !object.metadata?.namespace) object = { ...object, metadata: { ...object.metadata, namespace: "default" } };
  const request: AdmissionRequest = {
    uid: randomUUID(),
    kind: target.kind,
    resource: target.resource,
    requestKind: target.kind,
    requestResource: target.resource,
    name: object.metadata.name,
    namespace: target.namespaced ? object.metadata.namespace : undefined,
    operation: old ? "UPDATE" : "CREATE",
    userInfo: { username: "infergate-apply" },
    object,
    oldObject: old ?? null,
    dryRun: true,
  };
  const mutated = await review("mutate", request, deps);
  let result = object;
  if (mutated.patch) {
    const patch = JSON.parse(Buffer.from(mutated.patch, "base64").toString("utf8"));
    result = fastJsonPatch.applyPatch(structuredClone(object), patch, false, false).newDocument;
  }
  const validated = await review("validate", { ...request, object: result }, deps);
  return { request, mutated, validated, result };
}

async function review(phase: "mutate" | "validate", request: AdmissionRequest, deps: AdmissionDeps): Promise<AdmissionResponse> {
  const answer = await handleAdmission(phase, { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request }, deps);
  const response = (answer.body as AdmissionReview).response;
  if (answer.status !== 200 || !response) throw new Error(`internal: ${phase} answered HTTP ${answer.status}: ${JSON.stringify(answer.body)}`);
  return response;
}

/**
 * What the API server refuses while decoding, before any webhook: a name or namespace that is not a
 * string, labels and annotations that are not maps of strings (on the object and its pod template).
 */
function metadataProblems(object: any): string[] {
  const problems: string[] = [];
  for (const field of ["name", "namespace"] as const) {
    const value = object?.metadata?.[field];
    if (value !== undefined && value !== null && typeof value !== "string") {
      problems.push(`metadata.${field}: Invalid value: ${JSON.stringify(value)}: must be a string`);
    }
  }
  const check = (meta: any, path: string) => {
    for (const field of ["labels", "annotations"] as const) {
      const map = meta?.[field];
      if (map === undefined || map === null) continue;
      if (typeof map !== "object" || Array.isArray(map)) {
        problems.push(`${path}.${field}: must be a map of strings`);
        continue;
      }
      for (const [key, value] of Object.entries(map)) {
        if (typeof value !== "string") problems.push(`${path}.${field}[${key}]: Invalid value: ${JSON.stringify(value)}: must be a string (quote it in YAML)`);
      }
    }
  };
  check(object?.metadata, "metadata");
  check(object?.spec?.template?.metadata, "spec.template.metadata");
  return problems;
}

function describe(o: any): string {
  const name = o?.metadata?.name;
  return `${o?.kind ?? "object without kind"} ${typeof name === "string" ? name : "(no name)"}`;
}
