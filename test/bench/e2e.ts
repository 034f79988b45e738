// `npm run bench:e2e`: what infergate's webhooks add to the latency of creating a GPU Deployment on a
// real API server, next to no admission hook at all and next to a MutatingAdmissionPolicy (CEL, run
// inside the API server) that injects the same static fields. Method and results: BENCHMARKS.md,
// section "End-to-end create latency".
//
// One local control plane (src/local-cluster) and one `infergate serve`, both started here and stopped
// by PID at the end. Each round creates --count Deployments under each configuration, in a rotated
// order, --concurrency requests in flight over keep-alive HTTPS with the admin client certificate:
//   none       no webhook configuration and no policy binding
//   noop       infergate's very webhook configurations pointed at a bare HTTPS server that allows
//              every review unchanged: what any out-of-process webhook costs, the floor
//   infergate  infergate's Mutating- and ValidatingWebhookConfiguration, a Project and its policy
//   map        a MutatingAdmissionPolicy + binding writing priorityClassName, tolerations, pool
//              affinity and the project/queue labels with JSONPatch CEL
// Deployments have `replicas: 0`: creation latency is what is measured, and no pods means no kwok or
// scheduler work competing for the two cores. Between runs the namespace is emptied and the
// controllers are left to settle, so every run starts from the same quiet cluster.
//
// Flags: --count 500 --concurrency 10 --warmup 50 --rounds 3 --timeout 45 (minutes, whole run)
// --json FILE (every figure) --keep (leave the state directory for inspection) --configs none,infergate
// (a subset, for diagnosis) --profile-dir DIR (a V8 CPU profile of `infergate serve` per run).
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { httpsRequest, poll } from "../../src/local-cluster/api.ts";
import { ensureServingPki } from "../../src/local-cluster/certs.ts";
import { freePort, LOOPBACK } from "../../src/local-cluster/ports.ts";
import { childEnv, launch, terminate } from "../../src/local-cluster/processes.ts";
import { resolveBinDir } from "../../src/local-cluster/binaries.ts";
import { REPO_ROOT, startCluster, type Cluster } from "../../src/local-cluster/cluster.ts";
import { registerWebhooks, unregisterWebhooks } from "../../src/local-cluster/webhook-registration.ts";
import { nodeBinary, startWebhookServer, type WebhookServer } from "../../src/local-cluster/webhook-server.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    count: { type: "string", default: "500" },
    concurrency: { type: "string", default: "10" },
    warmup: { type: "string", default: "50" },
    rounds: { type: "string", default: "3" },
    timeout: { type: "string", default: "45" },
    json: { type: "string" },
    keep: { type: "boolean", default: false },
    configs: { type: "string", default: "none,noop,infergate,map" },
    "profile-dir": { type: "string" },
  },
});

