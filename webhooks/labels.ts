// Labels and annotations on the pod template: the project and queue the pods belong to (facts infergate
// owns), and the policy's default labels and annotations (defaults the workload may override, unless
// locked). Template metadata is always writable, on a Knative Service too.
import type { Context, Plugin } from "../src/admission/plugin.ts";
import { carriesPolicy, peekTemplate, PROJECT_LABEL } from "../src/workload/workload.ts";
import { pinnedRevisionTemplate, restorableOnly } from "./knative.ts";
import { projectQueue } from "./scheduler.ts";

export { PROJECT_LABEL };
export const QUEUE_LABEL = "infergate.dev/queue";

// Kubernetes label values: at most 63 characters, alphanumeric at both ends.
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export function isLabelValue(v: string): boolean {
  return v.length <= 63 && LABEL_VALUE.test(v);
}

type MetadataMap = "labels" | "annotations";

function isStringMap(v: unknown): v is Record<string, string> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

interface Written {
  key: string;
  value: string;
  /** The value it replaced; undefined when the key was new. */
  from?: string;
}

/**
 * Writes `desired` into the template's labels or annotations. Missing keys are added; a differing
 * value is replaced only when `overwrite` says so. Returns what was written.
 */
function apply(ctx: Context, map: MetadataMap, desired: Record<string, string>, overwrite: boolean): Written[] {
  const pinned = pinnedRevisionTemplate(ctx);
  const wanted = pinned ? Object.fromEntries(restorableOnly(new Map(Object.entries(desired)), pinned.metadata?.[map])) : desired;
  const current: unknown = peekTemplate(ctx.workload)?.metadata?.[map];
  // A malformed map is the API server's to reject; writing into it would hide the user's mistake.
  if (current !== undefined && current !== null && !isStringMap(current)) return [];
  // A foreign pod's owner selects it by labels infergate cannot see: changing any label it has could
  // orphan the pod, and its controller would make another.
  const selected = map !== "labels" ? new Set<string>() : ctx.workload.role === "foreign-pod" ? "all" : selectorKeys(ctx);
  const written: Written[] = [];
  for (const [key, value] of Object.entries(wanted)) {
    if (typeof value !== "string") continue;
    const have = current?.[key];
    if (have === value) continue;
    // Changing a label the Deployment's (immutable) selector matches would orphan its pods.
    if (have !== undefined && (!overwrite || selected === "all" || selected.has(key))) continue;
    const metadata = ctx.template()!.metadata;
    metadata[map] ??= {};
    metadata[map][key] = value;
    written.push({ key, value, from: have });
  }
  return written;
}

const added = (w: Written[]) => w.filter((x) => x.from === undefined);
const replaced = (w: Written[]) => w.filter((x) => x.from !== undefined);
const pairs = (w: Written[]) => w.map((x) => `${x.key}=${x.value}`).join(", ");

/** Label keys a Deployment's selector matches on. */
export function selectorKeys(ctx: Context): Set<string> {
  const selector = ctx.workload.role === "deployment" ? ctx.workload.object?.spec?.selector : undefined;
  const keys = new Set<string>(isStringMap(selector?.matchLabels) ? Object.keys(selector.matchLabels) : []);
  if (Array.isArray(selector?.matchExpressions)) {
    for (const e of selector.matchExpressions) if (typeof e?.key === "string") keys.add(e.key);
  }
  return keys;
}

export const labels: Plugin = {
  name: "labels",

  // Pods are handled when they are created (PRODUCT.md §2); later pod updates belong to controllers.
  appliesTo: (ctx) => ctx.inference && carriesPolicy(ctx.workload) && (ctx.workload.kind !== "Pod" || ctx.request.operation === "CREATE"),

  mutate(ctx) {
    const facts: Record<string, string> = {};
    const project = ctx.project.metadata.name ?? "";
    const queue = projectQueue(ctx.project);
    if (isLabelValue(project)) facts[PROJECT_LABEL] = project;
    if (isLabelValue(queue)) facts[QUEUE_LABEL] = queue;
    // Project and queue are facts, not defaults: a workload cannot claim another project's identity.
    const own = apply(ctx, "labels", facts, true);
    if (added(own).length > 0) ctx.warn(`infergate: labelled pods ${pairs(added(own))}`);
    for (const r of replaced(own)) ctx.warn(`infergate: replaced label ${r.key}=${r.from} with ${r.value} (set by infergate)`);

    const fromPolicy = apply(ctx, "labels", ctx.policy.defaults.labels ?? {}, ctx.policy.rules.locked?.includes("labels") ?? false);
    if (added(fromPolicy).length > 0) ctx.warn(`infergate: added template labels ${pairs(added(fromPolicy))} (policy default)`);
    for (const r of replaced(fromPolicy)) ctx.warn(`infergate: replaced template label ${r.key}=${r.from} with ${r.value} (labels locked by policy)`);

    const annotations = apply(ctx, "annotations", ctx.policy.defaults.annotations ?? {}, ctx.policy.rules.locked?.includes("annotations") ?? false);
    if (added(annotations).length > 0) ctx.warn(`infergate: added template annotations ${added(annotations).map((x) => x.key).join(", ")} (policy default)`);
    for (const r of replaced(annotations)) ctx.warn(`infergate: replaced template annotation ${r.key} (annotations locked by policy)`);
  },
};
