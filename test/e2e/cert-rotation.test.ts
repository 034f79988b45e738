// Certificates managed by infergate itself, under load: two extra `infergate serve --tls-secret`
// replicas with 20 s serving certificates and a 60 s CA, registered (by URL, one webhook entry per
// replica, failurePolicy Fail) in their own webhook configurations for one test namespace only. While a
// steady stream of GPU Deployments is created and deleted there, the serving certificate and the CA
// rotate; every create must succeed and carry the label infergate injects. The global webhook never
// sees the namespace (it carries the ignore label), and these replicas leave every other object alone.
import { createHash } from "node:crypto";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poll } from "../../src/local-cluster/api.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { freePorts, LOOPBACK } from "../../src/local-cluster/ports.ts";
import { launch, tail, terminate } from "../../src/local-cluster/processes.ts";
import type { ManagedProcess } from "../../src/local-cluster/processes.ts";
import { IGNORE_NAMESPACE_LABEL } from "../../src/install/webhook-config.ts";
import { cliEntry, nodeBinary } from "../../src/local-cluster/webhook-server.ts";
import { inspectCert } from "../../src/tls/certificates.ts";
import { ANNOTATIONS, bundleCertificates, certificateDigest, materialFromSecretData } from "../../src/tls/rotation.ts";
import { REPORT_LABEL } from "../../src/tls/secret-manager.ts";
import { deployment, kubectlOk, requireWebhook, uniqueName, useCluster } from "./harness.ts";

const cluster = useCluster();
const SYSTEM_NAMESPACE = "infergate-system";
const SELECT_LABEL = "infergate.dev/cert-rotation-test";
const PROJECT_LABEL = "infergate.dev/project";
const namespace = uniqueName("certrot");
const secretName = uniqueName("certrot-tls");
const configName = uniqueName("infergate-certrot");
const LOAD_SECONDS = 90;
const LOAD_INTERVAL_MS = 500;

interface Replica {
  name: string;
  port: number;
  proc?: ManagedProcess;
}
const replicas: Replica[] = [];

function webhookConfiguration(kind: "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") {
  const phase = kind === "MutatingWebhookConfiguration" ? "mutate" : "validate";
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind,
    metadata: { name: configName },
    // One entry per replica, so every admission goes through both. No caBundle: the leader adds it.
    webhooks: replicas.map((replica) => ({
      name: `${phase}-${replica.name}.certrot.infergate.dev`,
      clientConfig: { url: `https://${LOOPBACK}:${replica.port}/${phase}` },
      admissionReviewVersions: ["v1"],
      sideEffects: "NoneOnDryRun",
      // Fail, not Ignore: a TLS failure must fail the create, not silently skip the webhook.
      failurePolicy: "Fail",
      timeoutSeconds: 10,
      namespaceSelector: { matchLabels: { [SELECT_LABEL]: namespace } },
      rules: [{ apiGroups: ["apps"], apiVersions: ["v1"], resources: ["deployments"], operations: ["CREATE", "UPDATE"], scope: "Namespaced" }],
    })),
  };
}

function gpuDeployment(name: string) {
  const object = deployment(name, namespace, { resources: { limits: { "nvidia.com/gpu": "1" } } });
  // No pods: the admissions are the load, not the scheduler.
  object.spec.replicas = 0;
  return object;
}

async function readSecret() {
  const res = await cluster.api("GET", `/api/v1/namespaces/${SYSTEM_NAMESPACE}/secrets/${secretName}`);
  if (res.status !== 200) return undefined;
  const secret = res.json();
  return { material: materialFromSecretData(secret.data), annotations: (secret.metadata?.annotations ?? {}) as Record<string, string> };
}

