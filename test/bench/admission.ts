// `npm run bench:admission`: what one core of the webhook server sustains, against a no-op floor on
// the same stack, plus the in-process decision time. Method and results: BENCHMARKS.md.
//
// One file, three roles (the first argument):
//   (none)   the orchestrator: starts the others, prints the table, cleans up
//   serve    the server under test: serve's request listener plus a no-op route, over HTTPS
//   micro    the microbenchmark: runPipeline and handleAdmission in a loop, timed per call
// The server and the microbenchmark are pinned to core 0, the load generator (test/bench/load.ts) to
// core 1, so neither steals the other's CPU.
//
// Flags: --rounds 3 --duration 5 --warmup 2 (seconds per round and case) --concurrency 32 --rate 1000
// --iterations 20000 (microbenchmark) --log-level info (the server's, as `infergate serve`) --no-pin
// --json FILE (every figure) --profile DIR (the server's --cpu-prof output).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { IncomingMessage, ServerResponse } from "node:http";
import fastJsonPatch from "fast-json-patch";
import type { AdmissionDeps } from "../../src/admission/handler.ts";
import { handleAdmission } from "../../src/admission/handler.ts";
import { diffJson } from "../../src/admission/json-diff.ts";
import { copyJson, runPipeline } from "../../src/admission/pipeline.ts";
import { parseReview } from "../../src/admission/review.ts";
import { createRequestListener, serveJsonPost } from "../../src/admission/server.ts";
import type { AdmissionRequest } from "../../src/admission/types.ts";
import { createAdmissionMetrics } from "../../src/observability/metrics.ts";
import { createLogger, isLevel, type Level } from "../../src/observability/log.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import type { QuotaView } from "../../src/quota/view.ts";
import { createCA, createServingCert } from "../../src/tls/certificates.ts";
import { plugins } from "../../webhooks/index.ts";
import type { LoadResult, Percentiles } from "./load.ts";

const FIXTURE = new URL("../fixtures/deployment-vllm-create.json", import.meta.url);
const POLICY = new URL("../fixtures/team-a-policy.json", import.meta.url);
const LOAD = fileURLToPath(new URL("./load.ts", import.meta.url));
const SELF = fileURLToPath(import.meta.url);

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "2" },
    rounds: { type: "string", default: "3" },
    concurrency: { type: "string", default: "32" },
    rate: { type: "string", default: "1000" },
    iterations: { type: "string", default: "20000" },
    "log-level": { type: "string", default: "info" },
    "no-pin": { type: "boolean", default: false },
    json: { type: "string" },
    profile: { type: "string" },
  },
});

