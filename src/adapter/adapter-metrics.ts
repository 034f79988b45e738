// The adapter's own /metrics: is it collecting, and how fast does it answer.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface AdapterMetrics {
  registry: Registry;
  scrapeErrors: Counter<"reason">;
  scrapeDuration: Histogram<"outcome">;
  targets: Gauge;
  requestDuration: Histogram<"route" | "code">;
}

export function createAdapterMetrics(options: { defaults?: boolean } = {}): AdapterMetrics {
  const registry = new Registry();
  if (options.defaults !== false) collectDefaultMetrics({ register: registry, prefix: "infergate_adapter_" });
  return {
    registry,
    scrapeErrors: new Counter({
      name: "infergate_adapter_scrape_errors_total",
      help: "Failed collections, by reason: timeout, connect, http (non-2xx), too_large, parse, unknown_engine, prometheus.",
      labelNames: ["reason"],
      registers: [registry],
    }),
    scrapeDuration: new Histogram({
      name: "infergate_adapter_scrape_duration_seconds",
      help: "Time to fetch and parse one pod's metrics page (or one Prometheus query), by outcome.",
      labelNames: ["outcome"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    targets: new Gauge({
      name: "infergate_adapter_scrape_targets",
      help: "Ready pods with a metrics endpoint, scraped each interval.",
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: "infergate_adapter_request_duration_seconds",
      help: "Time to answer a custom.metrics.k8s.io request, by route (discovery, object, list, other) and HTTP code.",
      labelNames: ["route", "code"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
  };
}
