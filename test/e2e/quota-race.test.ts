// PRODUCT.md §5's race-freedom claim, tested against the real apiserver: three separate `infergate serve`
// processes (as three webhook replicas would be) validate concurrent creates in one Project, and
// together they must admit exactly as many as the quota holds — never one more, and, since every
// admission that fits must be let through, never one fewer.
//
// Routing: the global webhook (global-setup.ts) would validate every namespace, so this test's namespace
// carries the `infergate.dev/ignore` label its namespaceSelector skips. Three ValidatingWebhookConfigurations
// of its own then select that namespace by name, each with an objectSelector on `race-shard: 0|1|2`, so the
// API server sends each Deployment to exactly one process — the way a Service load-balances across
// replicas — and all three write the same Project status.
import fs from "node:fs";
import path from "node:path";
import { AppsV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poll } from "../../src/local-cluster/api.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { IGNORE_NAMESPACE_LABEL } from "../../src/local-cluster/webhook-config.ts";
import { startWebhookServer, type WebhookServer } from "../../src/local-cluster/webhook-server.ts";
import { getJson, kubectlOk, requireWebhook, uniqueName, useCluster } from "./harness.ts";

const SHARDS = 3;
const CREATES = 50;
/** The quota, in GPUs: exactly this many 1-GPU Deployments fit. */
const FITS = 17;
const ROUNDS = 20;
const SHARD_LABEL = "race-shard";

const cluster = useCluster();
const namespace = uniqueName("quota-race");
const project = namespace;
const policyName = `${namespace}-default`;
const shardConfig = (shard: number) => `${namespace}-shard-${shard}`;
const servers: WebhookServer[] = [];
const apps = cluster.client().makeApiClient(AppsV1Api);

/**
 * One 1-GPU replica. Paused, so the Deployment controller creates no ReplicaSet: the race is in
 * admission, and the Deployment alone carries the charge (spec.replicas × GPUs per pod).
 */
function raceDeployment(name: string, shard: number, replicas = 1): Record<string, any> {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace, labels: { [SHARD_LABEL]: String(shard) } },
    spec: {
      replicas,
      paused: true,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: "server", image: "registry.example.com/server:1", resources: { limits: { "nvidia.com/gpu": "1" } } }] },
      },
    },
  };
}

function shardWebhook(shard: number, server: WebhookServer): Record<string, any> {
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: { name: shardConfig(shard) },
    webhooks: [
      {
        name: `shard-${shard}.quota-race.infergate.dev`,
        clientConfig: { url: `${server.url}/validate`, caBundle: server.caBundle },
        admissionReviewVersions: ["v1"],
        sideEffects: "NoneOnDryRun",
        matchPolicy: "Equivalent",
        // As the real quota webhook: fail closed, same timeout.
        failurePolicy: "Fail",
        timeoutSeconds: 5,
        namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": namespace } },
        objectSelector: { matchLabels: { [SHARD_LABEL]: String(shard) } },
        rules: [{ apiGroups: ["apps"], apiVersions: ["v1"], resources: ["deployments"], operations: ["CREATE", "UPDATE"], scope: "Namespaced" }],
      },
    ],
  };
}

/** A server-side dry run in one shard: what that process alone decides (its own caches; dryRun reserves nothing). */
async function dryRun(shard: number, replicas: number) {
  return cluster.kubectl(["create", "--dry-run=server", "-o", "name", "-f", "-"], {
    input: JSON.stringify(raceDeployment(`probe-${shard}`, shard, replicas)),
  });
}

/** Every process sees the whole quota free: the full quota fits in a dry run, one GPU more does not. */
async function everyShardSeesQuotaFree(): Promise<void> {
  for (let shard = 0; shard < SHARDS; shard++) {
    await poll(
      `shard ${shard}'s process to see all ${FITS} GPUs of ${project} free`,
      async () => {
        const fits = await dryRun(shard, FITS);
        const over = await dryRun(shard, FITS + 1);
        return fits.code === 0 && over.code !== 0 && over.stderr.includes("GPU quota exceeded") ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 300 },
    );
  }
}

async function projectStatus(): Promise<any> {
  return (await getJson(cluster, ["project", project])).status ?? {};
}

/** Waits until the leader's reconciler shows `allocated` GPUs and has settled every reservation. */
async function statusSettles(allocated: number): Promise<any> {
  return poll(
    `Project ${project} status to show ${allocated} allocated and no open reservation`,
    async () => {
      const s = await projectStatus();
      return s.allocatedGpus === String(allocated) && s.reservedGpus === "0" && (s.reservations ?? []).length === 0 ? s : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 300 },
  );
}

async function deploymentNames(): Promise<string[]> {
  const list = await apps.listNamespacedDeployment({ namespace });
  return list.items.map((d) => d.metadata?.name ?? "").filter((n) => !n.startsWith("probe-"));
}

type Outcome = { admitted: true } | { admitted: false; quota: boolean; message: string };

