// The HorizontalPodAutoscaler infergate keeps for a plain GPU Deployment (PRODUCT.md §4, §6). Pure:
// Deployments, HPAs and the effective policy in, the HPA each Deployment should have and the changes
// that get there out. The reconciler (reconciler.ts) does the I/O.
//
// Where the settings come from, per field: the Deployment's own annotations first, then the policy's
// `defaults.autoscaling`, then (for the replica bounds) the policy's `rules.replicas`:
//
//   infergate.dev/autoscaling-metric         concurrency | rps | latency, or "none" to opt out
//   infergate.dev/autoscaling-target         per-pod target: requests in flight, requests per second,
//                                            or p95 latency in milliseconds; a decimal number
//   infergate.dev/autoscaling-min-replicas   at least 1 (an HPA cannot scale a Deployment to zero)
//   infergate.dev/autoscaling-max-replicas   at least min-replicas, at most the policy's rules.replicas.max
//
// The metrics are the adapter's (src/adapter/mapping.ts), as `Pods` metrics with an AverageValue target:
// latency → inference_latency_p95_ms, concurrency → inference_concurrency, rps →
// inference_requests_per_second. A metric chosen by annotation needs a target from the annotation too
// when the policy's target is for another metric: 10 requests in flight is not 10 ms.
//
// Ownership: the HPA is named after the Deployment, labelled app.kubernetes.io/managed-by=infergate and
// owned by the Deployment (controller: true), so garbage collection removes it with the Deployment. A
// Deployment that another HPA already scales is left alone, and infergate's own HPA is removed then:
// two HPAs on one Deployment fight. Settings that cannot be read (a malformed annotation) leave the HPA
// as it is, so a typo never removes autoscaling from a running service; the problems are reported.
import type { MetricName } from "../adapter/mapping.ts";
import type { AutoscalingMetric, EffectivePolicy } from "../policy/types.ts";
import { AUTOSCALING_METRICS } from "../policy/types.ts";
import { isInferenceWorkload } from "../workload/gpu.ts";
import type { Workload } from "../workload/workload.ts";

export const AUTOSCALING_METRIC_ANNOTATION = "infergate.dev/autoscaling-metric";
export const AUTOSCALING_TARGET_ANNOTATION = "infergate.dev/autoscaling-target";
export const AUTOSCALING_MIN_REPLICAS_ANNOTATION = "infergate.dev/autoscaling-min-replicas";
export const AUTOSCALING_MAX_REPLICAS_ANNOTATION = "infergate.dev/autoscaling-max-replicas";
/** The value of the metric annotation that turns infergate's autoscaling off for one Deployment. */
export const AUTOSCALING_OFF = "none";

export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
export const MANAGED_BY = "infergate";
export const HPA_API_VERSION = "autoscaling/v2";

export const HPA_METRIC_OF: Readonly<Record<AutoscalingMetric, MetricName>> = {
  latency: "inference_latency_p95_ms",
  concurrency: "inference_concurrency",
  rps: "inference_requests_per_second",
};

/** HPA replica counts are int32. */
const INT32_MAX = 2_147_483_647;

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
}

export interface PodsMetricSpec {
  type: "Pods";
  pods: { metric: { name: string }; target: { type: "AverageValue"; averageValue: string } };
}

export interface HorizontalPodAutoscaler {
  apiVersion: string;
  kind: "HorizontalPodAutoscaler";
  metadata: {
    name: string;
    namespace: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: OwnerReference[];
    deletionTimestamp?: unknown;
    managedFields?: unknown;
    [key: string]: unknown;
  };
  spec: {
    scaleTargetRef: { apiVersion?: string; kind: string; name: string };
    minReplicas?: number;
    maxReplicas: number;
    metrics?: any[];
    [key: string]: unknown;
  };
  status?: unknown;
}

export interface AutoscalingSettings {
  metric: AutoscalingMetric;
  target: number;
  minReplicas: number;
  maxReplicas: number;
}

/** A setting that cannot be used: where it is, what it says, and what would be accepted. */
export interface AutoscalingProblem {
  field: string;
  value: unknown;
  allowed: string;
}

export type SettingsResult =
  | { kind: "off"; reason: string }
  | { kind: "on"; settings: AutoscalingSettings }
  | { kind: "invalid"; problems: AutoscalingProblem[] };

type PolicyPart = Pick<EffectivePolicy, "defaults" | "rules">;