/** SHA-256 of the certificate a replica presents to a new connection. */
function servedDigest(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: LOOPBACK, port, rejectUnauthorized: false, timeout: 3000 }, () => {
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      resolve(raw ? createHash("sha256").update(raw).digest("hex") : undefined);
    });
    socket.on("error", () => resolve(undefined));
    socket.on("timeout", () => {
      socket.destroy();
      resolve(undefined);
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

beforeAll(async () => {
  requireWebhook();
  await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify({
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: namespace, labels: { [SELECT_LABEL]: namespace, [IGNORE_NAMESPACE_LABEL]: "true" } },
  }));
  await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify({
    apiVersion: "infergate.dev/v1alpha1",
    kind: "Project",
    metadata: { name: namespace },
    spec: { namespaces: [namespace] },
  }));
  const ports = await freePorts(2);
  replicas.push({ name: "a", port: ports[0]! }, { name: "b", port: ports[1]! });
  await kubectlOk(cluster, ["create", "-f", "-"], JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [webhookConfiguration("MutatingWebhookConfiguration"), webhookConfiguration("ValidatingWebhookConfiguration")],
  }));

  for (const replica of replicas) {
    replica.proc = await launch({
      name: `${configName}-${replica.name}`,
      command: nodeBinary(REPO_ROOT),
      args: [
        cliEntry(REPO_ROOT), "serve",
        "--address", LOOPBACK,
        "--port", String(replica.port),
        "--kubeconfig", cluster.kubeconfig,
        // The global webhook's namespace: its quota Lease there stays with the global webhook.
        "--namespace", SYSTEM_NAMESPACE,
        "--tls-secret", secretName,
        "--cert-lifetime", "20s",
        "--ca-lifetime", "60s",
        "--webhook-config-name", configName,
        "--apiservice", "none",
      ],
      stateDir: cluster.stateDir,
      cwd: REPO_ROOT,
    });
  }
  const logs = () => replicas.map((r) => `--- ${r.proc?.logFile} ---\n${r.proc ? tail(r.proc.logFile, 30) : ""}`).join("\n");
  const exited = () => replicas.find((r) => r.proc?.exit())?.name;
  try {
    for (const replica of replicas) {
      await poll(`replica ${replica.name} serving a certificate`, async () => ((await servedDigest(replica.port)) ? true : undefined), {
        timeoutMs: 60_000,
        intervalMs: 250,
        abort: () => (exited() ? `replica ${exited()} exited` : undefined),
      });
    }
    // Admission works once the leader has put the CA bundle into both configurations and the
    // apiserver has picked them up: a dry run comes back labelled by the replicas.
    await poll(
      "a dry-run create in the test namespace to be admitted and mutated by the replicas",
      async () => {
        const res = await cluster.api("POST", `/apis/apps/v1/namespaces/${namespace}/deployments?dryRun=All`, gpuDeployment("probe"));
        if (res.status !== 201) throw new Error(`${res.status}: ${res.text.slice(0, 300)}`);
        return res.json().spec.template.metadata.labels?.[PROJECT_LABEL] === namespace ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, abort: () => (exited() ? `replica ${exited()} exited` : undefined) },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${logs()}`, { cause: err });
  }
});

afterAll(async () => {
  for (const replica of replicas) if (replica.proc) await terminate(replica.proc);
  const admission = "/apis/admissionregistration.k8s.io/v1";
  await cluster.api("DELETE", `${admission}/mutatingwebhookconfigurations/${configName}`);
  await cluster.api("DELETE", `${admission}/validatingwebhookconfigurations/${configName}`);
  await cluster.api("DELETE", `/api/v1/namespaces/${SYSTEM_NAMESPACE}/secrets/${secretName}`);
  await cluster.kubectl(["delete", "leases", "-n", SYSTEM_NAMESPACE, "-l", `${REPORT_LABEL}=${secretName}`, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "lease", "-n", SYSTEM_NAMESPACE, secretName, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "project", namespace, "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "namespace", namespace, "--wait=false"]);
});

describe("certificates managed by infergate (--tls-secret)", () => {
  it("rotates the serving certificate and the CA under steady admission load with 0 failed admissions", async () => {
    const started = Date.now();
    const clock = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s`;
    const timeline: string[] = [];
    const servingSeen: string[] = [];
    const caSeen: string[] = [];
    const bundleSizes: number[] = [];
    const servedByReplica = new Map<string, string[]>(replicas.map((r) => [r.name, []]));
    const label = (digest: string) => `#${servingSeen.indexOf(digest) + 1}`;
    let lastPhase = "";
    let observing = true;

    // Watches the Secret and what each replica presents, and writes down every change.
    const observer = (async () => {
      while (observing) {
        const secret = await readSecret();
        if (secret?.material.tlsCert && secret.material.caCert) {
          const { tlsCert, caCert, bundle } = secret.material;
          const ca = certificateDigest(caCert);
          if (!caSeen.includes(ca)) {
            caSeen.push(ca);
            timeline.push(`${clock()} Secret: CA ${inspectCert(caCert).subjectCN} now signs (expires ${inspectCert(caCert).notAfter.toISOString()})`);
          }
          const serving = certificateDigest(tlsCert);
          if (!servingSeen.includes(serving)) {
            servingSeen.push(serving);
            const info = inspectCert(tlsCert);
            timeline.push(`${clock()} Secret: serving certificate ${label(serving)} from ${inspectCert(caCert).subjectCN}, expires ${info.notAfter.toISOString()}`);
          }
          const cas = bundleCertificates(bundle);
          if (bundleSizes.at(-1) !== cas.length) {
            bundleSizes.push(cas.length);
            timeline.push(`${clock()} Secret: bundle trusts ${cas.map((pem) => inspectCert(pem).subjectCN).join(" + ")}`);
          }
          const phase = secret.annotations[ANNOTATIONS.phase] ?? "";
          if (phase !== lastPhase) {
            lastPhase = phase;
            timeline.push(`${clock()} Secret: phase ${phase} (${secret.annotations[ANNOTATIONS.lastStep] ?? ""})`);
          }
        }
        for (const replica of replicas) {
          const digest = await servedDigest(replica.port);
          const seen = servedByReplica.get(replica.name)!;
          if (digest && seen.at(-1) !== digest) {
            seen.push(digest);
            timeline.push(`${clock()} replica ${replica.name} (pid ${replica.proc?.pid}) serves ${servingSeen.includes(digest) ? label(digest) : "a certificate not (yet) seen in the Secret"}`);
          }
        }
        await sleep(500);
      }
    })();

    // A steady stream: one create (then delete) every 500 ms, whatever the previous one is doing.
    const failures: string[] = [];
    let admitted = 0;
    const admit = async (index: number) => {
      const name = `load-${index}`;
      const created = await cluster.api("POST", `/apis/apps/v1/namespaces/${namespace}/deployments`, gpuDeployment(name));
      if (created.status !== 201) {
        failures.push(`${clock()} create ${name}: ${created.status} ${created.text.slice(0, 400)}`);
        return;
      }
      const labels = created.json().spec.template.metadata.labels ?? {};
      if (labels[PROJECT_LABEL] !== namespace) {
        failures.push(`${clock()} create ${name}: admitted without the ${PROJECT_LABEL} label (labels ${JSON.stringify(labels)})`);
      } else {
        admitted++;
      }
      const deleted = await cluster.api("DELETE", `/apis/apps/v1/namespaces/${namespace}/deployments/${name}`);
      if (deleted.status >= 300) failures.push(`${clock()} delete ${name}: ${deleted.status} ${deleted.text.slice(0, 200)}`);
    };
    const inFlight: Promise<void>[] = [];
    const total = (LOAD_SECONDS * 1000) / LOAD_INTERVAL_MS;
    for (let index = 0; index < total; index++) {
      const wait = started + index * LOAD_INTERVAL_MS - Date.now();
      if (wait > 0) await sleep(wait);
      inFlight.push(admit(index).catch((err: Error) => void failures.push(`${clock()} load-${index}: ${err.message}`)));
    }
    await Promise.all(inFlight);
    observing = false;
    await observer;

    const caDrops = bundleSizes.filter((size, i) => i > 0 && size < bundleSizes[i - 1]!).length;
    console.log(
      [
        `certificate rotation timeline (serving 20s, CA 60s, renewal at 2/3):`,
        ...timeline,
        `${admitted}/${total} creates admitted and labelled; ${failures.length} failures`,
        `${servingSeen.length - 1} serving rotations, ${caSeen.length - 1} CA rotations, ${caDrops} old CA(s) dropped from the bundle`,
      ].join("\n"),
    );

    expect(failures).toEqual([]);
    expect(admitted).toBe(total);
    expect(servingSeen.length - 1).toBeGreaterThanOrEqual(2);
    expect(caSeen.length - 1).toBeGreaterThanOrEqual(1);
    expect(caDrops).toBeGreaterThanOrEqual(1);
    // Reloaded, not restarted: the same processes served every one of those certificates.
    for (const replica of replicas) {
      expect(replica.proc?.exit(), `replica ${replica.name}`).toBeUndefined();
      expect(servedByReplica.get(replica.name)!.length, `certificates replica ${replica.name} served`).toBeGreaterThanOrEqual(3);
    }
  }, 300_000);
});
