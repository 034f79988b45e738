// Knative Services: autoscaling annotations, request timeout and progress deadline from the policy's
// defaults, written only where the Service does not set them and only in forms Knative's own validation
// accepts (knative/serving pkg/apis/autoscaling/annotation_validation.go, revision_validation.go), so a
// Service under default Knative settings is never made invalid.
import type { Context, Plugin } from "../src/admission/plugin.ts";
import { peekTemplate } from "../src/workload/workload.ts";

const GROUP = "autoscaling.knative.dev";
export const CLASS_ANNOTATION = `${GROUP}/class`;
export const METRIC_ANNOTATION = `${GROUP}/metric`;
export const TARGET_ANNOTATION = `${GROUP}/target`;
export const MIN_SCALE_ANNOTATION = `${GROUP}/min-scale`;
export const MAX_SCALE_ANNOTATION = `${GROUP}/max-scale`;
export const RETENTION_ANNOTATION = `${GROUP}/scale-to-zero-pod-retention-period`;
export const PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline";

export const KPA_CLASS = "kpa.autoscaling.knative.dev";
export const HPA_CLASS = "hpa.autoscaling.knative.dev";
/** infergate's metric for latency autoscaling, served by its custom-metrics adapter (PRODUCT.md §6). */
export const LATENCY_METRIC = "inference_latency_p95_ms";

/** `config-defaults` `max-revision-timeout-seconds` as Knative ships it: a larger timeout is rejected. */
export const KNATIVE_MAX_REVISION_TIMEOUT_SECONDS = 600;
/** Knative bounds the retention period like its windows: 0 to 1h. */
const RETENTION_MAX_SECONDS = 3600;
/** Knative's lower bound for `autoscaling.knative.dev/target`. */
const TARGET_MIN = 0.01;

/** Legacy camelCase keys Knative still reads, after the canonical one. */
const ALIASES: Record<string, string[]> = {
  [MIN_SCALE_ANNOTATION]: [`${GROUP}/minScale`],
  [MAX_SCALE_ANNOTATION]: [`${GROUP}/maxScale`],
  [RETENTION_ANNOTATION]: [`${GROUP}/scaleToZeroPodRetentionPeriod`],
};

/** An annotation under its canonical key or a legacy alias, the way Knative reads it (canonical first). */
export function knativeAnnotation(annotations: Record<string, string> | undefined, key: string): { key: string; value: string } | undefined {
  for (const k of [key, ...(ALIASES[key] ?? [])]) {
    const value = annotations?.[k];
    if (value !== undefined) return { key: k, value };
  }
  return undefined;
}

const DURATION_UNITS: Record<string, number> = { ns: 1e-9, us: 1e-6, "µs": 1e-6, "μs": 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };
const DURATION = /^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/;
const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g;

/** Parses a Go duration ("10m", "1h30m", "500ms", "0") into seconds; undefined when it is not one. */
export function parseGoDuration(text: string): number | undefined {
  const s = text.trim();
  if (/^[-+]?0$/.test(s)) return 0;
  if (!DURATION.test(s)) return undefined;
  let seconds = 0;
  for (const [, amount, unit] of s.matchAll(DURATION_PART)) seconds += Number(amount) * DURATION_UNITS[unit!]!;
  return s.startsWith("-") ? -seconds : seconds;
}

/** A whole number the way Knative parses scale bounds; undefined when it is not one (or not a string). */
export function parseScale(text: unknown): number | undefined {
  if (typeof text !== "string" || !/^[-+]?\d+$/.test(text.trim())) return undefined;
  return Number(text.trim());
}

/**
 * Knative refuses a template change that keeps a user-chosen revision name ("Saw the following changes
 * without a name change"). On such an UPDATE infergate may only restore what the previous template
 * carried (a `kubectl replace` drops it), never add new defaults: this returns that previous template.
 */
