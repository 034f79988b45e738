// prom-client metrics. One registry per process so tests can create isolated servers.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

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

/** One Project's GPUs as this replica's caches see them; `quota` undefined means no limit. */
export interface ProjectGpuReading {
  project: string;
  quota?: number;
  allocated: number;
  reserved: number;
}

/**
 * infergate_project_gpu_{quota,allocated,reserved}{project}, read from `read` when /metrics is scraped:
 * nothing is updated on the admission path, and a deleted Project disappears at the next scrape.
 * A Project without a quota has no quota series (a limit of 0 would read as "nothing allowed").
 */
export function registerProjectGauges(registry: Registry, read: () => readonly ProjectGpuReading[]): void {
  const gauge = (name: string, help: string, value: (r: ProjectGpuReading) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ["project"],
      registers: [registry],
      collect() {
        this.reset();
        for (const reading of read()) {
          const v = value(reading);
          if (v !== undefined) this.set({ project: reading.project }, v);
        }
      },
    });
  gauge("infergate_project_gpu_quota", "GPUs the Project may hold (spec.gpuQuota); absent when it sets no limit.", (r) => r.quota);
  gauge("infergate_project_gpu_allocated", "GPUs held by the Project's admitted inference workloads, as this replica counts them.", (r) => r.allocated);
  gauge("infergate_project_gpu_reserved", "GPUs reserved by admissions this replica's cache does not show yet.", (r) => r.reserved);
}
