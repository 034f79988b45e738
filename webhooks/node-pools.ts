// Node pools (PRODUCT.md §1, §4): a project's pods may only run on nodes of its pools, and prefer them in
// the order the project lists them. Expressed as node affinity on the label `infergate.dev/node-pool`,
// merged into whatever affinity the workload (or Knative, with its podAntiAffinity) already has.
import type { Context, Plugin } from "../src/admission/plugin.ts";
import { copyJson } from "../src/admission/pipeline.ts";
import { DEFAULT_NODE_POOL_LABEL, type Project } from "../src/policy/types.ts";
import { carriesPolicy, peekTemplate } from "../src/workload/workload.ts";

const REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution";
const REQUIRED_PATH = `spec.affinity.nodeAffinity.${REQUIRED}.nodeSelectorTerms`;
const PREFERRED_PATH = `spec.affinity.nodeAffinity.${PREFERRED}`;

export interface PoolPreference {
  pool: string;
  weight: number;
}

/** The project's pools, in order, without blanks or repeats. */
export function projectPools(project: Project): string[] {
  const pools = (project.spec.nodePools ?? []).filter((p): p is string => typeof p === "string" && p !== "");
  return [...new Set(pools)];
}

/** The node label that names a node's pool. */
export function poolLabelKey(): string {
  return DEFAULT_NODE_POOL_LABEL;
}

/**
 * Preferred-affinity weights in pool order: distinct, positive, at most 100, 10 apart while that fits
 * (100, 90, 80, …) and closer for long lists. A single pool needs no preference: the requirement says it all.
 */
export function poolPreferences(pools: readonly string[]): PoolPreference[] {
  if (pools.length < 2) return [];
  const step = Math.max(1, Math.min(10, Math.floor(99 / (pools.length - 1))));
  return pools.map((pool, i) => ({ pool, weight: 100 - i * step })).filter((p) => p.weight >= 1);
}

function isObject(v: unknown): v is Record<string, any> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

function sameSet(a: unknown, b: readonly string[]): boolean {
  if (!Array.isArray(a)) return false;
  const set = new Set(a);
  return set.size === new Set(b).size && b.every((x) => set.has(x));
}

function requiredExpression(key: string, pools: readonly string[]) {
  return { key, operator: "In", values: [...pools] };
}

function preferredTerm(key: string, p: PoolPreference) {
  return { weight: p.weight, preference: { matchExpressions: [{ key, operator: "In", values: [p.pool] }] } };
}

function isOurRequirement(e: any, key: string, pools: readonly string[]): boolean {
  return isObject(e) && e.key === key && e.operator === "In" && sameSet(e.values, pools);
}

function poolExpressions(term: unknown, key: string): any[] {
  const exprs = isObject(term) && Array.isArray(term.matchExpressions) ? term.matchExpressions : [];
  return exprs.filter((e: any) => isObject(e) && e.key === key);
}

function prefersPool(term: unknown, key: string, pool: string): boolean {
  const exprs = isObject(term) && isObject(term.preference) && Array.isArray(term.preference.matchExpressions) ? term.preference.matchExpressions : [];
  return exprs.some((e: any) => isObject(e) && e.key === key && e.operator === "In" && Array.isArray(e.values) && e.values.length === 1 && e.values[0] === pool);
}

function isOurPreference(term: unknown, key: string, preferences: readonly PoolPreference[]): boolean {
  if (!isObject(term) || !isObject(term.preference)) return false;
  const { matchExpressions, matchFields } = term.preference;
  if (matchFields?.length || !Array.isArray(matchExpressions) || matchExpressions.length !== 1) return false;
  return preferences.some((p) => p.weight === term.weight && prefersPool(term, key, p.pool));
}

export interface PoolAffinityResult {
  /** The merged affinity; undefined when the existing one is malformed and was left alone. */
  affinity?: any;
  changed: boolean;
  /** Messages for the user, one per kind of change. */
  changes: string[];
}

/**
 * Merges the project's pool constraints into a copy of `affinity`. Required: `key In pools` is ANDed into
 * every node selector term that does not already choose pools itself (one term is created when there
 * are none). Preferred: one term per pool, weighted in pool order, next to the terms already there.
 * Under a lock, the workload's own pool constraints are replaced by the project's.
 */
