// `npm run bench:quota`: does GPU quota stay O(1) per admission as the cluster grows? Method and results:
// BENCHMARKS.md, section "GPU quota".
//
// One file, three roles (the first argument):
//   (none)   the orchestrator: one fresh `state` child per size, the HTTPS client, the local cluster for
//            the sync measurement, the table and the ratios against the goals
//   state    a process holding 1,000 Projects and N GPU workloads in the running totals (as `serve`
//            after its first sync): times runPipeline in-process, serves the real app over HTTPS for the
//            orchestrator to time, and reports its memory
//   sync     a fresh process timing watchQuotaObjects (first list and sync) against a running cluster
//
// Flags: --sizes 100,10000,100000 --iterations 20000 (in-process, per case and round) --requests 3000
// (HTTPS, per size and round) --cluster-workloads 10000 --sync-runs 3 --no-cluster --json FILE (every
// figure) --child-flags "--max-semi-space-size=4" (V8 flags for the measured processes). Every timed
// case runs 5 rounds after a warm-up round; each figure is the median over the rounds.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { AppsV1Api, CoreV1Api } from "@kubernetes/client-node";
import type { AdmissionDeps } from "../../src/admission/handler.ts";
import { runPipeline } from "../../src/admission/pipeline.ts";
import type { Plugin } from "../../src/admission/plugin.ts";
import { startServer } from "../../src/admission/server.ts";
import type { AdmissionRequest } from "../../src/admission/types.ts";
import { resolveBinDir } from "../../src/local-cluster/binaries.ts";
import { attachCluster, REPO_ROOT, startCluster } from "../../src/local-cluster/cluster.ts";
import { createLogger } from "../../src/observability/log.ts";
import { createAdmissionMetrics } from "../../src/observability/metrics.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import type { Project } from "../../src/policy/types.ts";
import { keepIdentityOnly, watchQuotaObjects } from "../../src/quota/edge.ts";
import { QuotaTotals } from "../../src/quota/totals.ts";
import { createCA, createServingCert } from "../../src/tls/certificates.ts";
import { plugins } from "../../webhooks/index.ts";
import { quota } from "../../webhooks/quota.ts";

const SELF = fileURLToPath(import.meta.url);
const PROJECTS = 1_000;
const GOALS = { p99Ratio: 1.5, rssMiB: 300, quotaP99Ms: 1 };
/** Rounds per timed case; the median of each figure is reported. */
const ROUNDS = 5;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    sizes: { type: "string", default: "100,10000,100000" },
    iterations: { type: "string", default: "20000" },
    requests: { type: "string", default: "3000" },
    "cluster-workloads": { type: "string", default: "10000" },
    "sync-runs": { type: "string", default: "3" },
    "no-cluster": { type: "boolean", default: false },
    "child-flags": { type: "string", default: "" },
    json: { type: "string" },
    size: { type: "string" },
    state: { type: "string" },
  },
});

