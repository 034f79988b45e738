// A model-server stand-in for the adapter's end-to-end test and benchmark: node:http on 127.0.0.1 only,
// answering completions after a configurable latency and exposing vLLM-style metrics (requests running
// and waiting, finished requests, the end-to-end latency histogram), plus a bounded load generator that
// drives it at a known rate. The histogram records the latency each request was given, not the wall
// time its timer happened to fire after: on a loaded machine timers run late by tens or hundreds of
// milliseconds, and a test must know exactly what the adapter should report. Written for these tests
// from vLLM's documented metric names.
import http from "node:http";
import type { AddressInfo } from "node:net";

const LOOPBACK = "127.0.0.1";

/** vLLM's bounds for vllm:e2e_request_latency_seconds. */
export const VLLM_LATENCY_BUCKETS_SECONDS: readonly number[] = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0];

/** A fixed latency in ms, or one drawn per request. */
export type Latency = number | (() => number);

export interface ModelServerOptions {
  latencyMs: Latency;
  /** Histogram bounds in seconds, ascending (+Inf is added). Default: vLLM's. */
  bucketsSeconds?: readonly number[];
  model?: string;
  /** Default: a free port. */
  port?: number;
}

export interface CompletedRequest {
  /** When it finished, ms since the epoch. */
  at: number;
  /** The latency it was given (and recorded in the histogram). */
  latencyMs: number;
}

export interface ModelServer {
  /** http://127.0.0.1:PORT */
  url: string;
  metricsUrl: string;
  port: number;
  setLatency(latency: Latency): void;
  /** Requests finished so far, oldest first. */
  completed(): readonly CompletedRequest[];
  inFlight(): number;
  close(): Promise<void>;
}

