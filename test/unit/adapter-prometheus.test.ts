import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAdapterMetrics } from "../../src/adapter/adapter-metrics.ts";
import { MetricCache, type PodLike } from "../../src/adapter/cache.ts";
import { buildPrometheusQueries, createPrometheusSource, queryInstant, windowsFromResults } from "../../src/adapter/prometheus.ts";

// A loopback stand-in for Prometheus' HTTP API, answering by what the query asks for.
let server: http.Server;
let base: string;
let failing = false;
const queries: string[] = [];

function vector(samples: Array<[Record<string, string>, number | string]>) {
  return { status: "success", data: { resultType: "vector", result: samples.map(([metric, value]) => ({ metric, value: [1786000000, String(value)] })) } };
}

function answer(query: string) {
  if (failing) return { status: "error", errorType: "bad_data", error: "parse error at char 3" };
  const a = { namespace: "team-a", pod: "llama-5d8f9-aaaaa" };
  const b = { namespace: "team-a", pod: "llama-5d8f9-bbbbb" };
  if (query.includes("avg_over_time")) return vector([[a, 4], [b, 1.5]]);
  if (query.includes("rate(vllm:request_success_total")) return vector([[a, 2], [b, 1]]);
  if (query.includes("vllm:e2e_request_latency_seconds_bucket"))
    return vector([
      [{ ...a, le: "0.1" }, 0.1],
      [{ ...a, le: "0.5" }, 0.3],
      [{ ...a, le: "+Inf" }, 0.3],
    ]);
  // The same pod also shows up in a lower-priority source; the vLLM histogram must win.
  if (query.includes("http_request_duration_seconds_bucket")) return vector([[{ ...a, le: "+Inf" }, 50]]);
  if (query.includes("nv_inference_request_summary_us")) return vector([[{ ...b, quantile: "0.5" }, "NaN"]]);
  return vector([]);
}

beforeAll(async () => {
  server = http.createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const query = new URLSearchParams(body).get("query") ?? "";
      queries.push(query);
      const result = answer(query);
      response.writeHead(result.status === "success" ? 200 : 400, { "content-type": "application/json" }).end(JSON.stringify(result));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

function pod(name: string): PodLike {
  return { metadata: { name, namespace: "team-a", uid: name, labels: { "pod-template-hash": "5d8f9" }, ownerReferences: [{ kind: "ReplicaSet", name: "llama-5d8f9", controller: true }] } };
}

describe("PromQL built from the engine table", () => {
  it("joins engines with `or` in table order, per metric", () => {
    const built = buildPrometheusQueries(60);
    const concurrency = built.find((query) => query.purpose.kind === "concurrency")!.promql;
    expect(concurrency.startsWith('(sum by (namespace, pod) (avg_over_time({__name__=~"vllm:num_requests_running|vllm:num_requests_waiting"}[60s]))) or ')).toBe(true);
    expect(concurrency).toContain("(sum by (namespace, pod) (rate(nv_inference_request_duration_us[60s])) * 0.000001)");
    const rps = built.find((query) => query.purpose.kind === "requestsPerSecond")!.promql;
    expect(rps.indexOf("vllm:request_success_total")).toBeLessThan(rps.indexOf("nv_inference_request_success"));
    expect(built.filter((query) => query.purpose.kind === "histogram").map((query) => query.promql)).toContain(
      "sum by (namespace, pod, le) (rate(tgi_request_duration_bucket[60s]))",
    );
    expect(built.filter((query) => query.purpose.kind === "summary").map((query) => query.promql)).toEqual([
      "max by (namespace, pod, quantile) (nv_inference_request_summary_us)",
    ]);
  });

  it("turns results into per-pod windows with bucket bounds in milliseconds", () => {
    const built = buildPrometheusQueries(60);
    const results = built.map((query) =>
      query.promql.includes("kn_serving_invocation_duration_seconds_bucket")
        ? [
            { labels: { namespace: "n", pod: "p", le: "0.05" }, value: 1 },
            { labels: { namespace: "n", pod: "p", le: "+Inf" }, value: 2 },
          ]
        : [],
    );
    expect(windowsFromResults(built, results, 5).get("n/p")).toEqual({
      timestamp: 5,
      latency: {
        kind: "buckets",
        buckets: [
          { le: 50, count: 1 },
          { le: Number.POSITIVE_INFINITY, count: 2 },
        ],
      },
    });
  });
});

describe("Prometheus source against a loopback Prometheus", () => {
  it("fills the cache, keeps values through a failed refresh, and lets them age out", async () => {
    let clock = Date.parse("2026-08-20T10:00:00Z");
    const cache = new MetricCache({ windowMs: 60_000, now: () => clock });
    cache.upsertPod(pod("llama-5d8f9-aaaaa"));
    cache.upsertPod(pod("llama-5d8f9-bbbbb"));
    const metrics = createAdapterMetrics({ defaults: false });
    const source = createPrometheusSource({ url: base, cache, windowSeconds: 60, intervalMs: 15_000, timeoutMs: 5_000, metrics, now: () => clock });

    await source.refreshOnce();
    expect(queries.length).toBe(buildPrometheusQueries(60).length);
    expect(cache.object("team-a", "deployments.apps", "llama", "inference_concurrency")).toEqual({ ok: true, reading: { value: 5.5, timestamp: clock } });
    expect(cache.object("team-a", "pods", "llama-5d8f9-bbbbb", "inference_requests_per_second")).toEqual({ ok: true, reading: { value: 1, timestamp: clock } });
    // 0.3 req/s: 0.1 within 100 ms, 0.2 more within 500 ms. p50: rank 0.15 → 100 + 400 × 0.05/0.2 = 200.
    const p50 = cache.object("team-a", "pods", "llama-5d8f9-aaaaa", "inference_latency_p50_ms");
    expect(p50.ok && p50.reading.value).toBeCloseTo(200, 9);
    const summaryOnly = cache.object("team-a", "pods", "llama-5d8f9-bbbbb", "inference_latency_p50_ms");
    expect(summaryOnly.ok).toBe(false);

    failing = true;
    const at = clock;
    clock += 15_000;
    await source.refreshOnce();
    expect(cache.object("team-a", "pods", "llama-5d8f9-aaaaa", "inference_concurrency")).toEqual({ ok: true, reading: { value: 4, timestamp: at } });
    expect((await metrics.scrapeErrors.get()).values).toEqual([{ labels: { reason: "prometheus" }, value: 1 }]);
    clock = at + 61_000;
    expect(cache.object("team-a", "pods", "llama-5d8f9-aaaaa", "inference_concurrency").ok).toBe(false);
    failing = false;
    await source.stop();
  });

  it("reports Prometheus' own error text", async () => {
    failing = true;
    await expect(queryInstant(base, "up", { timeMs: 0, timeoutMs: 5_000 })).rejects.toThrow("Prometheus query failed (HTTP 400): bad_data: parse error at char 3");
    failing = false;
    await expect(queryInstant(base, "up", { timeMs: 0, timeoutMs: 5_000 })).resolves.toEqual([]);
  });
});
