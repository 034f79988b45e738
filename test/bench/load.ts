// The load generator for `npm run bench:admission`: one process, one keep-alive HTTPS agent, POSTing the
// same AdmissionReview to one URL. Run by test/bench/admission.ts (pinned to its own core); it prints
// `{"event":"measuring"}` when the warm-up ends and one `{"event":"result",...}` line at the end.
//
// Closed loop (--rate 0): `--concurrency` workers, each sending its next request when the previous answer
// arrives; throughput is what the server sustains. Open loop (--rate N): requests start on a fixed
// schedule of N per second whatever the answers do, so a slow answer cannot hide the ones queued behind
// it; latency is reported both from the moment a request was sent and from the moment it was due.
import { readFileSync } from "node:fs";
import https from "node:https";
import { parseArgs } from "node:util";

export interface LoadResult {
  event: "result";
  url: string;
  mode: "closed" | "open";
  concurrency: number;
  /** Target rate in the open loop. */
  rate?: number;
  seconds: number;
  requests: number;
  /** Answers that were not HTTP 200, and transport errors. */
  errors: number;
  throughput: number;
  /** Milliseconds from sending to the last byte of the answer. */
  latency: Percentiles;
  /** Open loop only: milliseconds from when the request was due, including any wait to be sent. */
  latencyFromSchedule?: Percentiles;
  /** CPU time of this process over the measured window, as a share of one core. */
  cpu: number;
  /** The first answer, decoded, to show what the server said. */
  sample: { status: number; allowed?: boolean; patchBytes?: number; warnings?: number; uidEchoed?: boolean };
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    ca: { type: "string" },
    body: { type: "string" },
    concurrency: { type: "string", default: "32" },
    warmup: { type: "string", default: "3" },
    duration: { type: "string", default: "10" },
    rate: { type: "string", default: "0" },
    "timeout-ms": { type: "string", default: "5000" },
  },
});

function positive(name: string, text: string | undefined, { allowZero = false } = {}): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new Error(`--${name}: must be a ${allowZero ? "non-negative" : "positive"} number, got ${text}`);
  return n;
}

const url = new URL(values.url ?? "");
if (url.hostname !== "127.0.0.1") throw new Error(`--url: the load generator only talks to 127.0.0.1, got ${url.hostname}`);
const body = readFileSync(values.body ?? "");
const uid: unknown = JSON.parse(body.toString("utf8"))?.request?.uid;
const concurrency = positive("concurrency", values.concurrency);
const warmupMs = positive("warmup", values.warmup, { allowZero: true }) * 1000;
const durationMs = positive("duration", values.duration) * 1000;
const rate = positive("rate", values.rate, { allowZero: true });
const timeoutMs = positive("timeout-ms", values["timeout-ms"]);

const agent = new https.Agent({ keepAlive: true, maxSockets: concurrency, ca: readFileSync(values.ca ?? "") });
const headers = { "content-type": "application/json", "content-length": String(body.length) };

interface Outcome {
  status: number;
  text?: string;
}

function post(keepText: boolean): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = https.request({ host: url.hostname, port: url.port, path: url.pathname, method: "POST", agent, headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => {
        if (keepText) chunks.push(chunk);
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: keepText ? Buffer.concat(chunks).toString("utf8") : undefined }));
      res.on("error", () => resolve({ status: 0 }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve({ status: 0 }));
    req.end(body);
  });
}

function describeSample(outcome: Outcome): LoadResult["sample"] {
  try {
    const response = JSON.parse(outcome.text ?? "").response;
    return {
      status: outcome.status,
      allowed: response?.allowed,
      patchBytes: response?.patch ? Buffer.from(response.patch, "base64").length : 0,
      warnings: response?.warnings?.length ?? 0,
      uidEchoed: response?.uid === uid,
    };
  } catch {
    return { status: outcome.status };
  }
}

function percentiles(samples: Float64Array, count: number): Percentiles {
  const sorted = samples.slice(0, count).sort();
  const at = (q: number) => (count === 0 ? NaN : sorted[Math.min(count - 1, Math.ceil(q * count) - 1)]!);
  let sum = 0;
  for (let i = 0; i < count; i++) sum += sorted[i]!;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: count ? sorted[count - 1]! : NaN, mean: count ? sum / count : NaN };
}

const start = performance.now();
const measureFrom = start + warmupMs;
const measureUntil = measureFrom + durationMs;
// Room for every answer the window could hold at 100,000/s, so recording never allocates.
const capacity = Math.ceil((durationMs / 1000) * Math.max(rate * 2, 100_000));
const latencies = new Float64Array(capacity);
const fromSchedule = new Float64Array(rate > 0 ? capacity : 0);
let recorded = 0;
let errors = 0;
let sample: LoadResult["sample"] | undefined;
let cpuAtStart: NodeJS.CpuUsage | undefined;

const announce = setTimeout(() => {
  cpuAtStart = process.cpuUsage();
  process.stdout.write(`${JSON.stringify({ event: "measuring" })}\n`);
}, warmupMs);

function record(sentAt: number, dueAt: number, outcome: Outcome): void {
  const doneAt = performance.now();
  if (!sample) sample = describeSample(outcome);
  if (doneAt < measureFrom || doneAt > measureUntil || recorded >= capacity) return;
  if (outcome.status !== 200) errors++;
  latencies[recorded] = doneAt - sentAt;
  if (rate > 0) fromSchedule[recorded] = doneAt - dueAt;
  recorded++;
}

async function closedLoop(): Promise<void> {
  const worker = async () => {
    while (performance.now() < measureUntil) {
      const sentAt = performance.now();
      record(sentAt, sentAt, await post(!sample));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function openLoop(): Promise<void> {
  const intervalMs = 1000 / rate;
  const inFlight = new Set<Promise<void>>();
  let next = 0;
  while (performance.now() < measureUntil) {
    // Fire everything that has come due; the timer below wakes us about once a millisecond.
    const now = performance.now();
    while (start + next * intervalMs <= now) {
      const dueAt = start + next * intervalMs;
      const sentAt = performance.now();
      const done: Promise<void> = post(!sample).then((outcome) => {
        record(sentAt, dueAt, outcome);
        inFlight.delete(done);
      });
      inFlight.add(done);
      next++;
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(inFlight);
}

await (rate > 0 ? openLoop() : closedLoop());
clearTimeout(announce);
const cpu = cpuAtStart ? process.cpuUsage(cpuAtStart) : { user: 0, system: 0 };
agent.destroy();

const result: LoadResult = {
  event: "result",
  url: url.href,
  mode: rate > 0 ? "open" : "closed",
  concurrency,
  ...(rate > 0 ? { rate } : {}),
  seconds: durationMs / 1000,
  requests: recorded,
  errors,
  throughput: recorded / (durationMs / 1000),
  latency: percentiles(latencies, recorded),
  ...(rate > 0 ? { latencyFromSchedule: percentiles(fromSchedule, recorded) } : {}),
  cpu: (cpu.user + cpu.system) / 1000 / durationMs,
  sample: sample ?? { status: 0 },
};
process.stdout.write(`${JSON.stringify(result)}\n`);