export function mergePoolAffinity(affinity: unknown, key: string, pools: readonly string[], locked: boolean): PoolAffinityResult {
  const unchanged: PoolAffinityResult = { changed: false, changes: [] };
  if (pools.length === 0) return unchanged;
  if (affinity !== undefined && affinity !== null && !isObject(affinity)) return unchanged;
  const merged: Record<string, any> = copyJson(affinity ?? {});
  if (merged.nodeAffinity !== undefined && merged.nodeAffinity !== null && !isObject(merged.nodeAffinity)) return unchanged;
  const nodeAffinity: Record<string, any> = merged.nodeAffinity ?? {};
  const changes: string[] = [];
  const list = pools.join(", ");

  const required = nodeAffinity[REQUIRED];
  if (required === undefined || required === null || (isObject(required) && (required.nodeSelectorTerms == null || Array.isArray(required.nodeSelectorTerms)))) {
    const requirement: Record<string, any> = required ?? {};
    const terms: unknown[] = requirement.nodeSelectorTerms?.length ? requirement.nodeSelectorTerms : [{}];
    let added = 0;
    let replaced = 0;
    for (const term of terms) {
      if (!isObject(term) || (term.matchExpressions != null && !Array.isArray(term.matchExpressions))) continue;
      const exprs: any[] = term.matchExpressions ?? [];
      const own = poolExpressions(term, key);
      if (locked) {
        if (own.length === 1 && isOurRequirement(own[0], key, pools)) continue;
        term.matchExpressions = [...exprs.filter((e) => !own.includes(e)), requiredExpression(key, pools)];
        if (own.length > 0) replaced++;
        else added++;
      } else if (!own.some((e) => e.operator === "In")) {
        term.matchExpressions = [...exprs, requiredExpression(key, pools)];
        added++;
      }
    }
    if (added + replaced > 0) {
      requirement.nodeSelectorTerms = terms;
      nodeAffinity[REQUIRED] = requirement;
    }
    if (added > 0) changes.push(`infergate: node affinity requires ${key} in [${list}] (project pools)`);
    if (replaced > 0) changes.push(`infergate: replaced node-pool requirement with [${list}] (nodePools locked by policy)`);
  }

  const preferred = nodeAffinity[PREFERRED];
  if (preferred === undefined || preferred === null || Array.isArray(preferred)) {
    const preferences = poolPreferences(pools);
    const existing: unknown[] = preferred ?? [];
    const kept = locked
      ? existing.filter((t) => isOurPreference(t, key, preferences) || !isObject(t) || !isObject(t.preference) || poolExpressions(t.preference, key).length === 0)
      : existing;
    const added = preferences.filter((p) => !kept.some((t) => prefersPool(t, key, p.pool)));
    if (added.length > 0 || kept.length !== existing.length) {
      nodeAffinity[PREFERRED] = [...kept, ...added.map((p) => preferredTerm(key, p))];
    }
    if (kept.length !== existing.length) {
      changes.push(`infergate: removed ${existing.length - kept.length} node-pool preference(s) (nodePools locked by policy)`);
    }
    if (added.length > 0) changes.push(`infergate: node affinity prefers pools in order ${added.map((p) => p.pool).join(" > ")}`);
  }

  if (changes.length === 0) return unchanged;
  merged.nodeAffinity = nodeAffinity;
  return { affinity: merged, changed: true, changes };
}

export interface PoolProblem {
  /** Path under the pod template, e.g. `spec.nodeSelector[infergate.dev/node-pool]`. */
  sub: string;
  value: unknown;
}

/** Places where the workload requires a pool outside the project's. */
export function poolsOutsideProject(spec: any, key: string, pools: readonly string[]): PoolProblem[] {
  const problems: PoolProblem[] = [];
  const selected = isObject(spec?.nodeSelector) ? spec.nodeSelector[key] : undefined;
  if (selected !== undefined && !pools.includes(selected)) problems.push({ sub: `spec.nodeSelector[${key}]`, value: selected });
  const terms = spec?.affinity?.nodeAffinity?.[REQUIRED]?.nodeSelectorTerms;
  if (!Array.isArray(terms)) return problems;
  terms.forEach((term, i) => {
    const exprs = isObject(term) && Array.isArray(term.matchExpressions) ? term.matchExpressions : [];
    exprs.forEach((e: any, j: number) => {
      if (!isObject(e) || e.key !== key || e.operator !== "In" || !Array.isArray(e.values)) return;
      const outside = e.values.filter((v: unknown) => !pools.includes(v as string));
      if (outside.length > 0) problems.push({ sub: `${REQUIRED_PATH}[${i}].matchExpressions[${j}].values`, value: outside });
    });
  });
  return problems;
}

