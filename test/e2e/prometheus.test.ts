// The Grafana dashboard's queries against a real Prometheus (Debian's package, run here as a child
// process, not as a service) scraping the global webhook's /metrics over HTTPS, after real admissions:
// every webhook panel must return data. Also `infergate status` against the live cluster.
//
// The adapter's panels are not checked here: its /metrics requires a front-proxy client certificate
// plus X-Remote-User headers and a SubjectAccessReview, which Prometheus 2.42 cannot send (no custom
// scrape headers). test/unit/dashboard.test.ts still checks that they name metrics the adapter exports.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { httpsRequest, poll } from "../../src/local-cluster/api.ts";
import { ensureServingPki } from "../../src/local-cluster/certs.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { freePort, LOOPBACK } from "../../src/local-cluster/ports.ts";
import { childEnv } from "../../src/local-cluster/processes.ts";
import { cliEntry, nodeBinary } from "../../src/local-cluster/webhook-server.ts";
import { kubectlOk, requireWebhook, uniqueName, useCluster } from "./harness.ts";

const PROMETHEUS = "/usr/bin/prometheus";
const DASHBOARD = path.join(REPO_ROOT, "manifests/grafana/infergate-dashboard.json");

const cluster = useCluster();
const name = uniqueName("prom");
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "infergate-prometheus-"));
let prometheus: ChildProcess | undefined;
let prometheusUrl = "";
let caFile = "";

interface DashboardTarget {
  panel: string;
  expr: string;
}

function dashboardTargets(): DashboardTarget[] {
  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, "utf8"));
  const panels = (dashboard.panels as any[]).flatMap((p) => [p, ...(p.panels ?? [])]);
  return panels.flatMap((p) => (p.targets ?? []).map((t: any) => ({ panel: p.title as string, expr: t.expr as string })));
}

/** Grafana fills in $__rate_interval; a minute covers many 1 s scrapes. */
const forPrometheus = (expr: string) => expr.replaceAll("$__rate_interval", "1m");

async function query(expr: string): Promise<any[]> {
  const url = new URL("/api/v1/query", prometheusUrl);
  url.searchParams.set("query", expr);
  const res = await fetch(url);
  const body = await res.json();
  if (body.status !== "success") throw new Error(`query ${expr} failed: ${JSON.stringify(body)}`);
  return body.data.result;
}

function gpuDeployment(deployment: string, gpus: number): Record<string, any> {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: deployment, namespace: name },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: deployment } },
      template: {
        metadata: { labels: { app: deployment } },
        spec: { containers: [{ name: "server", image: "registry.example.com/server:1", resources: { limits: { "nvidia.com/gpu": String(gpus) } } }] },
      },
    },
  };
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(nodeBinary(REPO_ROOT), [cliEntry(REPO_ROOT), ...args], { cwd: REPO_ROOT, env: childEnv() });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  requireWebhook();
  if (!fs.existsSync(PROMETHEUS)) {
    throw new Error(`${PROMETHEUS} is missing: install Debian's package (apt-get install prometheus); .ci/run does this on CI`);
  }
  const webhookUrl = new URL(inject("webhookUrl"));
  caFile = ensureServingPki(path.join(inject("stateDir"), "pki"), "webhook").ca.cert;
  const port = await freePort();
  prometheusUrl = `http://${LOOPBACK}:${port}`;
  const config = [
    "global:",
    "  scrape_interval: 1s",
    "  scrape_timeout: 1s",
    "scrape_configs:",
    "  - job_name: infergate-webhook",
    "    scheme: https",
    "    metrics_path: /metrics",
    "    tls_config:",
    `      ca_file: ${JSON.stringify(caFile)}`,
    "    static_configs:",
    `      - targets: [${JSON.stringify(webhookUrl.host)}]`,
    "",
  ].join("\n");
  fs.writeFileSync(path.join(workDir, "prometheus.yml"), config);
  const log = fs.openSync(path.join(workDir, "prometheus.log"), "a");
  prometheus = spawn(
    PROMETHEUS,
    [
      `--config.file=${path.join(workDir, "prometheus.yml")}`,
      `--storage.tsdb.path=${path.join(workDir, "data")}`,
      `--web.listen-address=${LOOPBACK}:${port}`,
    ],
    { stdio: ["ignore", log, log] },
  );
  fs.closeSync(log);
  await poll(
    `Prometheus ready at ${prometheusUrl}`,
    async () => ((await fetch(`${prometheusUrl}/-/ready`)).ok ? true : undefined),
    { timeoutMs: 60_000, intervalMs: 300, abort: () => (prometheus?.exitCode !== null ? `it exited: ${tailLog()}` : undefined) },
  );

  await kubectlOk(
    cluster,
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "v1",
      kind: "List",
      items: [
        { apiVersion: "v1", kind: "Namespace", metadata: { name } },
        { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name }, spec: { namespaces: [name], gpuQuota: "2" } },
      ],
    }),
  );
  // The webhook learns the Project from a watch; until then a 4-GPU Deployment is not over any quota.
  await poll(
    "the webhook to deny a Deployment over the Project's quota",
    async () => {
      const res = await cluster.kubectl(["apply", "--dry-run=server", "-f", "-"], { input: JSON.stringify(gpuDeployment("too-big", 4)) });
      return res.code !== 0 && res.stderr.includes("GPU quota exceeded") ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment("fits", 1)));
  const denied = await cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify(gpuDeployment("too-big", 4)) });
  expect(denied.code).not.toBe(0);
  // One malformed request, so the bad-requests panel has a series.
  const bad = await httpsRequest(`${webhookUrl.origin}/validate`, { caPem: fs.readFileSync(caFile, "utf8") }, { method: "POST", body: "not an AdmissionReview" });
  expect(bad.status).toBe(400);

  // Two scrapes after the last admission: rate() needs two samples that differ or not, and the
  // project gauges need the reconciler to have counted the admitted Deployment.
  await poll(
    "Prometheus to hold two scrapes of the webhook after the admissions",
    async () => {
      const denials = await query(`count_over_time(infergate_admission_denials_total{reason="QuotaExceeded"}[1m])`);
      const bads = await query("count_over_time(infergate_admission_bad_requests_total[1m])");
      const allocated = await query(`infergate_project_gpu_allocated{project="${name}"}`);
      const enough = denials.some((r) => Number(r.value[1]) >= 2) && bads.some((r) => Number(r.value[1]) >= 2);
      return enough && allocated.some((r) => Number(r.value[1]) === 1) ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
});

