// Policy rules (PRODUCT.md §1 `rules`): replica ranges, Knative timeout ranges, allowed image registries,
// and the `locked` rule for tolerations, labels, annotations and node pools. (priorityClassName is
// locked in priority.ts; schedulerName and GPU settings where they are injected.)
//
// An UPDATE that leaves an existing violation as it was, or moves it toward the rule, is admitted with a
// warning instead: a tightened policy must not block unrelated edits, nor an HPA scaling back into range.
import type { Context, Plugin } from "../src/admission/plugin.ts";
import type { IntRange, Toleration } from "../src/policy/types.ts";
import { peekTemplate, type WorkloadRole } from "../src/workload/workload.ts";
import { allowedUnderLock, describeToleration, missingTolerations } from "./tolerations.ts";
import { poolLabelKey, poolLockProblems, projectPools } from "./node-pools.ts";
import {
  MAX_SCALE_ANNOTATION,
  MIN_SCALE_ANNOTATION,
  PROGRESS_DEADLINE_ANNOTATION,
  knativeAnnotation,
  parseGoDuration,
  parseScale,
} from "./knative.ts";

const ROLES: ReadonlySet<WorkloadRole> = new Set(["deployment", "knative-service", "bare-pod", "foreign-pod", "knative-pod", "scale"]);
/**
 * Roles whose template is the user's: images, labels and annotations are judged there, not on the pods.
 * A foreign pod's template is its controller's, which infergate never sees: the pod is judged instead.
 */
const USER_TEMPLATES: ReadonlySet<WorkloadRole> = new Set(["deployment", "knative-service", "bare-pod", "foreign-pod"]);

/** How far `value` lies outside `range` (0 inside it). */
function distance(value: number, range: IntRange): number {
  if (range.max !== undefined && value > range.max) return value - range.max;
  if (range.min !== undefined && value < range.min) return range.min - value;
  return 0;
}

function describeRange(range: IntRange, unit = ""): string {
  if (range.min !== undefined && range.max !== undefined) return `must be between ${range.min}${unit} and ${range.max}${unit}`;
  if (range.max !== undefined) return `must be at most ${range.max}${unit}`;
  return `must be at least ${range.min}${unit}`;
}

function hasBounds(range: IntRange | undefined): range is IntRange {
  return !!range && (range.min !== undefined || range.max !== undefined);
}

/** A violation, or only a warning when the object already broke the rule the same way before this UPDATE. */
function report(ctx: Context, existing: boolean, field: string, value: unknown, allowed: string): void {
  if (existing) ctx.warn(`infergate: ${field}=${JSON.stringify(value)} ${allowed} (already so before this update)`);
  else ctx.violation(field, value, allowed);
}

/** `value` against `range`, where `old` is the same quantity before this UPDATE (undefined on CREATE). */
function checkCount(ctx: Context, field: string, shown: unknown, value: number, old: number | undefined, range: IntRange, allowed = describeRange(range)): void {
  const off = distance(value, range);
  if (off === 0) return;
  const before = old === undefined ? 0 : distance(old, range);
  report(ctx, before > 0 && off <= before, field, shown, allowed);
}

/** Knative's max-scale 0 (or none) means unlimited: infinitely far above any maximum. */
function scaleBound(value: number): number {
  return value === 0 ? Number.POSITIVE_INFINITY : value;
}

function replicas(ctx: Context): void {
  const range = ctx.policy.rules.replicas;
  if (!hasBounds(range)) return;
  const { role } = ctx.workload;
  if (role === "deployment" || role === "scale") {
    const value = ctx.workload.replicas;
    if (value !== undefined) checkCount(ctx, "spec.replicas", value, value, ctx.old?.replicas, range);
    return;
  }
  if (role !== "knative-service") return;
  const annotations = peekTemplate(ctx.workload)?.metadata?.annotations;
  const oldAnnotations = ctx.old ? (peekTemplate(ctx.old)?.metadata?.annotations ?? {}) : undefined;
  // Unset means Knative's default (0); an unparseable value is Knative's to reject.
  const read = (a: Record<string, string> | undefined, key: string) => {
    const found = knativeAnnotation(a, key);
    return { found, value: found ? parseScale(found.value) : 0 };
  };

  if (range.max !== undefined) {
    const max = read(annotations, MAX_SCALE_ANNOTATION);
    const old = oldAnnotations ? read(oldAnnotations, MAX_SCALE_ANNOTATION).value : undefined;
    if (max.value !== undefined) {
      const field = ctx.path(`metadata.annotations[${max.found?.key ?? MAX_SCALE_ANNOTATION}]`);
      const allowed = `${describeRange({ min: 1, max: range.max })} (unset or 0 means unlimited)`;
      const before = old === undefined ? undefined : scaleBound(old);
      checkCount(ctx, field, max.found?.value ?? null, scaleBound(max.value), before, range, allowed);
    }
  }
  if (range.min !== undefined) {
    const min = read(annotations, MIN_SCALE_ANNOTATION);
    const old = oldAnnotations ? read(oldAnnotations, MIN_SCALE_ANNOTATION).value : undefined;
    if (min.value !== undefined) {
      const field = ctx.path(`metadata.annotations[${min.found?.key ?? MIN_SCALE_ANNOTATION}]`);
      checkCount(ctx, field, min.found?.value ?? null, min.value, old, range);
    }
  }
}