function annotationPath(key: string): string {
  return `metadata.annotations["${key}"]`;
}

const DECIMAL = /^\s*\d+(\.\d+)?\s*$/;
const WHOLE = /^\s*\d+\s*$/;

/**
 * The autoscaling settings of one Deployment from its annotations and its effective policy. Every
 * problem is reported, not just the first.
 */
export function autoscalingSettings(annotations: Record<string, string> | undefined, policy: PolicyPart | undefined): SettingsResult {
  const defaults = policy?.defaults.autoscaling ?? {};
  const replicaRule = policy?.rules.replicas ?? {};
  const problems: AutoscalingProblem[] = [];
  const note = (key: string, value: unknown, allowed: string) => problems.push({ field: annotationPath(key), value, allowed });

  const metricText = annotations?.[AUTOSCALING_METRIC_ANNOTATION]?.trim();
  let metric: AutoscalingMetric | undefined = defaults.metric;
  let metricFromAnnotation = false;
  if (metricText !== undefined) {
    if (metricText === AUTOSCALING_OFF) return { kind: "off", reason: `annotation ${AUTOSCALING_METRIC_ANNOTATION} is "${AUTOSCALING_OFF}"` };
    if ((AUTOSCALING_METRICS as readonly string[]).includes(metricText)) {
      metric = metricText as AutoscalingMetric;
      metricFromAnnotation = metric !== defaults.metric;
    } else {
      note(AUTOSCALING_METRIC_ANNOTATION, annotations![AUTOSCALING_METRIC_ANNOTATION], `one of ${[...AUTOSCALING_METRICS, AUTOSCALING_OFF].join(", ")}`);
    }
  }

  const targetText = annotations?.[AUTOSCALING_TARGET_ANNOTATION];
  let target: number | undefined;
  if (targetText !== undefined) {
    const n = DECIMAL.test(targetText) ? Number(targetText) : Number.NaN;
    if (Number.isFinite(n) && Math.round(n * 1000) >= 1) target = n;
    else note(AUTOSCALING_TARGET_ANNOTATION, targetText, "a decimal number of at least 0.001, e.g. \"200\" (ms for latency) or \"10\"");
  } else if (!metricFromAnnotation) {
    target = defaults.target;
  }

  const replicas = (key: string): number | undefined => {
    const text = annotations?.[key];
    if (text === undefined) return undefined;
    const n = WHOLE.test(text) ? Number(text) : Number.NaN;
    if (Number.isInteger(n) && n >= 1 && n <= INT32_MAX) return n;
    note(key, text, "a whole number of at least 1");
    return undefined;
  };
  const minFromAnnotation = replicas(AUTOSCALING_MIN_REPLICAS_ANNOTATION);
  const maxFromAnnotation = replicas(AUTOSCALING_MAX_REPLICAS_ANNOTATION);

  if (problems.length > 0) return { kind: "invalid", problems };
  if (metric === undefined) {
    const annotated = [AUTOSCALING_TARGET_ANNOTATION, AUTOSCALING_MIN_REPLICAS_ANNOTATION, AUTOSCALING_MAX_REPLICAS_ANNOTATION].filter((key) => annotations?.[key] !== undefined);
    if (annotated.length === 0) return { kind: "off", reason: "no autoscaling metric in the policy or the annotations" };
    return {
      kind: "invalid",
      problems: [{ field: annotationPath(AUTOSCALING_METRIC_ANNOTATION), value: undefined, allowed: `one of ${AUTOSCALING_METRICS.join(", ")}: ${annotated.join(", ")} given without a metric` }],
    };
  }
  if (target === undefined || !(Math.round(target * 1000) >= 1)) {
    const why = metricFromAnnotation && defaults.target !== undefined ? `the policy's target ${defaults.target} is for metric ${defaults.metric ?? "(none)"}` : "the policy sets no target";
    return { kind: "invalid", problems: [{ field: annotationPath(AUTOSCALING_TARGET_ANNOTATION), value: undefined, allowed: `a target for metric ${metric}: ${why}` }] };
  }

  // Zero is Knative's scale-to-zero; an HPA keeps at least one pod.
  const minReplicas = Math.max(1, minFromAnnotation ?? defaults.minReplicas ?? replicaRule.min ?? 1);
  const ruleMax = replicaRule.max;
  let maxReplicas = maxFromAnnotation ?? defaults.maxReplicas ?? ruleMax;
  if (maxFromAnnotation !== undefined && ruleMax !== undefined && maxFromAnnotation > ruleMax) {
    problems.push({ field: annotationPath(AUTOSCALING_MAX_REPLICAS_ANNOTATION), value: String(maxFromAnnotation), allowed: `at most ${ruleMax} (the policy's rules.replicas.max)` });
  } else if (maxReplicas !== undefined && ruleMax !== undefined && maxReplicas > ruleMax) {
    // The policy contradicts itself; its rule is what admission enforces on every scale-up.
    maxReplicas = ruleMax;
  }
  if (maxReplicas === undefined) {
    problems.push({ field: annotationPath(AUTOSCALING_MAX_REPLICAS_ANNOTATION), value: undefined, allowed: "a whole number of at least 1: neither the policy's defaults.autoscaling nor rules.replicas set a maximum" });
  } else if (maxReplicas < minReplicas) {
    const field = maxFromAnnotation !== undefined ? AUTOSCALING_MAX_REPLICAS_ANNOTATION : AUTOSCALING_MIN_REPLICAS_ANNOTATION;
    const value = maxFromAnnotation !== undefined ? String(maxReplicas) : String(minReplicas);
    problems.push({ field: annotationPath(field), value, allowed: `min-replicas (${minReplicas}) at most max-replicas (${maxReplicas})` });
  }
  if (problems.length > 0) return { kind: "invalid", problems };
  return { kind: "on", settings: { metric, target, minReplicas, maxReplicas: maxReplicas! } };
}