function intFlag(name: keyof typeof values, min: number, max: number): number {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: must be a whole number from ${min} to ${max}, got ${values[name]}`);
  return n;
}

interface Percentiles {
  p50: number;
  p99: number;
  mean: number;
  max: number;
}


/** Each figure's median over several rounds: one scheduler hiccup on a shared machine moves one round's p99, not the result. */
function medianOf<T extends object>(rounds: readonly T[]): T {
  const pick = (key: string) => rounds.map((r) => (r as Record<string, number>)[key]!).sort((a, b) => a - b)[Math.floor(rounds.length / 2)]!;
  return Object.fromEntries(Object.keys(rounds[0]!).map((key) => [key, pick(key)])) as T;
}

function summarize(samples: Float64Array): Percentiles {
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { p50: at(0.5), p99: at(0.99), mean: sorted.reduce((a, b) => a + b, 0) / sorted.length, max: sorted[sorted.length - 1]! };
}

/** Deterministic, so the orchestrator and every child draw the same cluster for the same size. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const namespaceOf = (project: number) => `team-${project}`;
const projectName = (project: number) => `project-${project}`;

function projects(): Project[] {
  return Array.from({ length: PROJECTS }, (_, i) => ({
    apiVersion: "infergate.dev/v1alpha1",
    kind: "Project",
    metadata: { name: projectName(i), uid: `uid-project-${i}`, resourceVersion: String(1000 + i), creationTimestamp: "2026-01-01T00:00:00Z" },
    // Generous: the benchmark times decisions, most of which admit.
    spec: { namespaces: [namespaceOf(i)], gpuQuota: "1000", nodePools: ["pool-a", "pool-b"] },
  }));
}

const clusterPolicy = {
  apiVersion: "infergate.dev/v1alpha1",
  kind: "InferencePolicy",
  metadata: { name: "cluster-default", creationTimestamp: "2026-01-01T00:00:00Z" },
  spec: { scheduler: { profile: "hami" }, defaults: { priorityClassName: "inference", tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }] } },
};

// ---- the cluster's objects, shaped as the API server returns them (managedFields, last-applied, status) ----

type WorkloadShape = "whole" | "fraction" | "knative" | "pod";

function shapeOf(i: number, rnd: () => number): WorkloadShape {
  const r = rnd();
  return i % 20 === 19 ? "pod" : r < 0.7 ? "whole" : r < 0.88 ? "fraction" : "knative";
}

function podSpec(shape: WorkloadShape, gpus: number) {
  return {
    containers: [
      {
        name: "vllm",
        image: "vllm/vllm-openai:v0.11.0",
        args: ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000", "--gpu-memory-utilization", "0.9"],
        ports: [{ name: "http", containerPort: 8000, protocol: "TCP" }],
        env: [{ name: "HF_HOME", value: "/cache" }, { name: "VLLM_LOGGING_LEVEL", value: "INFO" }],
        resources: {
          requests: { cpu: "4", memory: "32Gi" },
          limits: { memory: "32Gi", ...(shape === "fraction" ? {} : { "nvidia.com/gpu": String(gpus) }) },
        },
        readinessProbe: { httpGet: { path: "/health", port: 8000, scheme: "HTTP" }, periodSeconds: 5, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
        terminationMessagePath: "/dev/termination-log",
        terminationMessagePolicy: "File",
        imagePullPolicy: "IfNotPresent",
      },
    ],
    restartPolicy: "Always",
    terminationGracePeriodSeconds: 30,
    dnsPolicy: "ClusterFirst",
    schedulerName: "default-scheduler",
    priorityClassName: "inference",
    tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }],
  };
}

function managedFields(manager: string, operation: string) {
  return {
    manager,
    operation,
    apiVersion: "apps/v1",
    time: "2026-01-01T00:00:00Z",
    fieldsType: "FieldsV1",
    fieldsV1: { "f:metadata": { "f:annotations": { ".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {} }, "f:labels": { ".": {}, "f:app": {} } }, "f:spec": { "f:replicas": {}, "f:selector": {}, "f:template": { "f:metadata": { "f:labels": {} }, "f:spec": { "f:containers": {} } } } },
  };
}

/** Workload i of the cluster: its kind and the object the API server would list. */
function workloadObject(i: number, rnd: () => number): { kind: "Deployment" | "Pod" | "KnativeService"; object: any } {
  const project = i % PROJECTS;
  const namespace = namespaceOf(project);
  const shape = shapeOf(i, rnd);
  const name = `llm-${i}`;
  const replicas = 1 + Math.floor(rnd() * 4);
  const gpus = 1 + Math.floor(rnd() * 2);
  const labels = { app: name, "infergate.dev/project": projectName(project) };
  const annotations = shape === "fraction" ? { "gpu-fraction": rnd() < 0.5 ? "0.5" : "0.25" } : {};
  const metadata = {
    name,
    namespace,
    uid: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    resourceVersion: String(100_000 + i),
    generation: 1,
    creationTimestamp: "2026-01-01T00:00:00Z",
    labels,
    annotations: { "kubectl.kubernetes.io/last-applied-configuration": JSON.stringify({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name, namespace, labels }, spec: { replicas, template: { spec: podSpec(shape, gpus) } } }) },
    managedFields: [managedFields("kubectl-client-side-apply", "Update"), managedFields("kube-controller-manager", "Update")],
  };
  const template = { metadata: { labels, annotations }, spec: podSpec(shape, gpus) };
  if (shape === "pod") {
    return { kind: "Pod", object: { apiVersion: "v1", kind: "Pod", metadata, spec: template.spec, status: { phase: "Running", qosClass: "Burstable" } } };
  }
  if (shape === "knative") {
    const ksvcTemplate = { metadata: { annotations: { "autoscaling.knative.dev/min-scale": String(replicas) } }, spec: { containers: template.spec.containers } };
    return { kind: "KnativeService", object: { apiVersion: "serving.knative.dev/v1", kind: "Service", metadata, spec: { template: ksvcTemplate } } };
  }
  const status = {
    observedGeneration: 1,
    replicas,
    updatedReplicas: replicas,
    readyReplicas: replicas,
    availableReplicas: replicas,
    conditions: [
      { type: "Available", status: "True", reason: "MinimumReplicasAvailable", message: "Deployment has minimum availability.", lastUpdateTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z" },
      { type: "Progressing", status: "True", reason: "NewReplicaSetAvailable", message: `ReplicaSet "${name}-6d4cf56db6" has successfully progressed.`, lastUpdateTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z" },
    ],
  };
  const spec = { replicas, selector: { matchLabels: { app: name } }, strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: "25%", maxUnavailable: "25%" } }, template, revisionHistoryLimit: 10, progressDeadlineSeconds: 600 };
  return { kind: "Deployment", object: { apiVersion: "apps/v1", kind: "Deployment", metadata, spec, status } };
}

// ---- the admission requests timed at every size ----

const DEPLOYMENTS = { group: "apps", version: "v1", resource: "deployments" };
const SERVICES = { group: "serving.knative.dev", version: "v1", resource: "services" };

/**
 * A mix of what quota decides: a new GPU Deployment, a replica change and a rollout of a cached one, a
 * `kubectl scale`, and a new Knative Service, each in a random project.
 */
function admissionRequests(count: number, size: number, seed: number): AdmissionRequest[] {
  const rnd = random(seed);
  const cached: any[] = [];
  const draw = random(size);
  for (let i = 0; i < size && cached.length < 2_000; i++) {
    const w = workloadObject(i, draw);
    if (w.kind === "Deployment") cached.push(w.object);
  }
  const requests: AdmissionRequest[] = [];
  for (let i = 0; i < count; i++) {
    const uid = `bench-${i}`;
    const project = Math.floor(rnd() * PROJECTS);
    const old = cached.length ? cached[Math.floor(rnd() * cached.length)] : undefined;
    const base = { uid, userInfo: { username: "bench" } };
    switch (old ? i % 5 : 0) {
      case 0: {
        const { object } = workloadObject(size + i, random(i));
        object.kind = "Deployment";
        object.apiVersion = "apps/v1";
        object.metadata.namespace = namespaceOf(project);
        object.spec = { ...object.spec, replicas: 2, template: { metadata: { labels: { app: "new" } }, spec: podSpec("whole", 1) } };
        delete object.status;
        requests.push({ ...base, kind: { group: "apps", version: "v1", kind: "Deployment" }, resource: DEPLOYMENTS, operation: "CREATE", namespace: object.metadata.namespace, name: object.metadata.name, object });
        break;
      }
      case 1: {
        const object = { ...old, spec: { ...old.spec, replicas: old.spec.replicas + 1 } };
        requests.push({ ...base, kind: { group: "apps", version: "v1", kind: "Deployment" }, resource: DEPLOYMENTS, operation: "UPDATE", namespace: old.metadata.namespace, name: old.metadata.name, object, oldObject: old });
        break;
      }
      case 2: {
        const template = { ...old.spec.template, spec: { ...old.spec.template.spec, containers: [{ ...old.spec.template.spec.containers[0], image: "vllm/vllm-openai:v0.12.0" }] } };
        const object = { ...old, spec: { ...old.spec, template } };
        requests.push({ ...base, kind: { group: "apps", version: "v1", kind: "Deployment" }, resource: DEPLOYMENTS, operation: "UPDATE", namespace: old.metadata.namespace, name: old.metadata.name, object, oldObject: old });
        break;
      }
      case 3: {
        const scale = (replicas: number) => ({ apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name: old.metadata.name, namespace: old.metadata.namespace, resourceVersion: old.metadata.resourceVersion }, spec: { replicas } });
        requests.push({
          ...base,
          kind: { group: "autoscaling", version: "v1", kind: "Scale" },
          resource: DEPLOYMENTS,
          subResource: "scale",
          operation: "UPDATE",
          namespace: old.metadata.namespace,
          name: old.metadata.name,
          object: scale(old.spec.replicas + 2),
          oldObject: scale(old.spec.replicas),
        });
        break;
      }
      default: {
        const object = {
          apiVersion: "serving.knative.dev/v1",
          kind: "Service",
          metadata: { name: `chat-${i}`, namespace: namespaceOf(project) },
          spec: { template: { metadata: { annotations: { "autoscaling.knative.dev/min-scale": "2" } }, spec: { containers: [{ image: "vllm/vllm-openai:v0.11.0", resources: { limits: { "nvidia.com/gpu": "1" } } }] } } },
        };
        requests.push({ ...base, kind: { group: "serving.knative.dev", version: "v1", kind: "Service" }, resource: SERVICES, operation: "CREATE", namespace: object.metadata.namespace, name: object.metadata.name, object });
      }
    }
  }
  return requests;
}

// ---- role: state ----

interface MemoryFigures {
  rssMiB: number;
  heapUsedMiB: number;
}

function memory(): MemoryFigures {
  (globalThis as any).gc?.();
  const m = process.memoryUsage();
  return { rssMiB: m.rss / 2 ** 20, heapUsedMiB: m.heapUsed / 2 ** 20 };
}

interface StateResult {
  size: number;
  charged: number;
  baseline: MemoryFigures;
  /** PolicyStore + QuotaTotals after building them from N objects that were then dropped. */
  quotaState: MemoryFigures;
  /** …plus the watch cache as watchQuotaObjects leaves it: each object's name, namespace and resourceVersion. */
  withIdentities?: MemoryFigures;
  /** …plus every whole object on top, as a ListWatch cache keeps them unless they are reduced. */
  withObjects?: MemoryFigures;
  buildMs: number;
  inProcess: { quotaOnly: Percentiles; allValidators: Percentiles; quotaDenied: number };
}

async function stateRole(): Promise<void> {
  const size = intFlag("size", 1, 10_000_000);
  const iterations = intFlag("iterations", 100, 10_000_000);
  const baseline = memory();
  const store = new PolicyStore();
  for (const p of projects()) store.upsertProject(p);
  store.upsertPolicy(clusterPolicy as any);
  const totals = new QuotaTotals((ns) => store.projectOf(ns));
  const started = performance.now();
  const rnd = random(size);
  for (let i = 0; i < size; i++) {
    const { kind, object } = workloadObject(i, rnd);
    totals.apply("ADDED", object, kind);
  }
  const buildMs = performance.now() - started;
  const charged = totals.list().length;
  const quotaState = memory();

  const requests = admissionRequests(2_000, size, 7);
  const cluster = { knativeFeatures: store.knativeFeatures, quota: totals };
  let denied = 0;
  const time = (set: readonly Plugin[]) => {
    const run = (request: AdmissionRequest) => runPipeline({ request, phase: "validate", plugins: set, policies: store, cluster });
    const samples = new Float64Array(iterations);
    for (let i = 0; i < iterations; i++) {
      const request = requests[i % requests.length]!;
      const t0 = performance.now();
      const result = run(request);
      samples[i] = performance.now() - t0;
      if (!result.response.allowed) denied++;
    }
    return summarize(samples);
  };
  const rounds = (set: readonly Plugin[]): Percentiles => {
    // The first round warms the JIT up on every request shape; it is not counted.
    time(set);
    return medianOf(Array.from({ length: ROUNDS }, () => time(set)));
  };
  const quotaOnly = rounds([quota]);
  const quotaDenied = denied;
  const allValidators = rounds(plugins);

  // The real app over HTTPS, as `infergate serve` builds it (minus the ledger, which needs an API server).
  const now = new Date();
  const ca = createCA({ commonName: "infergate-bench-ca", now });
  const serving = createServingCert({ ca, hosts: ["127.0.0.1"], now });
  const deps: AdmissionDeps = {
    plugins,
    policies: store,
    cluster: () => cluster,
    metrics: createAdmissionMetrics(),
    // No per-request log line: the timing is the decision and the transport, not stdout.
    logger: createLogger("warn"),
  };
  const server = await startServer({ address: "127.0.0.1", port: 0, cert: serving.certPem, key: serving.keyPem, deps });
  const scratch = mkdtempSync(path.join(os.tmpdir(), "infergate-bench-quota-"));
  const bodiesFile = path.join(scratch, "bodies.json");
  writeFileSync(bodiesFile, JSON.stringify(requests.map((request) => JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request }))));
  const result: StateResult = { size, charged, baseline, quotaState, buildMs, inProcess: { quotaOnly, allValidators, quotaDenied } };
  send({ event: "serving", port: server.port, ca: ca.certPem, bodiesFile, result });

  // The orchestrator's "done" (or its end: stdin closes with it).
  await new Promise<void>((resolve) => {
    const input = createInterface({ input: process.stdin });
    input.once("line", () => resolve());
    input.once("close", () => resolve());
  });
  await server.close();
  rmSync(scratch, { recursive: true, force: true });

  // What the watch caches add. client-node's ListWatch keeps every object it hands out, namespace by
  // namespace; watchQuotaObjects leaves only its identity there (keepIdentityOnly). The whole objects,
  // as a plain ListWatch would keep them, are measured last, on top, for comparison.
  const fill = (cache: Map<string, Map<string, any>>, shrink: boolean) => {
    const again = random(size);
    for (let i = 0; i < size; i++) {
      const { object } = workloadObject(i, again);
      if (shrink) keepIdentityOnly(object);
      let byName = cache.get(object.metadata.namespace);
      if (!byName) cache.set(object.metadata.namespace, (byName = new Map()));
      byName.set(object.metadata.name, object);
    }
  };
  const identities = new Map<string, Map<string, any>>();
  fill(identities, true);
  result.withIdentities = memory();
  const objects = new Map<string, Map<string, any>>();
  fill(objects, false);
  result.withObjects = memory();
  send({ event: "done", result, cached: identities.size + objects.size });
  process.exit(0);
}

function send(message: unknown): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

// ---- role: sync ----

interface SyncResult {
  deployments: number;
  syncMs: number;
  before: MemoryFigures;
  after: MemoryFigures;
}

async function syncRole(): Promise<void> {
  const stateDir = values.state ?? "";
  const kc = attachCluster(stateDir).client();
  const owner = new Map(projects().map((p) => [p.spec.namespaces![0]!, p]));
  const totals = new QuotaTotals((ns) => owner.get(ns));
  const before = memory();
  const logger = createLogger("warn", (line) => process.stderr.write(line));
  const started = performance.now();
  const watches = watchQuotaObjects(kc, totals, logger, () => undefined);
  while (!watches.synced()) await new Promise((r) => setTimeout(r, 2));
  const syncMs = performance.now() - started;
  const deployments = totals.list().filter((c) => c.kind === "Deployment").length;
  const after = memory();
  await watches.stop();
  send({ event: "synced", result: { deployments, syncMs, before, after } satisfies SyncResult });
  process.exit(0);
}

// ---- role: orchestrator ----

function child(args: string[]): { proc: ChildProcess; messages: AsyncIterator<any> } {
  const flags = (values["child-flags"] ?? "").split(/\s+/).filter(Boolean);
  const proc = spawn(process.execPath, ["--expose-gc", ...flags, SELF, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: proc.stdout! });
  const messages = (async function* () {
    for await (const line of lines) if (line.startsWith("{")) yield JSON.parse(line);
  })();
  return { proc, messages };
}

async function next(messages: AsyncIterator<any>, event: string): Promise<any> {
  for (;;) {
    const { value, done } = await messages.next();
    if (done) throw new Error(`the child exited before reporting "${event}"`);
    if (value.event === event) return value;
  }
}

async function httpsLatency(port: number, ca: string, bodies: string[], count: number): Promise<Percentiles & { errors: number }> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const post = (body: string) =>
    new Promise<number>((resolve, reject) => {
      const req = https.request({ host: "127.0.0.1", port, path: "/validate", method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      req.on("error", reject);
      req.end(body);
    });
  let errors = 0;
  for (let i = 0; i < 500; i++) await post(bodies[i % bodies.length]!);
  const samples = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    if ((await post(bodies[i % bodies.length]!)) !== 200) errors++;
    samples[i] = performance.now() - t0;
  }
  agent.destroy();
  return { ...summarize(samples), errors };
}

interface SizeResult extends StateResult {
  https: Percentiles & { errors: number };
}

async function measureSize(size: number): Promise<SizeResult> {
  const { proc, messages } = child(["state", "--size", String(size), "--iterations", values.iterations!]);
  try {
    const serving = await next(messages, "serving");
    const bodies: string[] = JSON.parse(readFileSync(serving.bodiesFile, "utf8"));
    const each = [];
    for (let r = 0; r < ROUNDS; r++) each.push(await httpsLatency(serving.port, serving.ca, bodies, intFlag("requests", 100, 10_000_000)));
    const httpsResult = medianOf(each);
    proc.stdin!.write("done\n");
    const done = await next(messages, "done");
    return { ...done.result, https: httpsResult };
  } finally {
    if (proc.exitCode === null) proc.kill("SIGTERM");
  }
}

async function measureSync(workloads: number, runs: number): Promise<{ created: number; createSeconds: number; runs: SyncResult[] }> {
  const stateDir = mkdtempSync(path.join(os.tmpdir(), "infergate-bench-cluster-"));
  const binDir = await resolveBinDir({ repoRoot: REPO_ROOT });
  const cluster = await startCluster({ stateDir, binDir, log: (m) => process.stderr.write(`[cluster] ${m}\n`) });
  try {
    const kc = cluster.client();
    const core = kc.makeApiClient(CoreV1Api);
    const apps = kc.makeApiClient(AppsV1Api);
    const namespaces = 100;
    for (let n = 0; n < namespaces; n++) await core.createNamespace({ body: { metadata: { name: namespaceOf(n) } } });
    const started = performance.now();
    let nextIndex = 0;
    // Bounded: 32 requests in flight, so the apiserver (on the same two cores) is busy but not swamped.
    const worker = async () => {
      for (let i = nextIndex++; i < workloads; i = nextIndex++) {
        const { object } = workloadObject(i, random(i));
        const body = {
          apiVersion: "apps/v1",
          kind: "Deployment",
          metadata: { name: `llm-${i}`, namespace: namespaceOf(i % namespaces), labels: object.metadata.labels },
          // Replicas 0 and paused: the controllers create no ReplicaSets or pods, only the objects count.
          spec: { replicas: 0, paused: true, selector: { matchLabels: { app: `llm-${i}` } }, template: { metadata: { labels: { app: `llm-${i}` } }, spec: podSpec("whole", 1) } },
        };
        await apps.createNamespacedDeployment({ namespace: body.metadata.namespace, body: body as any });
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    const createSeconds = (performance.now() - started) / 1000;
    process.stderr.write(`[cluster] created ${workloads} Deployments in ${createSeconds.toFixed(1)}s\n`);
    const results: SyncResult[] = [];
    for (let r = 0; r < runs; r++) {
      const { proc, messages } = child(["sync", "--state", stateDir]);
      try {
        results.push((await next(messages, "synced")).result);
      } finally {
        if (proc.exitCode === null) proc.kill("SIGTERM");
      }
    }
    return { created: workloads, createSeconds, runs: results };
  } finally {
    await cluster.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

const ms = (n: number) => (n < 1 ? n.toFixed(3) : n.toFixed(2));
const us = (milliseconds: number) => (milliseconds * 1000).toFixed(1);
const mib = (n: number) => n.toFixed(0);

async function orchestrate(): Promise<void> {
  const sizes = (values.sizes ?? "").split(",").map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--sizes: whole numbers separated by commas, got ${values.sizes}`);
  const bySize: SizeResult[] = [];
  for (const size of sizes) {
    process.stderr.write(`[bench] ${size} workloads across ${PROJECTS} projects…\n`);
    bySize.push(await measureSize(size));
  }
  const sync = values["no-cluster"] ? undefined : await measureSync(intFlag("cluster-workloads", 1, 1_000_000), intFlag("sync-runs", 1, 20));

  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  console.log(`\nGPU quota benchmark — Node ${process.version}, ${os.availableParallelism()} cores (${cpu}), load average ${os.loadavg()[0]!.toFixed(1)}${values["child-flags"] ? `, measured processes run with ${values["child-flags"]}` : ""}`);
  console.log("\nPer call, median of 5 rounds: in-process runPipeline (validate) in µs, HTTPS POST /validate (keep-alive, one at a time) in ms");
  console.log(`\n| workloads (1,000 projects) | quota plugin p50 / p99 µs | all validators p50 / p99 µs | HTTPS /validate p50 / p99 ms | RSS MiB: baseline / quota state / + watch cache / + whole objects | heap MiB: quota state / + watch cache |`);
  console.log(`|---:|---:|---:|---:|---:|---:|`);
  for (const r of bySize) {
    const { quotaOnly: q, allValidators: a } = r.inProcess;
    console.log(
      `| ${r.size.toLocaleString("en")} | ${us(q.p50)} / ${us(q.p99)} | ${us(a.p50)} / ${us(a.p99)} | ${ms(r.https.p50)} / ${ms(r.https.p99)} | ` +
        `${mib(r.baseline.rssMiB)} / ${mib(r.quotaState.rssMiB)} / ${mib(r.withIdentities?.rssMiB ?? 0)} / ${mib(r.withObjects?.rssMiB ?? 0)} | ` +
        `${mib(r.quotaState.heapUsedMiB)} / ${mib(r.withIdentities?.heapUsedMiB ?? 0)} |`,
    );
  }
  const smallest = bySize[0]!;
  const largest = bySize[bySize.length - 1]!;
  const ratio = (pick: (r: SizeResult) => number) => pick(largest) / pick(smallest);
  const verdict = (ok: boolean) => (ok ? "meets the goal" : "MISSES the goal");
  const ratios = {
    "quota plugin": ratio((r) => r.inProcess.quotaOnly.p99),
    "all validators": ratio((r) => r.inProcess.allValidators.p99),
    "HTTPS /validate": ratio((r) => r.https.p99),
  };
  console.log(`\np99 at ${largest.size.toLocaleString("en")} ÷ p99 at ${smallest.size.toLocaleString("en")} (goal ≤ ${GOALS.p99Ratio}):`);
  for (const [name, value] of Object.entries(ratios)) console.log(`  ${name}: ${value.toFixed(2)} — ${verdict(value <= GOALS.p99Ratio)}`);
  const worstP99 = Math.max(...bySize.map((r) => r.inProcess.quotaOnly.p99));
  console.log(`quota decision p99, worst size: ${us(worstP99)} µs (goal < ${GOALS.quotaP99Ms} ms) — ${verdict(worstP99 < GOALS.quotaP99Ms)}`);
  const servingRss = largest.withIdentities?.rssMiB ?? 0;
  console.log(`RSS at ${largest.size.toLocaleString("en")}, quota state and watch cache (goal ≤ ${GOALS.rssMiB} MiB): ${mib(servingRss)} MiB — ${verdict(servingRss <= GOALS.rssMiB)}; whole objects would add ${mib((largest.withObjects?.rssMiB ?? 0) - servingRss)} MiB`);
  console.log(`HTTPS errors: ${bySize.map((r) => r.https.errors).join(", ")}; quota build time: ${bySize.map((r) => `${r.size.toLocaleString("en")} in ${(r.buildMs / 1000).toFixed(2)} s`).join(", ")}`);
  if (sync) {
    const times = sync.runs.map((r) => r.syncMs).sort((a, b) => a - b);
    console.log(`\nFirst list and sync of watchQuotaObjects at ${sync.created.toLocaleString("en")} Deployments (real kube-apiserver, ${sync.runs.length} fresh processes):`);
    for (const r of sync.runs) {
      console.log(`  ${(r.syncMs / 1000).toFixed(2)} s, ${r.deployments} Deployments charged, RSS ${mib(r.before.rssMiB)} → ${mib(r.after.rssMiB)} MiB, heap ${mib(r.before.heapUsedMiB)} → ${mib(r.after.heapUsedMiB)} MiB`);
    }
    console.log(`  median ${(times[Math.floor(times.length / 2)]! / 1000).toFixed(2)} s (creating them took ${sync.createSeconds.toFixed(1)} s)`);
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ node: process.version, cpu, loadavg: os.loadavg(), childFlags: values["child-flags"], bySize, ratios, sync }, null, 2));
}

const role = positionals[0];
if (role === "state") await stateRole();
else if (role === "sync") await syncRole();
else if (role === undefined) await orchestrate();
else throw new Error(`unknown role "${role}": use no argument (the orchestrator), state or sync`);
