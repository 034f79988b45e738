// Per-pod history over a sliding window, and the arithmetic that turns it into served values:
// counter rates (with resets), in-flight averages, and latency quantiles from histogram bucket
// deltas, interpolated inside the bucket the way PromQL's histogram_quantile does.
import type { MetricName, Observation } from "./mapping.ts";
import { QUANTILE_OF } from "./mapping.ts";

/** A cumulative histogram bucket: `count` observations took at most `le` milliseconds. */
export interface Bucket {
  le: number;
  count: number;
}

export type LatencyWindow = { kind: "buckets"; buckets: Bucket[] } | { kind: "quantiles"; quantilesMs: Map<number, number> };

/** What one pod (or a group of pods) did over the window; the input of every served value. */
export interface PodWindow {
  /** The newest sample used, ms since the epoch. */
  timestamp: number;
  concurrency?: number;
  requestsPerSecond?: number;
  latency?: LatencyWindow;
}

/** What happened between two consecutive observations of one pod. */
interface Step {
  from: number;
  to: number;
  completed?: number;
  busySeconds?: number;
  buckets?: Map<number, number>;
}

interface Entry {
  at: number;
  inFlight?: number;
  quantilesMs?: Map<number, number>;
  step?: Step;
}

export class PodHistory {
  private last: Observation | undefined;
  private entries: Entry[] = [];
  // Reads far outnumber scrapes (every HPA asks at every sync, a pod is scraped once an interval), so
  // the last window is handed out again while the same entries and steps fall inside it. Entries are
  // only appended and dropped from the front, so the first and last of them identify the whole range.
  private reuse: { first: Entry; last: Entry; steps: number; window: PodWindow } | undefined;

  /** Adds a scrape; `retainMs` is how far back entries are kept (the window). */
  add(observation: Observation, retainMs: number): void {
    const previous = this.last;
    if (previous && observation.at <= previous.at) return; // out of order or duplicate
    // A different engine on the same pod means the server was replaced: nothing to diff against.
    const comparable = previous !== undefined && previous.engine === observation.engine;
    const entry: Entry = { at: observation.at };
    if (observation.inFlight !== undefined) entry.inFlight = observation.inFlight;
    if (observation.quantilesMs) entry.quantilesMs = observation.quantilesMs;
    if (comparable) entry.step = stepBetween(previous, observation);
    else this.entries = [];
    this.entries.push(entry);
    this.last = observation;
    // Reads ask for windows ending now or later, so nothing older than this can count again.
    const oldest = observation.at - retainMs;
    while (this.entries.length > 0 && this.entries[0]!.at < oldest) this.entries.shift();
  }

  /** The pod's window ending at `now`, or undefined when no sample falls inside it. Read-only: it may be shared. */
  window(now: number, windowMs: number): PodWindow | undefined {
    const start = now - windowMs;
    const inside = this.entries.filter((entry) => entry.at >= start && entry.at <= now);
    if (inside.length === 0) return undefined;
    // Steps start where the previous entry was taken, so those inside the window are a suffix.
    const steps = inside.map((entry) => entry.step).filter((step): step is Step => step !== undefined && step.from >= start);
    const first = inside[0]!;
    const last = inside[inside.length - 1]!;
    if (this.reuse && this.reuse.first === first && this.reuse.last === last && this.reuse.steps === steps.length) return this.reuse.window;
    const window: PodWindow = { timestamp: last.at };

    const gauges = inside.filter((entry) => entry.inFlight !== undefined);
    if (gauges.length > 0) window.concurrency = gauges.reduce((sum, entry) => sum + entry.inFlight!, 0) / gauges.length;

    if (steps.length > 0) {
      const spanSeconds = (steps[steps.length - 1]!.to - steps[0]!.from) / 1000;
      const completed = steps.filter((step) => step.completed !== undefined);
      if (completed.length > 0 && spanSeconds > 0) {
        window.requestsPerSecond = completed.reduce((sum, step) => sum + step.completed!, 0) / spanSeconds;
      }
      const busy = steps.filter((step) => step.busySeconds !== undefined);
      if (window.concurrency === undefined && busy.length > 0 && spanSeconds > 0) {
        window.concurrency = busy.reduce((sum, step) => sum + step.busySeconds!, 0) / spanSeconds;
      }
      const bucketed = steps.filter((step) => step.buckets !== undefined);
      if (bucketed.length > 0) window.latency = { kind: "buckets", buckets: sumBuckets(bucketed.map((step) => step.buckets!)) };
    }
    if (!window.latency) {
      const summarized = inside.filter((entry) => entry.quantilesMs !== undefined);
      const latest = summarized[summarized.length - 1];
      if (latest) window.latency = { kind: "quantiles", quantilesMs: latest.quantilesMs! };
    }
    this.reuse = { first, last, steps: steps.length, window };
    return window;
  }
}