function numberFlag(name: keyof typeof values, min: number, max: number): number {
  const n = Number(values[name]);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name}: must be a number from ${min} to ${max}, got ${values[name]}`);
  return n;
}

const logLevel = values["log-level"] ?? "info";
if (!isLevel(logLevel)) throw new Error(`--log-level: must be debug, info, warn or error, got ${logLevel}`);

// ---- shared setup: the policy the benchmark runs under ----

/** Usage as the watches would report it: 3 of team-a's 8 GPUs allocated. */
const quota: QuotaView = { usage: () => ({ allocated: 3, reserved: 0, workloads: 2 }) };

function benchDeps(level: Level, write?: (line: string) => void): { deps: AdmissionDeps; store: PolicyStore } {
  const store = new PolicyStore();
  for (const item of JSON.parse(readFileSync(POLICY, "utf8")).items) {
    if (item.kind === "Project") store.upsertProject(item);
    else store.upsertPolicy(item);
  }
  const deps: AdmissionDeps = {
    plugins,
    policies: store,
    cluster: () => ({ knativeFeatures: store.knativeFeatures, quota }),
    // As `infergate serve` builds them: default process metrics on, structured logs on stdout.
    metrics: createAdmissionMetrics(),
    logger: createLogger(level, write),
  };
  return { deps, store };
}

// ---- role: serve ----

async function serve(): Promise<void> {
  const cert = readFileSync(process.env.BENCH_CERT ?? "", "utf8");
  const key = readFileSync(process.env.BENCH_KEY ?? "", "utf8");
  const { deps } = benchDeps(logLevel as Level);
  // The very request listener `infergate serve` runs, with one more route: the floor. It reads and
  // parses the body the same way and answers in the same shape, but builds no request, runs no
  // pipeline, records no metrics and writes no log line.
  const listener = createRequestListener(deps, () => true, () => false);
  const floor = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === "POST" && req.url === "/noop") {
      serveJsonPost(req, res, {
        answer: (body: any) => ({ status: 200, body: { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid: String(body?.request?.uid ?? ""), allowed: true } } }),
      });
    } else listener(req, res);
  };
  const server = https.createServer({ cert, key, minVersion: "TLSv1.2" }, floor);
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 35_000;
  server.requestTimeout = 30_000;
  server.listen(0, "127.0.0.1", () => process.send?.({ port: (server.address() as AddressInfo).port }));
  // Without the orchestrator there is nobody to measure for.
  process.on("disconnect", () => process.exit(0));
}

// ---- role: micro ----

interface MicroResult {
  iterations: number;
  cases: Record<string, MicroCase>;
}

/** Percentiles of one case, and what else happened to the thread meanwhile: the usual suspects for p99. */
interface MicroCase extends Percentiles {
  /** Times the kernel took the core away mid-loop (involuntary context switches). */
  preempted: number;
  /** p99 over the calls during which the core was not taken away: the code's own tail. */
  p99Unpreempted: number;
  /** Garbage collections during the loop, and their total pause. */
  gcs: number;
  gcMs: number;
}

const gcEntries: PerformanceEntry[] = [];
new PerformanceObserver((list) => gcEntries.push(...list.getEntries())).observe({ entryTypes: ["gc"] });

/**
 * One microbenchmark case: `prepare` makes each call's input, untimed, and `run` is what is timed. Each
 * call gets an input of its own, freshly parsed as the server's are: timing one object over and over
 * keeps it hot in the CPU's caches and flatters the result by a factor of two or more.
 */
interface MicroSpec<T> {
  prepare: () => T;
  run: (input: T) => unknown;
  isAsync?: boolean;
}

async function timed<T>(iterations: number, spec: MicroSpec<T>): Promise<MicroCase> {
  const samples = new Float64Array(iterations);
  const unpreempted = new Float64Array(iterations);
  let kept = 0;
  let preempted = 0;
  const from = performance.now();
  for (let i = 0; i < iterations; i++) {
    const input = spec.prepare();
    // Read outside the timed span: a call during which the kernel ran something else on this core
    // measures the machine, not the code.
    const switches = process.resourceUsage().involuntaryContextSwitches;
    const start = performance.now();
    if (spec.isAsync) await spec.run(input);
    else spec.run(input);
    samples[i] = performance.now() - start;
    if (process.resourceUsage().involuntaryContextSwitches === switches) unpreempted[kept++] = samples[i]!;
    else preempted++;
  }
  const until = performance.now();
  // GC entries reach the observer asynchronously.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const gcs = gcEntries.filter((e) => e.startTime >= from && e.startTime <= until);
  const p99Unpreempted = kept > 0 ? summarize(unpreempted.subarray(0, kept)).p99 : NaN;
  return { ...summarize(samples), preempted, p99Unpreempted, gcs: gcs.length, gcMs: gcs.reduce((sum, e) => sum + e.duration, 0) };
}

function summarize(samples: Float64Array): Percentiles {
  const sorted = samples.slice().sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: sorted[sorted.length - 1]!, mean: sorted.reduce((a, b) => a + b, 0) / sorted.length };
}

async function micro(): Promise<void> {
  const iterations = numberFlag("iterations", 1_000, 10_000_000);
  const warmup = Math.min(5_000, iterations);
  const compact = JSON.stringify(JSON.parse(readFileSync(FIXTURE, "utf8")));
  // Logs go nowhere here: the line is still built and serialized, only the write is skipped.
  const { deps, store } = benchDeps(logLevel as Level, () => undefined);
  const cluster = deps.cluster();
  const freshBody = () => JSON.parse(compact);
  const freshRequest = (): AdmissionRequest => {
    const parsed = parseReview(freshBody());
    if (!parsed.ok) throw new Error(`fixture is not a valid review: ${parsed.message}`);
    return parsed.request;
  };
  const decide = (phase: "mutate" | "validate") => (request: AdmissionRequest) => {
    const result = runPipeline({ request, phase, plugins, policies: store, cluster });
    if (!result.response.allowed) throw new Error(`${phase} denied the fixture: ${result.response.status?.message}`);
    return result;
  };
  const specs: Record<string, MicroSpec<any>> = {
    "runPipeline mutate": { prepare: freshRequest, run: decide("mutate") },
    "runPipeline validate": { prepare: freshRequest, run: decide("validate") },
    "handleAdmission mutate": { prepare: freshBody, run: (body) => handleAdmission("mutate", body, deps), isAsync: true },
    "handleAdmission validate": { prepare: freshBody, run: (body) => handleAdmission("validate", body, deps), isAsync: true },
    // Parts of the above, to see what dominates.
    "· JSON.parse of the body": { prepare: () => compact, run: (text: string) => JSON.parse(text) },
    "· parseReview (shape and depth checks)": { prepare: freshBody, run: parseReview },
    "· copyJson of the object (mutate)": { prepare: freshRequest, run: (request) => copyJson(request.object) },
    "· diffJson, the patch (mutate)": {
      prepare: () => {
        const request = freshRequest();
        return [request.object, decide("mutate")(request).object];
      },
      run: ([before, after]) => diffJson(before, after),
    },
    "· fast-json-patch compare, for comparison": {
      prepare: () => {
        const request = freshRequest();
        return [request.object, decide("mutate")(request).object];
      },
      run: ([before, after]) => fastJsonPatch.compare(before, after),
    },
    "· structuredClone of the object, for comparison": { prepare: freshRequest, run: (request) => structuredClone(request.object) },
  };
  // Every case warms up before any is timed: otherwise the first one measured pays for the JIT's work
  // on code that the later ones share.
  for (const spec of Object.values(specs)) {
    for (let i = 0; i < warmup; i++) {
      const input = spec.prepare();
      if (spec.isAsync) await spec.run(input);
      else spec.run(input);
    }
  }
  const cases: Record<string, MicroCase> = {};
  for (const [name, spec] of Object.entries(specs)) cases[name] = await timed(iterations, spec);
  const result: MicroResult = { iterations, cases };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// ---- role: orchestrator ----

const children = new Set<ChildProcess>();
/** Holds the certificates and the review body for the children; removed however the run ends. */
let scratch: string | undefined;

function cleanUp(): void {
  stopChildren();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
}

function stopChildren(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
  children.clear();
}

function stopGracefully(child: ChildProcess, limitMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL");
      resolve();
    }, limitMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.disconnect();
  });
}

function pinned(core: number, args: string[], pin: boolean): [string, string[]] {
  return pin ? ["taskset", ["-c", String(core), process.execPath, ...args]] : [process.execPath, args];
}

function start(core: number, args: string[], pin: boolean, options: Parameters<typeof spawn>[2]): ChildProcess {
  const [command, argv] = pinned(core, args, pin);
  const child = spawn(command, argv, options);
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Runs a child to completion and returns the JSON lines it printed; kills it after `limitMs`. */
function runToEnd(core: number, args: string[], pin: boolean, limitMs: number, onLine: (line: any) => void = () => undefined): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const child = start(core, args, pin, { stdio: ["ignore", "pipe", "inherit"] });
    const lines: any[] = [];
    let buffer = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      buffer += chunk.toString("utf8");
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line.trim()) continue;
        const parsed = JSON.parse(line);
        lines.push(parsed);
        onLine(parsed);
      }
    });
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
      reject(new Error(`${args.slice(0, 2).join(" ")} did not finish within ${limitMs / 1000} s`));
    }, limitMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(lines);
      else reject(new Error(`${args.slice(0, 2).join(" ")} exited with ${code ?? signal}`));
    });
  });
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number, ticksPerSecond: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of proc(5), counted after "pid (comm)": utime and stime in clock ticks.
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

function request(port: number, ca: string, path: string, body: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path, method: "POST", ca, headers: { "content-type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString("utf8")) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function fetchText(port: number, ca: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: "127.0.0.1", port, path, ca }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      })
      .on("error", reject);
  });
}

/** The server's own admission histogram (plugin="all": parse, decide, observe) for one webhook: count per bucket bound. */
function decisionBuckets(metrics: string, webhook: string): Map<string, number> {
  const buckets = new Map<string, number>();
  for (const m of metrics.matchAll(/^infergate_admission_duration_seconds_bucket\{([^}]*)\} (\d+)$/gm)) {
    const labels = m[1]!;
    if (!labels.includes(`webhook="${webhook}"`) || !labels.includes('plugin="all"')) continue;
    const le = /le="([^"]+)"/.exec(labels)![1]!;
    buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]));
  }
  return buckets;
}

/** Decisions the server made between two scrapes, and the share of them within each bound (seconds). */
function decidedWithin(before: Map<string, number>, after: Map<string, number>): Decided | undefined {
  const delta = (le: string) => (after.get(le) ?? 0) - (before.get(le) ?? 0);
  const count = delta("+Inf");
  if (count <= 0) return undefined;
  return { count, within: Object.fromEntries(["0.00025", "0.001", "0.005"].map((le) => [le, delta(le) / count])) };
}

interface Decided {
  count: number;
  /** Share of decisions at or under each bound, keyed by the bound in seconds. */
  within: Record<string, number>;
}

interface Route {
  name: string;
  path: string;
}

interface RoundResult {
  load: LoadResult;
  /** Server CPU over the measured window, as a share of one core. */
  serverCpu: number;
  /** Share of core 0 and core 1 that other processes used meanwhile (pinned runs only). */
  others: number[];
  /** The server's own view of its decisions in the window (not for the no-op route, which makes none). */
  decided?: Decided;
}

interface CoreTicks {
  busy: number;
  total: number;
}

/** Busy and total ticks of each core, from /proc/stat (user nice system idle iowait irq softirq steal). */
function coreTicks(): CoreTicks[] {
  const cores: CoreTicks[] = [];
  for (const line of readFileSync("/proc/stat", "utf8").split("\n")) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = m[2]!.trim().split(/\s+/).map(Number);
    const busy = user + nice + system + irq + softirq + steal;
    cores[Number(m[1])] = { busy, total: busy + idle + iowait };
  }
  return cores;
}

function busyShares(from: CoreTicks[], to: CoreTicks[]): number[] {
  return to.map((t, i) => {
    const f = from[i] ?? { busy: 0, total: 0 };
    return t.total > f.total ? (t.busy - f.busy) / (t.total - f.total) : 0;
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const ms = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "-");
const pct = (n: number) => `${Math.round(n * 100)}%`;

async function orchestrate(): Promise<void> {
  const duration = numberFlag("duration", 1, 120);
  const warmup = numberFlag("warmup", 0, 60);
  const concurrency = numberFlag("concurrency", 1, 1024);
  const rate = numberFlag("rate", 1, 50_000);
  const iterations = numberFlag("iterations", 1_000, 10_000_000);
  const rounds = numberFlag("rounds", 1, 20);
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 24) throw new Error(`Node ${process.versions.node}: run through npm (npm run bench:admission) so that Node 24 from node_modules is used`);
  const haveTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0;
  const pin = !values["no-pin"] && haveTaskset && availableParallelism() >= 2;
  const ticks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

  // Bounded: every phase has its own limit, and the whole run this one.
  const phases = 6 * rounds;
  const deadline = setTimeout(
    () => {
      process.stderr.write("bench: overall time limit reached; stopping\n");
      cleanUp();
      process.exit(1);
    },
    (phases * (duration + warmup + 30) + 180) * 1000,
  );

  scratch = mkdtempSync(join(tmpdir(), "infergate-bench-"));
  try {
    const now = new Date();
    const ca = createCA({ commonName: "infergate-bench-ca", now });
    const serving = createServingCert({ ca, hosts: ["127.0.0.1"], now });
    const files = { ca: join(scratch, "ca.crt"), cert: join(scratch, "tls.crt"), key: join(scratch, "tls.key"), body: join(scratch, "review.json") };
    writeFileSync(files.ca, ca.certPem);
    writeFileSync(files.cert, serving.certPem);
    writeFileSync(files.key, serving.keyPem, { mode: 0o600 });
    // The API server sends compact JSON.
    const body = JSON.stringify(JSON.parse(readFileSync(FIXTURE, "utf8")));
    writeFileSync(files.body, body);

    const env = { ...process.env };
    const say = (text: string) => process.stderr.write(`bench: ${text}\n`);
    say(`Node ${process.version}, ${cpus()[0]?.model ?? "unknown CPU"}, ${availableParallelism()} cores, load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
    say(pin ? "server and microbenchmark pinned to core 0, load generator to core 1 (taskset)" : "NOT pinned (taskset missing, --no-pin, or fewer than 2 cores)");
    say(`plugins: ${plugins.map((p) => p.name).join(", ")}; review ${Buffer.byteLength(body)} bytes; server log level ${logLevel}`);

    say(`microbenchmark: ${iterations} timed calls per case`);
    const [microResult] = (await runToEnd(0, [SELF, "micro", "--iterations", String(iterations), "--log-level", logLevel], pin, 300_000)) as [MicroResult];

    say("starting the server");
    const profile = values.profile ? [`--cpu-prof`, `--cpu-prof-dir=${values.profile}`] : [];
    if (values.profile) say(`server CPU profile goes to ${values.profile}`);
    const server = start(0, [...profile, SELF, "serve", "--log-level", logLevel], pin, {
      stdio: ["ignore", "ignore", "inherit", "ipc"],
      env: { ...env, BENCH_CERT: files.cert, BENCH_KEY: files.key },
    });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the server did not start within 30 s")), 30_000);
      server.once("message", (m: any) => {
        clearTimeout(timer);
        resolve(Number(m.port));
      });
      server.once("exit", (code) => reject(new Error(`the server exited with ${code}`)));
    });

    // What each route says about the review, before measuring how fast it says it.
    const routes: Route[] = [
      { name: "(a) no-op floor", path: "/noop" },
      { name: "(b) /mutate", path: "/mutate" },
      { name: "(c) /validate", path: "/validate" },
    ];
    for (const route of routes) {
      const answer = await request(port, ca.certPem, route.path, body);
      const response = answer.json?.response;
      if (answer.status !== 200 || response?.allowed !== true) throw new Error(`${route.path} answered ${answer.status} ${JSON.stringify(answer.json)}`);
      say(`${route.path}: allowed${response.patch ? `, ${Buffer.from(response.patch, "base64").length}-byte patch` : ""}${response.warnings ? `, ${response.warnings.length} warnings` : ""}`);
    }

    const runCase = async (route: Route, openRate: number, round: number): Promise<RoundResult> => {
      let cpuFrom = 0;
      let coresFrom: CoreTicks[] = [];
      const args = [LOAD, "--url", `https://127.0.0.1:${port}${route.path}`, "--ca", files.ca, "--body", files.body];
      args.push("--concurrency", String(concurrency), "--warmup", String(warmup), "--duration", String(duration), "--rate", String(openRate));
      const webhook = route.path.slice(1);
      let metricsFrom: Promise<string> = Promise.resolve("");
      const lines = await runToEnd(1, args, pin, (warmup + duration + 30) * 1000, (line) => {
        if (line.event !== "measuring") return;
        cpuFrom = cpuSeconds(server.pid!, ticks);
        coresFrom = coreTicks();
        metricsFrom = fetchText(port, ca.certPem, "/metrics");
      });
      const serverCpu = (cpuSeconds(server.pid!, ticks) - cpuFrom) / duration;
      const busy = busyShares(coresFrom, coreTicks());
      const load = lines.find((l) => l.event === "result") as LoadResult;
      // What the rest of the machine took from our two cores while we measured.
      const others = pin ? [Math.max(0, (busy[0] ?? 0) - serverCpu), Math.max(0, (busy[1] ?? 0) - load.cpu)] : [];
      say(
        `round ${round + 1} ${route.name} ${openRate ? `at ${openRate}/s` : `closed loop x${concurrency}`}: ${load.throughput.toFixed(0)}/s, ` +
          `p50 ${ms(load.latency.p50)} ms, p99 ${ms(load.latency.p99)} ms, errors ${load.errors}, server CPU ${pct(serverCpu)}, ` +
          `load generator CPU ${pct(load.cpu)}${pin ? `, others on core 0/1 ${pct(others[0]!)}/${pct(others[1]!)}` : ""}`,
      );
      const decided = decidedWithin(decisionBuckets(await metricsFrom, webhook), decisionBuckets(await fetchText(port, ca.certPem, "/metrics"), webhook));
      return { load, serverCpu, others, decided };
    };

    // Rounds interleave the cases, so a change in what else runs on the machine hits all of them alike.
    const saturated = routes.map((route) => ({ ...route, rounds: [] as RoundResult[] }));
    const fixedRate = routes.map((route) => ({ ...route, rounds: [] as RoundResult[] }));
    for (let round = 0; round < rounds; round++) for (const c of saturated) c.rounds.push(await runCase(c, 0, round));
    for (let round = 0; round < rounds; round++) for (const c of fixedRate) c.rounds.push(await runCase(c, rate, round));

    // The server leaves when its channel closes, which also lets --cpu-prof write the profile.
    await stopGracefully(server, 10_000);

    // ---- report: medians over the rounds ----
    const med = (c: { rounds: RoundResult[] }, pick: (r: RoundResult) => number) => median(c.rounds.map(pick));
    const ratio = (i: number) => median(saturated[0]!.rounds.map((a, round) => saturated[i]!.rounds[round]!.load.throughput / a.load.throughput));
    const others = (c: { rounds: RoundResult[] }) => (pin ? `${pct(med(c, (r) => r.others[0]!))} / ${pct(med(c, (r) => r.others[1]!))}` : "-");
    const out: string[] = [];
    out.push(`Node ${process.version} · ${cpus()[0]?.model ?? "unknown CPU"} · ${availableParallelism()} cores · ${pin ? "server on core 0, load generator on core 1" : "not pinned"} · load average at end ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
    out.push(`Review: deployment-vllm-create.json, ${Buffer.byteLength(body)} bytes · plugins: ${plugins.map((p) => p.name).join(", ")} · server log level: ${logLevel}`);
    out.push(`Each figure is the median of ${rounds} interleaved rounds of ${duration} s (after ${warmup} s of warm-up each); "others" is CPU that other processes took on core 0 / core 1.`);
    out.push("");
    out.push(`Saturation: one keep-alive HTTPS load generator, ${concurrency} requests in flight`);
    out.push("");
    out.push("| case | reviews/s (min–max) | vs (a) | p50 ms | p90 ms | p99 ms | errors | server CPU | server CPU µs per review | load-gen CPU | others |");
    out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    saturated.forEach((c, i) => {
      const t = c.rounds.map((r) => r.load.throughput);
      out.push(
        `| ${c.name} | ${med(c, (r) => r.load.throughput).toFixed(0)} (${Math.min(...t).toFixed(0)}–${Math.max(...t).toFixed(0)}) | ${pct(ratio(i))} | ` +
          `${ms(med(c, (r) => r.load.latency.p50))} | ${ms(med(c, (r) => r.load.latency.p90))} | ${ms(med(c, (r) => r.load.latency.p99))} | ` +
          `${c.rounds.reduce((n, r) => n + r.load.errors, 0)} | ${pct(med(c, (r) => r.serverCpu))} | ${med(c, (r) => (r.serverCpu * 1e6) / r.load.throughput).toFixed(0)} | ` +
          `${pct(med(c, (r) => r.load.cpu))} | ${others(c)} |`,
      );
    });
    out.push("");
    out.push(`Fixed rate: ${rate} reviews/s, open loop. Latency from sending, at the client; "from schedule" adds the generator's own timer lag. The last column is the server's own histogram (parse, decide, observe; no HTTP or TLS).`);
    out.push("");
    out.push("| case | reviews/s | p50 ms | p90 ms | p99 ms (rounds) [from schedule] | p99.9 ms | errors | server CPU | others | server: decided ≤ 0.25 / 1 / 5 ms |");
    out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    const share = (c: { rounds: RoundResult[] }, le: string) => {
      const all = c.rounds.map((r) => r.decided).filter((d): d is Decided => d !== undefined);
      const count = all.reduce((n, d) => n + d.count, 0);
      return count ? `${((all.reduce((n, d) => n + d.within[le]! * d.count, 0) / count) * 100).toFixed(2)}%` : "-";
    };
    for (const c of fixedRate) {
      const p99s = c.rounds.map((r) => ms(r.load.latency.p99)).join(", ");
      out.push(
        `| ${c.name} | ${med(c, (r) => r.load.throughput).toFixed(0)} | ${ms(med(c, (r) => r.load.latency.p50))} | ${ms(med(c, (r) => r.load.latency.p90))} | ` +
          `${ms(med(c, (r) => r.load.latency.p99))} (${p99s}) [${ms(med(c, (r) => r.load.latencyFromSchedule!.p99))}] | ${ms(med(c, (r) => r.load.latency.p999))} | ` +
          `${c.rounds.reduce((n, r) => n + r.load.errors, 0)} | ${pct(med(c, (r) => r.serverCpu))} | ${others(c)} | ` +
          `${c.rounds.some((r) => r.decided) ? `${share(c, "0.00025")} / ${share(c, "0.001")} / ${share(c, "0.005")}` : "-"} |`,
      );
    }
    out.push("");
    out.push(`In-process decision time (microbenchmark on core 0, ${microResult.iterations} timed calls each after warm-up; the server was not running)`);
    out.push("");
    out.push("| measured | p50 ms | p90 ms | p99 ms | p99.9 ms | mean ms | GCs (pause ms) | calls preempted | p99 ms, calls not preempted |");
    out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const [name, p] of Object.entries(microResult.cases)) {
      out.push(
        `| ${name} | ${p.p50.toFixed(4)} | ${p.p90.toFixed(4)} | ${p.p99.toFixed(4)} | ${p.p999.toFixed(4)} | ${p.mean.toFixed(4)} | ` +
          `${p.gcs} (${p.gcMs.toFixed(1)}) | ${p.preempted} | ${p.p99Unpreempted.toFixed(4)} |`,
      );
    }
    out.push("");
    const b = ratio(1);
    const c = ratio(2);
    const p99AtRate = Math.max(med(fixedRate[1]!, (r) => r.load.latency.p99), med(fixedRate[2]!, (r) => r.load.latency.p99));
    const decisionP99 = Math.max(microResult.cases["runPipeline mutate"]!.p99, microResult.cases["runPipeline validate"]!.p99);
    const decisionP99Unpreempted = Math.max(microResult.cases["runPipeline mutate"]!.p99Unpreempted, microResult.cases["runPipeline validate"]!.p99Unpreempted);
    const verdict = (ok: boolean) => (ok ? "met" : "MISSED");
    out.push(`Ratios: b/a = ${b.toFixed(2)}, c/a = ${c.toFixed(2)}`);
    out.push(
      `Targets: (b) ≥ 70% of (a): ${verdict(b >= 0.7)} (${pct(b)}) · p99 ≤ 5 ms at ${rate}/s: ${verdict(p99AtRate <= 5)} (${ms(p99AtRate)} ms, the worse of b and c) · ` +
        `decision p99 ≤ 0.2 ms: ${verdict(decisionP99 <= 0.2)} (${decisionP99.toFixed(3)} ms, the worse of mutate and validate; ` +
        `${decisionP99Unpreempted.toFixed(3)} ms over the calls not preempted)`,
    );
    process.stdout.write(`${out.join("\n")}\n`);
    if (values.json) {
      const summary = { node: process.version, cores: availableParallelism(), pinned: pin, logLevel, bodyBytes: Buffer.byteLength(body), plugins: plugins.map((p) => p.name) };
      writeFileSync(values.json, `${JSON.stringify({ ...summary, rounds, duration, warmup, concurrency, rate, saturated, fixedRate, micro: microResult }, null, 2)}\n`);
    }
  } finally {
    clearTimeout(deadline);
    cleanUp();
  }
}

const role = positionals[0] ?? "run";
const roles: Record<string, () => Promise<void>> = { run: orchestrate, serve, micro };
const main = roles[role];
if (!main) {
  process.stderr.write(`bench: unknown role "${role}"; use no argument, "serve" or "micro"\n`);
  process.exit(2);
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    cleanUp();
    process.exit(130);
  });
}
main().catch((error) => {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  cleanUp();
  process.exit(1);
});
