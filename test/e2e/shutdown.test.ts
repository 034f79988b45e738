// `infergate serve` stopping as Kubernetes stops a pod (SIGTERM) after serving webhook traffic: it keeps
// answering through the drain, exits promptly with code 0, and releases its leader Lease on the way out,
// so the standby replica takes over at its next try instead of waiting for the Lease to expire.
//
// Extra replicas of this file's own: A (started first, so it holds the quota Lease) is registered for
// one test namespace only, by URL, failurePolicy Fail; B is a standby for the same Lease. Their Lease
// lives in the test namespace, so the global webhook keeps its own, and the global webhook never sees
// the namespace (it carries the ignore label). C reaches the API server through a TCP relay that the
// second case freezes, as a partitioned or hung API server would look: shutdown must not wait on it.
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { hostname } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpsRequest, poll } from "../../src/local-cluster/api.ts";
import { ensureServingPki } from "../../src/local-cluster/certs.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { freePorts, LOOPBACK } from "../../src/local-cluster/ports.ts";
import { childEnv, launch, tail, terminate, type ManagedProcess } from "../../src/local-cluster/processes.ts";
import { IGNORE_NAMESPACE_LABEL } from "../../src/install/webhook-config.ts";
import { cliEntry, nodeBinary } from "../../src/local-cluster/webhook-server.ts";
import { deployment, uniqueName, useCluster, kubectlOk } from "./harness.ts";

const cluster = useCluster();
const namespace = uniqueName("shutdown");
const configName = uniqueName("infergate-shutdown");
const SELECT_LABEL = "infergate.dev/shutdown-test";
const PROJECT_LABEL = "infergate.dev/project";
const LEASE = "infergate-quota";
const DRAIN_SECONDS = 5;
/** A correctness bound, not a benchmark: without the fix, the Lease release alone could wait 60 s and more. */
const EXIT_BOUND_MS = (DRAIN_SECONDS + 10) * 1000;

interface Replica {
  name: string;
  port: number;
  proc?: ManagedProcess;
  identity?: string;
}
const a: Replica = { name: "a", port: 0 };
const b: Replica = { name: "b", port: 0 };
const c: Replica = { name: "c", port: 0 };
const pki = ensureServingPki(path.join(cluster.stateDir, "pki"), "webhook");

function webhookConfiguration(kind: "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") {
  const phase = kind === "MutatingWebhookConfiguration" ? "mutate" : "validate";
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind,
    metadata: { name: configName },
    webhooks: [
      {
        name: `${phase}.shutdown.infergate.dev`,
        clientConfig: { url: `https://${LOOPBACK}:${a.port}/${phase}`, caBundle: pki.caBundle },
        admissionReviewVersions: ["v1"],
        sideEffects: "NoneOnDryRun",
        // Fail, not Ignore: an admission the draining replica does not answer must show as a failure.
        failurePolicy: "Fail",
        timeoutSeconds: 10,
        namespaceSelector: { matchLabels: { [SELECT_LABEL]: namespace } },
        rules: [{ apiGroups: ["apps"], apiVersions: ["v1"], resources: ["deployments"], operations: ["CREATE", "UPDATE"], scope: "Namespaced" }],
      },
    ],
  };
}

/**
 * A TCP relay to the API server. `freeze()` stops it forwarding anything, on open connections and on
 * new ones alike: requests neither fail nor finish.
 */