function stepBetween(previous: Observation, current: Observation): Step {
  const step: Step = { from: previous.at, to: current.at };
  if (current.completed) step.completed = counterIncrease(previous.completed, current.completed);
  if (current.busySeconds) step.busySeconds = counterIncrease(previous.busySeconds, current.busySeconds);
  if (current.histogram) {
    const deltas: Map<number, number>[] = [];
    for (const [key, series] of current.histogram) {
      deltas.push(histogramIncrease(previous.histogram?.get(key)?.buckets, series.buckets));
    }
    step.buckets = new Map(sumBuckets(deltas).map((bucket) => [bucket.le, bucket.count]));
  }
  return step;
}

/**
 * The increase of a set of counters between two scrapes. A series that went down was reset (the
 * server restarted) and counted up from zero since; a series seen for the first time was created
 * after the previous scrape (client libraries create labelled series on first use), so all of its
 * value is new.
 */
export function counterIncrease(previous: Map<string, number> | undefined, current: Map<string, number>): number {
  let total = 0;
  for (const [key, value] of current) {
    const before = previous?.get(key);
    total += before === undefined || value < before ? value : value - before;
  }
  return total;
}

/** Bucket-wise increase of one histogram series; a reset (any bucket went down) counts from zero. */
export function histogramIncrease(previous: Map<number, number> | undefined, current: Map<number, number>): Map<number, number> {
  const reset = previous === undefined || [...current].some(([le, count]) => count < (previous.get(le) ?? 0));
  const out = new Map<number, number>();
  for (const [le, count] of current) out.set(le, reset ? count : count - (previous.get(le) ?? 0));
  return out;
}

/** Sums cumulative bucket maps by upper bound (PromQL's `sum by (le)`), sorted, made monotonic. */
export function sumBuckets(maps: ReadonlyArray<ReadonlyMap<number, number>>): Bucket[] {
  const totals = new Map<number, number>();
  for (const map of maps) for (const [le, count] of map) totals.set(le, (totals.get(le) ?? 0) + count);
  const buckets = [...totals].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
  // Scrapes of different series are not atomic with each other; a lower bucket may read higher.
  let running = 0;
  for (const bucket of buckets) {
    running = Math.max(running, bucket.count);
    bucket.count = running;
  }
  return buckets;
}

/**
 * PromQL's histogram_quantile over cumulative buckets: undefined when there is no +Inf bucket, fewer
 * than two buckets, or no observations. The rank falls in one bucket and is interpolated linearly
 * between its bounds (the lowest bucket starts at 0 when its bound is positive); a rank in the +Inf
 * bucket answers the highest finite bound.
 */
