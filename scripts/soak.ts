// Soak: steady create/update/delete churn of GPU Deployments against a local cluster with infergate's
// webhook in the admission chain, sampling the webhook process's RSS and open file descriptors every
// 10 s. Prints the samples and the RSS trend (least-squares slope, MB/hour): a leak shows as a slope
// that stays positive over a long run. Not part of CI.
//
//   node scripts/soak.ts [--minutes N]      (default 30)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { resolveBinDir } from "../src/local-cluster/binaries.ts";
import { REPO_ROOT, startCluster, type Cluster } from "../src/local-cluster/cluster.ts";
import { killAll, stopAll } from "../src/local-cluster/processes.ts";
import { registerWebhooks } from "../src/local-cluster/webhook-registration.ts";
import { startWebhookServer } from "../src/local-cluster/webhook-server.ts";

const SAMPLE_EVERY_MS = 10_000;
const NAMESPACE = "soak";
/** How many Deployments exist at once; each round creates one, updates one and deletes the oldest. */
const LIVE = 5;

const say = (message: string) => process.stderr.write(`[soak] ${message}\n`);

interface Sample {
  seconds: number;
  rssKiB: number;
  fds: number;
  operations: number;
}

function readSample(pid: number, seconds: number, operations: number): Sample {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return { seconds, rssKiB: rss ? Number(rss[1]) : NaN, fds: fs.readdirSync(`/proc/${pid}/fd`).length, operations };
}

/** Least-squares slope of y over x. */
export function slope(points: ReadonlyArray<{ x: number; y: number }>): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  const sxy = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  return sxx === 0 ? NaN : sxy / sxx;
}

function gpuDeployment(name: string, replicas: number, image: string) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: NAMESPACE },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: "server", image, resources: { limits: { "nvidia.com/gpu": "1" } } }] },
      },
    },
  };
}

async function churn(cluster: Cluster, until: number, counter: { operations: number; failures: number }): Promise<void> {
  const live: string[] = [];
  const run = async (args: string[], input?: string) => {
    const res = await cluster.kubectl(args, { input });
    counter.operations++;
    if (res.code !== 0) {
      counter.failures++;
      say(`kubectl ${args.join(" ")} failed: ${res.stderr.trim().split("\n")[0]}`);
    }
  };
  for (let round = 0; Date.now() < until; round++) {
    const name = `llm-${round}`;
    await run(["apply", "-f", "-"], JSON.stringify(gpuDeployment(name, 1, "registry.example.com/server:1")));
    live.push(name);
    const updated = live[Math.floor(live.length / 2)]!;
    await run(["apply", "-f", "-"], JSON.stringify(gpuDeployment(updated, 1 + (round % 2), `registry.example.com/server:${round}`)));
    if (live.length > LIVE) await run(["delete", "deployment", "-n", NAMESPACE, live.shift()!, "--wait=false"]);
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { minutes: { type: "string" }, help: { type: "boolean" } }, strict: true });
  if (values.help) {
    console.log("usage: node scripts/soak.ts [--minutes N]   (default 30)");
    return 0;
  }
  const minutes = values.minutes === undefined ? 30 : Number(values.minutes);
  if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60) {
    console.error(`--minutes: must be a number of minutes from 0 (exclusive) to 1440, got "${values.minutes}"`);
    return 2;
  }
  const binDir = await resolveBinDir({ repoRoot: REPO_ROOT });
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "infergate-soak-"));
  const cluster = await startCluster({ stateDir, binDir, log: say });
  try {
    const webhook = await startWebhookServer({ repoRoot: REPO_ROOT, stateDir, kubeconfig: cluster.kubeconfig });
    await registerWebhooks(cluster, { baseUrl: webhook.url, caBundle: webhook.caBundle });
    const pid = webhook.process()!.pid;
    const objects = [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: NAMESPACE } },
      // Large enough never to deny: the soak measures steady admission work, not denials.
      { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name: NAMESPACE }, spec: { namespaces: [NAMESPACE], gpuQuota: "1000" } },
    ];
    const applied = await cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }) });
    if (applied.code !== 0) throw new Error(`cannot create the soak Project: ${applied.stderr}`);
    say(`webhook pid ${pid}; churning for ${minutes} min, sampling every ${SAMPLE_EVERY_MS / 1000} s`);

    const started = Date.now();
    const until = started + minutes * 60_000;
    const counter = { operations: 0, failures: 0 };
    const samples: Sample[] = [readSample(pid, 0, 0)];
    const sampler = setInterval(() => {
      samples.push(readSample(pid, Math.round((Date.now() - started) / 1000), counter.operations));
      const last = samples.at(-1)!;
      say(`t=${last.seconds}s rss=${(last.rssKiB / 1024).toFixed(1)}MB fds=${last.fds} ops=${last.operations}`);
    }, SAMPLE_EVERY_MS);
    await churn(cluster, until, counter);
    clearInterval(sampler);
    samples.push(readSample(pid, Math.round((Date.now() - started) / 1000), counter.operations));

    console.log("| t (s) | RSS (MB) | open fds | kubectl operations |");
    console.log("|---:|---:|---:|---:|");
    for (const s of samples) console.log(`| ${s.seconds} | ${(s.rssKiB / 1024).toFixed(1)} | ${s.fds} | ${s.operations} |`);
    // The first minute is warm-up (JIT, caches filling); the trend is read after it.
    const steady = samples.filter((s) => s.seconds >= 60);
    const mbPerHour = slope(steady.map((s) => ({ x: s.seconds / 3600, y: s.rssKiB / 1024 })));
    const fdsPerHour = slope(steady.map((s) => ({ x: s.seconds / 3600, y: s.fds })));
    const rss = samples.map((s) => s.rssKiB / 1024);
    console.log("");
    console.log(`duration ${minutes} min; ${counter.operations} kubectl operations (${counter.failures} failed), ${(counter.operations / (minutes * 60)).toFixed(1)}/s`);
    console.log(`RSS min ${Math.min(...rss).toFixed(1)} MB, max ${Math.max(...rss).toFixed(1)} MB, last ${rss.at(-1)!.toFixed(1)} MB`);
    console.log(`RSS slope after the first minute: ${mbPerHour.toFixed(1)} MB/hour; open fds slope: ${fdsPerHour.toFixed(1)}/hour`);
    return counter.failures > 0 ? 1 : 0;
  } finally {
    await stopAll();
    await cluster.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

process.on("SIGINT", () => {
  killAll();
  process.exit(130);
});
main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`soak: ${(err as Error).stack ?? err}`);
    killAll();
    process.exit(1);
  },
);