/**
 * Under a `nodePools` lock, the pools are infergate's to choose: no pool in a nodeSelector, every
 * required term carries exactly `key In pools`, and the only pool preferences are the project's.
 */
export function poolLockProblems(spec: any, key: string, pools: readonly string[]): Array<PoolProblem & { allowed: string }> {
  const problems: Array<PoolProblem & { allowed: string }> = [];
  const list = pools.map((p) => `"${p}"`).join(", ");
  const selected = isObject(spec?.nodeSelector) ? spec.nodeSelector[key] : undefined;
  if (selected !== undefined) {
    problems.push({ sub: `spec.nodeSelector[${key}]`, value: selected, allowed: "locked by policy: node pools are chosen by infergate" });
  }
  const terms = spec?.affinity?.nodeAffinity?.[REQUIRED]?.nodeSelectorTerms;
  const requirement = `locked by policy: must require ${key} In [${list}]`;
  if (!Array.isArray(terms) || terms.length === 0) {
    problems.push({ sub: REQUIRED_PATH, value: terms ?? null, allowed: requirement });
  } else {
    terms.forEach((term, i) => {
      const own = poolExpressions(term, key);
      if (own.length !== 1 || !isOurRequirement(own[0], key, pools)) {
        problems.push({ sub: `${REQUIRED_PATH}[${i}].matchExpressions`, value: own, allowed: requirement });
      }
    });
  }
  const preferences = poolPreferences(pools);
  const preferred = spec?.affinity?.nodeAffinity?.[PREFERRED];
  if (Array.isArray(preferred)) {
    preferred.forEach((t, i) => {
      if (isObject(t) && isObject(t.preference) && poolExpressions(t.preference, key).length > 0 && !isOurPreference(t, key, preferences)) {
        const order = preferences.map((p) => `${p.pool}=${p.weight}`).join(", ");
        problems.push({ sub: `${PREFERRED_PATH}[${i}]`, value: t, allowed: `locked by policy: pool preferences are the project's (${order || "none"})` });
      }
    });
  }
  return problems;
}

function nodePoolLocked(ctx: Context): boolean {
  return ctx.policy.rules.locked?.includes("nodePools") ?? false;
}

export const nodePools: Plugin = {
  name: "nodePools",

  // A running pod's affinity is immutable, so pods are handled when they are created (PRODUCT.md §2).
  appliesTo: (ctx) =>
    ctx.inference &&
    (carriesPolicy(ctx.workload) || ctx.workload.role === "knative-pod") &&
    (ctx.workload.kind !== "Pod" || ctx.request.operation === "CREATE") &&
    projectPools(ctx.project).length > 0,

  mutate(ctx) {
    const pools = projectPools(ctx.project);
    const key = poolLabelKey();
    const locked = nodePoolLocked(ctx);
    const spec = peekTemplate(ctx.workload)?.spec;

    if (locked && ctx.canSet("nodeSelector") && isObject(spec?.nodeSelector) && spec.nodeSelector[key] !== undefined) {
      const pinned = spec.nodeSelector[key];
      const target = ctx.template()!.spec;
      delete target.nodeSelector[key];
      if (Object.keys(target.nodeSelector).length === 0) delete target.nodeSelector;
      ctx.warn(`infergate: removed nodeSelector ${key}=${pinned} (nodePools locked by policy)`);
    }

    if (!ctx.canSet("affinity")) return;
    const result = mergePoolAffinity(spec?.affinity, key, pools, locked);
    if (!result.changed) return;
    ctx.template()!.spec.affinity = result.affinity;
    for (const message of result.changes) ctx.warn(message);
  },

  validate(ctx) {
    const pools = projectPools(ctx.project);
    const spec = peekTemplate(ctx.workload)?.spec;
    const allowed = `project ${ctx.project.metadata.name} may use node pools: ${pools.map((p) => `"${p}"`).join(", ")}`;
    for (const problem of poolsOutsideProject(spec, poolLabelKey(), pools)) {
      ctx.violation(ctx.path(problem.sub), problem.value, allowed);
    }
  },
};
