// The embedded source: every interval, fetch each ready pod's Prometheus page (bounded concurrency,
// a deadline per scrape, a size cap), reduce it through the engine table and record it in the cache.
// Which address to dial is decided by one injectable function, so the scraper never dials anything
// but what that function returns.
import http from "node:http";
import https from "node:https";
import { isIPv6 } from "node:net";
import type { AdapterMetrics } from "./adapter-metrics.ts";
import type { MetricCache, PodLike } from "./cache.ts";
import { parseExposition } from "./exposition.ts";
import { ENGINE_NAMES, extractObservation } from "./mapping.ts";
import type { Logger } from "../observability/log.ts";

export const METRICS_PORT_ANNOTATION = "infergate.dev/metrics-port";
export const METRICS_PATH_ANNOTATION = "infergate.dev/metrics-path";
export const PROMETHEUS_SCRAPE_ANNOTATION = "prometheus.io/scrape";
export const PROMETHEUS_PORT_ANNOTATION = "prometheus.io/port";
export const PROMETHEUS_PATH_ANNOTATION = "prometheus.io/path";
export const PROMETHEUS_SCHEME_ANNOTATION = "prometheus.io/scheme";

/** Where to fetch a pod's metrics, or undefined to skip it. */
export type TargetResolver = (pod: PodLike) => URL | undefined;

export interface Endpoint {
  scheme: "http" | "https";
  port: number;
  path: string;
}

export type EndpointResult = { ok: true; endpoint: Endpoint } | { ok: false; problem: string };

/**
 * The metrics endpoint a pod's annotations declare. infergate's own annotations win over the
 * Prometheus convention, so a pod can point the adapter at a different port than its Prometheus.
 */
export function endpointFromAnnotations(pod: PodLike): EndpointResult {
  const annotations = pod.metadata?.annotations ?? {};
  const port = (value: string | undefined, key: string): number | string => {
    const n = Number(value);
    return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : `annotation ${key} must be a port number from 1 to 65535, got "${value}"`;
  };
  const path = (value: string | undefined) => (value && value.trim() !== "" ? (value.startsWith("/") ? value : `/${value}`) : "/metrics");
  if (annotations[METRICS_PORT_ANNOTATION] !== undefined) {
    const p = port(annotations[METRICS_PORT_ANNOTATION], METRICS_PORT_ANNOTATION);
    if (typeof p === "string") return { ok: false, problem: p };
    return { ok: true, endpoint: { scheme: "http", port: p, path: path(annotations[METRICS_PATH_ANNOTATION]) } };
  }
  if (annotations[PROMETHEUS_SCRAPE_ANNOTATION] === "true") {
    if (annotations[PROMETHEUS_PORT_ANNOTATION] === undefined) {
      return { ok: false, problem: `annotation ${PROMETHEUS_SCRAPE_ANNOTATION} is "true" but ${PROMETHEUS_PORT_ANNOTATION} is missing` };
    }
    const p = port(annotations[PROMETHEUS_PORT_ANNOTATION], PROMETHEUS_PORT_ANNOTATION);
    if (typeof p === "string") return { ok: false, problem: p };
    const scheme = annotations[PROMETHEUS_SCHEME_ANNOTATION] === "https" ? "https" : "http";
    return { ok: true, endpoint: { scheme, port: p, path: path(annotations[PROMETHEUS_PATH_ANNOTATION]) } };
  }
  return {
    ok: false,
    problem: `no metrics endpoint: annotate the pod template with ${METRICS_PORT_ANNOTATION} (and optionally ${METRICS_PATH_ANNOTATION}), or ${PROMETHEUS_SCRAPE_ANNOTATION}: "true" with ${PROMETHEUS_PORT_ANNOTATION}`,
  };
}

/** Production resolver: the annotated endpoint on the pod's own IP. */
export function defaultResolveTarget(pod: PodLike): URL | undefined {
  const result = endpointFromAnnotations(pod);
  const ip = pod.status?.podIP;
  if (!result.ok || !ip) return undefined;
  const host = isIPv6(ip) ? `[${ip}]` : ip;
  return new URL(`${result.endpoint.scheme}://${host}:${result.endpoint.port}${result.endpoint.path}`);
}

export function isPodReady(pod: PodLike): boolean {
  if (pod.metadata?.deletionTimestamp) return false;
  if (pod.status?.phase !== "Running") return false;
  return pod.status?.conditions?.some((condition) => condition.type === "Ready" && condition.status === "True") === true;
}

export type FetchResult = { ok: true; body: string } | { ok: false; reason: "timeout" | "connect" | "http" | "too_large"; message: string };

// Ask for the classic text format: OpenMetrics and protobuf are what Prometheus negotiates, and the
// parser reads text.
const ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

export function fetchMetricsPage(url: URL, options: { timeoutMs: number; maxBytes: number; agent?: http.Agent }): Promise<FetchResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: FetchResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      resolve(result);
    };
    const client = url.protocol === "https:" ? https : http;
    const request = client.get(url, { headers: { accept: ACCEPT, "user-agent": "infergate-adapter" }, ...(options.agent ? { agent: options.agent } : {}) }, (response) => {
      const status = response.statusCode ?? 0;
      if (status < 200 || status >= 300) {
        response.resume();
        finish({ ok: false, reason: "http", message: `HTTP ${status}` });
        request.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > options.maxBytes) {
          finish({ ok: false, reason: "too_large", message: `the page exceeds ${options.maxBytes} bytes` });
          request.destroy();
          return;
        }
        chunks.push(chunk);
      });
      response.on("end", () => finish({ ok: true, body: Buffer.concat(chunks).toString("utf8") }));
      response.on("error", (error) => finish({ ok: false, reason: "connect", message: error.message }));
    });
    const deadline = setTimeout(() => {
      finish({ ok: false, reason: "timeout", message: `no complete answer within ${options.timeoutMs} ms` });
      request.destroy();
    }, options.timeoutMs);
    request.on("error", (error: NodeJS.ErrnoException) => finish({ ok: false, reason: "connect", message: error.code ? `${error.code} ${error.message}` : error.message }));
  });
}

