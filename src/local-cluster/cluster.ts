// The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok,
// every listener on 127.0.0.1 with a free port, state (certificates, etcd data, logs, PID files) in
// one directory. Everything it starts it stops again by PID, also when starting fails half-way.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { httpsRequest, poll } from "./api.ts";
import { applyObjects } from "./apply.ts";
import type { ApiResponse, TlsIdentity } from "./api.ts";
import { createControlPlanePki } from "./certs.ts";
import type { ControlPlanePki } from "./certs.ts";
import { fakeNodes, DEFAULT_NODE_POOLS } from "./fake-nodes.ts";
import type { NodePoolSpec } from "./fake-nodes.ts";
import { adminKubeconfig } from "./kubeconfig.ts";
import { freePorts, LOOPBACK } from "./ports.ts";
import { priorityClasses } from "./priority-classes.ts";
import { childEnv, killStaleProcesses, launch, logTails, terminate } from "./processes.ts";
import type { ManagedProcess } from "./processes.ts";
import { registerWebhooks } from "./webhook-registration.ts";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Data shared between projects (third-party CRDs), next to the repository: `../shared`. */
export const SHARED_DIR = path.resolve(REPO_ROOT, "../shared");
export const KNATIVE_DIR = path.join(SHARED_DIR, "crds/knative-serving-v1.23.0");
export const POD_GROUP_CRD = path.join(SHARED_DIR, "crds/scheduler-plugins/scheduling.x-k8s.io_podgroups.yaml");
export const INFERGATE_CRD_DIR = path.join(REPO_ROOT, "manifests/crds");

export const KUBECONFIG_FILE = "admin.kubeconfig";
const STATE_ENTRIES = ["etcd", "logs", "pids", "pki", KUBECONFIG_FILE, "cluster.json"];

export interface KubectlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** What a test (or another process) needs to use a running cluster it did not start. */
export interface ClusterAccess {
  stateDir: string;
  binDir: string;
  kubeconfig: string;
  server: string;
  kubectl(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<KubectlResult>;
  client(): KubeConfig;
  /** Calls the apiserver as the admin (path like /api/v1/nodes). */
  api(method: string, apiPath: string, body?: unknown): Promise<ApiResponse>;
  /** The last lines of every component log, for printing when something fails. */
  logs(lines?: number): string;
}

export interface Cluster extends ClusterAccess {
  processes: ManagedProcess[];
  /** CRDs that were installed, as "plural.group" names. */
  crds: string[];
  /** Notes about things skipped on purpose (e.g. infergate CRDs not written yet). */
  notes: string[];
  stop(): Promise<void>;
  /**
   * Stops one component by its PID (SIGKILL by default: a crash, not a clean shutdown), runs `whileDown`,
   * then starts it again with the same flags and data, and waits until it is healthy. For failure tests.
   */
  restart(component: ClusterComponent, options?: RestartOptions): Promise<void>;
}

export type ClusterComponent = "etcd" | "kube-apiserver" | "kube-controller-manager" | "kube-scheduler" | "kwok";

export interface RestartOptions {
  /** Runs while the component is down, e.g. to watch what its clients do meanwhile. */
  whileDown?: () => Promise<void>;
  signal?: "SIGKILL" | "SIGTERM";
}

export interface StartOptions {
  stateDir: string;
  binDir: string;
  webhook?: { url: string; caBundle: string };
  pools?: readonly NodePoolSpec[];
  /** Progress messages; silent by default. */
  log?: (message: string) => void;
  /** Overall budget for each readiness wait. */
  timeoutMs?: number;
}

interface ClusterState {
  server: string;
  binDir: string;
  ports: Record<string, number>;
}

export async function startCluster(options: StartOptions): Promise<Cluster> {
  const stateDir = path.resolve(options.stateDir);
  const say = options.log ?? (() => {});
  const timeoutMs = options.timeoutMs ?? 120_000;
  const bin = (name: string) => path.join(options.binDir, name);
  fs.mkdirSync(stateDir, { recursive: true });
  for (const stale of await killStaleProcesses(stateDir)) say(`stopped a leftover process from an earlier run: ${stale}`);
  for (const entry of STATE_ENTRIES) fs.rmSync(path.join(stateDir, entry), { recursive: true, force: true });

  const pki = createControlPlanePki(path.join(stateDir, "pki"));
  const [etcdPort, etcdPeerPort, apiPort, kcmPort, schedulerPort] = (await freePorts(5)) as [number, number, number, number, number];
  const server = `https://${LOOPBACK}:${apiPort}`;
  const kubeconfig = path.join(stateDir, KUBECONFIG_FILE);
  fs.writeFileSync(
    kubeconfig,
    adminKubeconfig({ server, caPem: pki.caPem, clientCertPem: pki.adminCertPem, clientKeyPem: pki.adminKeyPem }),
    { mode: 0o600 },
  );
  const state: ClusterState = {
    server,
    binDir: options.binDir,
    ports: { etcd: etcdPort, etcdPeer: etcdPeerPort, apiserver: apiPort, kubeControllerManager: kcmPort, kubeScheduler: schedulerPort },
  };
  fs.writeFileSync(path.join(stateDir, "cluster.json"), JSON.stringify(state, null, 2));

  const access = clusterAccess(stateDir, options.binDir, server, pki);
  const processes: ManagedProcess[] = [];
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= stopProcesses(processes));
  const crds: string[] = [];
  const notes: string[] = [];
  const flagsOf = new Map<ClusterComponent, string[]>();
  const died = () => {
    const dead = processes.find((p) => p.exit());
    return dead ? `${dead.name} exited (${JSON.stringify(dead.exit())}); see ${dead.logFile}` : undefined;
  };
  const start = async (name: ClusterComponent, args: string[]) => {
    const proc = await launch({ name, command: bin(name), args, stateDir, env: childEnv() });
    flagsOf.set(name, args);
    processes.push(proc);
    return proc;
  };
  const insecure: TlsIdentity = { insecure: true };
  const healthzPorts: Partial<Record<ClusterComponent, number>> = { "kube-controller-manager": kcmPort, "kube-scheduler": schedulerPort };
  const waitHealthy = async (name: ClusterComponent) => {
    if (name === "etcd") {
      await poll(
        "etcd health",
        async () => {
          const res = await fetch(`http://${LOOPBACK}:${etcdPort}/health`);
          return res.ok && (await res.json()).health === "true" ? true : undefined;
        },
        { timeoutMs, abort: died },
      );
    } else if (name === "kube-apiserver") {
      await poll("kube-apiserver /readyz", async () => ((await access.api("GET", "/readyz")).status === 200 ? true : undefined), {
        timeoutMs,
        abort: died,
      });
    } else if (healthzPorts[name]) {
      await poll(
        `${name} /healthz`,
        async () => ((await httpsRequest(`https://${LOOPBACK}:${healthzPorts[name]}/healthz`, insecure)).status === 200 ? true : undefined),
        { timeoutMs, abort: died },
      );
    }
  };
  const restart = async (component: ClusterComponent, restartOptions: RestartOptions = {}) => {
    const args = flagsOf.get(component);
    if (!args) throw new Error(`cannot restart ${component}: this cluster never started it`);
    const index = processes.findIndex((p) => p.name === component);
    const running = processes[index];
    if (running) {
      if (!running.exit()) process.kill(running.pid, restartOptions.signal ?? "SIGKILL");
      await running.exited;
      processes.splice(index, 1);
    }
    await restartOptions.whileDown?.();
    await start(component, args);
    await waitHealthy(component);
  };
  const cluster: Cluster = { ...access, processes, crds, notes, stop, restart };