function timeouts(ctx: Context): void {
  if (ctx.workload.role !== "knative-service") return;
  const template = peekTemplate(ctx.workload);
  const before = peekTemplate(ctx.old);

  const requestRange = ctx.policy.rules.requestTimeoutSeconds;
  const timeout = template?.spec?.timeoutSeconds;
  if (hasBounds(requestRange) && typeof timeout === "number" && distance(timeout, requestRange) > 0) {
    const existing = before?.spec?.timeoutSeconds === timeout;
    report(ctx, existing, ctx.path("spec.timeoutSeconds"), timeout, `${describeRange(requestRange, "s")} (policy requestTimeoutSeconds)`);
  }

  const initRange = ctx.policy.rules.initializationTimeoutSeconds;
  const deadline = template?.metadata?.annotations?.[PROGRESS_DEADLINE_ANNOTATION];
  const seconds = typeof deadline === "string" ? parseGoDuration(deadline) : undefined;
  // An unparseable deadline is Knative's to reject, with its own message.
  if (hasBounds(initRange) && seconds !== undefined && distance(seconds, initRange) > 0) {
    const existing = before?.metadata?.annotations?.[PROGRESS_DEADLINE_ANNOTATION] === deadline;
    const field = ctx.path(`metadata.annotations[${PROGRESS_DEADLINE_ANNOTATION}]`);
    report(ctx, existing, field, deadline, `${describeRange(initRange, "s")} (policy initializationTimeoutSeconds)`);
  }
}

function images(ctx: Context): void {
  const prefixes = (ctx.policy.rules.imageRegistries ?? []).filter((p) => typeof p === "string" && p !== "");
  if (prefixes.length === 0 || !USER_TEMPLATES.has(ctx.workload.role)) return;
  const spec = peekTemplate(ctx.workload)?.spec;
  const oldSpec = peekTemplate(ctx.old)?.spec;
  const allowed = `image must start with one of: ${prefixes.map((p) => `"${p}"`).join(", ")}`;
  for (const list of ["initContainers", "containers"] as const) {
    const containers: unknown[] = Array.isArray(spec?.[list]) ? spec[list] : [];
    const oldContainers: any[] = Array.isArray(oldSpec?.[list]) ? oldSpec[list] : [];
    containers.forEach((c: any, i) => {
      const image = c?.image;
      if (typeof image !== "string" || prefixes.some((p) => image.startsWith(p))) return;
      const existing = oldContainers.some((o) => o?.name === c?.name && o?.image === image);
      report(ctx, existing, ctx.path(`spec.${list}[${i}].image`), image, allowed);
    });
  }
}

function isLocked(ctx: Context, field: "tolerations" | "labels" | "annotations" | "nodePools"): boolean {
  return ctx.policy.rules.locked?.includes(field) ?? false;
}

function lockedTolerations(ctx: Context): void {
  const wanted = ctx.policy.defaults.tolerations ?? [];
  if (!isLocked(ctx, "tolerations") || wanted.length === 0 || !ctx.canSet("tolerations")) return;
  const current: unknown = peekTemplate(ctx.workload)?.spec?.tolerations;
  const list = (Array.isArray(current) ? current : []).filter((t): t is Toleration => !!t && typeof t === "object");
  const policyList = wanted.map(describeToleration).join(", ");
  list.forEach((t, i) => {
    if (!allowedUnderLock(t, wanted)) {
      ctx.violation(ctx.path(`spec.tolerations[${i}]`), t, `locked by policy: only the policy's tolerations are allowed (${policyList})`);
    }
  });
  const missing = missingTolerations(list, wanted);
  if (missing.length > 0) {
    ctx.violation(ctx.path("spec.tolerations"), current ?? null, `locked by policy: must include ${missing.map(describeToleration).join(", ")}`);
  }
}

function lockedMetadata(ctx: Context, field: "labels" | "annotations"): void {
  const wanted = ctx.policy.defaults[field] ?? {};
  if (!isLocked(ctx, field) || !USER_TEMPLATES.has(ctx.workload.role)) return;
  const current: Record<string, string> | undefined = peekTemplate(ctx.workload)?.metadata?.[field];
  for (const [key, value] of Object.entries(wanted)) {
    const have = current?.[key];
    if (have !== value) ctx.violation(ctx.path(`metadata.${field}[${key}]`), have ?? null, `locked by policy to "${value}"`);
  }
}

function lockedNodePools(ctx: Context): void {
  const pools = projectPools(ctx.project);
  if (!isLocked(ctx, "nodePools") || pools.length === 0 || !ctx.canSet("affinity")) return;
  const spec = peekTemplate(ctx.workload)?.spec;
  for (const problem of poolLockProblems(spec, poolLabelKey(), pools)) {
    ctx.violation(ctx.path(problem.sub), problem.value, problem.allowed);
  }
}

export const policyRules: Plugin = {
  name: "policyRules",

  // Pods are judged when they are created (PRODUCT.md §2); later pod updates belong to controllers.
  appliesTo: (ctx) => ctx.inference && ROLES.has(ctx.workload.role) && (ctx.workload.kind !== "Pod" || ctx.request.operation === "CREATE"),

  validate(ctx) {
    replicas(ctx);
    if (ctx.workload.role === "scale") return;
    timeouts(ctx);
    images(ctx);
    lockedTolerations(ctx);
    lockedMetadata(ctx, "labels");
    lockedMetadata(ctx, "annotations");
    lockedNodePools(ctx);
  },
};