afterAll(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus!.once("exit", resolve));
    process.kill(prometheus.pid!, "SIGTERM");
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    if (prometheus.exitCode === null) process.kill(prometheus.pid!, "SIGKILL");
  }
  await cluster.kubectl(["delete", "project", name, "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "namespace", name, "--ignore-not-found", "--wait=false"]);
  fs.rmSync(workDir, { recursive: true, force: true });
});

function tailLog(): string {
  try {
    return fs.readFileSync(path.join(workDir, "prometheus.log"), "utf8").split("\n").slice(-20).join("\n");
  } catch {
    return "(no log)";
  }
}

describe("dashboard queries against a real Prometheus", () => {
  const targets = dashboardTargets();
  const webhookTargets = targets.filter((t) => !t.expr.includes("infergate_adapter_"));

  it("leaves only the adapter panels unchecked", () => {
    expect(targets.filter((t) => t.expr.includes("infergate_adapter_")).map((t) => t.panel)).toEqual([
      "Adapter scrape health",
      "Adapter scrape health",
      "Adapter scrape health",
      "Adapter scrape duration p99",
      "Adapter API latency p99 by route",
      "Adapter API latency p99 by route",
    ]);
  });

  it("scrapes the webhook over HTTPS with its CA", async () => {
    const up = await query('up{job="infergate-webhook"}');
    expect(up.map((r) => r.value[1])).toEqual(["1"]);
  });

  it.each(webhookTargets.map((t) => [t.panel, t.expr]))("%s: %s returns data", async (_panel, expr) => {
    const result = await query(forPrometheus(expr));
    expect(result.length, `no series for ${expr}`).toBeGreaterThan(0);
  });

  it("shows the project's quota, allocation and denial by reason", async () => {
    const quota = await query(`max by (project) (infergate_project_gpu_quota{project="${name}"})`);
    expect(quota.map((r) => Number(r.value[1]))).toEqual([2]);
    const reasons = (await query("sum by (reason) (infergate_admission_denials_total)")).map((r) => r.metric.reason);
    expect(reasons).toContain("QuotaExceeded");
  });
});

describe("infergate status against the live cluster", () => {
  it("prints the project table and the last hour's verdicts from Prometheus", async () => {
    await poll(
      `Project ${name}'s status to show the admitted Deployment`,
      async () => {
        const status = JSON.parse((await kubectlOk(cluster, ["get", "project", name, "-o", "json"])).stdout).status ?? {};
        return status.allocatedGpus === "1" && status.reservedGpus === "0" ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    // increase() ignores a series' first sample (its count before Prometheus saw it), so deny once more
    // while Prometheus is watching and wait until the increase shows.
    const denied = await cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify(gpuDeployment("too-big", 4)) });
    expect(denied.code).not.toBe(0);
    await poll(
      "Prometheus to see the validate webhook's denials increase",
      async () => {
        const result = await query('increase(infergate_admission_duration_seconds_count{webhook="validate",plugin="all",verdict="denied"}[1h])');
        return result.some((r) => Number(r.value[1]) >= 0.5) ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    const res = await runCli(["status", "--kubeconfig", cluster.kubeconfig, "--prometheus-url", prometheusUrl]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const line = res.stdout.split("\n").find((l) => l.startsWith(`${name} `));
    expect(line).toMatch(/\[█████░░░░░\]\s+1\/2 GPUs\s+reserved 0\s+workloads 1$/);
    expect(res.stdout).toMatch(/admission verdicts, last hour \(Prometheus\):\n(.*\n)*\s+validate\s.*denied [1-9]/);
  });

  it("falls back to the webhook's cumulative counts, labelled as such", async () => {
    const res = await runCli(["status", "--kubeconfig", cluster.kubeconfig, "--metrics-url", `${inject("webhookUrl")}/metrics`, "--metrics-ca", caFile]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("admission verdicts since the webhook started (cumulative, this replica only):");
    expect(res.stdout).toMatch(/\s+validate\s.*denied [1-9]/);
  });

  it("exits 1 with a clear message when the Prometheus cannot be reached", async () => {
    const closed = await freePort();
    const res = await runCli(["status", "--kubeconfig", cluster.kubeconfig, "--prometheus-url", `http://${LOOPBACK}:${closed}`]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/cannot read admission verdicts from Prometheus at .*ECONNREFUSED/);
  });
});