  try {
    say(`starting etcd on ${LOOPBACK}:${etcdPort}`);
    await start("etcd", etcdArgs(stateDir, etcdPort, etcdPeerPort));
    await waitHealthy("etcd");

    say(`starting kube-apiserver on ${server}`);
    await start("kube-apiserver", apiserverArgs(stateDir, pki, apiPort, etcdPort));
    await waitHealthy("kube-apiserver");

    say("starting kube-controller-manager, kube-scheduler and kwok");
    await start("kube-controller-manager", controllerManagerArgs(kubeconfig, pki, kcmPort));
    await start("kube-scheduler", schedulerArgs(kubeconfig, schedulerPort));
    await start("kwok", kwokArgs(kubeconfig, options.binDir));
    await waitHealthy("kube-controller-manager");
    await waitHealthy("kube-scheduler");

    say("creating fake GPU nodes, PriorityClasses and CRDs");
    const nodes = fakeNodes(options.pools ?? DEFAULT_NODE_POOLS);
    await createNodes(access, nodes);
    await applyObjects(access, [
      ...priorityClasses(),
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "knative-serving" } },
      // infergate's own namespace: `serve` keeps its leader-election Lease there.
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "infergate-system" } },
    ]);

    const infergateCrdFiles = yamlFiles(INFERGATE_CRD_DIR);
    if (!infergateCrdFiles.length) notes.push(`no infergate CRDs found in ${INFERGATE_CRD_DIR}; skipped`);
    const knativeFiles = yamlFiles(KNATIVE_DIR);
    if (!knativeFiles.length) notes.push(`no Knative Serving manifests found in ${KNATIVE_DIR}; skipped`);
    const extraCrdFiles = fs.existsSync(POD_GROUP_CRD) ? [POD_GROUP_CRD] : [];
    const crdObjects = [...infergateCrdFiles, ...knativeFiles, ...extraCrdFiles]
      .flatMap(readYamlObjects)
      .filter((o) => o.kind === "CustomResourceDefinition");
    const otherObjects = knativeFiles.flatMap(readYamlObjects).filter((o) => o.kind !== "CustomResourceDefinition");
    await applyObjects(access, crdObjects);
    await waitForCrds(access, crdObjects, timeoutMs, died);
    crds.push(...crdObjects.map((c) => c.metadata.name as string));
    await applyObjects(access, otherObjects);

    await poll(
      `${nodes.length} Ready nodes`,
      async () => {
        const list = (await access.api("GET", "/api/v1/nodes")).json();
        const ready = (list.items ?? []).filter((n: any) =>
          (n.status?.conditions ?? []).some((c: any) => c.type === "Ready" && c.status === "True"),
        );
        return ready.length >= nodes.length ? true : undefined;
      },
      { timeoutMs, abort: died },
    );
    // Pods need their namespace's default ServiceAccount (admission); its presence shows KCM works.
    await poll(
      "the default ServiceAccount",
      async () => ((await access.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")).status === 200 ? true : undefined),
      { timeoutMs, abort: died },
    );

    if (options.webhook) {
      say(`registering infergate's webhooks at ${options.webhook.url}`);
      await registerWebhooks(cluster, { baseUrl: options.webhook.url, caBundle: options.webhook.caBundle });
    }
    say("cluster ready");
    return cluster;
  } catch (err) {
    const logs = access.logs(30);
    await stop();
    throw new Error(`starting the local cluster failed: ${(err as Error).message}\n${logs}`, { cause: err });
  }
}

