// Turns one HTTP body into one AdmissionReview answer: parse, decide, observe. Never throws.
import type { Plugin, ClusterView, Phase } from "./plugin.ts";
import type { AdmissionRequest, AdmissionResponse } from "./types.ts";
import { runPipeline, type PipelineResult, type PolicyResolver } from "./pipeline.ts";
import { parseReview, wrapResponse } from "./review.ts";
import { allow, internalError } from "./responses.ts";
import type { AdmissionMetrics } from "../observability/metrics.ts";
import type { Logger } from "../observability/log.ts";

export interface AdmissionDeps {
  plugins: readonly Plugin[];
  policies: PolicyResolver;
  cluster: () => ClusterView;
  metrics: AdmissionMetrics;
  logger: Logger;
  /** Requests for infergate's own kinds (validated against the schema and the other policies). */
  reviewOwnKinds?: (request: AdmissionRequest) => AdmissionResponse | undefined;
  /** Runs after a validate decision allowed a request: the quota ledger's reservation, for example. */
  afterValidate?: (request: AdmissionRequest, result: PipelineResult) => Promise<AdmissionResponse | undefined>;
}

export interface HttpAnswer {
  status: number;
  body: unknown;
}

export async function handleAdmission(phase: Phase, body: unknown, deps: AdmissionDeps): Promise<HttpAnswer> {
  const start = performance.now();
  const parsed = parseReview(body);
  if (!parsed.ok) {
    deps.metrics.badRequests.inc({ webhook: phase, code: "400" });
    deps.logger.log("warn", "bad admission request", { webhook: phase, error: parsed.message, uid: parsed.uid });
    return { status: 400, body: { kind: "Status", apiVersion: "v1", status: "Failure", code: 400, message: `invalid AdmissionReview: ${parsed.message}` } };
  }
  const request = parsed.request;
  let response: AdmissionResponse;
  let result: PipelineResult | undefined;
  try {
    const own = phase === "validate" ? deps.reviewOwnKinds?.(request) : undefined;
    if (own) {
      response = own;
    } else {
      result = runPipeline({
        request,
        phase,
        plugins: deps.plugins,
        policies: deps.policies,
        cluster: deps.cluster(),
        onPluginTiming: (plugin, seconds) => deps.metrics.duration.observe({ webhook: phase, plugin, verdict: "n/a" }, seconds),
      });
      response = result.response;
      if (phase === "validate" && response.allowed && deps.afterValidate) {
        response = (await deps.afterValidate(request, result)) ?? response;
      }
    }
  } catch (error) {
    deps.metrics.errors.inc({ webhook: phase });
    deps.logger.log("error", "admission failed inside infergate", { webhook: phase, uid: request.uid, error: String((error as Error)?.stack ?? error) });
    // Mutation fails open, as its webhook configuration does; validation fails closed with a reason.
    response = phase === "mutate" ? allow(request.uid, ["infergate: mutation skipped after an internal error; see the webhook logs"]) : internalError(request.uid, error);
  }
  const verdict = response.allowed ? (response.patch ? "patched" : "allowed") : "denied";
  const seconds = (performance.now() - start) / 1000;
  deps.metrics.duration.observe({ webhook: phase, plugin: "all", verdict }, seconds);
  if (!response.allowed) deps.metrics.denials.inc({ webhook: phase, reason: String(response.status?.reason ?? "Forbidden") });
  // What infergate changed or refused is logged at info; a plain "allowed" (most validations) only at
  // debug: the API server's audit log already records every request.
  const level = verdict === "allowed" && !response.warnings?.length ? "debug" : "info";
  if (deps.logger.enabled(level) && !result?.skipped) {
    deps.logger.log(level, "admission", {
      webhook: phase,
      uid: request.uid,
      kind: request.kind.kind,
      subResource: request.subResource || undefined,
      operation: request.operation,
      namespace: request.namespace,
      name: request.name || request.object?.metadata?.name,
      project: result?.project,
      verdict,
      dryRun: request.dryRun || undefined,
      durationMs: Math.round(seconds * 1e6) / 1e3,
      message: response.status?.message,
    });
  }
  return { status: 200, body: wrapResponse(response) };
}
