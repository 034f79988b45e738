// Runs infergate's own webhook server (`infergate serve`) as a child process next to the local
// cluster, with a serving certificate for 127.0.0.1 from a CA kept in the state directory.
import fs from "node:fs";
import path from "node:path";
import { httpsRequest, poll } from "./api.ts";
import { ensureServingPki } from "./certs.ts";
import { freePort, LOOPBACK } from "./ports.ts";
import { childEnv, launch, tail, terminate } from "./processes.ts";
import type { ManagedProcess } from "./processes.ts";

export interface WebhookServerOptions {
  repoRoot: string;
  stateDir: string;
  kubeconfig: string;
  port?: number;
  timeoutMs?: number;
  /** Extra options for the Node runtime itself, e.g. `--cpu-prof` for a profiling run. */
  nodeArgs?: readonly string[];
  /** Extra `infergate serve` flags, e.g. `--log-level debug`. */
  serveArgs?: readonly string[];
}

export interface WebhookServer {
  /** Base URL, e.g. https://127.0.0.1:40123 (append /mutate, /validate). */
  url: string;
  port: number;
  caBundle: string;
  caFile: string;
  process(): ManagedProcess | undefined;
  stop(): Promise<void>;
  /** Starts it again on the same port (registrations keep pointing at it). */
  start(): Promise<void>;
}

/** The webhook cannot run (yet): the cluster itself is fine, webhook-dependent tests are not. */
export class WebhookUnavailableError extends Error {
  override name = "WebhookUnavailableError";
}

export const WEBHOOK_PROCESS_NAME = "infergate-webhook";

export function cliEntry(repoRoot: string): string {
  return path.join(repoRoot, "src", "cli", "main.ts");
}

/** Node 24 from the `node` devDependency when installed (the machine's own node may be older). */
export function nodeBinary(repoRoot: string): string {
  const local = path.join(repoRoot, "node_modules", ".bin", "node");
  return fs.existsSync(local) ? local : process.execPath;
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const pki = ensureServingPki(path.join(options.stateDir, "pki"), "webhook");
  const port = options.port ?? (await freePort());
  const url = `https://${LOOPBACK}:${port}`;
  let proc: ManagedProcess | undefined;

  const start = async () => {
    const entry = cliEntry(options.repoRoot);
    if (!fs.existsSync(entry)) {
      throw new WebhookUnavailableError(`${entry} does not exist yet, so \`infergate serve\` cannot run`);
    }
    proc = await launch({
      name: WEBHOOK_PROCESS_NAME,
      command: nodeBinary(options.repoRoot),
      args: [
        ...(options.nodeArgs ?? []),
        entry, "serve",
        "--address", LOOPBACK,
        "--port", String(port),
        "--cert", pki.serving.cert,
        "--key", pki.serving.key,
        "--kubeconfig", options.kubeconfig,
        ...(options.serveArgs ?? []),
      ],
      stateDir: options.stateDir,
      cwd: options.repoRoot,
      env: childEnv(),
    });
    const running = proc;
    try {
      await poll(
        `infergate serve at ${url}/readyz`,
        async () => ((await httpsRequest(`${url}/readyz`, { caPem: pki.caPem })).status === 200 ? true : undefined),
        {
          timeoutMs: options.timeoutMs ?? 60_000,
          abort: () => (running.exit() ? `it exited (${JSON.stringify(running.exit())})` : undefined),
        },
      );
    } catch (err) {
      await terminate(running);
      throw new WebhookUnavailableError(
        `infergate serve did not become ready: ${(err as Error).message}\n--- ${running.logFile} ---\n${tail(running.logFile, 40)}`,
      );
    }
  };

  await start();
  return {
    url,
    port,
    caBundle: pki.caBundle,
    caFile: pki.ca.cert,
    process: () => proc,
    start,
    async stop() {
      if (proc) await terminate(proc);
    },
  };
}
