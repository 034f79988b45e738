import { describe, expect, it } from "vitest";
import { MetricCache, deploymentOf, type PodLike } from "../../src/adapter/cache.ts";
import { parseExposition } from "../../src/adapter/exposition.ts";
import { extractObservation, type Observation } from "../../src/adapter/mapping.ts";
import { PodHistory, combineWindows, counterIncrease, evaluate, histogramQuantile, type Bucket } from "../../src/adapter/windows.ts";
import { cumulative, vllmPage } from "./adapter-samples.ts";

const WINDOW = 60_000;
const INF = Number.POSITIVE_INFINITY;

function observation(at: number, parts: Partial<Observation> = {}): Observation {
  return { at, engine: "vllm", ...parts };
}

function counter(value: number, key = "reason=stop"): Map<string, number> {
  return new Map([[key, value]]);
}

function histogram(buckets: Record<string, number>): Observation["histogram"] {
  const map = new Map(Object.entries(buckets).map(([le, count]) => [le === "Inf" ? INF : Number(le), count]));
  return new Map([["", { buckets: map }]]);
}

describe("rates from counters", () => {
  it("sums increases step by step, so a reset counts what came after it", () => {
    const history = new PodHistory();
    for (const [at, value] of [
      [0, 100],
      [15_000, 160],
      [30_000, 20], // the server restarted and has served 20 since
      [45_000, 80],
    ] as const) {
      history.add(observation(at, { completed: counter(value) }), WINDOW);
    }
    // 60 + 20 + 60 requests over the 45 s the steps cover.
    expect(history.window(45_000, WINDOW)!.requestsPerSecond).toBeCloseTo(140 / 45, 10);
  });

  it("hands out the same window between scrapes, and a fresh one after a scrape or as time slides", () => {
    const history = new PodHistory();
    history.add(observation(0, { completed: counter(0) }), WINDOW);
    history.add(observation(15_000, { completed: counter(30) }), WINDOW);
    const first = history.window(20_000, WINDOW)!;
    expect(history.window(25_000, WINDOW)).toBe(first);
    history.add(observation(30_000, { completed: counter(90) }), WINDOW);
    expect(history.window(30_000, WINDOW)!.requestsPerSecond).toBeCloseTo(3, 10);
    // At 70 s the 0→15 s step has left the window, though its end is still inside.
    expect(history.window(70_000, WINDOW)!.requestsPerSecond).toBeCloseTo(4, 10);
    expect(first.requestsPerSecond).toBeCloseTo(2, 10);
  });

  it("handles resets per series, and counts a series that appears between scrapes from zero", () => {
    const before = new Map([
      ["a", 100],
      ["b", 50],
    ]);
    const after = new Map([
      ["a", 10],
      ["b", 70],
      ["c", 3],
    ]);
    expect(counterIncrease(before, after)).toBe(10 + 20 + 3);
  });

  it("uses only steps that start inside the window, over the time they cover", () => {
    const history = new PodHistory();
    history.add(observation(0, { completed: counter(0) }), WINDOW);
    history.add(observation(15_000, { completed: counter(1000) }), WINDOW);
    history.add(observation(30_000, { completed: counter(1030) }), WINDOW);
    history.add(observation(45_000, { completed: counter(1060) }), WINDOW);
    // At 70 s the window starts at 10 s: the 0→15 s burst is out, 30 requests per 15 s remain.
    expect(history.window(70_000, WINDOW)!.requestsPerSecond).toBeCloseTo(2, 10);
  });

  it("needs two scrapes for a rate, and forgets everything older than the window", () => {
    const history = new PodHistory();
    history.add(observation(0, { completed: counter(5), inFlight: 1 }), WINDOW);
    const first = history.window(0, WINDOW)!;
    expect(first.requestsPerSecond).toBeUndefined();
    expect(evaluate(first, "inference_requests_per_second")).toEqual({ ok: false, reason: expect.stringMatching(/fewer than two scrapes/) });
    expect(history.window(61_000, WINDOW)).toBeUndefined();
  });

  it("turns a busy-time counter into mean concurrency (Little's law)", () => {
    const history = new PodHistory();
    history.add(observation(0, { engine: "triton", busySeconds: counter(52.5) }), WINDOW);
    history.add(observation(15_000, { engine: "triton", busySeconds: counter(82.5) }), WINDOW);
    expect(history.window(15_000, WINDOW)!.concurrency).toBeCloseTo(2, 10);
  });

  it("starts over when the engine on the pod changes", () => {
    const history = new PodHistory();
    history.add(observation(0, { engine: "tgi", completed: counter(10) }), WINDOW);
    history.add(observation(15_000, { engine: "vllm", completed: counter(4000) }), WINDOW);
    expect(history.window(15_000, WINDOW)!.requestsPerSecond).toBeUndefined();
  });
});