export interface ScraperOptions {
  cache: MetricCache;
  /** The pods known right now (the pod watch's cache). */
  pods: () => readonly PodLike[];
  resolveTarget?: TargetResolver;
  intervalMs: number;
  timeoutMs: number;
  concurrency: number;
  maxBytes?: number;
  metrics?: AdapterMetrics;
  logger?: Logger;
  now?: () => number;
  /** Called after every round, for tests and logs. */
  onRound?: (round: RoundSummary) => void;
}

export interface RoundSummary {
  targets: number;
  succeeded: number;
  failed: number;
}

export interface Scraper {
  /** One full round over the current targets. */
  scrapeOnce(): Promise<RoundSummary>;
  /** Rounds every interval, the first one at once, until stop(). */
  start(): void;
  stop(): Promise<void>;
}

export function createScraper(options: ScraperOptions): Scraper {
  const resolve = options.resolveTarget ?? defaultResolveTarget;
  const now = options.now ?? Date.now;
  const maxBytes = options.maxBytes ?? 16 * 1024 * 1024;
  const agents = { http: new http.Agent({ keepAlive: true, maxSockets: options.concurrency }), https: new https.Agent({ keepAlive: true, maxSockets: options.concurrency }) };
  // Log a pod's problem when it changes, not every interval.
  const lastProblem = new Map<string, string>();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<RoundSummary> | undefined;
  let stopped = false;

  const problem = (pod: PodLike, text: string) => {
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    options.cache.recordProblem(namespace, name, text);
    const key = `${namespace}/${name}`;
    if (lastProblem.get(key) !== text) {
      lastProblem.set(key, text);
      options.logger?.log("debug", "pod has no fresh metrics", { pod: key, problem: text });
    }
  };

  const scrapePod = async (pod: PodLike, url: URL): Promise<boolean> => {
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const at = now();
    const started = process.hrtime.bigint();
    const agent = url.protocol === "https:" ? agents.https : agents.http;
    const result = await fetchMetricsPage(url, { timeoutMs: options.timeoutMs, maxBytes, agent });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (!result.ok) {
      options.metrics?.scrapeErrors.inc({ reason: result.reason });
      options.metrics?.scrapeDuration.observe({ outcome: "error" }, seconds);
      problem(pod, `scrape of ${url.href} failed: ${result.message}`);
      return false;
    }
    const exposition = parseExposition(result.body);
    const observation = extractObservation(exposition, at);
    options.metrics?.scrapeDuration.observe({ outcome: observation ? "ok" : "error" }, seconds);
    if (!observation) {
      options.metrics?.scrapeErrors.inc({ reason: exposition.samples.length === 0 && exposition.problems.length > 0 ? "parse" : "unknown_engine" });
      const parseNote = exposition.problems.length > 0 ? ` (${exposition.problems[0]})` : "";
      problem(pod, `${url.href} exposes none of the known inference metrics (engines: ${ENGINE_NAMES.join(", ")})${parseNote}`);
      return false;
    }
    options.cache.recordObservation(namespace, name, pod.metadata?.uid, observation);
    lastProblem.delete(`${namespace}/${name}`);
    return true;
  };

  const round = async (): Promise<RoundSummary> => {
    const targets: Array<{ pod: PodLike; url: URL }> = [];
    const pods = options.pods();
    const present = new Set(pods.map((pod) => `${pod.metadata?.namespace}/${pod.metadata?.name}`));
    for (const key of [...lastProblem.keys()]) if (!present.has(key)) lastProblem.delete(key);
    for (const pod of pods) {
      if (!pod.metadata?.namespace || !pod.metadata?.name) continue;
      if (!isPodReady(pod)) {
        problem(pod, "not ready: only ready pods are scraped");
        continue;
      }
      const url = resolve(pod);
      if (!url) {
        const endpoint = endpointFromAnnotations(pod);
        problem(pod, endpoint.ok ? "no address to scrape (no pod IP yet)" : endpoint.problem);
        continue;
      }
      targets.push({ pod, url });
    }
    options.metrics?.targets.set(targets.length);
    let succeeded = 0;
    let next = 0;
    const worker = async () => {
      while (next < targets.length) {
        const target = targets[next++]!;
        if (await scrapePod(target.pod, target.url)) succeeded++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency, targets.length) }, worker));
    const summary = { targets: targets.length, succeeded, failed: targets.length - succeeded };
    options.onRound?.(summary);
    return summary;
  };

  const scrapeOnce = () => {
    // Rounds never overlap: a caller during a round gets that round.
    running ??= round().finally(() => {
      running = undefined;
    });
    return running;
  };

  const loop = () => {
    if (stopped) return;
    const started = now();
    scrapeOnce()
      .catch((error) => options.logger?.log("error", "scrape round failed", { error: String(error?.message ?? error) }))
      .finally(() => {
        if (stopped) return;
        timer = setTimeout(loop, Math.max(0, options.intervalMs - (now() - started)));
      });
  };

  return {
    scrapeOnce,
    start() {
      stopped = false;
      loop();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => undefined);
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}