async function startRelay(target: URL): Promise<{ url: string; freeze(): void; close(): Promise<void> }> {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const pairs: [net.Socket, net.Socket][] = [];
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => undefined);
    if (frozen) return client.pause();
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(upstream);
    upstream.on("close", () => sockets.delete(upstream));
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, () => resolve()));
  return {
    url: `https://${LOOPBACK}:${(server.address() as net.AddressInfo).port}`,
    freeze() {
      frozen = true;
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function startReplica(replica: Replica, kubeconfig = cluster.kubeconfig): Promise<void> {
  replica.proc = await launch({
    name: `${configName}-${replica.name}`,
    command: nodeBinary(REPO_ROOT),
    args: [
      cliEntry(REPO_ROOT), "serve",
      "--address", LOOPBACK,
      "--port", String(replica.port),
      "--cert", pki.serving.cert,
      "--key", pki.serving.key,
      "--kubeconfig", kubeconfig,
      "--namespace", namespace,
      "--drain-seconds", String(DRAIN_SECONDS),
    ],
    stateDir: cluster.stateDir,
    cwd: REPO_ROOT,
    env: childEnv(),
  });
  // What `serve` names itself in the Lease.
  replica.identity = `${hostname()}-${replica.proc.pid}`;
  const proc = replica.proc;
  await poll(
    `replica ${replica.name} ready`,
    async () => ((await httpsRequest(`https://${LOOPBACK}:${replica.port}/readyz`, { caPem: pki.caPem }).catch(() => undefined))?.status === 200 ? true : undefined),
    { timeoutMs: 60_000, intervalMs: 250, abort: () => (proc.exit() ? `it exited (${JSON.stringify(proc.exit())}):\n${tail(proc.logFile, 30)}` : undefined) },
  );
}

async function leaseSpec(): Promise<Record<string, any> | undefined> {
  const res = await cluster.api("GET", `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${LEASE}`);
  return res.status === 200 ? (res.json().spec ?? {}) : undefined;
}

function gpuDeployment(name: string) {
  return deployment(name, namespace, { resources: { limits: { "nvidia.com/gpu": "1" } } });
}

/** Creates a GPU Deployment through the API server; says how it went and whether replica A labelled it. */
async function create(name: string): Promise<{ status: number; labelled: boolean; text: string }> {
  const res = await cluster.api("POST", `/apis/apps/v1/namespaces/${namespace}/deployments`, gpuDeployment(name));
  const labelled = res.status === 201 && res.json().spec?.template?.metadata?.labels?.[PROJECT_LABEL] === namespace;
  return { status: res.status, labelled, text: res.text.slice(0, 400) };
}

/** An AdmissionReview as the API server would send it for creating `object`. */
function admissionReview(object: Record<string, any>) {
  return {
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid: uniqueName("uid"),
      kind: { group: "apps", version: "v1", kind: "Deployment" },
      resource: { group: "apps", version: "v1", resource: "deployments" },
      name: object.metadata.name,
      namespace,
      operation: "CREATE",
      userInfo: { username: "shutdown-test" },
      object,
      dryRun: false,
    },
  };
}

beforeAll(async () => {
  [a.port, b.port, c.port] = (await freePorts(3)) as [number, number, number];
  await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace, labels: { [SELECT_LABEL]: namespace, [IGNORE_NAMESPACE_LABEL]: "true" } } },
      { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name: namespace }, spec: { namespaces: [namespace], gpuQuota: "8" } },
    ],
  }));
  await startReplica(a);
  await poll("replica a to hold the Lease", async () => ((await leaseSpec())?.holderIdentity === a.identity ? true : undefined), { timeoutMs: 30_000, intervalMs: 250 });
  await startReplica(b);
  await kubectlOk(cluster, ["create", "-f", "-"], JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [webhookConfiguration("MutatingWebhookConfiguration"), webhookConfiguration("ValidatingWebhookConfiguration")],
  }));
  // The API server learns webhook configurations through an informer: wait until a dry run is mutated.
  await poll(
    "a dry-run create in the test namespace to be mutated by replica a",
    async () => {
      const res = await cluster.api("POST", `/apis/apps/v1/namespaces/${namespace}/deployments?dryRun=All`, gpuDeployment("probe"));
      return res.status === 201 && res.json().spec.template.metadata.labels?.[PROJECT_LABEL] === namespace ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
});