export function pinnedRevisionTemplate(ctx: Context): { metadata?: any; spec?: any } | undefined {
  if (ctx.workload.role !== "knative-service" || ctx.request.operation !== "UPDATE") return undefined;
  const name = peekTemplate(ctx.workload)?.metadata?.name;
  const previous = peekTemplate(ctx.old);
  return name && previous?.metadata?.name === name ? previous : undefined;
}

/** What may be written into `current` given a pinned revision name: only values the previous template had. */
export function restorableOnly(wanted: Map<string, string>, previous: Record<string, string> | undefined): Map<string, string> {
  const kept = new Map<string, string>();
  for (const key of wanted.keys()) {
    const value = previous?.[key];
    if (typeof value === "string") kept.set(key, value);
  }
  return kept;
}

function isPositiveInteger(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n > 0;
}

function isStringMap(v: unknown): v is Record<string, string> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

/**
 * The class, metric and target annotations decide together what a target means (10 requests in flight
 * or 10 ms), so infergate fills them only where that cannot change the meaning of what the user wrote:
 * nothing set, or the policy's own metric already chosen.
 */
function autoscalingMetric(ctx: Context, annotations: Record<string, string>, writes: Map<string, string>): void {
  const { metric, target } = ctx.policy.defaults.autoscaling ?? {};
  const metricName = metric === "latency" ? LATENCY_METRIC : metric;
  const policyClass = metric === "latency" ? HPA_CLASS : KPA_CLASS;
  const userClass = annotations[CLASS_ANNOTATION];
  const userMetric = annotations[METRIC_ANNOTATION];
  const userTarget = annotations[TARGET_ANNOTATION];

  if (userClass !== undefined && userClass !== policyClass) return;
  const untouched = userMetric === undefined && userTarget === undefined;
  if (!untouched && (metricName === undefined || userMetric !== metricName)) return;

  // Concurrency and rps stay on Knative's default class (KPA); latency needs the HPA class and
  // infergate's metric. Knative truncates HPA targets to integers, so latency targets are whole ms.
  if (metric === "latency" && userClass === undefined) writes.set(CLASS_ANNOTATION, HPA_CLASS);
  if (metricName !== undefined && userMetric === undefined) writes.set(METRIC_ANNOTATION, metricName);
  if (userTarget === undefined && typeof target === "number" && Number.isFinite(target)) {
    const value = metric === "latency" ? Math.max(1, Math.round(target)) : target;
    if (value >= TARGET_MIN) writes.set(TARGET_ANNOTATION, String(value));
  }
}

/** Min and max scale, kept consistent with each other as Knative requires (max 0 = unlimited). */
function scaleBounds(ctx: Context, annotations: Record<string, string>, writes: Map<string, string>, notes: Map<string, string>): void {
  const autoscaling = ctx.policy.defaults.autoscaling ?? {};
  const range = ctx.policy.rules.replicas ?? {};
  const userMin = knativeAnnotation(annotations, MIN_SCALE_ANNOTATION);
  const userMax = knativeAnnotation(annotations, MAX_SCALE_ANNOTATION);

  // Without a default, the policy's replica range is the next best bound: it keeps the Service valid.
  let min = userMin ? undefined : (autoscaling.minReplicas ?? range.min);
  let max = userMax ? undefined : (autoscaling.maxReplicas ?? range.max);
  // KAI gangs a Knative revision with minMember = min-scale; 0 would leave the gang empty (PRODUCT.md §3).
  const gang = ctx.policy.scheduler.profile === "kai";
  if (!userMin && gang && (min === undefined || min < 1)) {
    min = 1;
    notes.set(MIN_SCALE_ANNOTATION, "KAI gang scheduling needs min-scale ≥ 1");
  }
  if (min !== undefined && !(Number.isInteger(min) && min > 0)) min = undefined;
  if (max !== undefined && !isPositiveInteger(max)) max = undefined;

  const effectiveMax = userMax ? (parseScale(userMax.value) ?? 0) : (max ?? 0);
  if (min !== undefined && effectiveMax !== 0 && min > effectiveMax) {
    ctx.warn(`infergate: min-scale ${min} not set: above max-scale ${effectiveMax}`);
    min = undefined;
  }
  const effectiveMin = userMin ? (parseScale(userMin.value) ?? 0) : (min ?? 0);
  if (max !== undefined && max < effectiveMin) {
    ctx.warn(`infergate: max-scale ${max} not set: below min-scale ${effectiveMin}`);
    max = undefined;
  }
  if (min !== undefined) writes.set(MIN_SCALE_ANNOTATION, String(min));
  else notes.delete(MIN_SCALE_ANNOTATION);
  if (max !== undefined) writes.set(MAX_SCALE_ANNOTATION, String(max));
}

