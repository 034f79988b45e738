// Priority class: inject the policy default where the workload sets none; enforce the allowed list
// and the `locked` rule.
import type { Plugin } from "../src/admission/plugin.ts";
import { peekTemplate, type Workload } from "../src/workload/workload.ts";

/**
 * On a Pod, the API server's Priority plugin has already resolved `priority` and `preemptionPolicy` from
 * the class the pod had before this webhook, and it runs again after the webhook changed the pod
 * (reinvocation), where a stale `priority` is refused ("must not be provided in pod spec"). Dropping
 * both lets it resolve them from the new class.
 */
function setPriorityClass(w: Workload, spec: any, name: string): void {
  spec.priorityClassName = name;
  if (w.kind !== "Pod") return;
  delete spec.priority;
  delete spec.preemptionPolicy;
}

export const priority: Plugin = {
  name: "priority",

  // A pod's priorityClassName cannot change once it exists, so pods are handled at CREATE only.
  appliesTo: (ctx) =>
    ctx.inference &&
    peekTemplate(ctx.workload) !== undefined &&
    ctx.workload.role !== "replica-pod" &&
    ctx.workload.role !== "knative-deployment" &&
    (ctx.workload.kind !== "Pod" || ctx.request.operation === "CREATE"),

  mutate(ctx) {
    const wanted = ctx.policy.defaults.priorityClassName;
    if (!wanted || !ctx.canSet("priorityClassName")) return;
    const spec = ctx.template()!.spec;
    const current: string | undefined = spec.priorityClassName || undefined;
    if (current === undefined) {
      setPriorityClass(ctx.workload, spec, wanted);
      ctx.warn(`infergate: set priorityClassName=${wanted} (policy default)`);
    } else if (current !== wanted && ctx.policy.rules.locked?.includes("priorityClassName")) {
      setPriorityClass(ctx.workload, spec, wanted);
      ctx.warn(`infergate: replaced priorityClassName ${current} with ${wanted} (locked by policy)`);
    }
  },

  validate(ctx) {
    const value: string | undefined = peekTemplate(ctx.workload)?.spec?.priorityClassName || undefined;
    if (value === undefined) return;
    const field = ctx.path("spec.priorityClassName");
    const allowed = ctx.policy.rules.priorityClassNames;
    if (allowed?.length && !allowed.includes(value)) {
      ctx.violation(field, value, `supported values: ${allowed.map((a) => `"${a}"`).join(", ")}`);
    }
    const wanted = ctx.policy.defaults.priorityClassName;
    if (wanted && value !== wanted && ctx.policy.rules.locked?.includes("priorityClassName")) {
      ctx.violation(field, value, `locked by policy to "${wanted}"`);
    }
  },
};
