// GPU quota (PRODUCT.md §5): deny creates, updates and scale-ups that would take a project past its
// spec.gpuQuota. Usage comes from the in-memory totals (watches in `serve`, `--cluster` in `apply`),
// read in O(1). Namespaces of no project never reach plugins; projects without a quota are never blocked.
//
// The decision is exported as `quotaAdmission` so the edge's reservation ledger can compute the very
// same delta for an admitted request, reserve it with compare-and-swap on the Project status, and, if
// fresher numbers no longer fit, deny with `quotaDenial` in the same words.
import type { AdmissionRequest } from "../src/admission/types.ts";
import type { Plugin } from "../src/admission/plugin.ts";
import type { Project } from "../src/policy/types.ts";
import { checkQuota, memoryPerDeviceOf, quotaDelta, quotaDenial, quotaMilliOf, type QuotaCheck, type QuotaNeed } from "../src/quota/accounting.ts";
import { chargeKey, type ChargedKind, type ProjectUsage, type QuotaView } from "../src/quota/view.ts";
import { isInferenceWorkload } from "../src/workload/gpu.ts";
import { toWorkload, type Workload } from "../src/workload/workload.ts";

export interface QuotaAdmissionInput {
  request: Pick<AdmissionRequest, "operation">;
  workload: Workload;
  old?: Workload;
  project: Project;
  quota: QuotaView | undefined;
  inference: boolean;
}

export interface QuotaAdmission {
  project: string;
  need: QuotaNeed;
  usage: ProjectUsage;
  check: QuotaCheck;
  /**
   * What a reservation ledger records for this admission: the charged object's key, its charge once
   * admitted (what the cache holds for it now plus `need.deltaMilli`, so that target − cached charge is
   * exactly the delta) and the resourceVersion it replaces ("" on CREATE). Nothing to reserve when
   * `need.deltaMilli` is 0.
   */
  ledger: { key: string; targetMilli: number; replaces: string };
}

const CHARGED_AS: Record<Workload["kind"], ChargedKind> = { Deployment: "Deployment", Scale: "Deployment", KnativeService: "KnativeService", Pod: "Pod" };

/** Why quota has nothing to say about a request, or undefined when it does. */
function notApplicable(input: QuotaAdmissionInput): string | undefined {
  if (input.request.operation !== "CREATE" && input.request.operation !== "UPDATE") return "operation";
  if (!input.inference) return "not an inference workload";
  if (!input.quota) return "usage unknown";
  if (quotaMilliOf(input.project) === undefined) return "project has no gpuQuota";
  return undefined;
}

/**
 * The quota decision for one admission: what it needs beyond what its object holds, the project's
 * usage and whether it fits. Undefined when quota does not apply (no quota, no usage, not inference).
 */
export function quotaAdmission(input: QuotaAdmissionInput): QuotaAdmission | undefined {
  if (notApplicable(input)) return undefined;
  const view = input.quota!;
  const quotaMilli = quotaMilliOf(input.project)!;
  const project = input.project.metadata.name ?? "";
  const w = input.workload;
  const chargedAs = CHARGED_AS[w.kind];
  const charged = view.charge?.(chargedAs, w.namespace, w.name);
  const cached = chargedAs === "Deployment" ? charged : undefined;
  // A Knative revision still growing to its initial scale: its Service holds the rest of it.
  const service = cached?.knativeService ? view.charge?.("KnativeService", w.namespace, cached.knativeService) : undefined;
  const handedOverMilli = service?.revision !== undefined && service.revision === cached?.revision ? service.milli : 0;
  const need = quotaDelta({
    operation: input.request.operation as "CREATE" | "UPDATE",
    workload: w,
    old: input.old,
    memoryPerDeviceMiB: memoryPerDeviceOf(input.project),
    cached,
    handedOverMilli,
  });
  const usage = view.usage(project);
  const ledger = {
    key: chargeKey(chargedAs, w.namespace, w.name),
    targetMilli: (charged?.milli ?? 0) + need.deltaMilli,
    replaces: String(input.old?.object?.metadata?.resourceVersion ?? ""),
  };
  return { project, need, usage, check: checkQuota(need, usage, quotaMilli), ledger };
}

/** The same decision straight from an AdmissionRequest, for the edge that has no plugin Context. */
export function quotaAdmissionOfRequest(request: AdmissionRequest, project: Project, view: QuotaView | undefined): QuotaAdmission | undefined {
  const workload = toWorkload(request, request.object);
  if (!workload) return undefined;
  const old = request.operation === "UPDATE" && request.oldObject ? toWorkload(request, request.oldObject) : undefined;
  return quotaAdmission({ request, workload, old, project, quota: view, inference: isInferenceWorkload(workload, old) });
}

export const quota: Plugin = {
  name: "quota",

  appliesTo: (ctx) =>
    notApplicable({ request: ctx.request, workload: ctx.workload, project: ctx.project, quota: ctx.cluster.quota, inference: ctx.inference }) === undefined,

  validate(ctx) {
    const admission = quotaAdmission({
      request: ctx.request,
      workload: ctx.workload,
      old: ctx.old,
      project: ctx.project,
      quota: ctx.cluster.quota,
      inference: ctx.inference,
    });
    if (!admission || admission.check.fits) return;
    const denial = quotaDenial(admission.project, admission.need, admission.check);
    ctx.violation(admission.need.field, admission.need.value, denial.allowed, {
      reason: "QuotaExceeded",
      message: denial.message,
      details: denial.details,
    });
  },
};