function retention(ctx: Context, annotations: Record<string, string>, writes: Map<string, string>): void {
  const wanted = ctx.policy.defaults.autoscaling?.scaleToZeroRetention;
  if (wanted === undefined || knativeAnnotation(annotations, RETENTION_ANNOTATION)) return;
  const seconds = parseGoDuration(String(wanted));
  if (seconds === undefined || seconds < 0 || seconds > RETENTION_MAX_SECONDS) {
    ctx.warn(`infergate: scaleToZeroRetention "${wanted}" not set: Knative needs a duration from 0s to 1h`);
    return;
  }
  writes.set(RETENTION_ANNOTATION, String(wanted));
}

function progressDeadline(ctx: Context, annotations: Record<string, string>, writes: Map<string, string>): void {
  const seconds = ctx.policy.defaults.initializationTimeoutSeconds;
  if (annotations[PROGRESS_DEADLINE_ANNOTATION] !== undefined || !isPositiveInteger(seconds)) return;
  writes.set(PROGRESS_DEADLINE_ANNOTATION, `${seconds}s`);
}

function requestTimeout(ctx: Context): void {
  const spec = peekTemplate(ctx.workload)?.spec;
  if (spec?.timeoutSeconds !== undefined && spec?.timeoutSeconds !== null) return;
  const pinned = pinnedRevisionTemplate(ctx);
  const seconds = pinned ? pinned.spec?.timeoutSeconds : ctx.policy.defaults.requestTimeoutSeconds;
  if (!isPositiveInteger(seconds)) return;
  if (seconds > KNATIVE_MAX_REVISION_TIMEOUT_SECONDS) {
    ctx.warn(`infergate: timeoutSeconds ${seconds} not set: above Knative's default maximum of ${KNATIVE_MAX_REVISION_TIMEOUT_SECONDS}`);
    return;
  }
  ctx.template()!.spec.timeoutSeconds = seconds;
  ctx.warn(`infergate: set spec.template.spec.timeoutSeconds=${seconds} (${pinned ? "as before: revision name unchanged" : "policy default"})`);
}

export const knative: Plugin = {
  name: "knative",

  appliesTo: (ctx) => ctx.inference && ctx.workload.role === "knative-service",

  mutate(ctx) {
    const current: unknown = peekTemplate(ctx.workload)?.metadata?.annotations;
    // A malformed map is the API server's to reject; writing into it would hide the user's mistake.
    if (current === undefined || current === null || isStringMap(current)) {
      const annotations = current ?? {};
      const writes = new Map<string, string>();
      const notes = new Map<string, string>();
      autoscalingMetric(ctx, annotations, writes);
      scaleBounds(ctx, annotations, writes, notes);
      retention(ctx, annotations, writes);
      progressDeadline(ctx, annotations, writes);
      const pinned = pinnedRevisionTemplate(ctx);
      const allowed = pinned ? restorableOnly(writes, pinned.metadata?.annotations) : writes;
      if (allowed.size > 0) {
        const metadata = ctx.template()!.metadata;
        metadata.annotations ??= {};
        for (const [key, value] of allowed) {
          metadata.annotations[key] = value;
          const why = pinned ? "as before: revision name unchanged" : (notes.get(key) ?? "policy default");
          ctx.warn(`infergate: set ${key}=${value} (${why})`);
        }
      }
    }
    requestTimeout(ctx);
  },
};