function intFlag(name: "count" | "concurrency" | "warmup" | "rounds" | "timeout", min: number, max: number): number {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: must be a whole number from ${min} to ${max}, got ${values[name]}`);
  return n;
}

const COUNT = intFlag("count", 1, 100_000);
const CONCURRENCY = intFlag("concurrency", 1, 256);
const WARMUP = intFlag("warmup", 0, 10_000);
const ROUNDS = intFlag("rounds", 1, 20);
const TIMEOUT_MS = intFlag("timeout", 1, 240) * 60_000;

const say = (message: string) => process.stderr.write(`[bench:e2e] ${message}\n`);

type Config = "none" | "noop" | "infergate" | "map";
const ALL_CONFIGS: readonly Config[] = ["none", "noop", "infergate", "map"];
const CONFIGS: readonly Config[] = (() => {
  const wanted = values.configs.split(",").map((c) => c.trim());
  const unknown = wanted.filter((c) => !ALL_CONFIGS.includes(c as Config));
  if (unknown.length || wanted.length === 0) throw new Error(`--configs: allowed values are ${ALL_CONFIGS.join(", ")}, got ${values.configs}`);
  return ALL_CONFIGS.filter((c) => wanted.includes(c));
})();
const NAMESPACE: Record<Config, string> = { none: "bench-none", noop: "bench-noop", infergate: "bench-infergate", map: "bench-map" };
const NOOP_PROCESS = "noop-webhook";
const PROJECT = "bench";
const POOLS = ["pool-a", "pool-b"];
const POOL_LABEL = "infergate.dev/node-pool";
const MAP_NAME = "bench-gpu-defaults";
const ADMISSION = "/apis/admissionregistration.k8s.io/v1";

// ---- the objects ----

function gpuDeployment(name: string, namespace: string): Record<string, unknown> {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace, labels: { app: name } },
    spec: {
      replicas: 0,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          containers: [
            {
              name: "vllm",
              image: "registry.example.com/vllm/vllm-openai:v0.11.0",
              args: ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000"],
              ports: [{ name: "http", containerPort: 8000 }],
              resources: { requests: { cpu: "4", memory: "32Gi" }, limits: { "nvidia.com/gpu": 1, memory: "32Gi" } },
            },
          ],
        },
      },
    },
  };
}

const GPU_TOLERATION = { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" };

function infergatePolicyObjects(): Record<string, unknown>[] {
  return [
    {
      apiVersion: "infergate.dev/v1alpha1",
      kind: "Project",
      metadata: { name: PROJECT },
      // A quota far above what the run asks for: the quota check runs on every create, and with
      // replicas 0 no create needs a reservation.
      spec: { namespaces: [NAMESPACE.infergate], nodePools: POOLS, gpuQuota: "1000" },
    },
    {
      apiVersion: "infergate.dev/v1alpha1",
      kind: "InferencePolicy",
      metadata: { name: PROJECT },
      spec: {
        projects: [PROJECT],
        scheduler: { profile: "default" },
        defaults: { priorityClassName: "inference", tolerations: [GPU_TOLERATION] },
        rules: { gpusPerPod: { max: "8" }, replicas: { max: 16 }, priorityClassNames: ["inference", "high"] },
      },
    },
  ];
}

/**
 * The same static fields infergate's `default` profile injects for project `bench`, as CEL. JSONPatch,
 * because ApplyConfiguration may not touch atomic lists (tolerations, node selector terms). Like
 * infergate, it leaves values the Deployment sets itself alone.
 */
function mutatingAdmissionPolicy(): Record<string, unknown> {
  const T = "Object.spec.template.spec";
  const NA = `${T}.affinity.nodeAffinity`;
  const REQ = `${NA}.requiredDuringSchedulingIgnoredDuringExecution`;
  const PREF = `${NA}.preferredDuringSchedulingIgnoredDuringExecution`;
  const prefer = (weight: number, pool: string) =>
    `${PREF}{weight: ${weight}, preference: ${PREF}.preference{matchExpressions: [${PREF}.preference.matchExpressions{key: "${POOL_LABEL}", operator: "In", values: ["${pool}"]}]}}`;
  const affinity =
    `${T}.affinity{nodeAffinity: ${NA}{` +
    `requiredDuringSchedulingIgnoredDuringExecution: ${REQ}{nodeSelectorTerms: [${REQ}.nodeSelectorTerms{matchExpressions: [` +
    `${REQ}.nodeSelectorTerms.matchExpressions{key: "${POOL_LABEL}", operator: "In", values: ${JSON.stringify(POOLS)}}]}]}, ` +
    `preferredDuringSchedulingIgnoredDuringExecution: [${prefer(100, POOLS[0]!)}, ${prefer(90, POOLS[1]!)}]}}`;
  const expression = `
    [
      JSONPatch{op: "add", path: "/spec/template/metadata/labels/" + jsonpatch.escapeKey("infergate.dev/project"), value: "${PROJECT}"},
      JSONPatch{op: "add", path: "/spec/template/metadata/labels/" + jsonpatch.escapeKey("infergate.dev/queue"), value: "${PROJECT}"}
    ] +
    (has(object.spec.template.spec.priorityClassName) ? [] :
      [JSONPatch{op: "add", path: "/spec/template/spec/priorityClassName", value: "inference"}]) +
    (has(object.spec.template.spec.tolerations) && object.spec.template.spec.tolerations.exists(t, has(t.key) && t.key == "nvidia.com/gpu") ? [] :
      [JSONPatch{op: "add", path: "/spec/template/spec/tolerations",
        value: (has(object.spec.template.spec.tolerations) ? object.spec.template.spec.tolerations : []) +
          [${T}.tolerations{key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule"}]}]) +
    (has(object.spec.template.spec.affinity) ? [] :
      [JSONPatch{op: "add", path: "/spec/template/spec/affinity", value: ${affinity}}])`;
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingAdmissionPolicy",
    metadata: { name: MAP_NAME },
    spec: {
      failurePolicy: "Fail",
      reinvocationPolicy: "IfNeeded",
      matchConstraints: {
        resourceRules: [{ apiGroups: ["apps"], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["deployments"] }],
      },
      matchConditions: [
        {
          name: "requests-gpus",
          expression: "object.spec.template.spec.containers.exists(c, has(c.resources) && has(c.resources.limits) && 'nvidia.com/gpu' in c.resources.limits)",
        },
      ],
      mutations: [{ patchType: "JSONPatch", jsonPatch: { expression } }],
    },
  };
}

function mapBinding(): Record<string, unknown> {
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingAdmissionPolicyBinding",
    metadata: { name: MAP_NAME },
    spec: { policyName: MAP_NAME, matchResources: { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": NAMESPACE.map } } } },
  };
}

// ---- the no-op webhook: the floor any webhook pays (a hop out of the API server and back) ----

/**
 * `e2e.ts noop-webhook PORT CERT KEY`: an HTTPS server that reads each AdmissionReview and allows it
 * unchanged, with no framework. GET /count says how many reviews it answered.
 */
async function serveNoop(port: number, certFile: string, keyFile: string): Promise<void> {
  let answered = 0;
  const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, (req, res) => {
    if (req.method === "GET" && req.url === "/count") return void res.writeHead(200, { "content-type": "text/plain" }).end(String(answered));
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const review = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      answered++;
      const body = JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid: review.request?.uid ?? "", allowed: true } });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(port, LOOPBACK, () => resolve()));
  process.once("SIGTERM", () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}

interface NoopWebhook {
  url: string;
  pid: number;
  answered(): Promise<number>;
  stop(): Promise<void>;
}

async function startNoop(stateDir: string): Promise<NoopWebhook> {
  const pki = ensureServingPki(path.join(stateDir, "pki"), "webhook");
  const port = await freePort();
  const url = `https://${LOOPBACK}:${port}`;
  const proc = await launch({
    name: NOOP_PROCESS,
    command: nodeBinary(REPO_ROOT),
    args: [fileURLToPath(import.meta.url), "noop-webhook", String(port), pki.serving.cert, pki.serving.key],
    stateDir,
    cwd: REPO_ROOT,
    env: childEnv(),
  });
  const answered = async () => Number((await httpsRequest(`${url}/count`, { caPem: pki.caPem })).text);
  await poll("the no-op webhook", async () => (Number.isInteger(await answered()) ? true : undefined), { timeoutMs: 30_000 });
  return { url, pid: proc.pid, answered, stop: async () => void (await terminate(proc)) };
}

// ---- HTTP ----

interface ApiClient {
  request(method: string, apiPath: string, body?: unknown): Promise<{ status: number; text: string }>;
  close(): void;
}

function apiClient(cluster: Cluster): ApiClient {
  const pki = (f: string) => fs.readFileSync(path.join(cluster.stateDir, "pki", f), "utf8");
  const agent = new https.Agent({ keepAlive: true, maxSockets: CONCURRENCY, ca: pki("ca.crt"), cert: pki("admin.crt"), key: pki("admin.key") });
  const base = new URL(cluster.server);
  return {
    request(method, apiPath, body) {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      return new Promise((resolve, reject) => {
        const req = https.request(
          {
            agent,
            host: base.hostname,
            port: base.port,
            path: apiPath,
            method,
            headers: { accept: "application/json", ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}) },
            timeout: 30_000,
          },
          (res) => {
            let text = "";
            res.setEncoding("utf8");
            res.on("data", (d: string) => (text += d));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on("timeout", () => req.destroy(new Error(`timeout: ${method} ${apiPath}`)));
        req.on("error", reject);
        req.end(payload);
      });
    },
    close: () => agent.destroy(),
  };
}

async function ok(client: ApiClient, method: string, apiPath: string, body?: unknown): Promise<any> {
  const res = await client.request(method, apiPath, body);
  if (res.status >= 300) throw new Error(`${method} ${apiPath}: HTTP ${res.status}: ${res.text.slice(0, 500)}`);
  return res.text ? JSON.parse(res.text) : undefined;
}

const deploymentsPath = (ns: string) => `/apis/apps/v1/namespaces/${ns}/deployments`;

/** What the API server would store for a GPU Deployment in `ns` right now (dry run). */
async function dryRunTemplate(client: ApiClient, ns: string): Promise<any> {
  const res = await ok(client, "POST", `${deploymentsPath(ns)}?dryRun=All`, gpuDeployment("probe", ns));
  return res.spec.template;
}

const mutated = (template: any) => template?.spec?.priorityClassName === "inference";

// ---- where the time goes: histogram means from /metrics, before and after a run ----

/** `series{labels}` → value, for the `_sum` and `_count` lines of the histograms named in `wanted`. */
type Scrape = Map<string, number>;

const BREAKDOWN = {
  /** The API server's own handling of the POSTs (excludes the client and the network hop to it). */
  apiserverPost: { metric: "apiserver_request_duration_seconds", labels: { verb: "POST", resource: "deployments", subresource: "" } },
  /** One call of a webhook as the API server sees it: request, TLS, the server, response (infergate's or the no-op's: same names). */
  mutateCall: { metric: "apiserver_admission_webhook_admission_duration_seconds", labels: { name: "mutate.infergate.dev", operation: "CREATE" } },
  validateCall: { metric: "apiserver_admission_webhook_admission_duration_seconds", labels: { name: "validate.infergate.dev", operation: "CREATE" } },
  /** infergate's decision inside its process (pipeline, patch, quota check). */
  mutateInProcess: { metric: "infergate_admission_duration_seconds", labels: { webhook: "mutate", plugin: "all" } },
  validateInProcess: { metric: "infergate_admission_duration_seconds", labels: { webhook: "validate", plugin: "all" } },
  /** The MutatingAdmissionPolicy's CEL evaluation and patch inside the API server. */
  mapCheck: { metric: "apiserver_mutating_admission_policy_check_duration_seconds", labels: { policy: MAP_NAME } },
} as const;
type Part = keyof typeof BREAKDOWN;

function parseMetrics(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split("\n")) {
    const m = /^(\w+?)_(sum|count)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m) out.set(`${m[1]}_${m[2]}${m[3] ?? ""}`, Number(m[4]));
  }
  return out;
}

/** Sum and count over every series of `part` whose labels include the wanted ones. */
function totals(scrape: Scrape, part: Part): { sum: number; count: number } {
  const { metric, labels } = BREAKDOWN[part];
  const matches = (series: string) => Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`));
  let sum = 0;
  let count = 0;
  for (const [series, value] of scrape) {
    if (series.startsWith(`${metric}_sum{`) && matches(series)) sum += value;
    if (series.startsWith(`${metric}_count{`) && matches(series)) count += value;
  }
  return { sum, count };
}

async function scrapeAll(client: ApiClient, webhook: WebhookServer): Promise<Scrape> {
  const apiserver = parseMetrics((await client.request("GET", "/metrics")).text);
  // infergate serve runs only during its own runs.
  const running = webhook.process() && !webhook.process()!.exit();
  const res = running ? await httpsRequest(`${webhook.url}/metrics`, { caPem: fs.readFileSync(webhook.caFile, "utf8") }) : undefined;
  if (res && res.status !== 200) throw new Error(`infergate /metrics: HTTP ${res.status}`);
  const own: Scrape = res ? parseMetrics(res.text) : new Map();
  return new Map([...apiserver, ...own]);
}

/** Mean milliseconds per call of each part during a run, for the parts that ran. */
function breakdown(before: Scrape, after: Scrape): Partial<Record<Part, { calls: number; meanMs: number }>> {
  const out: Partial<Record<Part, { calls: number; meanMs: number }>> = {};
  for (const part of Object.keys(BREAKDOWN) as Part[]) {
    const a = totals(before, part);
    const b = totals(after, part);
    const calls = b.count - a.count;
    if (calls > 0) out[part] = { calls, meanMs: ((b.sum - a.sum) / calls) * 1000 };
  }
  return out;
}

// ---- CPU time per process: robust where wall-clock latency is not (other work shares the cores) ----

const CLOCK_TICKS = (() => {
  const res = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const n = Number(res.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/** user + system CPU milliseconds of a process so far, from /proc (Linux). */
function cpuMs(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS) * 1000;
  } catch {
    return Number.NaN;
  }
}

const CPU_PROCESSES = ["kube-apiserver", "etcd", "kube-controller-manager", "infergate serve", "no-op webhook"] as const;
type CpuProcess = (typeof CPU_PROCESSES)[number];

function cpuSnapshot(cluster: Cluster, { webhook, noop }: Hooks): Record<CpuProcess, number> {
  const pidOf = (name: string) => cluster.processes.find((p) => p.name === name)?.pid;
  const pids: Record<CpuProcess, number | undefined> = {
    "kube-apiserver": pidOf("kube-apiserver"),
    etcd: pidOf("etcd"),
    "kube-controller-manager": pidOf("kube-controller-manager"),
    "infergate serve": webhook.process()?.pid,
    "no-op webhook": noop.pid,
  };
  return Object.fromEntries(CPU_PROCESSES.map((name) => [name, pids[name] === undefined ? Number.NaN : cpuMs(pids[name]!)])) as Record<CpuProcess, number>;
}

// ---- one run ----

interface RunResult {
  config: Config;
  round: number;
  latenciesMs: number[];
  wallMs: number;
  breakdown: ReturnType<typeof breakdown>;
  /** CPU milliseconds per measured create, per process, while the creates ran. */
  cpuPerCreateMs: Record<CpuProcess, number>;
  /** The same until the controllers settled (adds their follow-up work and infergate's background loops). */
  cpuPerCreateSettledMs: Record<CpuProcess, number>;
}

async function createMany(client: ApiClient, ns: string, prefix: string, count: number): Promise<number[]> {
  const latencies: number[] = new Array(count);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= count) return;
      const body = gpuDeployment(`${prefix}-${i}`, ns);
      const start = performance.now();
      const res = await client.request("POST", deploymentsPath(ns), body);
      latencies[i] = performance.now() - start;
      if (res.status !== 201) throw new Error(`create ${prefix}-${i} in ${ns}: HTTP ${res.status}: ${res.text.slice(0, 500)}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, count) }, worker));
  return latencies;
}

async function count(client: ApiClient, apiPath: string): Promise<number> {
  return ((await ok(client, "GET", apiPath)).items ?? []).length;
}

/** Empties the namespace and waits until the controllers have nothing left to do there. */
async function emptyNamespace(client: ApiClient, ns: string): Promise<void> {
  await ok(client, "DELETE", deploymentsPath(ns));
  await poll(`deployments and replicasets in ${ns} to be gone`, async () => {
    const left = (await count(client, deploymentsPath(ns))) + (await count(client, `/apis/apps/v1/namespaces/${ns}/replicasets`));
    return left === 0 ? true : undefined;
  }, { timeoutMs: 300_000, intervalMs: 500 });
}

/** The deployment controller creates one ReplicaSet per Deployment; a run is over once it caught up. */
async function settle(client: ApiClient, ns: string, expected: number): Promise<void> {
  await poll(`${expected} replicasets in ${ns}`, async () => ((await count(client, `/apis/apps/v1/namespaces/${ns}/replicasets`)) >= expected ? true : undefined), {
    timeoutMs: 300_000,
    intervalMs: 500,
  });
}

interface Hooks {
  webhook: WebhookServer;
  noop: NoopWebhook;
}

/** Does a dry run in the no-op webhook's namespace reach it? */
async function reachesNoop(client: ApiClient, noop: NoopWebhook): Promise<boolean> {
  const before = await noop.answered();
  await dryRunTemplate(client, NAMESPACE.noop);
  return (await noop.answered()) > before;
}

async function enable(config: Config, cluster: Cluster, client: ApiClient, { webhook, noop }: Hooks): Promise<void> {
  if (config === "noop") {
    // The very configuration infergate registers (rules, matchConditions, timeouts), pointed elsewhere.
    await registerWebhooks(cluster, { baseUrl: noop.url, caBundle: webhook.caBundle });
    await poll("the no-op webhook to be called", async () => ((await reachesNoop(client, noop)) ? true : undefined), { timeoutMs: 60_000 });
  } else if (config === "infergate") {
    await webhook.start();
    await registerWebhooks(cluster, { baseUrl: webhook.url, caBundle: webhook.caBundle });
    await poll("infergate to mutate in its namespace", async () => (mutated(await dryRunTemplate(client, NAMESPACE.infergate)) ? true : undefined), {
      timeoutMs: 60_000,
    });
  } else if (config === "map") {
    await ok(client, "POST", `${ADMISSION}/mutatingadmissionpolicybindings`, mapBinding());
    await poll("the MutatingAdmissionPolicy binding to take effect", async () => (mutated(await dryRunTemplate(client, NAMESPACE.map)) ? true : undefined), {
      timeoutMs: 60_000,
    });
  }
}

async function disable(config: Config, cluster: Cluster, client: ApiClient, { webhook, noop }: Hooks): Promise<void> {
  if (config === "infergate" || config === "noop") await unregisterWebhooks(cluster);
  if (config === "map") await client.request("DELETE", `${ADMISSION}/mutatingadmissionpolicybindings/${MAP_NAME}`);
  // Registrations reach the API server through informers: wait until neither mutates any more.
  await poll("no admission hook to mutate", async () => {
    const [a, b] = await Promise.all([dryRunTemplate(client, NAMESPACE.infergate), dryRunTemplate(client, NAMESPACE.map)]);
    return !mutated(a) && !mutated(b) && !(await reachesNoop(client, noop)) ? true : undefined;
  }, { timeoutMs: 60_000 });
  // Its watches would otherwise parse every Deployment event of the other runs.
  if (config === "infergate") await webhook.stop();
}

async function run(config: Config, round: number, cluster: Cluster, client: ApiClient, hooks: Hooks): Promise<RunResult> {
  const ns = NAMESPACE[config];
  const phases: string[] = [];
  let phaseStart = performance.now();
  const phase = (name: string) => {
    phases.push(`${name} ${((performance.now() - phaseStart) / 1000).toFixed(1)}s`);
    phaseStart = performance.now();
  };
  await enable(config, cluster, client, hooks);
  phase("enable");
  const template = await dryRunTemplate(client, ns);
  const mutates = config === "infergate" || config === "map";
  if (mutated(template) !== mutates) throw new Error(`${config}: a dry run ${mutated(template) ? "was" : "was not"} mutated`);
  const answeredBefore = config === "noop" ? await hooks.noop.answered() : 0;
  const tag = randomBytes(2).toString("hex");
  if (WARMUP > 0) {
    await createMany(client, ns, `warm-${round}-${tag}`, WARMUP);
    await settle(client, ns, WARMUP);
    phase("warm-up");
  }
  const cpuBefore = cpuSnapshot(cluster, hooks);
  const before = await scrapeAll(client, hooks.webhook);
  const start = performance.now();
  const latenciesMs = await createMany(client, ns, `d-${round}-${tag}`, COUNT);
  const wallMs = performance.now() - start;
  phase("creates");
  const cpuAfter = cpuSnapshot(cluster, hooks);
  const after = await scrapeAll(client, hooks.webhook);
  await settle(client, ns, WARMUP + COUNT);
  const cpuSettled = cpuSnapshot(cluster, hooks);
  phase("settle");
  const perCreate = (until: Record<CpuProcess, number>) =>
    Object.fromEntries(CPU_PROCESSES.map((p) => [p, (until[p] - cpuBefore[p]) / COUNT])) as Record<CpuProcess, number>;
  if (config === "noop") {
    // Mutating and validating webhook: two reviews per create, none skipped.
    const answered = (await hooks.noop.answered()) - answeredBefore;
    if (answered < 2 * (WARMUP + COUNT)) throw new Error(`the no-op webhook answered ${answered} reviews for ${WARMUP + COUNT} creates`);
  }
  await disable(config, cluster, client, hooks);
  phase("disable");
  await emptyNamespace(client, ns);
  phase("cleanup");
  say(`  ${config}: ${phases.join(", ")}`);
  return { config, round, latenciesMs, wallMs, breakdown: breakdown(before, after), cpuPerCreateMs: perCreate(cpuAfter), cpuPerCreateSettledMs: perCreate(cpuSettled) };
}

// ---- statistics ----

interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

/** Nearest-rank percentile. */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function summarize(latencies: readonly number[]): Summary {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    mean: sorted.reduce((s, x) => s + x, 0) / sorted.length,
    max: sorted[sorted.length - 1]!,
  };
}

