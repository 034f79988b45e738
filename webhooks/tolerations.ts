// Tolerations: make sure the pods tolerate what the policy says (typically the GPU nodes' taint), without
// duplicating what the workload already tolerates, and without removing anything unless a `locked` rule
// pins the tolerations.
import type { Plugin } from "../src/admission/plugin.ts";
import { copyJson } from "../src/admission/pipeline.ts";
import type { Toleration } from "../src/policy/types.ts";
import { carriesPolicy, peekTemplate } from "../src/workload/workload.ts";

/**
 * Kubernetes adds tolerations for its own node conditions to every pod (DefaultTolerationSeconds runs
 * before webhooks). A lock never removes them: without them a pod is evicted the moment a node blinks.
 */
const SYSTEM_TAINT_PREFIX = "node.kubernetes.io/";

function isToleration(t: unknown): t is Toleration {
  return !!t && typeof t === "object" && !Array.isArray(t);
}

/**
 * Does `have` tolerate every taint that `want` tolerates? Equal tolerations (operator defaulting to
 * "Equal", value to "") cover each other; `Exists` without a key covers every key; an empty effect
 * covers every effect; a time-limited toleration does not cover a longer or unlimited one.
 */
export function tolerates(have: Toleration, want: Toleration): boolean {
  if (have.effect && have.effect !== want.effect) return false;
  const haveOp = have.operator ?? "Equal";
  const wantOp = want.operator ?? "Equal";
  if (!have.key) {
    if (haveOp !== "Exists") return false;
  } else {
    if (have.key !== (want.key || undefined)) return false;
    if (haveOp === "Equal" && (wantOp !== "Equal" || (have.value ?? "") !== (want.value ?? ""))) return false;
  }
  // `!= null`: JSON may carry an explicit null, which means "no limit" like an absent field.
  if (have.tolerationSeconds != null) {
    if (want.tolerationSeconds == null) return false;
    if (want.tolerationSeconds > have.tolerationSeconds) return false;
  }
  return true;
}

export function isSystemToleration(t: Toleration): boolean {
  return typeof t.key === "string" && t.key.startsWith(SYSTEM_TAINT_PREFIX);
}

/** kubectl's way of printing a toleration: `nvidia.com/gpu:NoSchedule op=Exists`, `dedicated=ml:NoSchedule`. */
export function describeToleration(t: Toleration): string {
  const effect = t.effect ? `:${t.effect}` : "";
  if ((t.operator ?? "Equal") === "Exists") return `${t.key || "*"}${effect} op=Exists`;
  return `${t.key ?? ""}=${t.value ?? ""}${effect}`;
}

/** The policy tolerations that nothing in `current` covers yet. */
export function missingTolerations(current: readonly Toleration[], wanted: readonly Toleration[]): Toleration[] {
  return wanted.filter((w) => !current.some((t) => tolerates(t, w)));
}

/**
 * Under a lock, a workload may tolerate nothing the policy does not: an entry is allowed when it is a
 * system toleration or when some policy toleration already covers it.
 */
export function allowedUnderLock(t: Toleration, wanted: readonly Toleration[]): boolean {
  return isSystemToleration(t) || wanted.some((w) => tolerates(w, t));
}

export const tolerations: Plugin = {
  name: "tolerations",

  // A running pod's tolerations can only grow, so pods are handled when they are created (PRODUCT.md §2).
  appliesTo: (ctx) =>
    ctx.inference &&
    (carriesPolicy(ctx.workload) || ctx.workload.role === "knative-pod") &&
    (ctx.workload.kind !== "Pod" || ctx.request.operation === "CREATE"),

  mutate(ctx) {
    const wanted = (ctx.policy.defaults.tolerations ?? []).filter(isToleration);
    if (wanted.length === 0 || !ctx.canSet("tolerations")) return;
    const current: unknown = peekTemplate(ctx.workload)?.spec?.tolerations;
    // Anything but a list is the API server's to reject; rewriting it would hide the user's mistake.
    if (current !== undefined && current !== null && !Array.isArray(current)) return;
    const existing: unknown[] = Array.isArray(current) ? current : [];

    const locked = ctx.policy.rules.locked?.includes("tolerations") ?? false;
    const removed = locked ? existing.filter((t) => isToleration(t) && !allowedUnderLock(t, wanted)) : [];
    const kept = existing.filter((t) => !removed.includes(t));
    const added = missingTolerations(kept.filter(isToleration), wanted);
    if (removed.length === 0 && added.length === 0) return;

    ctx.template()!.spec.tolerations = [...kept, ...added.map((t) => copyJson(t))];
    for (const t of removed) ctx.warn(`infergate: removed toleration ${describeToleration(t as Toleration)} (tolerations locked by policy)`);
    for (const t of added) ctx.warn(`infergate: added toleration ${describeToleration(t)} (policy default)`);
  },
};
