// What each inference server calls in-flight requests, finished requests and request latency, and how
// one scrape of its /metrics page becomes an Observation. The table is ordered: a pod is read as the
// first engine whose signature it exposes, so vLLM (which also exports the generic FastAPI
// `http_request_duration_seconds`) is read as vLLM, not as a generic HTTP server.
import type { Exposition, Sample } from "./exposition.ts";

/** The metrics the adapter serves, by their public names (PRODUCT.md §6). */
export const METRIC_NAMES = [
  "inference_concurrency",
  "inference_requests_per_second",
  "inference_latency_p50_ms",
  "inference_latency_p95_ms",
  "inference_latency_p99_ms",
] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

export const QUANTILE_OF: Partial<Record<MetricName, number>> = {
  inference_latency_p50_ms: 0.5,
  inference_latency_p95_ms: 0.95,
  inference_latency_p99_ms: 0.99,
};

export function isMetricName(name: string): name is MetricName {
  return (METRIC_NAMES as readonly string[]).includes(name);
}

export type TimeUnit = "seconds" | "milliseconds" | "microseconds";
export const MS_PER_UNIT: Record<TimeUnit, number> = { seconds: 1000, milliseconds: 1, microseconds: 0.001 };

export interface LatencySource {
  /** histogram: `<name>_bucket{le}`; summary: `<name>{quantile}` (the server's own sliding window). */
  kind: "histogram" | "summary";
  name: string;
  unit: TimeUnit;
}

export interface EngineMapping {
  engine: string;
  /** Any of these sample names identifies the engine. */
  signature: string[];
  /** Gauges whose sum is the number of requests in flight; every one present is summed. */
  inFlightGauges: string[];
  /**
   * A counter of time spent on requests, for servers without an in-flight gauge: its rate is the mean
   * number of requests in the server over the window (Little's law), queue time included.
   */
  busyTimeCounter?: { name: string; unit: TimeUnit };
  /** Counters of finished requests; the first one present is used. */
  completedCounters: string[];
  /** Latency sources; the first one present is used. */
  latency: LatencySource[];
}

export const ENGINES: readonly EngineMapping[] = [
  {
    // vLLM: running + waiting are the requests it has accepted and not finished.
    engine: "vllm",
    signature: ["vllm:num_requests_running", "vllm:e2e_request_latency_seconds_count", "vllm:request_success_total"],
    inFlightGauges: ["vllm:num_requests_running", "vllm:num_requests_waiting"],
    completedCounters: ["vllm:request_success_total", "vllm:e2e_request_latency_seconds_count"],
    latency: [{ kind: "histogram", name: "vllm:e2e_request_latency_seconds", unit: "seconds" }],
  },
  {
    // Triton has no in-flight gauge (pending_request_count counts the queue only) and, by default, no
    // latency histogram: quantiles need `--metrics-config summary_latencies=true`.
    engine: "triton",
    signature: ["nv_inference_request_success", "nv_inference_count", "nv_inference_request_duration_us"],
    inFlightGauges: [],
    busyTimeCounter: { name: "nv_inference_request_duration_us", unit: "microseconds" },
    completedCounters: ["nv_inference_request_success"],
    latency: [{ kind: "summary", name: "nv_inference_request_summary_us", unit: "microseconds" }],
  },
  {
    // TGI (Rust metrics exporter: counters without the _total suffix).
    engine: "tgi",
    signature: ["tgi_request_count", "tgi_queue_size", "tgi_request_duration_count"],
    inFlightGauges: ["tgi_queue_size", "tgi_batch_current_size"],
    completedCounters: ["tgi_request_success", "tgi_request_success_total", "tgi_request_duration_count"],
    latency: [{ kind: "histogram", name: "tgi_request_duration", unit: "seconds" }],
  },
  {
    // Knative queue-proxy from v1.19 (OpenTelemetry names, dots exported as underscores).
    engine: "knative-queue-proxy",
    signature: ["kn_serving_invocation_duration_seconds_count", "kn_serving_queue_depth"],
    inFlightGauges: ["kn_serving_queue_depth"],
    completedCounters: ["kn_serving_invocation_duration_seconds_count"],
    latency: [{ kind: "histogram", name: "kn_serving_invocation_duration_seconds", unit: "seconds" }],
  },
  {
    // Knative queue-proxy up to v1.18 (OpenCensus, latencies in milliseconds).
    engine: "knative-queue-proxy-legacy",
    signature: ["revision_request_count", "revision_queue_depth", "revision_request_latencies_count"],
    inFlightGauges: ["revision_queue_depth"],
    completedCounters: ["revision_request_count", "revision_request_count_total", "revision_request_latencies_count"],
    latency: [{ kind: "histogram", name: "revision_request_latencies", unit: "milliseconds" }],
  },
  {
    // Any server instrumented with the conventional Prometheus HTTP histogram.
    engine: "http",
    signature: ["http_request_duration_seconds_count"],
    inFlightGauges: ["http_requests_in_flight", "http_requests_inflight", "http_server_requests_in_flight", "http_server_active_requests"],
    completedCounters: ["http_request_duration_seconds_count"],
    latency: [{ kind: "histogram", name: "http_request_duration_seconds", unit: "seconds" }],
  },
  {
    // OpenTelemetry HTTP semantic conventions, as the Prometheus exporter names them.
    engine: "http-otel",
    signature: ["http_server_request_duration_seconds_count"],
    inFlightGauges: ["http_server_active_requests"],
    completedCounters: ["http_server_request_duration_seconds_count"],
    latency: [{ kind: "histogram", name: "http_server_request_duration_seconds", unit: "seconds" }],
  },
];