/** A Quantity for a target: whole numbers plain, anything finer in milli-units. */
export function targetQuantity(value: number): string {
  const milli = Math.round(value * 1000);
  return milli % 1000 === 0 ? String(milli / 1000) : `${milli}m`;
}

const SUFFIX: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/**
 * A Kubernetes Quantity as a number. The API server rewrites quantities in canonical form ("1000" is
 * stored as "1k"), so infergate compares values, not strings.
 */
export function parseQuantity(text: unknown): number | undefined {
  if (typeof text === "number") return Number.isFinite(text) ? text : undefined;
  if (typeof text !== "string") return undefined;
  const match = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$/.exec(text.trim());
  if (!match) return undefined;
  const base = Number(match[1]);
  if (match[2]) return base * 10 ** Number(match[2].slice(1));
  return base * SUFFIX[match[3] ?? ""]!;
}

function deploymentAsWorkload(deployment: any): Workload {
  return {
    kind: "Deployment",
    role: "deployment",
    namespace: deployment?.metadata?.namespace ?? "",
    name: deployment?.metadata?.name ?? "",
    object: deployment,
    templatePath: "spec.template",
  };
}

/** Deployments Knative made for a Revision are autoscaled by Knative (its KPA, or its own HPA class). */
function ownedByKnative(deployment: any): boolean {
  return (deployment?.metadata?.ownerReferences ?? []).some((ref: any) => ref?.kind === "Revision" && String(ref?.apiVersion ?? "").startsWith("serving.knative.dev/"));
}

export function desiredHpa(deployment: any, settings: AutoscalingSettings): HorizontalPodAutoscaler {
  const name: string = deployment.metadata.name;
  return {
    apiVersion: HPA_API_VERSION,
    kind: "HorizontalPodAutoscaler",
    metadata: {
      name,
      namespace: deployment.metadata.namespace,
      labels: { [MANAGED_BY_LABEL]: MANAGED_BY },
      // No blockOwnerDeletion: it needs the finalizers permission on Deployments, and nothing here must
      // outlive the Deployment anyway.
      ownerReferences: [{ apiVersion: "apps/v1", kind: "Deployment", name, uid: deployment.metadata.uid, controller: true }],
    },
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name },
      minReplicas: settings.minReplicas,
      maxReplicas: settings.maxReplicas,
      metrics: [
        {
          type: "Pods",
          pods: { metric: { name: HPA_METRIC_OF[settings.metric] }, target: { type: "AverageValue", averageValue: targetQuantity(settings.target) } },
        } satisfies PodsMetricSpec,
      ],
    },
  };
}

/** What the reconciler needs of a namespace: its effective policy, or undefined outside every Project. */
export type NamespaceResolver = (namespace: string) => { policy: PolicyPart } | undefined;

