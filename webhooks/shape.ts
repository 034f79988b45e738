// Wrongly typed input (PRODUCT.md §8: bad input never crashes): a workload whose fields have the wrong
// type for what infergate reads is reported here, Kubernetes-style, and no other plugin touches it (see
// index.ts). Mutation leaves it as written, so the API server, or this validation, names the mistake.
import type { Plugin } from "../src/admission/plugin.ts";
import { WARNING_MAX } from "../src/admission/pipeline.ts";
import { shapeProblemsOf } from "../src/workload/shape.ts";

/** Not a policy matter: denied under `enforcement: warn` too. Kubernetes' reason for a field of the wrong type. */
export const INVALID = "Invalid";

export const shape: Plugin = {
  name: "shape",

  // Not only inference workloads: a wrong type where the GPU request sits (containers, limits) hides
  // whether there is one. The API server refuses these objects too; for its own kinds it does so before
  // any webhook sees them, so in a cluster this matters for Knative Services and `infergate apply` input.
  appliesTo: (ctx) => shapeProblemsOf(ctx.workload).length > 0,

  mutate(ctx) {
    const [first, ...rest] = shapeProblemsOf(ctx.workload);
    const more = rest.length ? ` (+${rest.length} more)` : "";
    const full = `infergate: policy not applied: ${first!.field} ${first!.allowed}${more}`;
    // A long field path keeps its end (the field itself) rather than being cut there.
    ctx.warn(full.length <= WARNING_MAX ? full : `infergate: policy not applied: ${first!.field} has the wrong type${more}`);
  },

  validate(ctx) {
    for (const p of shapeProblemsOf(ctx.workload)) ctx.violation(p.field, p.value, p.allowed, { reason: INVALID });
  },
};
