import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAdapterMetrics } from "../../src/adapter/adapter-metrics.ts";
import { MetricCache, type PodLike } from "../../src/adapter/cache.ts";
import { createScraper, defaultResolveTarget, endpointFromAnnotations, isPodReady, type RoundSummary } from "../../src/adapter/scraper.ts";
import { cumulative, vllmPage } from "./adapter-samples.ts";

// A loopback stand-in for inference pods: each path is one pod's metrics page.
let server: http.Server;
let base: string;
const hits = new Map<string, number>();
const hanging: http.ServerResponse[] = [];

beforeAll(async () => {
  server = http.createServer((request, response) => {
    const path = request.url ?? "/";
    const hit = (hits.get(path) ?? 0) + 1;
    hits.set(path, hit);
    if (path.startsWith("/broken/")) {
      response.writeHead(500).end("internal error");
      return;
    }
    if (path.startsWith("/plain-go/")) {
      response.writeHead(200, { "content-type": "text/plain" }).end("go_goroutines 12\nprocess_cpu_seconds_total 3.5\n");
      return;
    }
    if (path.startsWith("/slow/")) {
      hanging.push(response);
      return;
    }
    // Every scrape finds 30 more finished requests and 6 more in the 0.3–0.5 s bucket.
    const perBucket = [0, 6 * hit, ...new Array(14).fill(0)];
    response.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(
      vllmPage({ running: 2, waiting: 1, stop: 100 + 30 * hit, length: 0, buckets: cumulative(perBucket) }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const response of hanging) response.destroy();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

function readyPod(name: string, annotations: Record<string, string> = { "infergate.dev/metrics-port": "8000" }, ready = true): PodLike {
  return {
    metadata: { name, namespace: "team-a", uid: `uid-${name}`, labels: { app: "llama" }, annotations },
    // A cluster-shaped address that must never be dialled in a test.
    status: { phase: "Running", podIP: "10.244.1.17", conditions: [{ type: "Ready", status: ready ? "True" : "False" }] },
  };
}

describe("scraper against a loopback server", () => {
  it("fills the cache from successive rounds, dialling only what resolveTarget returns", async () => {
    let clock = 1_000_000;
    const cache = new MetricCache({ windowMs: 60_000, now: () => clock });
    const pods = [readyPod("llama-a"), readyPod("llama-b")];
    for (const pod of pods) cache.upsertPod(pod);
    const resolved: string[] = [];
    const scraper = createScraper({
      cache,
      pods: () => pods,
      resolveTarget: (pod) => {
        resolved.push(pod.metadata!.name!);
        return new URL(`${base}/vllm/${pod.metadata!.name}/metrics`);
      },
      intervalMs: 15_000,
      timeoutMs: 5_000,
      concurrency: 2,
      now: () => clock,
    });
    expect(await scraper.scrapeOnce()).toEqual({ targets: 2, succeeded: 2, failed: 0 });
    clock += 15_000;
    expect(await scraper.scrapeOnce()).toEqual({ targets: 2, succeeded: 2, failed: 0 });
    await scraper.stop();

    expect(resolved.sort()).toEqual(["llama-a", "llama-a", "llama-b", "llama-b"]);
    expect(hits.get("/vllm/llama-a/metrics")).toBe(2);
    expect(cache.object("team-a", "pods", "llama-a", "inference_concurrency")).toEqual({ ok: true, reading: { value: 3, timestamp: clock } });
    expect(cache.object("team-a", "pods", "llama-a", "inference_requests_per_second")).toEqual({ ok: true, reading: { value: 2, timestamp: clock } });
    // All 6 new requests sit in (300, 500] ms; the median is interpolated to the bucket's middle.
    expect(cache.object("team-a", "pods", "llama-b", "inference_latency_p50_ms")).toEqual({ ok: true, reading: { value: 400, timestamp: clock } });
  });

  it("runs rounds in the background until stopped", async () => {
    const cache = new MetricCache({ windowMs: 60_000 });
    const pod = readyPod("llama-loop");
    cache.upsertPod(pod);
    const rounds: RoundSummary[] = [];
    let twoRounds!: () => void;
    const done = new Promise<void>((resolve) => (twoRounds = resolve));
    const scraper = createScraper({
      cache,
      pods: () => [pod],
      resolveTarget: () => new URL(`${base}/vllm/llama-loop/metrics`),
      intervalMs: 10,
      timeoutMs: 5_000,
      concurrency: 1,
      onRound: (round) => {
        rounds.push(round);
        if (rounds.length === 2) twoRounds();
      },
    });
    scraper.start();
    await done;
    await scraper.stop();
    expect(rounds.slice(0, 2)).toEqual([
      { targets: 1, succeeded: 1, failed: 0 },
      { targets: 1, succeeded: 1, failed: 0 },
    ]);
    const concurrency = cache.object("team-a", "pods", "llama-loop", "inference_concurrency");
    expect(concurrency).toEqual({ ok: true, reading: { value: 3, timestamp: expect.any(Number) } });
    const rate = cache.object("team-a", "pods", "llama-loop", "inference_requests_per_second");
    expect(rate.ok && rate.reading.value > 0).toBe(true);
  });

  it("records why a pod has no data: HTTP error, unknown page, size cap, not ready, no endpoint", async () => {
    const cache = new MetricCache({ windowMs: 60_000 });
    const metrics = createAdapterMetrics({ defaults: false });
    const pods = [
      readyPod("broken"),
      readyPod("plain-go"),
      readyPod("huge"),
      readyPod("warming-up", undefined, false),
      readyPod("unannotated", {}),
    ];
    for (const pod of pods) cache.upsertPod(pod);
    const asked: string[] = [];
    const scraper = createScraper({
      cache,
      pods: () => pods,
      resolveTarget: (pod) => {
        const name = pod.metadata!.name!;
        asked.push(name);
        if (name === "unannotated") return undefined;
        return new URL(name === "huge" ? `${base}/vllm/huge/metrics` : `${base}/${name}/x/metrics`);
      },
      intervalMs: 15_000,
      timeoutMs: 5_000,
      concurrency: 4,
      maxBytes: 1024,
      metrics,
    });
    expect(await scraper.scrapeOnce()).toEqual({ targets: 3, succeeded: 0, failed: 3 });
    await scraper.stop();
    expect(asked).not.toContain("warming-up");
    const reason = (name: string) => {
      const lookup = cache.object("team-a", "pods", name, "inference_concurrency");
      return lookup.ok ? "" : lookup.reason;
    };
    expect(reason("broken")).toBe(`pod team-a/broken: scrape of ${base}/broken/x/metrics failed: HTTP 500`);
    expect(reason("plain-go")).toMatch(/exposes none of the known inference metrics \(engines: vllm, triton, tgi,/);
    expect(reason("huge")).toMatch(/failed: the page exceeds 1024 bytes$/);
    expect(reason("warming-up")).toBe("pod team-a/warming-up: not ready: only ready pods are scraped");
    expect(reason("unannotated")).toMatch(/no metrics endpoint: annotate the pod template with infergate.dev\/metrics-port/);
    const errors = await metrics.scrapeErrors.get();
    const byReason = Object.fromEntries(errors.values.map((value) => [value.labels.reason, value.value]));
    expect(byReason).toEqual({ http: 1, unknown_engine: 1, too_large: 1 });
    expect((await metrics.targets.get()).values[0]?.value).toBe(3);
  });

  it("gives up on a pod that does not answer within the scrape timeout", async () => {
    const cache = new MetricCache({ windowMs: 60_000 });
    const metrics = createAdapterMetrics({ defaults: false });
    const slow = readyPod("slow");
    cache.upsertPod(slow);
    const scraper = createScraper({
      cache,
      pods: () => [slow],
      resolveTarget: () => new URL(`${base}/slow/metrics`),
      intervalMs: 15_000,
      timeoutMs: 100,
      concurrency: 1,
      metrics,
    });
    expect(await scraper.scrapeOnce()).toEqual({ targets: 1, succeeded: 0, failed: 1 });
    await scraper.stop();
    const lookup = cache.object("team-a", "pods", "slow", "inference_concurrency");
    expect(lookup).toEqual({ ok: false, reason: `pod team-a/slow: scrape of ${base}/slow/metrics failed: no complete answer within 100 ms` });
    expect((await metrics.scrapeErrors.get()).values).toEqual([{ labels: { reason: "timeout" }, value: 1 }]);
  });
});

describe("targets from pods", () => {
  it("builds the production URL from the pod IP and annotations, infergate's winning", () => {
    expect(defaultResolveTarget(readyPod("a", { "infergate.dev/metrics-port": "8000" }))?.href).toBe("http://10.244.1.17:8000/metrics");
    expect(
      defaultResolveTarget(readyPod("b", { "prometheus.io/scrape": "true", "prometheus.io/port": "9091", "prometheus.io/path": "stats/prometheus", "infergate.dev/metrics-port": "8002", "infergate.dev/metrics-path": "/metrics/v2" }))
        ?.href,
    ).toBe("http://10.244.1.17:8002/metrics/v2");
    expect(defaultResolveTarget(readyPod("c", { "prometheus.io/scrape": "true", "prometheus.io/port": "9091", "prometheus.io/path": "stats/prometheus" }))?.href).toBe(
      "http://10.244.1.17:9091/stats/prometheus",
    );
    const v6 = readyPod("d");
    v6.status!.podIP = "fd00::17";
    expect(defaultResolveTarget(v6)?.href).toBe("http://[fd00::17]:8000/metrics");
    const noIp = readyPod("e");
    delete noIp.status!.podIP;
    expect(defaultResolveTarget(noIp)).toBeUndefined();
  });

  it("explains annotations it cannot use", () => {
    expect(endpointFromAnnotations(readyPod("a", { "infergate.dev/metrics-port": "http" }))).toEqual({
      ok: false,
      problem: 'annotation infergate.dev/metrics-port must be a port number from 1 to 65535, got "http"',
    });
    expect(endpointFromAnnotations(readyPod("b", { "prometheus.io/scrape": "true" }))).toEqual({
      ok: false,
      problem: 'annotation prometheus.io/scrape is "true" but prometheus.io/port is missing',
    });
    expect(endpointFromAnnotations(readyPod("c", { "prometheus.io/scrape": "false", "prometheus.io/port": "9091" })).ok).toBe(false);
  });

  it("scrapes only running, ready pods that are not being deleted", () => {
    expect(isPodReady(readyPod("a"))).toBe(true);
    expect(isPodReady(readyPod("b", undefined, false))).toBe(false);
    const deleting = readyPod("c");
    deleting.metadata!.deletionTimestamp = "2026-08-20T10:00:00Z";
    expect(isPodReady(deleting)).toBe(false);
    const pending = readyPod("d");
    pending.status!.phase = "Pending";
    expect(isPodReady(pending)).toBe(false);
  });
});