const ms = (x: number) => x.toFixed(1).padStart(7);

function table(results: RunResult[]): string {
  const lines = [`config     round      n    p50 ms    p90 ms    p99 ms   mean ms    max ms   creates/s`];
  for (const r of results) {
    const s = summarize(r.latenciesMs);
    lines.push(`${r.config.padEnd(10)} ${String(r.round + 1).padStart(5)} ${String(s.n).padStart(6)}   ${ms(s.p50)}   ${ms(s.p90)}   ${ms(s.p99)}   ${ms(s.mean)}   ${ms(s.max)}   ${((COUNT / r.wallMs) * 1000).toFixed(0).padStart(9)}`);
  }
  for (const config of CONFIGS) {
    const all = results.filter((r) => r.config === config);
    const s = summarize(all.flatMap((r) => r.latenciesMs));
    const wall = all.reduce((t, r) => t + r.wallMs, 0);
    lines.push(`${config.padEnd(10)} ${"all".padStart(5)} ${String(s.n).padStart(6)}   ${ms(s.p50)}   ${ms(s.p90)}   ${ms(s.p99)}   ${ms(s.mean)}   ${ms(s.max)}   ${((s.n / wall) * 1000).toFixed(0).padStart(9)}`);
  }
  return lines.join("\n");
}

