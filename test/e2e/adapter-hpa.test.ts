// The metrics adapter feeding the real HorizontalPodAutoscaler (PRODUCT.md §4, §5, §6), end to end:
// infergate's reconciler (inside the global `infergate serve`) creates the HPA from the project's
// policy; an `infergate adapter` process serves custom.metrics.k8s.io through the kube-apiserver's
// aggregator; the kube-controller-manager's HPA controller reads p95 latency from it and scales the
// Deployment through deployments/scale, where infergate's quota check stops it at the project's quota.
//
// The pods are kwok's, with nothing behind their IPs, so the adapter (test/e2e/support/
// adapter-with-loopback.ts) scrapes a model-server stand-in on 127.0.0.1 for every pod of this
// test's namespace. All pods therefore report the same latency, which makes the HPA's arithmetic
// predictable: desired = ceil(replicas × p95 / target), with no change while the ratio is within the
// HPA's 10% tolerance. The stand-in's histogram bounds are chosen so that under load p95 lands in
// (200, 300] ms against a 200 ms target, a ratio of at most 1.5, which walks 1 → 2 → 3 → 4 one replica
// at a time however the latency window happens to be sampled; the project's quota of 3 GPUs then
// denies 4. The KCM runs with a 5 s HPA sync and a 10 s downscale
// stabilization (src/local-cluster/cluster.ts), the adapter with a 10 s window and 2 s scrapes.
import { Buffer } from "node:buffer";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpsRequest, poll } from "../../src/local-cluster/api.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { freePort, LOOPBACK } from "../../src/local-cluster/ports.ts";
import { childEnv, launch, terminate, type ManagedProcess } from "../../src/local-cluster/processes.ts";
import { nodeBinary } from "../../src/local-cluster/webhook-server.ts";
import { createCA, createServingCert } from "../../src/tls/certificates.ts";
import { getJson, kubectlOk, requireWebhook, uniqueName, useCluster } from "./harness.ts";
import { generateLoad, startModelServer, type Load, type ModelServer } from "./support/model-server.ts";

const cluster = useCluster();
const name = uniqueName("hpa");
const namespace = name;
const deploymentName = "llm";
const policyName = `${name}-policy`;
const SYSTEM_NAMESPACE = "infergate-system";
const serviceName = `${name}-adapter`;
const API_VERSIONS = [
  { version: "v1beta2", priority: 200 },
  { version: "v1beta1", priority: 100 },
];
const GROUP = "custom.metrics.k8s.io";
const TARGET_MS = 200;
const QUOTA = "3";
const RATE = 20;
/** Fine bounds around the target; see the header for why the (0.2, 0.3] bucket matters. */
const BUCKETS_SECONDS = [0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5, 10];
const LOW_LATENCY_MS = 30;
/** Inside the (200, 300] ms bucket. */
const HIGH_LATENCY_MS = 250;
const gpuToleration = { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" };

let modelServer: ModelServer | undefined;
let adapter: ManagedProcess | undefined;
let load: Load | undefined;

const asList = (items: unknown[]) => JSON.stringify({ apiVersion: "v1", kind: "List", items });

function policy(target: number) {
  return {
    apiVersion: "infergate.dev/v1alpha1",
    kind: "InferencePolicy",
    metadata: { name: policyName },
    spec: {
      projects: [name],
      scheduler: { profile: "default" },
      defaults: { tolerations: [gpuToleration], autoscaling: { metric: "latency", target, minReplicas: 1, maxReplicas: 4 } },
    },
  };
}

function gpuDeployment(replicas: number) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: deploymentName, namespace },
    spec: {
      replicas,
      selector: { matchLabels: { app: deploymentName } },
      template: {
        // The port the adapter would dial in a real cluster; here only its path is used (on loopback).
        metadata: { labels: { app: deploymentName }, annotations: { "infergate.dev/metrics-port": "8000" } },
        spec: { containers: [{ name: "vllm", image: "registry.example.com/vllm:1", resources: { limits: { "nvidia.com/gpu": "1" } } }] },
      },
    },
  };
}

const rawPath = (version: string, rest: string) => `/apis/${GROUP}/${version}/namespaces/${namespace}/${rest}`;

