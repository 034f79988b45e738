// Runs the plugin set over one admission request and turns the outcome into a response.
// Pure: everything it reads comes in as arguments; everything it produces is data.
import type { AdmissionRequest, AdmissionResponse, Violation } from "./types.ts";
import type { ClusterView, Context, Phase, Plugin } from "./plugin.ts";
import type { EffectivePolicy, Project } from "../policy/types.ts";
import { canSetPodField, podTemplate, templateFieldPath, toWorkload, type Workload } from "../workload/workload.ts";
import { isInferenceWorkload } from "../workload/gpu.ts";
import { allow, deny, formatViolation } from "./responses.ts";
import { diffJson } from "./json-diff.ts";

export interface PolicyResolver {
  /** The project owning `namespace` and its effective policy, or undefined: not an inference namespace. */
  resolve(namespace: string): { project: Project; policy: EffectivePolicy } | undefined;
}

export interface PipelineInput {
  request: AdmissionRequest;
  phase: Phase;
  plugins: readonly Plugin[];
  policies: PolicyResolver;
  cluster: ClusterView;
  /** Called with each plugin's duration, for the latency histogram. */
  onPluginTiming?: (plugin: string, seconds: number) => void;
}

export interface PipelineResult {
  response: AdmissionResponse;
  /** The mutated object (mutate phase), for `infergate apply`. */
  object?: unknown;
  violations: Violation[];
  warnings: string[];
  /** Why the request was passed over without work, for logs. */
  skipped?: string;
  project?: string;
}

export const WARNING_MAX = 120;

export function runPipeline(input: PipelineInput): PipelineResult {
  const { request, phase } = input;
  const skip = (why: string): PipelineResult => ({ response: allow(request.uid), violations: [], warnings: [], skipped: why });

  if (request.operation !== "CREATE" && request.operation !== "UPDATE") return skip(`operation ${request.operation}`);
  const original = request.object;
  const object = phase === "mutate" ? copyJson(original) : original;
  const workload = toWorkload(request, object);
  if (!workload) return skip("not a kind infergate handles");
  if (!workload.namespace) return skip("cluster-scoped");
  const resolved = input.policies.resolve(workload.namespace);
  if (!resolved) return skip("namespace belongs to no Project");

  const old = request.operation === "UPDATE" && request.oldObject ? toWorkload(request, request.oldObject) : undefined;
  const warnings: string[] = [];
  const violations: Violation[] = [];
  let current = "";

  const ctx: Context = {
    request,
    workload,
    old,
    project: resolved.project,
    policy: resolved.policy,
    cluster: input.cluster,
    inference: workload.role === "scale" ? scaleTargetsGpuWorkload(workload, input.cluster) : isInferenceWorkload(workload, old),
    template: () => podTemplate(workload),
    canSet: (field) => canSetPodField(workload, field, input.cluster.knativeFeatures),
    path: (sub) => templateFieldPath(workload, sub),
    warn: (message) => {
      const text = message.length > WARNING_MAX ? `${message.slice(0, WARNING_MAX - 1)}…` : message;
      if (!warnings.includes(text)) warnings.push(text);
    },
    violation: (field, value, allowed, extra) => violations.push({ field, value, allowed, plugin: current, ...extra }),
  };

  for (const plugin of input.plugins) {
    const run = phase === "mutate" ? plugin.mutate : plugin.validate;
    if (!run || !plugin.appliesTo(ctx)) continue;
    current = plugin.name;
    const start = performance.now();
    run.call(plugin, ctx);
    input.onPluginTiming?.(plugin.name, (performance.now() - start) / 1000);
  }

  const project = resolved.project.metadata.name;
  if (phase === "mutate") {
    const patch = diffJson(original, object);
    return {
      response: allow(request.uid, warnings, patch.length ? patch : undefined),
      object,
      violations,
      warnings,
      project,
    };
  }
  return { ...decide(request.uid, workload, resolved.policy, violations, warnings), object, project };
}

/**
 * A Scale carries no template, so whether it scales a GPU workload is read from the cache of charged
 * Deployments. Without any usage view (nothing to look in) it is treated as one, so nothing slips past.
 */
function scaleTargetsGpuWorkload(workload: Workload, cluster: ClusterView): boolean {
  if (!cluster.quota?.charge) return true;
  return cluster.quota.charge("Deployment", workload.namespace, workload.name) !== undefined;
}

/**
 * The copy plugins edit in the mutate phase. structuredClone runs V8's serializer: on the 7.5 KB vLLM
 * Deployment of the benchmark it took 38 µs where this takes 6 µs, half of the whole decision
 * (BENCHMARKS.md). The object was parsed from JSON, so a plain copy is exact; parseReview's depth limit
 * bounds the recursion.
 */
export function copyJson(value: unknown): any {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(copyJson);
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const child = copyJson((value as Record<string, unknown>)[key]);
    // JSON.parse makes "__proto__" an own key; assigning it would set the copy's prototype instead.
    if (key === "__proto__") Object.defineProperty(copy, key, { value: child, enumerable: true, writable: true, configurable: true });
    else copy[key] = child;
  }
  return copy;
}

/**
 * The API server may cut admission warnings longer than this (admission.k8s.io/v1 AdmissionResponse).
 * An injected default says what it did in WARNING_MAX; a violation let through under `enforcement: warn`
 * keeps what is allowed, which is what the user needs, and may use up to this.
 */
export const WARNED_VIOLATION_MAX = 256;

/** The value is dropped first (the user wrote it), then the text is cut. */
function warnedViolation(v: Violation): string {
  const full = `policy (warn): ${formatViolation(v)}`;
  if (full.length <= WARNED_VIOLATION_MAX) return full;
  const short = `policy (warn): ${v.field}: ${v.allowed}`;
  return short.length <= WARNED_VIOLATION_MAX ? short : `${short.slice(0, WARNED_VIOLATION_MAX - 1)}…`;
}

/** Under `enforcement: warn`, policy violations become warnings; quota and invalid input always deny. */
function decide(uid: string, workload: Workload, policy: EffectivePolicy, violations: Violation[], warnings: string[]) {
  const blocking = violations.filter((v) => policy.enforcement === "enforce" || (v.reason ?? "PolicyViolation") !== "PolicyViolation");
  const warned = violations.filter((v) => !blocking.includes(v));
  const allWarnings = [...warnings, ...warned.map(warnedViolation)];
  if (blocking.length === 0) return { response: allow(uid, allWarnings), violations, warnings: allWarnings };
  return { response: deny(uid, workload, blocking, allWarnings), violations, warnings: allWarnings };
}