const PART_TITLES: Record<Part, string> = {
  apiserverPost: "API server, whole POST",
  mutateCall: "mutating webhook call",
  validateCall: "validating webhook call",
  mutateInProcess: "infergate mutate, in process",
  validateInProcess: "infergate validate, in process",
  mapCheck: "MutatingAdmissionPolicy CEL",
};

const header = () => CONFIGS.map((c) => c.padStart(11)).join(" ");

/** Mean ms per call of each part, pooled over the rounds (weighted by calls). */
function breakdownTable(results: RunResult[]): string {
  const lines = [`mean ms per call (from /metrics)  ${header()}`];
  for (const part of Object.keys(BREAKDOWN) as Part[]) {
    const cells = CONFIGS.map((config) => {
      const parts = results.filter((r) => r.config === config).map((r) => r.breakdown[part]).filter((p) => p !== undefined);
      const calls = parts.reduce((n, p) => n + p.calls, 0);
      if (calls === 0) return "-".padStart(11);
      return (parts.reduce((t, p) => t + p.meanMs * p.calls, 0) / calls).toFixed(2).padStart(11);
    });
    lines.push(`${PART_TITLES[part].padEnd(34)} ${cells.join(" ")}`);
  }
  return lines.join("\n");
}

/** CPU ms per create per process, averaged over the rounds. */
function cpuTable(results: RunResult[]): string {
  const lines = [`CPU ms per create (while creating) ${header()}`];
  for (const proc of [...CPU_PROCESSES, "total"] as const) {
    const cells = CONFIGS.map((config) => {
      const runs = results.filter((r) => r.config === config);
      // A process that was not running in this configuration counts nothing ("-" on its own line).
      const known = (x: number) => (Number.isNaN(x) ? 0 : x);
      const value = (r: RunResult) => (proc === "total" ? CPU_PROCESSES.reduce((t, p) => t + known(r.cpuPerCreateMs[p]), 0) : r.cpuPerCreateMs[proc]);
      const mean = runs.reduce((t, r) => t + value(r), 0) / runs.length;
      return (Number.isNaN(mean) ? "-" : mean.toFixed(2)).padStart(11);
    });
    lines.push(`${proc.padEnd(34)} ${cells.join(" ")}`);
  }
  return lines.join("\n");
}