export type AutoscalingDecision =
  | { kind: "off"; reason: string }
  | { kind: "hpa"; hpa: HorizontalPodAutoscaler; settings: AutoscalingSettings }
  | { kind: "invalid"; problems: AutoscalingProblem[] };

/** Whether infergate autoscales this Deployment, and with which HPA. Ignores other HPAs (see planHpas). */
export function decideAutoscaling(deployment: any, resolveNamespace: NamespaceResolver): AutoscalingDecision {
  const namespace = deployment?.metadata?.namespace;
  if (!namespace || !deployment?.metadata?.name || !deployment?.metadata?.uid) return { kind: "off", reason: "not a stored Deployment (no name, namespace or uid)" };
  const resolved = resolveNamespace(namespace);
  if (!resolved) return { kind: "off", reason: `namespace ${namespace} belongs to no Project` };
  if (ownedByKnative(deployment)) return { kind: "off", reason: "a Knative revision's Deployment: Knative autoscales it" };
  if (!isInferenceWorkload(deploymentAsWorkload(deployment))) return { kind: "off", reason: "not an inference workload (no GPU request, no infergate.dev/inference label)" };
  const result = autoscalingSettings(deployment.metadata.annotations, resolved.policy);
  if (result.kind !== "on") return result;
  return { kind: "hpa", hpa: desiredHpa(deployment, result.settings), settings: result.settings };
}

export function isManaged(hpa: { metadata?: { labels?: Record<string, string> } } | undefined): boolean {
  return hpa?.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY;
}

/** Does this HPA scale the Deployment `name` (in its own namespace)? */
export function scalesDeployment(hpa: HorizontalPodAutoscaler, name: string): boolean {
  const ref = hpa.spec?.scaleTargetRef;
  return ref?.kind === "Deployment" && ref.name === name && (ref.apiVersion === undefined || String(ref.apiVersion).startsWith("apps/"));
}

function sameOwners(a: OwnerReference[] | undefined, b: OwnerReference[] | undefined): boolean {
  const uids = (refs: OwnerReference[] | undefined) => (refs ?? []).map((r) => `${r.uid}:${r.controller === true}`).sort().join(",");
  return uids(a) === uids(b);
}

function sameMetrics(observed: readonly any[] | undefined, desired: readonly any[] | undefined): boolean {
  if ((observed?.length ?? 0) !== (desired?.length ?? 0)) return false;
  return (desired ?? []).every((want, i) => {
    const have = observed![i];
    if (have?.type !== want.type || want.type !== "Pods") return false;
    const h = have.pods;
    const w = want.pods;
    return (
      h?.metric?.name === w.metric.name &&
      h?.metric?.selector === undefined &&
      h?.target?.type === w.target.type &&
      parseQuantity(h?.target?.averageValue) === parseQuantity(w.target.averageValue)
    );
  });
}

/** Does the existing HPA already say what infergate wants? Quantities compare by value. */
export function upToDate(observed: HorizontalPodAutoscaler, desired: HorizontalPodAutoscaler): boolean {
  const o = observed.spec;
  const d = desired.spec;
  return (
    isManaged(observed) &&
    o?.scaleTargetRef?.kind === d.scaleTargetRef.kind &&
    o?.scaleTargetRef?.name === d.scaleTargetRef.name &&
    o?.scaleTargetRef?.apiVersion === d.scaleTargetRef.apiVersion &&
    (o?.minReplicas ?? 1) === d.minReplicas &&
    o?.maxReplicas === d.maxReplicas &&
    sameMetrics(o?.metrics, d.metrics) &&
    sameOwners(observed.metadata.ownerReferences, desired.metadata.ownerReferences)
  );
}

/**
 * The object to write over `observed`: its metadata (resourceVersion included, so the write is a
 * compare-and-swap) and spec fields infergate does not set (such as `behavior`, which an admin may tune
 * by hand) kept, infergate's fields set.
 */
export function mergedHpa(observed: HorizontalPodAutoscaler, desired: HorizontalPodAutoscaler): HorizontalPodAutoscaler {
  const { managedFields: _managedFields, ...metadata } = observed.metadata;
  return {
    ...observed,
    apiVersion: desired.apiVersion,
    kind: desired.kind,
    metadata: { ...metadata, labels: { ...metadata.labels, ...desired.metadata.labels }, ownerReferences: desired.metadata.ownerReferences },
    spec: { ...observed.spec, ...desired.spec },
  };
}

