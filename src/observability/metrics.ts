// prom-client metrics. One registry per process so tests can create isolated servers.
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface AdmissionMetrics {
  registry: Registry;
  duration: Histogram<"webhook" | "plugin" | "verdict">;
  denials: Counter<"webhook" | "reason">;
  badRequests: Counter<"webhook" | "code">;
  errors: Counter<"webhook">;
}

export function createAdmissionMetrics(opts: { defaults?: boolean } = {}): AdmissionMetrics {
  const registry = new Registry();
  if (opts.defaults !== false) collectDefaultMetrics({ register: registry, prefix: "infergate_" });
  return {
    registry,
    duration: new Histogram({
      name: "infergate_admission_duration_seconds",
      help: "Time to decide an admission request; plugin=\"all\" is the whole request, other values one plugin.",
      labelNames: ["webhook", "plugin", "verdict"],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    denials: new Counter({
      name: "infergate_admission_denials_total",
      help: "Admission requests denied, by reason (PolicyViolation, QuotaExceeded, InvalidGPURequest, InternalError).",
      labelNames: ["webhook", "reason"],
      registers: [registry],
    }),
    badRequests: new Counter({
      name: "infergate_admission_bad_requests_total",
      help: "Requests rejected before admission: malformed JSON, not an AdmissionReview v1, or too large.",
      labelNames: ["webhook", "code"],
      registers: [registry],
    }),
    errors: new Counter({
      name: "infergate_admission_internal_errors_total",
      help: "Plugin failures caught while deciding a request.",
      labelNames: ["webhook"],
      registers: [registry],
    }),
  };
}
