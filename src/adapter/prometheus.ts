// The `--prometheus-url` source, for clusters where a Prometheus already scrapes every inference pod:
// a few instant queries per interval, built from the same engine table, whose per-pod results land
// in the cache as precomputed windows. Pods are matched by the `namespace` and `pod` labels that the
// usual kubernetes-pods scrape configuration attaches.
import type { AdapterMetrics } from "./adapter-metrics.ts";
import { podKey, type MetricCache } from "./cache.ts";
import { ENGINES, MS_PER_UNIT, type EngineMapping } from "./mapping.ts";
import { sumBuckets, type PodWindow } from "./windows.ts";
import type { Logger } from "../observability/log.ts";

export interface VectorSample {
  labels: Record<string, string>;
  value: number;
}

export type QueryPurpose =
  | { kind: "concurrency" }
  | { kind: "requestsPerSecond" }
  | { kind: "histogram"; msPerUnit: number; priority: number }
  | { kind: "summary"; msPerUnit: number; priority: number };

export interface PrometheusQuery {
  purpose: QueryPurpose;
  promql: string;
}

const BY_POD = "namespace, pod";

/**
 * The queries for one refresh. Concurrency and throughput are one query each, engines joined with
 * `or` in table order, so a pod that exposes two engines' metrics is read as the first one, as the
 * scraper does. Latency needs the bucket bounds in milliseconds, so each source is its own query.
 */
export function buildPrometheusQueries(windowSeconds: number, table: readonly EngineMapping[] = ENGINES): PrometheusQuery[] {
  const range = `[${windowSeconds}s]`;
  const concurrency = table.flatMap((engine) => {
    if (engine.inFlightGauges.length > 0) {
      return [`sum by (${BY_POD}) (avg_over_time({__name__=~"${engine.inFlightGauges.map(escapeRegex).join("|")}"}${range}))`];
    }
    if (engine.busyTimeCounter) {
      const secondsPerUnit = MS_PER_UNIT[engine.busyTimeCounter.unit] / 1000;
      return [`sum by (${BY_POD}) (rate(${selector(engine.busyTimeCounter.name)}${range})) * ${secondsPerUnit}`];
    }
    return [];
  });
  const completed = table.flatMap((engine) => engine.completedCounters.map((name) => `sum by (${BY_POD}) (rate(${selector(name)}${range}))`));
  const queries: PrometheusQuery[] = [
    { purpose: { kind: "concurrency" }, promql: joinOr(concurrency) },
    { purpose: { kind: "requestsPerSecond" }, promql: joinOr(completed) },
  ];
  let priority = 0;
  for (const engine of table) {
    for (const source of engine.latency) {
      const msPerUnit = MS_PER_UNIT[source.unit];
      queries.push(
        source.kind === "histogram"
          ? { purpose: { kind: "histogram", msPerUnit, priority }, promql: `sum by (${BY_POD}, le) (rate(${selector(`${source.name}_bucket`)}${range}))` }
          : { purpose: { kind: "summary", msPerUnit, priority }, promql: `max by (${BY_POD}, quantile) (${selector(source.name)})` },
      );
      priority++;
    }
  }
  return queries;
}

/** Per-pod windows from the results of `buildPrometheusQueries`, stamped with `at`. */
export function windowsFromResults(queries: readonly PrometheusQuery[], results: ReadonlyArray<readonly VectorSample[]>, at: number): Map<string, PodWindow> {
  const windows = new Map<string, PodWindow>();
  const windowOf = (sample: VectorSample): PodWindow | undefined => {
    const { namespace, pod } = sample.labels;
    if (!namespace || !pod) return undefined;
    const key = podKey(namespace, pod);
    let window = windows.get(key);
    if (!window) windows.set(key, (window = { timestamp: at }));
    return window;
  };
  // Per pod, the latency source with the lowest priority number that answered.
  const latency = new Map<string, { priority: number; buckets?: Map<number, number>; quantiles?: Map<number, number> }>();
  queries.forEach((query, index) => {
    for (const sample of results[index] ?? []) {
      if (!Number.isFinite(sample.value)) continue;
      const window = windowOf(sample);
      if (!window) continue;
      const purpose = query.purpose;
      if (purpose.kind === "concurrency") window.concurrency = sample.value;
      else if (purpose.kind === "requestsPerSecond") window.requestsPerSecond = sample.value;
      else {
        const key = podKey(sample.labels.namespace!, sample.labels.pod!);
        const current = latency.get(key);
        if (current && current.priority < purpose.priority) continue;
        const entry = current && current.priority === purpose.priority ? current : { priority: purpose.priority };
        latency.set(key, entry);
        if (purpose.kind === "histogram") {
          const le = sample.labels.le === "+Inf" ? Number.POSITIVE_INFINITY : Number(sample.labels.le);
          if (Number.isNaN(le)) continue;
          (entry.buckets ??= new Map()).set(le === Number.POSITIVE_INFINITY ? le : le * purpose.msPerUnit, sample.value);
        } else {
          const quantile = Number(sample.labels.quantile);
          if (!Number.isNaN(quantile)) (entry.quantiles ??= new Map()).set(quantile, sample.value * purpose.msPerUnit);
        }
      }
    }
  });
  for (const [key, entry] of latency) {
    const window = windows.get(key)!;
    if (entry.buckets) window.latency = { kind: "buckets", buckets: sumBuckets([entry.buckets]) };
    else if (entry.quantiles) window.latency = { kind: "quantiles", quantilesMs: entry.quantiles };
  }
  return windows;
}