async function getRaw(apiPath: string): Promise<any> {
  return JSON.parse((await kubectlOk(cluster, ["get", "--raw", apiPath])).stdout);
}

async function hpa(): Promise<any | undefined> {
  const res = await cluster.kubectl(["get", "hpa", deploymentName, "-n", namespace, "-o", "json"]);
  return res.code === 0 ? JSON.parse(res.stdout) : undefined;
}

async function replicas(): Promise<number> {
  return (await getJson(cluster, ["deployment", deploymentName, "-n", namespace])).spec.replicas;
}

async function waitForReplicas(count: number, timeoutMs: number): Promise<void> {
  let last: unknown;
  try {
    await poll(
      `Deployment ${namespace}/${deploymentName} at ${count} replicas`,
      async () => ((last = await replicas()) === count ? true : undefined),
      { timeoutMs, intervalMs: 1000 },
    );
  } catch (err) {
    const status = (await hpa())?.status;
    throw new Error(`${(err as Error).message}; replicas ${String(last)}; HPA status ${JSON.stringify(status)}`, { cause: err });
  }
}

beforeAll(async () => {
  requireWebhook();
  modelServer = await startModelServer({ latencyMs: LOW_LATENCY_MS, bucketsSeconds: BUCKETS_SECONDS });

  // The aggregator dials the Service's ExternalName (localhost) and checks the certificate against
  // <service>.<namespace>.svc, with the APIService's caBundle.
  const certDir = path.join(cluster.stateDir, `${name}-adapter-certs`);
  fs.mkdirSync(certDir, { recursive: true });
  const now = new Date();
  const ca = createCA({ commonName: `${name} adapter CA`, now });
  const serving = createServingCert({ ca, hosts: [`${serviceName}.${SYSTEM_NAMESPACE}.svc`, "localhost", LOOPBACK], now });
  fs.writeFileSync(path.join(certDir, "tls.crt"), serving.certPem);
  fs.writeFileSync(path.join(certDir, "tls.key"), serving.keyPem, { mode: 0o600 });

  const port = await freePort();
  adapter = await launch({
    name: `${name}-adapter`,
    command: nodeBinary(REPO_ROOT),
    args: [
      path.join(REPO_ROOT, "test/e2e/support/adapter-with-loopback.ts"),
      "--namespace", namespace,
      "--loopback-port", String(modelServer.port),
      "--",
      "--address", LOOPBACK,
      "--port", String(port),
      "--cert", path.join(certDir, "tls.crt"),
      "--key", path.join(certDir, "tls.key"),
      "--kubeconfig", cluster.kubeconfig,
      // The requestheader CA and allowed names come from kube-system/extension-apiserver-authentication.
      "--window", "10s",
      "--scrape-interval", "2s",
      "--scrape-timeout", "1s",
    ],
    stateDir: cluster.stateDir,
    cwd: REPO_ROOT,
    env: childEnv(),
  });
  const running = adapter;
  await poll("the adapter's /readyz", async () => ((await httpsRequest(`https://${LOOPBACK}:${port}/readyz`, { caPem: ca.certPem })).status === 200 ? true : undefined), {
    timeoutMs: 60_000,
    abort: () => (running.exit() ? `it exited (${JSON.stringify(running.exit())}); see ${running.logFile}` : undefined),
  });

  const caBundle = Buffer.from(ca.certPem).toString("base64");
  await kubectlOk(
    cluster,
    ["apply", "-f", "-"],
    asList([
      { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } },
      { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name }, spec: { namespaces: [namespace], gpuQuota: QUOTA } },
      policy(TARGET_MS),
      { apiVersion: "v1", kind: "Service", metadata: { name: serviceName, namespace: SYSTEM_NAMESPACE }, spec: { type: "ExternalName", externalName: "localhost" } },
      ...API_VERSIONS.map(({ version, priority }) => ({
        apiVersion: "apiregistration.k8s.io/v1",
        kind: "APIService",
        metadata: { name: `${version}.${GROUP}` },
        spec: { group: GROUP, version, service: { name: serviceName, namespace: SYSTEM_NAMESPACE, port }, caBundle, groupPriorityMinimum: 100, versionPriority: priority },
      })),
    ]),
  );
  for (const { version } of API_VERSIONS) {
    await poll(
      `APIService ${version}.${GROUP} Available`,
      async () => {
        const service = await getJson(cluster, ["apiservice", `${version}.${GROUP}`]);
        return service.status?.conditions?.some((c: any) => c.type === "Available" && c.status === "True") ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
  }

  // The webhook learns the Project and policy from watches; a dry run shows when it applies them.
  await poll(
    "the webhook to apply the project's policy",
    async () => {
      const res = await cluster.kubectl(["apply", "--dry-run=server", "-o", "json", "-f", "-"], { input: JSON.stringify(gpuDeployment(1)) });
      return res.code === 0 && JSON.parse(res.stdout).spec.template.spec.tolerations?.some((t: any) => t.key === gpuToleration.key) ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
});

afterAll(async () => {
  load?.stop();
  // The APIServices go first: an unavailable aggregated API stalls discovery, and with it the
  // namespace deletions of every later test.
  await cluster.kubectl(["delete", "apiservices", ...API_VERSIONS.map(({ version }) => `${version}.${GROUP}`), "--ignore-not-found"]);
  await cluster.kubectl(["delete", "service", serviceName, "-n", SYSTEM_NAMESPACE, "--ignore-not-found", "--wait=false"]);
  if (adapter) await terminate(adapter);
  await load?.done;
  await modelServer?.close();
  await cluster.kubectl(["delete", "inferencepolicy", policyName, "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "project", name, "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "namespace", namespace, "--ignore-not-found", "--wait=false"]);
});

describe("the metrics adapter and the HPA, in the real control plane", () => {
  it("creates an autoscaling/v2 HPA owned by the GPU Deployment from the project's policy", async () => {
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment(1)));
    const deployment = await getJson(cluster, ["deployment", deploymentName, "-n", namespace]);
    // The leader makes it; after a webhook restart (another test file) leadership returns within a lease (15 s).
    const created = await poll("infergate's HPA", hpa, { timeoutMs: 60_000, intervalMs: 500 });
    expect(created.metadata.labels).toMatchObject({ "app.kubernetes.io/managed-by": "infergate" });
    expect(created.metadata.ownerReferences).toEqual([{ apiVersion: "apps/v1", kind: "Deployment", name: deploymentName, uid: deployment.metadata.uid, controller: true }]);
    expect(created.spec).toMatchObject({
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: deploymentName },
      minReplicas: 1,
      maxReplicas: 4,
      metrics: [{ type: "Pods", pods: { metric: { name: "inference_latency_p95_ms" }, target: { type: "AverageValue", averageValue: String(TARGET_MS) } } }],
    });
  });

  it("answers kubectl get --raw on the metric paths with the documented JSON", async () => {
    load = generateLoad({ url: modelServer!.url, rate: RATE, durationMs: 200_000, maxInFlight: 64 });
    const discovery = await getRaw(`/apis/${GROUP}/v1beta2`);
    expect(discovery).toMatchObject({ kind: "APIResourceList", groupVersion: `${GROUP}/v1beta2` });
    expect(discovery.resources).toContainEqual({ name: "pods/inference_latency_p95_ms", singularName: "", namespaced: true, kind: "MetricValueList", verbs: ["get"] });

    const podsPath = rawPath("v1beta2", `pods/*/inference_latency_p95_ms?labelSelector=${encodeURIComponent(`app=${deploymentName}`)}`);
    const list = await poll(
      "a p95 latency for the Deployment's pod",
      async () => {
        const res = await cluster.kubectl(["get", "--raw", podsPath]);
        const body = res.code === 0 ? JSON.parse(res.stdout) : undefined;
        return body?.items?.length === 1 ? body : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1000 },
    );
    const pod = (await getJson(cluster, ["pods", "-n", namespace, "-l", `app=${deploymentName}`])).items[0];
    expect(list).toMatchObject({ kind: "MetricValueList", apiVersion: `${GROUP}/v1beta2`, metadata: {} });
    expect(list.items[0]).toEqual({
      describedObject: { kind: "Pod", namespace, name: pod.metadata.name, apiVersion: "v1" },
      metric: { name: "inference_latency_p95_ms" },
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/),
      windowSeconds: 10,
      value: expect.stringMatching(/^\d+(m)?$/),
    });

    // v1beta1 names the window `window` and the metric `metricName`; the Deployment sums its pods.
    const rps = await poll(
      "requests per second of the Deployment",
      async () => {
        const res = await cluster.kubectl(["get", "--raw", rawPath("v1beta1", `deployments.apps/${deploymentName}/inference_requests_per_second`)]);
        return res.code === 0 ? JSON.parse(res.stdout) : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 1000 },
    );
    expect(rps).toMatchObject({ kind: "MetricValueList", apiVersion: `${GROUP}/v1beta1` });
    expect(rps.items[0]).toMatchObject({
      describedObject: { kind: "Deployment", namespace, name: deploymentName, apiVersion: "apps/v1" },
      metricName: "inference_requests_per_second",
      window: 10,
      selector: null,
    });
    const perSecond = Number(String(rps.items[0].value).replace(/m$/, "")) / (String(rps.items[0].value).endsWith("m") ? 1000 : 1);
    expect(perSecond).toBeGreaterThan(RATE * 0.5);
    expect(perSecond).toBeLessThan(RATE * 1.5);

    // A series the adapter does not serve is a Kubernetes Status 404, as the HPA expects.
    const missing = await cluster.kubectl(["get", "--raw", rawPath("v1beta2", `pods/*/inference_tokens_per_second?labelSelector=app%3D${deploymentName}`)]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("NotFound");
  });

  it("lets the HPA read p95 latency below the target and keep one replica", async () => {
    const status = await poll(
      "the HPA to report the current p95 latency",
      async () => {
        const current = (await hpa())?.status;
        const value = current?.currentMetrics?.[0]?.pods?.current?.averageValue;
        return value !== undefined && current.conditions?.some((c: any) => c.type === "ScalingActive" && c.status === "True") ? current : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1000 },
    );
    const valueMs = Number(String(status.currentMetrics[0].pods.current.averageValue).replace(/m$/, "")) / (String(status.currentMetrics[0].pods.current.averageValue).endsWith("m") ? 1000 : 1);
    expect(valueMs).toBeGreaterThan(0);
    expect(valueMs).toBeLessThan(TARGET_MS);
    expect(await replicas()).toBe(1);
  });

  it("scales up when p95 crosses the target and stops at the project's GPU quota, with the denial in the HPA's events", async () => {
    modelServer!.setLatency(HIGH_LATENCY_MS);
    await waitForReplicas(3, 120_000);
    const events = await poll(
      "a FailedRescale event with infergate's quota denial",
      async () => {
        const list = await getJson(cluster, ["events", "-n", namespace, "--field-selector", "involvedObject.kind=HorizontalPodAutoscaler,reason=FailedRescale"]);
        const denied = (list.items as any[]).filter((e) => String(e.message).includes("GPU quota exceeded"));
        return denied.length > 0 ? denied : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 1000 },
    );
    expect(events[0].involvedObject).toMatchObject({ kind: "HorizontalPodAutoscaler", name: deploymentName });
    expect(events[0].message).toContain("New size: 4");
    expect(events[0].message).toContain(`project ${name}: GPU quota exceeded`);
    expect(events[0].message).toContain(`of ${QUOTA} are free`);
    // The denied scale-up left the Deployment at the quota.
    expect(await replicas()).toBe(3);
  });

  it("scales back down to the minimum when the load stops", async () => {
    load!.stop();
    const result = await load!.done;
    expect(result.completed).toBeGreaterThan(0);
    await waitForReplicas(1, 120_000);
  });

  it("updates the HPA when the policy's target changes and deletes it when the Deployment opts out", async () => {
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(policy(250)));
    await poll("the HPA's target to follow the policy", async () => ((await hpa())?.spec.metrics?.[0]?.pods?.target?.averageValue === "250" ? true : undefined), {
      timeoutMs: 30_000,
      intervalMs: 500,
    });
    await kubectlOk(cluster, ["annotate", "deployment", deploymentName, "-n", namespace, "infergate.dev/autoscaling-metric=none"]);
    await poll("the HPA to be deleted", async () => ((await hpa()) === undefined ? true : undefined), { timeoutMs: 30_000, intervalMs: 500 });
  });
});