// ---- main ----

async function main(): Promise<void> {
  const binDir = await resolveBinDir({ repoRoot: REPO_ROOT });
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "infergate-bench-e2e-"));
  let cluster: Cluster | undefined;
  let webhook: WebhookServer | undefined;
  let noop: NoopWebhook | undefined;
  let client: ApiClient | undefined;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      client?.close();
      await webhook?.stop();
      await noop?.stop();
      await cluster?.stop();
      if (values.keep) say(`kept ${stateDir}`);
      else fs.rmSync(stateDir, { recursive: true, force: true });
    })());
  const interrupted = (signal: string) => {
    say(`${signal}: stopping the cluster and the webhook`);
    void stop().then(() => process.exit(130));
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  const deadline = setTimeout(() => {
    say(`--timeout of ${TIMEOUT_MS / 60_000} min reached: stopping`);
    void stop().then(() => process.exit(1));
  }, TIMEOUT_MS);

  try {
    const started = Date.now();
    cluster = await startCluster({ stateDir, binDir, log: say });
    // --profile-dir: one V8 CPU profile of `infergate serve` per run, written when it stops.
    const profileDir = values["profile-dir"] ? path.resolve(values["profile-dir"]) : undefined;
    webhook = await startWebhookServer({
      repoRoot: REPO_ROOT,
      stateDir,
      kubeconfig: cluster.kubeconfig,
      nodeArgs: profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [],
    });
    say(`cluster and infergate serve ready in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    // infergate runs only while it is the configuration under test.
    await webhook.stop();
    noop = await startNoop(stateDir);
    const hooks: Hooks = { webhook, noop };
    client = apiClient(cluster);
    for (const ns of Object.values(NAMESPACE)) await ok(client, "POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    const [project, policy] = infergatePolicyObjects();
    await ok(client, "POST", "/apis/infergate.dev/v1alpha1/projects", project);
    await ok(client, "POST", "/apis/infergate.dev/v1alpha1/inferencepolicies", policy);
    await ok(client, "POST", `${ADMISSION}/mutatingadmissionpolicies`, mutatingAdmissionPolicy());
    const equivalence = await checkEquivalence(cluster, client, hooks);
    say(equivalence);

    const results: RunResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order = CONFIGS.map((_, i) => CONFIGS[(i + round) % CONFIGS.length]!);
      for (const config of order) {
        say(`round ${round + 1}/${ROUNDS}: ${config}: ${WARMUP} warm-up + ${COUNT} creates, ${CONCURRENCY} in flight`);
        results.push(await run(config, round, cluster, client, hooks));
      }
    }

    const pooled = Object.fromEntries(CONFIGS.map((c) => [c, summarize(results.filter((r) => r.config === c).flatMap((r) => r.latenciesMs))])) as Partial<
      Record<Config, Summary>
    >;
    // With --configs, a ratio whose two sides did not both run is left out.
    const ratio = (a: Config, b: Config, p: "p50" | "p99") => (pooled[a] && pooled[b] ? pooled[a][p] / pooled[b][p] : Number.NaN);
    const ratios = {
      infergateP50VsNone: ratio("infergate", "none", "p50"),
      infergateP99VsMap: ratio("infergate", "map", "p99"),
      noopP50VsNone: ratio("noop", "none", "p50"),
      infergateP50VsNoop: ratio("infergate", "noop", "p50"),
      mapP50VsNone: ratio("map", "none", "p50"),
      infergateP99VsNone: ratio("infergate", "none", "p99"),
    };
    const goal = (x: number, max: number) => (Number.isNaN(x) ? "not measured" : x <= max ? "met" : "MISSED");
    const report = [
      "",
      `End-to-end create latency: ${ROUNDS} round(s) × ${COUNT} GPU Deployments (replicas 0) per configuration, ${CONCURRENCY} in flight, ${WARMUP} warm-up creates per run`,
      `machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`,
      "",
      table(results),
      "",
      breakdownTable(results),
      "",
      cpuTable(results),
      "",
      `infergate p50 / none p50 = ${ratios.infergateP50VsNone.toFixed(3)}   (goal ≤ 1.15: ${goal(ratios.infergateP50VsNone, 1.15)})`,
      `infergate p99 / map  p99 = ${ratios.infergateP99VsMap.toFixed(3)}   (goal ≤ 1.25: ${goal(ratios.infergateP99VsMap, 1.25)})`,
      `no-op     p50 / none p50 = ${ratios.noopP50VsNone.toFixed(3)}   (any webhook's floor)`,
      `infergate p50 / no-op p50 = ${ratios.infergateP50VsNoop.toFixed(3)}   (infergate's own share)`,
      `map       p50 / none p50 = ${ratios.mapP50VsNone.toFixed(3)}`,
      `infergate p99 / none p99 = ${ratios.infergateP99VsNone.toFixed(3)}`,
      "",
    ].join("\n");
    process.stdout.write(report);
    if (values.json) {
      const perRun = results.map((r) => ({ config: r.config, round: r.round + 1, wallMs: r.wallMs, ...summarize(r.latenciesMs), breakdown: r.breakdown, cpuPerCreateMs: r.cpuPerCreateMs, cpuPerCreateSettledMs: r.cpuPerCreateSettledMs }));
      fs.writeFileSync(values.json, JSON.stringify({ count: COUNT, concurrency: CONCURRENCY, warmup: WARMUP, rounds: ROUNDS, equivalence, perRun, pooled, ratios }, null, 2));
      say(`wrote ${values.json}`);
    }
  } catch (err) {
    say((err as Error).message);
    if (cluster) process.stderr.write(`${cluster.logs(20)}\n`);
    process.exitCode = 1;
  } finally {
    clearTimeout(deadline);
    await stop();
  }
}

/**
 * Both hooks must do the same work for the comparison to mean anything: the templates they produce
 * for the same Deployment are compared field by field (before any run, one hook at a time).
 */
async function checkEquivalence(cluster: Cluster, client: ApiClient, hooks: Hooks): Promise<string> {
  await enable("infergate", cluster, client, hooks);
  const byInfergate = await dryRunTemplate(client, NAMESPACE.infergate);
  await disable("infergate", cluster, client, hooks);
  await enable("map", cluster, client, hooks);
  const byMap = await dryRunTemplate(client, NAMESPACE.map);
  await disable("map", cluster, client, hooks);
  const a = JSON.stringify(byInfergate);
  const b = JSON.stringify(byMap);
  if (a === b) return "infergate and the MutatingAdmissionPolicy produce identical pod templates";
  throw new Error(`the two hooks disagree, the comparison would be unfair:\ninfergate: ${a}\nMAP:       ${b}`);
}

if (positionals[0] === "noop-webhook") {
  const [, port, cert, key] = positionals;
  await serveNoop(Number(port), cert!, key!);
} else {
  await main();
}