export const ENGINE_NAMES = ENGINES.map((engine) => engine.engine);

/** Cumulative bucket counts of one histogram series, upper bounds in milliseconds (+Inf included). */
export interface HistogramSeries {
  buckets: Map<number, number>;
}

/** One scrape of one pod, reduced to what the served metrics need. Counters stay per series. */
export interface Observation {
  at: number;
  engine: string;
  /** Instantaneous requests in flight. */
  inFlight?: number;
  /** Cumulative busy time in seconds, per series. */
  busySeconds?: Map<string, number>;
  /** Cumulative finished requests, per series. */
  completed?: Map<string, number>;
  histogram?: Map<string, HistogramSeries>;
  /** Latest server-side quantiles (summary), in milliseconds; the slowest series per quantile. */
  quantilesMs?: Map<number, number>;
}

/** Prometheus 3 may write `kn.serving.queue.depth`; the table uses the underscore form. */
export function normalizeName(name: string): string {
  return name.replace(/[^a-zA-Z0-9_:]/g, "_");
}

export function detectEngine(names: ReadonlySet<string>, table: readonly EngineMapping[] = ENGINES): EngineMapping | undefined {
  return table.find((engine) => engine.signature.some((name) => names.has(name)));
}

/** The observation a scrape yields, or undefined when it holds no engine the table knows. */
export function extractObservation(exposition: Exposition, at: number, table: readonly EngineMapping[] = ENGINES): Observation | undefined {
  const byName = new Map<string, Sample[]>();
  for (const sample of exposition.samples) {
    const name = normalizeName(sample.name);
    let list = byName.get(name);
    if (!list) byName.set(name, (list = []));
    list.push(sample);
  }
  const engine = detectEngine(new Set(byName.keys()), table);
  if (!engine) return undefined;
  const observation: Observation = { at, engine: engine.engine };

  const gauges = engine.inFlightGauges.filter((name) => byName.has(name));
  if (gauges.length > 0) {
    observation.inFlight = gauges.flatMap((name) => byName.get(name)!).reduce((sum, sample) => sum + finiteOrZero(sample.value), 0);
  }
  if (engine.busyTimeCounter && byName.has(engine.busyTimeCounter.name)) {
    const seconds = MS_PER_UNIT[engine.busyTimeCounter.unit] / 1000;
    observation.busySeconds = perSeries(byName.get(engine.busyTimeCounter.name)!, (value) => value * seconds);
  }
  const completedName = engine.completedCounters.find((name) => byName.has(name));
  if (completedName) observation.completed = perSeries(byName.get(completedName)!, (value) => value);

  for (const source of engine.latency) {
    if (source.kind === "histogram" && byName.has(`${source.name}_bucket`)) {
      observation.histogram = histogramSeries(byName.get(`${source.name}_bucket`)!, MS_PER_UNIT[source.unit]);
      break;
    }
    if (source.kind === "summary" && byName.has(source.name)) {
      const quantiles = summaryQuantiles(byName.get(source.name)!, MS_PER_UNIT[source.unit]);
      if (quantiles.size > 0) {
        observation.quantilesMs = quantiles;
        break;
      }
    }
  }
  return observation;
}

/** A stable key for a series: its labels, sorted, without the ones that split a histogram or summary. */
export function seriesKey(labels: Record<string, string>): string {
  return Object.keys(labels)
    .filter((key) => key !== "le" && key !== "quantile")
    .sort()
    .map((key) => `${key}=${JSON.stringify(labels[key])}`)
    .join(",");
}

function perSeries(samples: Sample[], convert: (value: number) => number): Map<string, number> {
  const out = new Map<string, number>();
  for (const sample of samples) {
    if (!Number.isFinite(sample.value)) continue;
    const key = seriesKey(sample.labels);
    out.set(key, (out.get(key) ?? 0) + convert(sample.value));
  }
  return out;
}

function histogramSeries(buckets: Sample[], msPerUnit: number): Map<string, HistogramSeries> {
  const out = new Map<string, HistogramSeries>();
  for (const sample of buckets) {
    const le = parseBound(sample.labels.le);
    if (le === undefined || !Number.isFinite(sample.value)) continue;
    const key = seriesKey(sample.labels);
    let series = out.get(key);
    if (!series) out.set(key, (series = { buckets: new Map() }));
    series.buckets.set(le === Number.POSITIVE_INFINITY ? le : le * msPerUnit, sample.value);
  }
  return out;
}

function summaryQuantiles(samples: Sample[], msPerUnit: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const sample of samples) {
    const quantile = parseBound(sample.labels.quantile);
    // A summary with no observations in its own window reports NaN: no value, not zero.
    if (quantile === undefined || !Number.isFinite(sample.value)) continue;
    const ms = sample.value * msPerUnit;
    out.set(quantile, Math.max(out.get(quantile) ?? Number.NEGATIVE_INFINITY, ms));
  }
  return out;
}

function parseBound(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (text === "+Inf" || text === "Inf" || text === "inf" || text === "+inf") return Number.POSITIVE_INFINITY;
  const value = Number(text);
  return text.trim() === "" || Number.isNaN(value) ? undefined : value;
}

function finiteOrZero(value: number): number {
  return Number.isFinite(value) ? value : 0;
}
