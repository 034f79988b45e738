// vitest globalSetup for the e2e project: one real control plane (and infergate's webhook server)
// for every e2e file, torn down at the end. Tests reach it through `inject(...)`.
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { resolveBinDir } from "../../src/local-cluster/binaries.ts";
import { REPO_ROOT, startCluster } from "../../src/local-cluster/cluster.ts";
import type { Cluster } from "../../src/local-cluster/cluster.ts";
import { LOOPBACK } from "../../src/local-cluster/ports.ts";
import { registerWebhooks, unregisterWebhooks } from "../../src/local-cluster/webhook-registration.ts";
import { startWebhookServer } from "../../src/local-cluster/webhook-server.ts";
import type { WebhookServer } from "../../src/local-cluster/webhook-server.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** The cluster's state directory: certificates, logs, admin.kubeconfig, cluster.json. */
    stateDir: string;
    kubeconfig: string;
    binDir: string;
    /** Base URL of infergate's webhook server, "" when it could not start. */
    webhookUrl: string;
    /** Why the webhook server is not available ("" when it is). */
    webhookError: string;
    /** http://127.0.0.1:PORT: POST /webhook/stop and /webhook/start, to test outages. */
    controlUrl: string;
  }
}

const log = (message: string) => process.stderr.write(`[e2e] ${message}\n`);

export default async function setup(project: TestProject) {
  const binDir = await resolveBinDir({ repoRoot: REPO_ROOT });
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "infergate-e2e-"));
  const started = Date.now();
  const cluster: Cluster = await startCluster({ stateDir, binDir, log });
  log(`local cluster ready in ${((Date.now() - started) / 1000).toFixed(1)}s; state in ${stateDir}`);
  for (const note of cluster.notes) log(note);
  try {
    return await finishSetup(project, cluster, binDir);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

async function finishSetup(project: TestProject, cluster: Cluster, binDir: string) {
  const stateDir = cluster.stateDir;
  let webhook: WebhookServer | undefined;
  let webhookError = "";
  try {
    webhook = await startWebhookServer({ repoRoot: REPO_ROOT, stateDir, kubeconfig: cluster.kubeconfig });
    await registerWebhooks(cluster, { baseUrl: webhook.url, caBundle: webhook.caBundle });
    log(`infergate webhook serving at ${webhook.url}, registered`);
  } catch (err) {
    // The cluster-only tests still run; the webhook tests report this message.
    webhookError = (err as Error).message;
    log(`infergate webhook unavailable: ${webhookError}`);
    await unregisterWebhooks(cluster);
    await webhook?.stop();
    webhook = undefined;
  }

  const control = await startControlServer(webhook);
  project.provide("stateDir", stateDir);
  project.provide("kubeconfig", cluster.kubeconfig);
  project.provide("binDir", binDir);
  project.provide("webhookUrl", webhook?.url ?? "");
  project.provide("webhookError", webhookError);
  project.provide("controlUrl", control.url);

  return async () => {
    await new Promise<void>((resolve) => control.server.close(() => resolve()));
    await webhook?.stop();
    await cluster.stop();
    if (process.env.INFERGATE_KEEP_STATE) log(`kept ${stateDir} (INFERGATE_KEEP_STATE)`);
    else fs.rmSync(stateDir, { recursive: true, force: true });
  };
}

/**
 * Test files run in worker processes, but the webhook is a child of this one; this tiny loopback
 * endpoint lets a test stop it and start it again.
 */
async function startControlServer(webhook: WebhookServer | undefined): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer((req, res) => {
    const reply = (status: number, text: string) => res.writeHead(status, { "content-type": "text/plain" }).end(text);
    if (req.method !== "POST" || !webhook) return reply(404, webhook ? "not found" : "webhook not running");
    const action = req.url === "/webhook/stop" ? webhook.stop() : req.url === "/webhook/start" ? webhook.start() : undefined;
    if (!action) return reply(404, "not found");
    action.then(
      () => reply(200, "ok"),
      (err: Error) => reply(500, err.message),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, () => resolve()));
  const { port } = server.address() as { port: number };
  return { server, url: `http://${LOOPBACK}:${port}` };
}