export function histogramQuantile(quantile: number, cumulative: readonly Bucket[]): number | undefined {
  const buckets = [...cumulative].sort((a, b) => a.le - b.le);
  if (buckets.length < 2 || buckets[buckets.length - 1]!.le !== Number.POSITIVE_INFINITY) return undefined;
  let running = 0;
  const counts = buckets.map((bucket) => (running = Math.max(running, bucket.count)));
  const total = counts[counts.length - 1]!;
  if (!(total > 0)) return undefined;
  if (quantile < 0) return Number.NEGATIVE_INFINITY;
  if (quantile > 1) return Number.POSITIVE_INFINITY;
  const rank = quantile * total;
  let index = counts.findIndex((count) => count >= rank);
  if (index < 0) index = counts.length - 1;
  if (index === buckets.length - 1) return buckets[buckets.length - 2]!.le;
  const end = buckets[index]!.le;
  if (index === 0 && end <= 0) return end;
  const start = index === 0 ? 0 : buckets[index - 1]!.le;
  const below = index === 0 ? 0 : counts[index - 1]!;
  const inBucket = counts[index]! - below;
  if (inBucket <= 0) return end;
  return start + (end - start) * ((rank - below) / inBucket);
}

/** One window for a group of pods: sums of concurrency and rates, merged histograms. */
export function combineWindows(windows: readonly PodWindow[]): PodWindow | undefined {
  if (windows.length === 0) return undefined;
  const combined: PodWindow = { timestamp: Math.max(...windows.map((window) => window.timestamp)) };
  const sum = (values: Array<number | undefined>) => {
    const present = values.filter((value): value is number => value !== undefined);
    return present.length === 0 ? undefined : present.reduce((a, b) => a + b, 0);
  };
  const concurrency = sum(windows.map((window) => window.concurrency));
  if (concurrency !== undefined) combined.concurrency = concurrency;
  const rate = sum(windows.map((window) => window.requestsPerSecond));
  if (rate !== undefined) combined.requestsPerSecond = rate;
  const histograms = windows.flatMap((window) => (window.latency?.kind === "buckets" ? [window.latency.buckets] : []));
  if (histograms.length > 0) {
    combined.latency = { kind: "buckets", buckets: sumBuckets(histograms.map((buckets) => new Map(buckets.map((b) => [b.le, b.count])))) };
  } else {
    // Quantiles from different servers cannot be merged exactly; the slowest pod is the honest bound.
    const quantiles = new Map<number, number>();
    for (const window of windows) {
      if (window.latency?.kind !== "quantiles") continue;
      for (const [quantile, ms] of window.latency.quantilesMs) quantiles.set(quantile, Math.max(quantiles.get(quantile) ?? Number.NEGATIVE_INFINITY, ms));
    }
    if (quantiles.size > 0) combined.latency = { kind: "quantiles", quantilesMs: quantiles };
  }
  return combined;
}

export type Evaluation = { ok: true; value: number } | { ok: false; reason: string };

/** A served metric from a window, or why it has none. */
export function evaluate(window: PodWindow, metric: MetricName): Evaluation {
  switch (metric) {
    case "inference_concurrency":
      return window.concurrency === undefined
        ? { ok: false, reason: "no in-flight gauge or busy-time counter among its metrics" }
        : { ok: true, value: window.concurrency };
    case "inference_requests_per_second":
      return window.requestsPerSecond === undefined
        ? { ok: false, reason: "no finished-requests counter, or fewer than two scrapes inside the window" }
        : { ok: true, value: window.requestsPerSecond };
  }
  const quantile = QUANTILE_OF[metric]!;
  const latency = window.latency;
  if (!latency) return { ok: false, reason: "no latency histogram or summary, or fewer than two scrapes inside the window" };
  if (latency.kind === "quantiles") {
    const ms = latency.quantilesMs.get(quantile);
    return ms === undefined ? { ok: false, reason: `its latency summary has no ${quantile} quantile` } : { ok: true, value: ms };
  }
  const total = latency.buckets[latency.buckets.length - 1]?.count ?? 0;
  // No request finished in the window: there is no latency to be high, and an autoscaler may scale in.
  if (total === 0 && latency.buckets.some((bucket) => bucket.le === Number.POSITIVE_INFINITY)) return { ok: true, value: 0 };
  const ms = histogramQuantile(quantile, latency.buckets);
  return ms === undefined ? { ok: false, reason: "its latency histogram has no +Inf bucket" } : { ok: true, value: ms };
}