/** Uses a cluster that another process started in `stateDir`. */
export function attachCluster(stateDirIn: string): ClusterAccess {
  const stateDir = path.resolve(stateDirIn);
  const state = JSON.parse(fs.readFileSync(path.join(stateDir, "cluster.json"), "utf8")) as ClusterState;
  const read = (f: string) => fs.readFileSync(path.join(stateDir, "pki", f), "utf8");
  return clusterAccess(stateDir, state.binDir, state.server, {
    caPem: read("ca.crt"),
    adminCertPem: read("admin.crt"),
    adminKeyPem: read("admin.key"),
  });
}

function clusterAccess(
  stateDir: string,
  binDir: string,
  server: string,
  pki: Pick<ControlPlanePki, "caPem" | "adminCertPem" | "adminKeyPem">,
): ClusterAccess {
  const kubeconfig = path.join(stateDir, KUBECONFIG_FILE);
  const tls: TlsIdentity = { caPem: pki.caPem, certPem: pki.adminCertPem, keyPem: pki.adminKeyPem };
  return {
    stateDir,
    binDir,
    kubeconfig,
    server,
    kubectl: (args, options = {}) => runKubectl(path.join(binDir, "kubectl"), kubeconfig, args, options),
    client() {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig);
      return kc;
    },
    api: (method, apiPath, body) => httpsRequest(`${server}${apiPath}`, tls, { method, body }),
    logs: (lines = 40) => logTails(stateDir, lines),
  };
}