export interface HpaPlan {
  create: HorizontalPodAutoscaler[];
  update: Array<{ observed: HorizontalPodAutoscaler; desired: HorizontalPodAutoscaler }>;
  delete: HorizontalPodAutoscaler[];
  /** Deployments left to an HPA infergate did not make (it scales them, or holds the name). */
  foreign: Array<{ deployment: string; hpa: string }>;
  /** Deployments whose settings cannot be read; their HPA, if any, is left as it is. */
  problems: Array<{ deployment: string; problems: AutoscalingProblem[] }>;
}

export interface HpaPlanInput {
  deployments: readonly any[];
  hpas: readonly HorizontalPodAutoscaler[];
  resolveNamespace: NamespaceResolver;
}

const keyOf = (namespace: string, name: string) => `${namespace}/${name}`;

/**
 * What to change. A managed HPA is deleted only when its owning Deployment is in the cache and no
 * longer wants it (settings gone, no longer a GPU workload, namespace left every Project, another HPA
 * took over); an HPA whose Deployment is gone is left to garbage collection, so a cache that is still
 * filling never deletes anything.
 */
export function planHpas(input: HpaPlanInput): HpaPlan {
  const plan: HpaPlan = { create: [], update: [], delete: [], foreign: [], problems: [] };
  const byName = new Map<string, HorizontalPodAutoscaler>();
  const foreignByTarget = new Map<string, HorizontalPodAutoscaler>();
  for (const hpa of input.hpas) {
    const namespace = hpa.metadata?.namespace ?? "";
    byName.set(keyOf(namespace, hpa.metadata?.name ?? ""), hpa);
    const target = hpa.spec?.scaleTargetRef;
    if (!isManaged(hpa) && target?.name && scalesDeployment(hpa, target.name)) {
      const key = keyOf(namespace, target.name);
      if (!foreignByTarget.has(key)) foreignByTarget.set(key, hpa);
    }
  }

  // Per Deployment uid: the HPA it should have (undefined: none), or "keep" for unreadable settings.
  const wanted = new Map<string, string | undefined | "keep">();
  for (const deployment of input.deployments) {
    const uid: string | undefined = deployment?.metadata?.uid;
    if (!uid || deployment.metadata.deletionTimestamp) continue;
    const key = keyOf(deployment.metadata.namespace, deployment.metadata.name);
    const decision = decideAutoscaling(deployment, input.resolveNamespace);
    if (decision.kind === "invalid") {
      plan.problems.push({ deployment: key, problems: decision.problems });
      wanted.set(uid, "keep");
      continue;
    }
    if (decision.kind === "off") {
      wanted.set(uid, undefined);
      continue;
    }
    const foreign = foreignByTarget.get(key);
    if (foreign) {
      plan.foreign.push({ deployment: key, hpa: keyOf(foreign.metadata.namespace, foreign.metadata.name) });
      wanted.set(uid, undefined);
      continue;
    }
    const desired = decision.hpa;
    const hpaKey = keyOf(desired.metadata.namespace, desired.metadata.name);
    const existing = byName.get(hpaKey);
    if (existing && !isManaged(existing)) {
      plan.foreign.push({ deployment: key, hpa: hpaKey });
      wanted.set(uid, undefined);
      continue;
    }
    wanted.set(uid, hpaKey);
    if (!existing) plan.create.push(desired);
    else if (!existing.metadata.deletionTimestamp && !upToDate(existing, desired)) plan.update.push({ observed: existing, desired });
  }

  for (const hpa of input.hpas) {
    if (!isManaged(hpa) || hpa.metadata.deletionTimestamp) continue;
    const hpaKey = keyOf(hpa.metadata.namespace, hpa.metadata.name);
    const owners = (hpa.metadata.ownerReferences ?? []).filter((ref) => ref.kind === "Deployment" && wanted.has(ref.uid));
    if (owners.length === 0) continue;
    // Kept while any owner in the cache still wants it here, or cannot say (unreadable settings).
    if (owners.some((ref) => wanted.get(ref.uid) === "keep" || wanted.get(ref.uid) === hpaKey)) continue;
    plan.delete.push(hpa);
  }
  return plan;
}

/** One line per problem, the way admission denials read: field, value, what is allowed. */
export function describeProblems(problems: readonly AutoscalingProblem[]): string {
  return problems.map((p) => `${p.field}: ${p.value === undefined ? "missing" : JSON.stringify(p.value)}; allowed: ${p.allowed}`).join("; ");
}
