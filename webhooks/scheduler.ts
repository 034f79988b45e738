// Scheduler name and queue (PRODUCT.md §3): an inference workload's pods go to the profile's scheduler,
// in the project's queue.
import type { Context, Plugin } from "../src/admission/plugin.ts";
import type { EffectivePolicy, Project } from "../src/policy/types.ts";
import { peekTemplate, type WorkloadRole } from "../src/workload/workload.ts";
import { dialectFor, type QueuePlacement } from "./dialects/index.ts";

/**
 * The API server fills this name in before admission webhooks run, so on a Deployment's template or a
 * pod it says nothing about what the user chose: it counts as unset.
 */
export const KUBE_DEFAULT_SCHEDULER = "default-scheduler";

/** The scheduler the policy sends pods to: its explicit name, else the profile's; undefined leaves it alone. */
export function schedulerNameFor(policy: EffectivePolicy): string | undefined {
  return policy.scheduler.schedulerName || dialectFor(policy.scheduler.profile).schedulerName;
}

/** PRODUCT.md §1: `spec.queue`, defaulting to the Project's name. */
export function projectQueue(project: Project): string {
  return project.spec?.queue || project.metadata.name || "";
}

function chosenScheduler(spec: any): string | undefined {
  const name = spec?.schedulerName;
  return typeof name === "string" && name !== "" && name !== KUBE_DEFAULT_SCHEDULER ? name : undefined;
}

// Kubernetes label values: at most 63 characters, alphanumeric at both ends. A queue that cannot be a
// label value is not written as one: the API server would reject the whole workload.
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function fitsPlacement(queue: string, placement: QueuePlacement): boolean {
  return placement.on === "annotation" || (queue.length <= 63 && LABEL_VALUE.test(queue));
}

function queueMap(meta: { labels?: Record<string, string>; annotations?: Record<string, string> } | undefined, placement: QueuePlacement) {
  return placement.on === "label" ? meta?.labels : meta?.annotations;
}

// Roles whose pod template is the user's to shape (a foreign pod is its own, like a bare pod); a Knative
// revision's pod only receives the spec fields the Knative Service could not carry.
const TEMPLATE_ROLES: readonly WorkloadRole[] = ["deployment", "knative-service", "bare-pod", "foreign-pod"];

function writesTemplate(ctx: Context): boolean {
  return TEMPLATE_ROLES.includes(ctx.workload.role);
}

export const scheduler: Plugin = {
  name: "scheduler",

  // A pod's schedulerName cannot change once it exists, so pods are handled at CREATE only.
  appliesTo: (ctx) =>
    ctx.inference &&
    (writesTemplate(ctx) || ctx.workload.role === "knative-pod") &&
    (ctx.workload.kind !== "Pod" || ctx.request.operation === "CREATE"),

  mutate(ctx) {
    const wanted = schedulerNameFor(ctx.policy);
    if (wanted && ctx.canSet("schedulerName")) {
      const spec = ctx.template()!.spec;
      const current = chosenScheduler(spec);
      if (current === undefined) {
        spec.schedulerName = wanted;
        ctx.warn(`infergate: set schedulerName=${wanted} (scheduler profile ${ctx.policy.scheduler.profile})`);
      } else if (current !== wanted && ctx.policy.rules.locked?.includes("schedulerName")) {
        spec.schedulerName = wanted;
        ctx.warn(`infergate: replaced schedulerName ${current} with ${wanted} (locked by policy)`);
      }
    }

    const placement = dialectFor(ctx.policy.scheduler.profile).queue;
    const queue = projectQueue(ctx.project);
    if (!placement || !queue || !writesTemplate(ctx) || !fitsPlacement(queue, placement)) return;
    const metadata = ctx.template()!.metadata;
    const map = placement.on === "label" ? (metadata.labels ??= {}) : (metadata.annotations ??= {});
    if (map[placement.key] !== undefined) return;
    map[placement.key] = queue;
    ctx.warn(`infergate: set ${placement.on} ${placement.key}=${queue} (project ${ctx.project.metadata.name} queue)`);
  },

  validate(ctx) {
    if (!writesTemplate(ctx)) return;
    const template = peekTemplate(ctx.workload);
    const wanted = schedulerNameFor(ctx.policy);
    const current = chosenScheduler(template?.spec);
    if (wanted && current !== undefined && current !== wanted && ctx.policy.rules.locked?.includes("schedulerName")) {
      ctx.violation(ctx.path("spec.schedulerName"), current, `locked by policy to "${wanted}"`);
    }

    const placement = dialectFor(ctx.policy.scheduler.profile).queue;
    const queue = projectQueue(ctx.project);
    if (!placement || !queue) return;
    // KAI reads the queue label from the top owner before the pod, so the workload's own label counts too.
    const places: Array<[string, Record<string, string> | undefined]> = [[ctx.path(`metadata.${placement.on}s`), queueMap(template?.metadata, placement)]];
    if (ctx.workload.templatePath && placement.on === "label") places.push([`metadata.labels`, queueMap(ctx.workload.object?.metadata, placement)]);
    for (const [where, map] of places) {
      const value = map?.[placement.key];
      if (value !== undefined && value !== queue) {
        ctx.violation(`${where}[${placement.key}]`, value, `the queue of project ${ctx.project.metadata.name}: "${queue}"`);
      }
    }
  },
};