export function runKubectl(
  kubectlPath: string,
  kubeconfig: string,
  args: string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<KubectlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(kubectlPath, args, {
      env: childEnv({ KUBECONFIG: kubeconfig }),
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${kubectlPath}: ${err.message}`));
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on("error", () => {}); // kubectl may exit before reading stdin
    child.stdin.end(options.input ?? "");
  });
}

function etcdArgs(stateDir: string, port: number, peerPort: number): string[] {
  const client = `http://${LOOPBACK}:${port}`;
  const peer = `http://${LOOPBACK}:${peerPort}`;
  return [
    "--name=infergate",
    `--data-dir=${path.join(stateDir, "etcd")}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=infergate=${peer}`,
    // Test data is thrown away: skipping fsync makes the shared 2-core machine much faster.
    "--unsafe-no-fsync=true",
    "--log-level=warn",
  ];
}

function apiserverArgs(stateDir: string, pki: ControlPlanePki, port: number, etcdPort: number): string[] {
  return [
    `--etcd-servers=http://${LOOPBACK}:${etcdPort}`,
    `--bind-address=${LOOPBACK}`,
    `--advertise-address=${LOOPBACK}`,
    `--secure-port=${port}`,
    `--cert-dir=${path.join(stateDir, "pki")}`,
    // A loopback advertise address may not be written into the `kubernetes` Endpoints.
    "--endpoint-reconciler-type=none",
    // Allocated to Services but never dialed: nothing here uses ClusterIPs (no kube-proxy).
    "--service-cluster-ip-range=10.0.0.0/24",
    "--allow-privileged=true",
    "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,Priority,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota",
    "--authorization-mode=Node,RBAC",
    `--tls-cert-file=${pki.apiserver.cert}`,
    `--tls-private-key-file=${pki.apiserver.key}`,
    `--client-ca-file=${pki.ca.cert}`,
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-key-file=${pki.serviceAccount.pub}`,
    `--service-account-signing-key-file=${pki.serviceAccount.key}`,
    // Aggregation layer (for the custom-metrics APIService), with its own front-proxy CA.
    `--requestheader-client-ca-file=${pki.frontProxyCa.cert}`,
    "--requestheader-allowed-names=front-proxy-client",
    "--requestheader-username-headers=X-Remote-User",
    "--requestheader-group-headers=X-Remote-Group",
    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    `--proxy-client-cert-file=${pki.frontProxyClient.cert}`,
    `--proxy-client-key-file=${pki.frontProxyClient.key}`,
  ];
}

function controllerManagerArgs(kubeconfig: string, pki: ControlPlanePki, port: number): string[] {
  return [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    `--bind-address=${LOOPBACK}`,
    `--secure-port=${port}`,
    "--leader-elect=false",
    "--controllers=*",
    `--root-ca-file=${pki.ca.cert}`,
    `--service-account-private-key-file=${pki.serviceAccount.key}`,
    `--cluster-signing-cert-file=${pki.ca.cert}`,
    `--cluster-signing-key-file=${pki.ca.key}`,
    "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
    // Autoscaling tests should not wait minutes for the HPA to react.
    "--horizontal-pod-autoscaler-sync-period=5s",
    "--horizontal-pod-autoscaler-downscale-stabilization=10s",
  ];
}

function schedulerArgs(kubeconfig: string, port: number): string[] {
  return [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    `--bind-address=${LOOPBACK}`,
    `--secure-port=${port}`,
    "--leader-elect=false",
    "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
  ];
}

function kwokArgs(kubeconfig: string, binDir: string): string[] {
  return [
    `--kubeconfig=${kubeconfig}`,
    "--manage-all-nodes=true",
    `--config=${path.join(binDir, "kwok-stages.yaml")}`,
    "--node-lease-duration-seconds=40",
    // A loopback node IP keeps any apiserver-to-"kubelet" dial on this machine.
    `--node-ip=${LOOPBACK}`,
  ];
}

async function stopProcesses(processes: ManagedProcess[]): Promise<void> {
  const byName = (n: string) => processes.filter((p) => p.name === n);
  const first = processes.filter((p) => !["kube-apiserver", "etcd"].includes(p.name));
  await Promise.all(first.map((p) => terminate(p)));
  for (const name of ["kube-apiserver", "etcd"]) await Promise.all(byName(name).map((p) => terminate(p)));
}

/**
 * Nodes are created, not server-side applied: apply ignores `status` on the main resource (a reset
 * field), and the fake capacity lives there. A plain create keeps it; kwok's node-initialize stage
 * then preserves capacity/allocatable that are already set.
 */
async function createNodes(cluster: ClusterAccess, nodes: Record<string, any>[]): Promise<void> {
  const res = await cluster.kubectl(["create", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: nodes }) });
  if (res.code !== 0) throw new Error(`creating fake nodes failed (exit ${res.code}): ${res.stderr || res.stdout}`);
}

/** Waits until discovery lists every served version of every CRD, as envtest's WaitForCRDs does. */
async function waitForCrds(cluster: ClusterAccess, crds: Record<string, any>[], timeoutMs: number, abort: () => string | undefined) {
  const wanted = new Map<string, Set<string>>();
  for (const crd of crds) {
    for (const v of crd.spec.versions ?? []) {
      if (v.served === false) continue;
      const gv = `${crd.spec.group}/${v.name}`;
      if (!wanted.has(gv)) wanted.set(gv, new Set());
      wanted.get(gv)!.add(crd.spec.names.plural);
    }
  }
  for (const [gv, plurals] of wanted) {
    await poll(
      `discovery of ${[...plurals].join(", ")} in ${gv}`,
      async () => {
        const res = await cluster.api("GET", `/apis/${gv}`);
        if (res.status !== 200) return undefined;
        const served = new Set((res.json().resources ?? []).map((r: any) => r.name));
        return [...plurals].every((p) => served.has(p)) ? true : undefined;
      },
      { timeoutMs, abort },
    );
  }
}

export function yamlFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

export function readYamlObjects(file: string): Record<string, any>[] {
  const docs = parseAllDocuments(fs.readFileSync(file, "utf8"));
  const broken = docs.flatMap((d) => d.errors);
  if (broken.length) throw new Error(`${file}: ${broken.map((e) => e.message).join("; ")}`);
  return docs
    .map((d) => d.toJS())
    .filter((o) => o && typeof o === "object" && o.kind);
}