describe("in-flight averages", () => {
  it("averages the gauge over the samples inside the window", () => {
    const history = new PodHistory();
    history.add(observation(0, { inFlight: 2 }), WINDOW);
    history.add(observation(15_000, { inFlight: 4 }), WINDOW);
    history.add(observation(30_000, { inFlight: 6 }), WINDOW);
    expect(history.window(30_000, WINDOW)!.concurrency).toBe(4);
    expect(history.window(80_000, WINDOW)!.concurrency).toBe(6);
  });
});

describe("quantiles from histogram deltas", () => {
  it("matches a hand computation through a real vLLM page pair", () => {
    // Per-bucket counts for the bounds 0.3, 0.5, 0.8, 1, 1.5, … 60 s, +Inf.
    const before = [5, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const delta = [10, 50, 36, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const after = before.map((count, i) => count + delta[i]!);
    const page = (perBucket: number[], stop: number) => vllmPage({ running: 1, waiting: 0, stop, length: 0, buckets: cumulative(perBucket) });
    const history = new PodHistory();
    history.add(extractObservation(parseExposition(page(before, 22)), 0)!, WINDOW);
    history.add(extractObservation(parseExposition(page(after, 122)), 20_000)!, WINDOW);
    const window = history.window(20_000, WINDOW)!;
    // 100 requests in the window. p50: rank 50 lies in (300, 500] ms, which holds 50 requests above
    // the 10 below it: 300 + 200 × 40/50 = 460. p95: rank 95 in (500, 800], 36 requests above 60:
    // 500 + 300 × 35/36. p99: rank 99 in (800, 1000], 4 above 96: 800 + 200 × 3/4 = 950.
    expect(evaluate(window, "inference_latency_p50_ms")).toEqual({ ok: true, value: 460 });
    const p95 = evaluate(window, "inference_latency_p95_ms");
    expect(p95.ok && p95.value).toBeCloseTo(500 + (300 * 35) / 36, 9);
    expect(evaluate(window, "inference_latency_p99_ms")).toEqual({ ok: true, value: 950 });
    expect(evaluate(window, "inference_requests_per_second")).toEqual({ ok: true, value: 5 });
  });

  it("follows histogram_quantile at the edges", () => {
    const buckets: Bucket[] = [
      { le: 100, count: 10 },
      { le: 500, count: 60 },
      { le: 1000, count: 90 },
      { le: INF, count: 100 },
    ];
    expect(histogramQuantile(0.5, buckets)).toBe(100 + 400 * (40 / 50));
    // Rank 95 falls in +Inf: the answer is the highest finite bound.
    expect(histogramQuantile(0.95, buckets)).toBe(1000);
    // The lowest bucket is interpolated from zero.
    expect(histogramQuantile(0.05, buckets)).toBe(50);
    expect(histogramQuantile(0.5, buckets.slice(0, 3))).toBeUndefined();
    expect(histogramQuantile(0.5, [{ le: INF, count: 3 }])).toBeUndefined();
    expect(histogramQuantile(0.5, buckets.map((bucket) => ({ ...bucket, count: 0 })))).toBeUndefined();
  });

  it("treats a histogram reset as counting from zero", () => {
    const history = new PodHistory();
    history.add(observation(0, { histogram: histogram({ 100: 50, 1000: 80, Inf: 80 }) }), WINDOW);
    history.add(observation(15_000, { histogram: histogram({ 100: 2, 1000: 4, Inf: 4 }) }), WINDOW);
    const window = history.window(15_000, WINDOW)!;
    expect(window.latency).toEqual({
      kind: "buckets",
      buckets: [
        { le: 100, count: 2 },
        { le: 1000, count: 4 },
        { le: INF, count: 4 },
      ],
    });
  });

  it("reports 0 ms when no request finished in the window", () => {
    const history = new PodHistory();
    history.add(observation(0, { histogram: histogram({ 100: 5, Inf: 5 }) }), WINDOW);
    history.add(observation(15_000, { histogram: histogram({ 100: 5, Inf: 5 }) }), WINDOW);
    expect(evaluate(history.window(15_000, WINDOW)!, "inference_latency_p95_ms")).toEqual({ ok: true, value: 0 });
  });

  it("serves summary quantiles as the server computed them", () => {
    const history = new PodHistory();
    history.add(observation(0, { engine: "triton", quantilesMs: new Map([[0.5, 11], [0.99, 31]]) }), WINDOW);
    const window = history.window(0, WINDOW)!;
    expect(evaluate(window, "inference_latency_p99_ms")).toEqual({ ok: true, value: 31 });
    expect(evaluate(window, "inference_latency_p95_ms")).toEqual({ ok: false, reason: "its latency summary has no 0.95 quantile" });
  });

  it("merges pods by summing buckets before taking the quantile", () => {
    const combined = combineWindows([
      { timestamp: 1, concurrency: 2, requestsPerSecond: 1, latency: { kind: "buckets", buckets: [{ le: 100, count: 10 }, { le: 1000, count: 10 }, { le: INF, count: 10 }] } },
      { timestamp: 2, concurrency: 3, latency: { kind: "buckets", buckets: [{ le: 100, count: 0 }, { le: 1000, count: 10 }, { le: INF, count: 10 }] } },
    ])!;
    expect(combined.timestamp).toBe(2);
    expect(combined.concurrency).toBe(5);
    expect(combined.requestsPerSecond).toBe(1);
    // Merged: 10 at ≤100 ms, 20 at ≤1000 ms. p95: rank 19 in (100, 1000], 10 above 10 → 100 + 900 × 9/10.
    const p95 = evaluate(combined, "inference_latency_p95_ms");
    expect(p95.ok && p95.value).toBeCloseTo(910, 9);
  });
});

function pod(name: string, options: { uid?: string; labels?: Record<string, string>; replicaSet?: string } = {}): PodLike {
  const labels = { ...(options.labels ?? {}) };
  const metadata: NonNullable<PodLike["metadata"]> = { name, namespace: "team-a", uid: options.uid ?? `uid-${name}`, labels };
  if (options.replicaSet) {
    labels["pod-template-hash"] = options.replicaSet.slice(options.replicaSet.lastIndexOf("-") + 1);
    metadata.ownerReferences = [{ kind: "ReplicaSet", name: options.replicaSet, controller: true }];
  }
  return { metadata };
}

describe("MetricCache: pods coming and going", () => {
  it("aggregates a Deployment over the pods it has now, and never counts a new pod's first value", () => {
    let clock = 0;
    const cache = new MetricCache({ windowMs: WINDOW, now: () => clock });
    const rs = "llama-5d8f9";
    const a = pod("llama-5d8f9-aaaaa", { replicaSet: rs, labels: { app: "llama" } });
    const b = pod("llama-5d8f9-bbbbb", { replicaSet: rs, labels: { app: "llama" } });
    cache.upsertPod(a);
    cache.upsertPod(b);
    const record = (p: PodLike, at: number, completed: number, inFlight: number) =>
      cache.recordObservation("team-a", p.metadata!.name!, p.metadata!.uid, observation(at, { completed: counter(completed), inFlight }));
    record(a, 0, 100, 1);
    record(b, 0, 1000, 2);
    record(a, 15_000, 130, 1);
    record(b, 15_000, 1045, 2);
    clock = 15_000;
    const rps = () => cache.object("team-a", "deployments.apps", "llama", "inference_requests_per_second");
    expect(rps()).toEqual({ ok: true, reading: { value: 2 + 3, timestamp: 15_000 } });
    expect(cache.object("team-a", "deployments.apps", "llama", "inference_concurrency")).toEqual({ ok: true, reading: { value: 3, timestamp: 15_000 } });

    // A new pod arrives with a large counter: its first scrape is only a baseline.
    const c = pod("llama-5d8f9-ccccc", { replicaSet: rs, labels: { app: "llama" } });
    cache.upsertPod(c);
    record(c, 15_000, 5000, 0);
    expect(rps()).toEqual({ ok: true, reading: { value: 5, timestamp: 15_000 } });

    // A goes away; its requests no longer count.
    cache.removePod("team-a", a.metadata!.name!);
    clock = 30_000;
    record(b, 30_000, 1090, 2);
    record(c, 30_000, 5030, 0);
    expect(rps()).toEqual({ ok: true, reading: { value: 3 + 2, timestamp: 30_000 } });
    // A scrape that lands after the pod was deleted is dropped.
    record(a, 30_000, 999_999, 50);
    expect(cache.object("team-a", "pods", a.metadata!.name!, "inference_concurrency")).toEqual({ ok: false, reason: expect.stringContaining("is not known to the adapter") });

    // Same name, new uid: a new pod; its history starts over.
    cache.upsertPod(pod("llama-5d8f9-bbbbb", { uid: "uid-second-life", replicaSet: rs, labels: { app: "llama" } }));
    expect(cache.object("team-a", "pods", "llama-5d8f9-bbbbb", "inference_concurrency")).toEqual({
      ok: false,
      reason: "pod team-a/llama-5d8f9-bbbbb: no metrics collected in the last 60s",
    });

    // A relist that no longer holds C drops it.
    cache.retainPods([pod("llama-5d8f9-bbbbb", { uid: "uid-second-life", replicaSet: rs })]);
    expect(cache.podCount()).toBe(1);
  });

  it("lists pods by label selector and groups Knative pods by service and revision labels", () => {
    const cache = new MetricCache({ windowMs: WINDOW, now: () => 0 });
    const knative = (name: string, revision: string) =>
      pod(name, { labels: { "serving.knative.dev/service": "chat", "serving.knative.dev/revision": revision, app: "chat" } });
    cache.upsertPod(knative("chat-00001-deployment-x-1", "chat-00001"));
    cache.upsertPod(knative("chat-00002-deployment-y-1", "chat-00002"));
    cache.upsertPod(pod("other", { labels: { app: "other" } }));
    cache.recordObservation("team-a", "chat-00001-deployment-x-1", undefined, observation(0, { inFlight: 2 }));
    cache.recordObservation("team-a", "chat-00002-deployment-y-1", undefined, observation(0, { inFlight: 5 }));
    cache.recordObservation("team-a", "other", undefined, observation(0, { inFlight: 9 }));

    expect(cache.object("team-a", "services.serving.knative.dev", "chat", "inference_concurrency")).toEqual({ ok: true, reading: { value: 7, timestamp: 0 } });
    expect(cache.object("team-a", "revisions.serving.knative.dev", "chat-00002", "inference_concurrency")).toEqual({ ok: true, reading: { value: 5, timestamp: 0 } });
    expect(cache.list("team-a", "pods", "inference_concurrency", [{ key: "app", operator: "=", value: "chat" }])).toEqual({
      items: [
        { name: "chat-00001-deployment-x-1", value: 2, timestamp: 0 },
        { name: "chat-00002-deployment-y-1", value: 5, timestamp: 0 },
      ],
    });
    expect(cache.list("team-a", "revisions.serving.knative.dev", "inference_concurrency").items.map((item) => [item.name, item.value])).toEqual([
      ["chat-00001", 2],
      ["chat-00002", 5],
    ]);
  });

  it("explains missing values: unknown object, no data, and the scraper's last problem", () => {
    const cache = new MetricCache({ windowMs: WINDOW, now: () => 0 });
    expect(cache.object("team-a", "deployments.apps", "ghost", "inference_concurrency")).toEqual({ ok: false, reason: "deployments.apps team-a/ghost has no pods known to the adapter" });
    cache.upsertPod(pod("llama-5d8f9-aaaaa", { replicaSet: "llama-5d8f9" }));
    cache.recordProblem("team-a", "llama-5d8f9-aaaaa", "scrape of http://10.0.0.1:8000/metrics failed: ECONNREFUSED");
    const lookup = cache.object("team-a", "deployments.apps", "llama", "inference_concurrency");
    expect(lookup).toEqual({ ok: false, reason: expect.stringContaining("pod team-a/llama-5d8f9-aaaaa: scrape of http://10.0.0.1:8000/metrics failed: ECONNREFUSED") });
    cache.recordObservation("team-a", "llama-5d8f9-aaaaa", undefined, observation(0, { completed: counter(1) }));
    expect(cache.object("team-a", "pods", "llama-5d8f9-aaaaa", "inference_concurrency")).toEqual({
      ok: false,
      reason: "pod team-a/llama-5d8f9-aaaaa: no in-flight gauge or busy-time counter among its metrics",
    });
  });

  it("finds the Deployment from the ReplicaSet owner and the pod-template-hash label only", () => {
    expect(deploymentOf(pod("x", { replicaSet: "llama-7f9c6d5b8" }))).toBe("llama");
    expect(deploymentOf({ metadata: { labels: { "pod-template-hash": "abc" }, ownerReferences: [{ kind: "ReplicaSet", name: "handmade", controller: true }] } })).toBeUndefined();
    expect(deploymentOf({ metadata: { labels: { "pod-template-hash": "abc" }, ownerReferences: [{ kind: "StatefulSet", name: "db-abc", controller: true }] } })).toBeUndefined();
    expect(deploymentOf({ metadata: {} })).toBeUndefined();
  });
});