afterAll(async () => {
  for (const replica of [a, b, c]) if (replica.proc) await terminate(replica.proc);
  await relay?.close();
  const admission = "/apis/admissionregistration.k8s.io/v1";
  await cluster.api("DELETE", `${admission}/mutatingwebhookconfigurations/${configName}`);
  await cluster.api("DELETE", `${admission}/validatingwebhookconfigurations/${configName}`);
  await cluster.kubectl(["delete", "project", namespace, "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "namespace", namespace, "--ignore-not-found", "--wait=false"]);
});

let relay: Awaited<ReturnType<typeof startRelay>> | undefined;

describe("infergate serve on SIGTERM after webhook traffic", () => {
  it("answers through the drain, exits with 0 within the bound, and hands its Lease to the standby", async () => {
    const proc = a.proc!;
    const logs = () => `--- replica a (${proc.logFile}) ---\n${tail(proc.logFile, 40)}\n--- replica b ---\n${b.proc ? tail(b.proc.logFile, 20) : ""}`;
    // Webhook traffic: GPU Deployments, each admitted by replica a with a quota reservation in the Project.
    for (let i = 0; i < 3; i++) {
      const created = await create(`before-${i}`);
      expect(created, logs()).toMatchObject({ status: 201, labelled: true });
    }

    // What the API server's Go transport keeps after a burst of webhook calls: a spare connection, dialed
    // in a race and never used, idle on its side for 90 s. node's server.close() waits for it.
    const spare = tls.connect({ host: LOOPBACK, port: a.port, ca: pki.caPem });
    spare.on("error", () => undefined);
    await once(spare, "secureConnect");

    const signalled = Date.now();
    process.kill(proc.pid, "SIGTERM");
    // Within the drain, replica a still answers (its readiness fails, its endpoints would be going away).
    const duringDrain = await create("during-drain");
    expect(duringDrain, logs()).toMatchObject({ status: 201, labelled: true });

    const exit = await Promise.race([proc.exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), EXIT_BOUND_MS * 2))]);
    const tookMs = Date.now() - signalled;
    spare.destroy();
    expect(exit, `replica a still running ${EXIT_BOUND_MS * 2} ms after SIGTERM\n${logs()}`).toEqual({ code: 0, signal: null });
    expect(tookMs, `exit took ${tookMs} ms\n${logs()}`).toBeLessThan(EXIT_BOUND_MS);

    // Released, not left to expire: right after the exit the Lease no longer names replica a (it is
    // empty, or the standby has already taken it). Unreleased, it would name a for 15 s more.
    const afterExit = await leaseSpec();
    expect(afterExit?.holderIdentity, logs()).not.toBe(a.identity);
    expect(tail(proc.logFile, 40)).toContain("released leadership");
    const takenOver = await poll("replica b to take the Lease over", async () => {
      const spec = await leaseSpec();
      return spec?.holderIdentity === b.identity ? spec : undefined;
    }, { timeoutMs: 30_000, intervalMs: 250 });
    expect(takenOver.leaseTransitions).toBeGreaterThanOrEqual(1);

    // Nothing lost: the four admitted Deployments are all charged to the Project, their reservations settled.
    await poll(
      `Project ${namespace} status to show 4 GPUs allocated and none reserved`,
      async () => {
        const status = (await cluster.api("GET", `/apis/infergate.dev/v1alpha1/projects/${namespace}`)).json().status ?? {};
        return status.allocatedGpus === "4" && (status.reservedGpus ?? "0") === "0" ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
  });
  it("exits within the bound when the API server stops answering during the shutdown", async () => {
    relay = await startRelay(new URL(cluster.server));
    const kubeconfig = path.join(cluster.stateDir, `${configName}-relayed.kubeconfig`);
    fs.writeFileSync(kubeconfig, fs.readFileSync(cluster.kubeconfig, "utf8").replaceAll(cluster.server, relay.url), { mode: 0o600 });
    await startReplica(c, kubeconfig);
    const proc = c.proc!;
    const logs = () => `--- replica c (${proc.logFile}) ---\n${tail(proc.logFile, 40)}`;
    // C leads once the standby of the first case has released the Lease on its way out.
    if (b.proc) expect(await terminate(b.proc)).toEqual({ code: 0, signal: null });
    await poll("replica c to take the Lease", async () => ((await leaseSpec())?.holderIdentity === c.identity ? true : undefined), { timeoutMs: 30_000, intervalMs: 250 });

    // Webhook traffic straight to C, each allowed GPU create reserving quota in the Project (via the relay).
    for (let i = 0; i < 3; i++) {
      const review = admissionReview(gpuDeployment(`direct-${i}`));
      for (const phase of ["mutate", "validate"]) {
        const res = await httpsRequest(`https://${LOOPBACK}:${c.port}/${phase}`, { caPem: pki.caPem }, { method: "POST", body: review });
        expect(res.status, logs()).toBe(200);
        expect(res.json().response?.allowed, `${phase}: ${res.text.slice(0, 400)}`).toBe(true);
      }
    }

    relay.freeze();
    const signalled = Date.now();
    process.kill(proc.pid, "SIGTERM");
    const exit = await Promise.race([proc.exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), EXIT_BOUND_MS * 2))]);
    const tookMs = Date.now() - signalled;
    expect(exit, `replica c still running ${EXIT_BOUND_MS * 2} ms after SIGTERM\n${logs()}`).toEqual({ code: 0, signal: null });
    expect(tookMs, `exit took ${tookMs} ms\n${logs()}`).toBeLessThan(EXIT_BOUND_MS);
    // Unreleased (the API server never heard of it), the Lease simply expires; the log says so.
    expect(tail(proc.logFile, 40)).toContain("did not confirm the Lease release");
  });
});
