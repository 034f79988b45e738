// `npm start`: a real local control plane with infergate's webhook wired in, a sample Project and
// the cluster-wide policy (profile `default`, so pods really run here) applied, and the commands to
// try printed. Ctrl-C stops every process it started.
import fs from "node:fs";
import path from "node:path";
import { resolveBinDir } from "../src/local-cluster/binaries.ts";
import { REPO_ROOT, startCluster } from "../src/local-cluster/cluster.ts";
import type { Cluster } from "../src/local-cluster/cluster.ts";
import { killAll, stopAll } from "../src/local-cluster/processes.ts";
import { registerWebhooks } from "../src/local-cluster/webhook-registration.ts";
import { startWebhookServer, WebhookUnavailableError, WEBHOOK_PROCESS_NAME } from "../src/local-cluster/webhook-server.ts";

const stateDir = path.resolve(process.env.INFERGATE_STATE_DIR ?? path.join(REPO_ROOT, ".cluster"));
const say = (message: string) => process.stderr.write(`[start] ${message}\n`);
/** Paths as the user would type them from the current directory. */
const shown = (p: string) => {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith("..") ? rel : p;
};

let stopping = false;
async function shutdown(code: number): Promise<never> {
  if (stopping) {
    say("stopping now (SIGKILL)");
    killAll();
    process.exit(code || 130);
  }
  stopping = true;
  say("stopping the local cluster (Ctrl-C again to kill at once) ...");
  await stopAll();
  say("stopped");
  process.exit(code);
}
process.on("SIGINT", () => void shutdown(130));
process.on("SIGTERM", () => void shutdown(143));

async function main(): Promise<void> {
  say("looking for the control-plane binaries (the first build compiles Kubernetes from source: 10-20 min)");
  const binDir = await resolveBinDir({ repoRoot: REPO_ROOT });
  const started = Date.now();
  const cluster = await startCluster({ stateDir, binDir, log: say });
  for (const note of cluster.notes) say(note);
  watchForCrashes(cluster);

  let webhookNote = "";
  try {
    const webhook = await startWebhookServer({ repoRoot: REPO_ROOT, stateDir, kubeconfig: cluster.kubeconfig });
    await registerWebhooks(cluster, { baseUrl: webhook.url, caBundle: webhook.caBundle });
    void webhook.process()?.exited.then((status) => {
      if (!stopping) say(`infergate webhook exited (${JSON.stringify(status)}); see ${shown(path.join(stateDir, "logs", `${WEBHOOK_PROCESS_NAME}.log`))}`);
    });
    say(`infergate webhook serving at ${webhook.url}`);
  } catch (err) {
    if (!(err instanceof WebhookUnavailableError)) throw err;
    webhookNote = `webhook not running: ${err.message.split("\n")[0]}`;
    say(`${webhookNote}; the cluster runs without it`);
  }

  const examples = ["project.yaml", "policy-cluster-default.yaml"].map((f) => path.join(REPO_ROOT, "examples", f));
  const crdsInstalled = cluster.crds.includes("projects.infergate.dev") && cluster.crds.includes("inferencepolicies.infergate.dev");
  if (crdsInstalled) {
    const res = await cluster.kubectl(["apply", ...examples.flatMap((f) => ["-f", f])]);
    if (res.code !== 0) say(`applying the examples failed: ${res.stderr.trim()}`);
    else say(`applied ${examples.map(shown).join(" and ")}`);
  } else {
    say("infergate's CRDs are not in manifests/crds yet; skipped the example Project and policy");
  }

  const kubectl = `KUBECONFIG=${shown(cluster.kubeconfig)} ${shown(path.join(binDir, "kubectl"))}`;
  const lines = [
    "",
    `infergate local cluster ready in ${((Date.now() - started) / 1000).toFixed(1)}s (API ${cluster.server}, logs in ${shown(path.join(stateDir, "logs"))}).${webhookNote ? ` ${webhookNote}.` : ""}`,
    "Try:",
    `  ${kubectl} apply -f ${shown(path.join(REPO_ROOT, "examples/gpu-deployment.yaml"))}   # warnings list what infergate injected`,
    `  ${kubectl} get deployment llama-8b -n team-a -o yaml`,
    `  ${kubectl} get pods -n team-a -o wide   # Running on a pool-a GPU node`,
    `  ${kubectl} get projects,inferencepolicies`,
    "Ctrl-C stops everything.",
    "",
  ];
  process.stdout.write(lines.join("\n"));
}

/** A control-plane process that dies on its own takes the whole stack down, loudly. */
function watchForCrashes(cluster: Cluster): void {
  for (const proc of cluster.processes) {
    void proc.exited.then(async (status) => {
      // A terminal Ctrl-C reaches the children too; their exit can beat our own SIGINT handler.
      await new Promise((r) => setTimeout(r, 500));
      if (stopping) return;
      say(`${proc.name} exited unexpectedly (${JSON.stringify(status)}); last lines of ${shown(proc.logFile)}:`);
      process.stderr.write(`${cluster.logs(20)}\n`);
      void shutdown(1);
    });
  }
}

main().catch(async (err: Error) => {
  say(err.message);
  if (fs.existsSync(stateDir)) say(`state and logs are in ${shown(stateDir)}`);
  await shutdown(1);
});