async function create(name: string, shard: number): Promise<Outcome> {
  try {
    await apps.createNamespacedDeployment({ namespace, body: raceDeployment(name, shard) as any });
    return { admitted: true };
  } catch (err: any) {
    const message = String(typeof err?.body === "string" ? err.body : (err?.message ?? err));
    return { admitted: false, quota: err?.code === 403 && message.includes("GPU quota exceeded"), message };
  }
}

/** Names of the Deployments one process validated for real (not dry runs), from its admission log. */
function validatedBy(server: WebhookServer): Set<string> {
  const log = server.process()?.logFile;
  const names = new Set<string>();
  if (!log || !fs.existsSync(log)) return names;
  for (const line of fs.readFileSync(log, "utf8").split("\n")) {
    if (!line.startsWith("{")) continue;
    const entry = JSON.parse(line);
    if (entry.msg === "admission" && entry.webhook === "validate" && entry.namespace === namespace && !entry.dryRun && entry.operation === "CREATE") {
      names.add(entry.name);
    }
  }
  return names;
}

beforeAll(async () => {
  requireWebhook();
  const stateDir = path.dirname(cluster.kubeconfig);
  await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace, labels: { [IGNORE_NAMESPACE_LABEL]: "true" } } },
      { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name: project }, spec: { namespaces: [namespace], gpuQuota: String(FITS) } },
      { apiVersion: "infergate.dev/v1alpha1", kind: "InferencePolicy", metadata: { name: policyName }, spec: { projects: [project], scheduler: { profile: "default" } } },
    ],
  }));
  for (let shard = 0; shard < SHARDS; shard++) {
    // Its own state directory each: its own log and PID file next to the global webhook's.
    // Debug: a plain "allowed" is logged only there, and the log tells which process validated what.
    servers.push(
      await startWebhookServer({ repoRoot: REPO_ROOT, stateDir: path.join(stateDir, `race-${shard}`), kubeconfig: cluster.kubeconfig, serveArgs: ["--log-level", "debug"] }),
    );
  }
  await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: servers.map((s, i) => shardWebhook(i, s)) }));
  // Also shows each configuration is in force and each process knows the Project.
  await everyShardSeesQuotaFree();
  await statusSettles(0);
});

afterAll(async () => {
  await cluster.kubectl(["delete", "validatingwebhookconfigurations", ...servers.map((_, i) => shardConfig(i)), "--ignore-not-found"]);
  await Promise.all(servers.map((s) => s.stop()));
  await cluster.kubectl(["delete", "inferencepolicy", policyName, "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "project", project, "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "namespace", namespace, "--ignore-not-found", "--wait=false"]);
});

describe(`GPU quota across ${SHARDS} webhook processes`, () => {
  it(`admits exactly ${FITS} of ${CREATES} concurrent 1-GPU creates at a quota of ${FITS}, ${ROUNDS} rounds in a row`, { timeout: 1_200_000 }, async () => {
    const rounds: { round: number; admitted: number; denied: number; failed: number; stored: number; overAdmitted: number }[] = [];
    const expectedShard = new Map<string, number>();
    for (let round = 1; round <= ROUNDS; round++) {
      const names = Array.from({ length: CREATES }, (_, i) => `r${round}-d${i}`);
      names.forEach((name, i) => expectedShard.set(name, i % SHARDS));
      const outcomes = await Promise.all(names.map((name, i) => create(name, i % SHARDS)));
      const stored = await deploymentNames();
      const failures = outcomes.filter((o): o is Extract<Outcome, { admitted: false }> => !o.admitted && !o.quota);
      const result = {
        round,
        admitted: outcomes.filter((o) => o.admitted).length,
        denied: outcomes.filter((o) => !o.admitted && o.quota).length,
        failed: failures.length,
        stored: stored.length,
        overAdmitted: Math.max(0, stored.length - FITS),
      };
      rounds.push(result);
      console.log(`round ${round}: ${result.admitted} admitted, ${result.denied} denied for quota, ${result.failed} failed otherwise, ${result.stored} stored, ${result.overAdmitted} over-admitted`);
      expect(failures.map((f) => f.message)).toEqual([]);
      expect(result).toMatchObject({ admitted: FITS, denied: CREATES - FITS, stored: FITS, overAdmitted: 0 });

      const status = await statusSettles(FITS);
      expect(status).toMatchObject({ allocatedGpus: String(FITS), availableGpus: "0", workloads: FITS });

      await apps.deleteCollectionNamespacedDeployment({ namespace });
      await poll("the round's Deployments to be gone", async () => ((await deploymentNames()).length === 0 ? true : undefined), { timeoutMs: 60_000 });
      await statusSettles(0);
      await everyShardSeesQuotaFree();
    }
    console.log(`all rounds: ${JSON.stringify(rounds.map((r) => [r.admitted, r.denied, r.failed]))} (admitted, denied, failed)`);

    // Each create reached exactly one process: the one its shard label routes to.
    const seen = servers.map(validatedBy);
    for (const [name, shard] of expectedShard) {
      expect(seen.map((names) => names.has(name)), name).toEqual(Array.from({ length: SHARDS }, (_, i) => i === shard));
    }
  });
});
