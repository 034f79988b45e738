// `infergate status`: each Project's GPU use against its quota, and recent admission verdicts.
import fs from "node:fs";
import https from "node:https";
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { loadKubeConfig } from "../kube/kubeconfig.ts";
import { parseExposition } from "../adapter/exposition.ts";
import { GROUP, VERSION, type Project } from "../policy/types.ts";
import { parseFlags, UsageError } from "./flags.ts";
import {
  formatProjectTable,
  formatVerdicts,
  projectRowOf,
  verdictsFromPrometheus,
  verdictsFromSamples,
  type VerdictCount,
  type VerdictWindow,
} from "./status-format.ts";

const HELP = `usage: infergate status [flags]

Prints each Project's GPU quota, allocated and reserved GPUs (from the Projects' status), and the
webhook's admission verdicts.

  --kubeconfig FILE       the cluster to read (default: in-cluster config when running in a pod)
  --prometheus-url URL    verdicts of the last hour from this Prometheus (it must scrape the webhook)
  --metrics-url URL       without a Prometheus: the webhook's /metrics (e.g. https://127.0.0.1:8443/metrics);
                          its counts are cumulative since that replica started, and labelled so
  --metrics-ca FILE       CA certificate that signed the webhook's serving certificate (for --metrics-url)
  --timeout-seconds N     per request (default 10)`;

const LAST_HOUR_QUERY = 'sum by (webhook, verdict) (increase(infergate_admission_duration_seconds_count{plugin="all"}[1h]))';

export async function runStatus(argv: string[]): Promise<number> {
  let flags;
  let timeoutMs: number;
  try {
    flags = parseFlags(
      argv,
      {
        kubeconfig: { type: "string" },
        "prometheus-url": { type: "string" },
        "metrics-url": { type: "string" },
        "metrics-ca": { type: "string" },
        "timeout-seconds": { type: "string" },
        help: { type: "boolean" },
      },
      "status",
    ).values;
    if (flags.help) {
      console.log(HELP);
      return 0;
    }
    timeoutMs = 1000 * positiveSeconds(flags["timeout-seconds"]);
    for (const name of ["prometheus-url", "metrics-url"] as const) {
      const value = flags[name];
      if (value !== undefined && !/^https?:\/\/[^/]/.test(value)) throw new UsageError(`--${name}: must be an http:// or https:// URL, got "${value}"`);
    }
    if (flags["metrics-ca"] !== undefined && flags["metrics-url"] === undefined) throw new UsageError("--metrics-ca: only meaningful with --metrics-url");
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${HELP}`);
      return 2;
    }
    throw err;
  }

  const loaded = loadKubeConfig(flags.kubeconfig);
  if (!loaded.ok) {
    console.error(
      loaded.reason === "no-cluster"
        ? "infergate status: no cluster to read; give --kubeconfig FILE, or run inside a cluster"
        : `infergate status: cannot load kubeconfig: ${loaded.message}`,
    );
    return 2;
  }
  const kc = loaded.kc;

  let projects: Project[];
  try {
    projects = await listProjects(kc, timeoutMs);
  } catch (err) {
    const server = kc.getCurrentCluster()?.server ?? "(no server in the kubeconfig)";
    console.error(`infergate status: cannot list Projects from ${server}: ${describeError(err)}`);
    return 1;
  } finally {
    // A list still running after the timeout would otherwise keep the command from exiting.
    await kc.close();
  }
  console.log(formatProjectTable(projects.map(projectRowOf)));

  let verdicts: { counts: VerdictCount[]; window: VerdictWindow } | undefined;
  try {
    if (flags["prometheus-url"]) verdicts = { counts: await queryLastHour(flags["prometheus-url"], timeoutMs), window: "last-hour" };
    else if (flags["metrics-url"]) {
      const ca = flags["metrics-ca"] ? fs.readFileSync(flags["metrics-ca"], "utf8") : undefined;
      verdicts = { counts: await scrapeVerdicts(flags["metrics-url"], ca, timeoutMs), window: "since-start" };
    }
  } catch (err) {
    const source = flags["prometheus-url"] ? `Prometheus at ${flags["prometheus-url"]}` : `webhook metrics at ${flags["metrics-url"]}`;
    console.error(`infergate status: cannot read admission verdicts from ${source}: ${describeError(err)}`);
    return 1;
  }
  console.log("");
  console.log(verdicts ? formatVerdicts(verdicts.counts, verdicts.window) : "admission verdicts: give --prometheus-url (last hour) or --metrics-url (since the webhook started)");
  return 0;
}

function positiveSeconds(value: string | undefined): number {
  if (value === undefined) return 10;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 300) throw new UsageError(`--timeout-seconds: must be a number of seconds from 0 (exclusive) to 300, got "${value}"`);
  return n;
}

async function listProjects(kc: KubeConfig, timeoutMs: number): Promise<Project[]> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const list = (await withTimeout(custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: "projects" }), timeoutMs)) as { items?: Project[] };
  return list.items ?? [];
}

async function queryLastHour(base: string, timeoutMs: number): Promise<VerdictCount[]> {
  const url = new URL("api/v1/query", base.endsWith("/") ? base : `${base}/`);
  url.searchParams.set("query", LAST_HOUR_QUERY);
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const body = await res.text();
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${body.slice(0, 200)}`);
  return verdictsFromPrometheus(JSON.parse(body));
}

/** node's fetch cannot take a private CA, so the webhook's self-signed /metrics goes through https. */
async function scrapeVerdicts(url: string, caPem: string | undefined, timeoutMs: number): Promise<VerdictCount[]> {
  const text = url.startsWith("https:") ? await httpsGet(url, caPem, timeoutMs) : await (await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })).text();
  return verdictsFromSamples(parseExposition(text).samples);
}

function httpsGet(url: string, caPem: string | undefined, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca: caPem, timeout: timeoutMs }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`))));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describeError(err: unknown): string {
  const e = err as { code?: number | string; body?: unknown; message?: string };
  if (typeof e?.code === "number") return `HTTP ${e.code}: ${String(typeof e.body === "string" ? e.body : JSON.stringify(e.body ?? "")).slice(0, 300)}`;
  // fetch wraps the socket error ("fetch failed"); the cause chain says what actually happened.
  const reasons: string[] = [];
  for (let cause: any = err; cause && reasons.length < 4; cause = cause.cause) {
    const text = [typeof cause.code === "string" ? cause.code : "", cause.message ?? ""].filter(Boolean).join(" ");
    if (text && !reasons.some((r) => r.includes(text))) reasons.push(text);
  }
  return reasons.reverse().join(" ← ") || String(err);
}