export async function startModelServer(options: ModelServerOptions): Promise<ModelServer> {
  const bounds = [...(options.bucketsSeconds ?? VLLM_LATENCY_BUCKETS_SECONDS)];
  const model = options.model ?? "stand-in/llm-8b";
  let latency: Latency = options.latencyMs;
  const buckets = new Array<number>(bounds.length + 1).fill(0);
  const completed: CompletedRequest[] = [];
  let running = 0;
  let sumSeconds = 0;
  const timers = new Set<NodeJS.Timeout>();

  const observe = (ms: number) => {
    const seconds = ms / 1000;
    sumSeconds += seconds;
    const index = bounds.findIndex((le) => seconds <= le);
    buckets[index < 0 ? bounds.length : index]!++;
    completed.push({ at: Date.now(), latencyMs: ms });
  };

  const page = (): string => {
    const labels = `engine="0",model_name="${model}"`;
    let cumulative = 0;
    const bucketLines = [...bounds, Number.POSITIVE_INFINITY].map((le, i) => {
      cumulative += buckets[i]!;
      return `vllm:e2e_request_latency_seconds_bucket{engine="0",le="${Number.isFinite(le) ? le.toFixed(3) : "+Inf"}",model_name="${model}"} ${cumulative}.0`;
    });
    return [
      "# HELP vllm:num_requests_running Number of requests in model execution batches.",
      "# TYPE vllm:num_requests_running gauge",
      `vllm:num_requests_running{${labels}} ${running}.0`,
      "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
      "# TYPE vllm:num_requests_waiting gauge",
      `vllm:num_requests_waiting{${labels}} 0.0`,
      "# HELP vllm:request_success_total Count of successfully processed requests.",
      "# TYPE vllm:request_success_total counter",
      `vllm:request_success_total{engine="0",finished_reason="stop",model_name="${model}"} ${completed.length}.0`,
      "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
      "# TYPE vllm:e2e_request_latency_seconds histogram",
      ...bucketLines,
      `vllm:e2e_request_latency_seconds_sum{${labels}} ${sumSeconds.toFixed(6)}`,
      `vllm:e2e_request_latency_seconds_count{${labels}} ${completed.length}.0`,
      "",
    ].join("\n");
  };

  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(page());
      return;
    }
    if (req.method !== "POST" || !req.url?.startsWith("/v1/")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    running++;
    req.resume();
    const wait = Math.max(0, typeof latency === "function" ? latency() : latency);
    const timer = setTimeout(() => {
      timers.delete(timer);
      running--;
      observe(wait);
      res.writeHead(200, { "content-type": "application/json" }).end(`{"object":"text_completion","model":"${model}","choices":[{"index":0,"text":"ok","finish_reason":"stop"}]}`);
    }, wait);
    timers.add(timer);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, LOOPBACK, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${LOOPBACK}:${port}`;
  return {
    url,
    metricsUrl: `${url}/metrics`,
    port,
    setLatency(next) {
      latency = next;
    },
    completed: () => completed,
    inFlight: () => running,
    close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

export interface LoadOptions {
  /** Base URL of a stand-in on 127.0.0.1; requests go to POST <url>/v1/completions. */
  url: string;
  /** Requests started per second, on a fixed schedule whatever the answers do (open loop). */
  rate: number;
  /** The generator stops by itself after this long. */
  durationMs: number;
  /** Requests in flight at most; a request due while this many wait is dropped and counted. */
  maxInFlight?: number;
}

export interface LoadResult {
  sent: number;
  completed: number;
  errors: number;
  /** Due but not sent because maxInFlight requests were waiting. */
  dropped: number;
  elapsedMs: number;
  /** Requests finished per second of the run. */
  achievedRate: number;
}

export interface Load {
  done: Promise<LoadResult>;
  /** Stops sending; `done` resolves once the requests in flight have answered. */
  stop(): void;
}

/** Drives a stand-in at a known rate, bounded in time and in requests in flight. */
export function generateLoad(options: LoadOptions): Load {
  const target = new URL("/v1/completions", options.url);
  if (target.hostname !== LOOPBACK && target.hostname !== "localhost") throw new Error(`the load generator only sends to 127.0.0.1, not ${target.hostname}`);
  if (!(options.rate > 0) || !(options.durationMs > 0)) throw new Error("rate and durationMs must be positive");
  const maxInFlight = options.maxInFlight ?? 256;
  const agent = new http.Agent({ keepAlive: true, maxSockets: maxInFlight });
  const body = JSON.stringify({ model: "stand-in/llm-8b", prompt: "hello", max_tokens: 16 });
  const started = performance.now();
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let dropped = 0;
  let inFlight = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let finish: (result: LoadResult) => void = () => undefined;
  const done = new Promise<LoadResult>((resolve) => (finish = resolve));

  const settleIfDone = () => {
    if (!stopped || inFlight > 0) return;
    agent.destroy();
    const elapsedMs = performance.now() - started;
    finish({ sent, completed, errors, dropped, elapsedMs, achievedRate: completed / (elapsedMs / 1000) });
  };

  const send = () => {
    sent++;
    inFlight++;
    const request = http.request(target, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (response) => {
      response.resume();
      response.on("end", () => {
        inFlight--;
        if (response.statusCode === 200) completed++;
        else errors++;
        settleIfDone();
      });
    });
    request.on("error", () => {
      inFlight--;
      errors++;
      settleIfDone();
    });
    request.end(body);
  };

  // Every tick sends what the schedule says is due by now, so a late timer catches up instead of
  // lowering the rate.
  const tick = () => {
    const elapsed = performance.now() - started;
    const due = Math.floor((Math.min(elapsed, options.durationMs) / 1000) * options.rate);
    while (sent + dropped < due) {
      if (inFlight >= maxInFlight) dropped++;
      else send();
    }
    if (elapsed >= options.durationMs) {
      stopped = true;
      settleIfDone();
      return;
    }
    timer = setTimeout(tick, Math.min(10, 1000 / options.rate));
  };
  tick();

  return {
    done,
    stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      settleIfDone();
    },
  };
}

/** The exact quantile of measured latencies (nearest rank), the truth an estimate is judged against. */
export function exactQuantile(latenciesMs: readonly number[], quantile: number): number | undefined {
  if (latenciesMs.length === 0) return undefined;
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(quantile * sorted.length) - 1))];
}