export type Fetch = (input: string | URL, init?: RequestInit) => Promise<globalThis.Response>;

/** One instant query through Prometheus' HTTP API. Throws with Prometheus' own error text. */
export async function queryInstant(baseUrl: string, promql: string, options: { timeMs: number; timeoutMs: number; fetch?: Fetch }): Promise<VectorSample[]> {
  const url = new URL("api/v1/query", baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`);
  const body = new URLSearchParams({ query: promql, time: (options.timeMs / 1000).toFixed(3) });
  const response = await (options.fetch ?? fetch)(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
    body,
    signal: AbortSignal.timeout(options.timeoutMs),
  });
  const text = await response.text();
  let parsed: any;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`Prometheus answered HTTP ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  if (parsed?.status !== "success") throw new Error(`Prometheus query failed (HTTP ${response.status}): ${parsed?.errorType ?? "error"}: ${parsed?.error ?? text.slice(0, 200)}`);
  if (parsed.data?.resultType !== "vector" || !Array.isArray(parsed.data.result)) throw new Error(`Prometheus returned ${parsed.data?.resultType}, expected a vector`);
  return parsed.data.result.map((entry: any) => ({ labels: entry.metric ?? {}, value: Number(entry.value?.[1]) }));
}

export interface PrometheusSourceOptions {
  url: string;
  cache: MetricCache;
  windowSeconds: number;
  intervalMs: number;
  timeoutMs: number;
  metrics?: AdapterMetrics;
  logger?: Logger;
  now?: () => number;
  fetch?: Fetch;
}

export interface PrometheusSource {
  refreshOnce(): Promise<void>;
  start(): void;
  stop(): Promise<void>;
}

export function createPrometheusSource(options: PrometheusSourceOptions): PrometheusSource {
  const now = options.now ?? Date.now;
  const queries = buildPrometheusQueries(options.windowSeconds);
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  let failing = false;

  const refresh = async () => {
    const at = now();
    const started = process.hrtime.bigint();
    try {
      const results = await Promise.all(queries.map((query) => queryInstant(options.url, query.promql, { timeMs: at, timeoutMs: options.timeoutMs, fetch: options.fetch })));
      options.cache.replaceExternalWindows(windowsFromResults(queries, results, at));
      options.metrics?.scrapeDuration.observe({ outcome: "ok" }, Number(process.hrtime.bigint() - started) / 1e9);
      if (failing) options.logger?.log("info", "Prometheus queries succeed again", { url: options.url });
      failing = false;
    } catch (error) {
      // Keep the previous windows: they expire by themselves once older than the window.
      options.metrics?.scrapeErrors.inc({ reason: "prometheus" });
      options.metrics?.scrapeDuration.observe({ outcome: "error" }, Number(process.hrtime.bigint() - started) / 1e9);
      if (!failing) options.logger?.log("warn", "Prometheus query failed; serving the previous values until they age out", { url: options.url, error: (error as Error).message });
      failing = true;
    }
  };

  const refreshOnce = () => {
    running ??= refresh().finally(() => {
      running = undefined;
    });
    return running;
  };

  const loop = () => {
    if (stopped) return;
    const started = now();
    void refreshOnce().finally(() => {
      if (!stopped) timer = setTimeout(loop, Math.max(0, options.intervalMs - (now() - started)));
    });
  };

  return {
    refreshOnce,
    start() {
      stopped = false;
      loop();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

function joinOr(expressions: string[]): string {
  return expressions.map((expression) => `(${expression})`).join(" or ");
}

/** A metric name as a selector; names with characters PromQL identifiers lack use the quoted form. */
function selector(name: string): string {
  return /^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name) ? name : `{__name__="${name}"}`;
}

function escapeRegex(name: string): string {
  return name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
