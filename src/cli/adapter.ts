// `infergate adapter`: the custom-metrics adapter (custom.metrics.k8s.io behind an APIService).
import { readFileSync } from "node:fs";
import { CoreV1Api, type KubeConfig, type V1ConfigMap, type V1Pod } from "@kubernetes/client-node";
import { loadKubeConfig } from "../kube/kubeconfig.ts";
import { createAdapterMetrics } from "../adapter/adapter-metrics.ts";
import { startAdapterServer } from "../adapter/api.ts";
import {
  AUTHENTICATION_CONFIGMAP,
  DEFAULT_HEADERS,
  cachedAccessReviewer,
  requestHeaderConfigFromConfigMap,
  subjectAccessReviewer,
  type AccessReviewer,
  type RequestHeaderConfig,
} from "../adapter/auth.ts";
import { MetricCache } from "../adapter/cache.ts";
import { createPrometheusSource } from "../adapter/prometheus.ts";
import { createScraper, type TargetResolver } from "../adapter/scraper.ts";
import { watchResource } from "../kube/watch.ts";
import { createLogger, isLevel, type Level, type Logger } from "../observability/log.ts";
import { loadKeyPair, watchKeyPair } from "../tls/reload.ts";
import { IN_CLUSTER_ADDRESS, intFlag, parseFlags, UsageError } from "./flags.ts";

const HELP = `usage: infergate adapter [flags]

Serves custom.metrics.k8s.io (v1beta2, v1beta1) for the HPA: inference_concurrency,
inference_requests_per_second, inference_latency_p50_ms / _p95_ms / _p99_ms, per pod and per
Deployment, Knative Service and Revision.

  --port N                              HTTPS port (default 6443)
  --address ADDR                        listen address (default 0.0.0.0; use 127.0.0.1 outside a cluster)
  --cert FILE                           serving certificate (default certs/tls.crt); reloaded when it changes
  --key FILE                            serving key (default certs/tls.key)
  --kubeconfig FILE                     cluster to watch pods in (default: in-cluster config when running in a pod)
  --requestheader-client-ca-file FILE   front-proxy CA (default: requestheader-client-ca-file from
                                        kube-system/extension-apiserver-authentication)
  --requestheader-allowed-names A,B     allowed front-proxy common names; "" allows any from the CA
                                        (default: requestheader-allowed-names from the same ConfigMap)
  --window DURATION                     window for rates, averages and quantiles (default 60s)
  --scrape-interval DURATION            how often pods (or Prometheus) are read (default 15s)
  --scrape-concurrency N                pods scraped at the same time (default 16)
  --scrape-timeout DURATION             deadline of one scrape or query (default 10s, at most the interval)
  --prometheus-url URL                  read a Prometheus server instead of scraping pods
  --log-level LEVEL                     debug, info, warn, error (default info)

Pods are scraped when ready and annotated with infergate.dev/metrics-port (and optionally
infergate.dev/metrics-path), or prometheus.io/scrape: "true" with prometheus.io/port and prometheus.io/path.`;

/** Injection points for tests that run the adapter as a process of their own. */
export interface AdapterHooks {
  /** Which URL to scrape for a pod; the default dials the pod IP from its annotations. */
  resolveTarget?: TargetResolver;
  /** Authorization decisions; the default asks the API server with a SubjectAccessReview. */
  accessReview?: AccessReviewer;
}

export interface AdapterSettings {
  port: number;
  address: string;
  certFile: string;
  keyFile: string;
  kubeconfig?: string;
  clientCAFile?: string;
  allowedNames?: string[];
  windowMs: number;
  scrapeIntervalMs: number;
  scrapeConcurrency: number;
  scrapeTimeoutMs: number;
  prometheusUrl?: string;
  level: Level;
}

const FLAGS = {
  port: { type: "string" },
  address: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  kubeconfig: { type: "string" },
  "requestheader-client-ca-file": { type: "string" },
  "requestheader-allowed-names": { type: "string" },
  window: { type: "string" },
  "scrape-interval": { type: "string" },
  "scrape-concurrency": { type: "string" },
  "scrape-timeout": { type: "string" },
  "prometheus-url": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean" },
} as const;

/** Go-style durations ("90s", "1m30s", "500ms"); a bare number is seconds. */
export function parseDuration(text: string): number | undefined {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(text)) return undefined;
  let total = 0;
  for (const match of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(match[1]) * units[match[2]!]!;
  return total;
}

/** Flags to settings; every problem is reported, not just the first. */
export function adapterSettings(argv: string[]): { settings?: AdapterSettings; help?: true; errors: string[] } {
  let values;
  try {
    values = parseFlags(argv, FLAGS, "adapter").values;
  } catch (error) {
    if (error instanceof UsageError) return { errors: [error.message] };
    throw error;
  }
  if (values.help) return { help: true, errors: [] };
  const errors: string[] = [];
  const int = (name: string, value: string | undefined, fallback: number, min: number, max: number) => {
    try {
      return intFlag(value, name, fallback, min, max);
    } catch (error) {
      errors.push((error as Error).message);
      return fallback;
    }
  };
  const duration = (name: string, value: string | undefined, fallbackMs: number, minMs: number) => {
    if (value === undefined) return fallbackMs;
    const ms = parseDuration(value);
    if (ms === undefined || ms < minMs) {
      errors.push(`--${name}: must be a duration of at least ${minMs} ms such as "60s", "1m30s" or "500ms", got "${value}"`);
      return fallbackMs;
    }
    return ms;
  };
  const level = values["log-level"] ?? "info";
  if (!isLevel(level)) errors.push(`--log-level: must be one of debug, info, warn, error, got "${level}"`);
  const windowMs = duration("window", values.window, 60_000, 1000);
  const scrapeIntervalMs = duration("scrape-interval", values["scrape-interval"], 15_000, 100);
  const scrapeTimeoutMs = duration("scrape-timeout", values["scrape-timeout"], Math.min(10_000, scrapeIntervalMs), 10);
  if (scrapeTimeoutMs > scrapeIntervalMs) errors.push(`--scrape-timeout (${scrapeTimeoutMs} ms) must not exceed --scrape-interval (${scrapeIntervalMs} ms)`);
  if (windowMs < 2 * scrapeIntervalMs) errors.push(`--window (${windowMs} ms) must hold at least two scrapes: make it at least twice --scrape-interval (${scrapeIntervalMs} ms)`);
  const prometheusUrl = values["prometheus-url"];
  if (prometheusUrl !== undefined && !/^https?:\/\/[^/]/.test(prometheusUrl)) errors.push(`--prometheus-url: must be an http:// or https:// URL, got "${prometheusUrl}"`);
  const allowed = values["requestheader-allowed-names"];
  const settings: AdapterSettings = {
    port: int("port", values.port, 6443, 0, 65535),
    address: values.address ?? IN_CLUSTER_ADDRESS,
    certFile: values.cert ?? "certs/tls.crt",
    keyFile: values.key ?? "certs/tls.key",
    windowMs,
    scrapeIntervalMs,
    scrapeConcurrency: int("scrape-concurrency", values["scrape-concurrency"], 16, 1, 1024),
    scrapeTimeoutMs,
    level: level as Level,
    ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig } : {}),
    ...(values["requestheader-client-ca-file"] !== undefined ? { clientCAFile: values["requestheader-client-ca-file"] } : {}),
    ...(allowed !== undefined ? { allowedNames: allowed.split(",").map((name) => name.trim()).filter((name) => name !== "") } : {}),
    ...(prometheusUrl !== undefined ? { prometheusUrl } : {}),
  };
  return errors.length > 0 ? { errors } : { settings, errors };
}

export async function runAdapter(argv: string[], hooks: AdapterHooks = {}): Promise<number> {
  const parsed = adapterSettings(argv);
  if (parsed.help) {
    console.log(HELP);
    return 0;
  }
  if (!parsed.settings) {
    console.error(`infergate adapter: bad flags:\n  ${parsed.errors.join("\n  ")}`);
    return 2;
  }
  const settings = parsed.settings;
  const logger = createLogger(settings.level);

  let pair;
  try {
    pair = loadKeyPair(settings.certFile, settings.keyFile);
  } catch (error) {
    console.error(`infergate adapter: ${(error as Error).message}\nCreate certificates with: infergate certs --out certs --host localhost --host 127.0.0.1`);
    return 2;
  }
  const loaded = loadKubeConfig(settings.kubeconfig);
  if (!loaded.ok) {
    console.error(
      loaded.reason === "no-cluster"
        ? "infergate adapter: no cluster to watch pods in; give --kubeconfig FILE, or run inside a cluster"
        : `infergate adapter: cannot load kubeconfig: ${loaded.message}`,
    );
    return 2;
  }
  const kc = loaded.kc;

  let overrideCA: string | undefined;
  if (settings.clientCAFile) {
    try {
      overrideCA = readFileSync(settings.clientCAFile, "utf8");
    } catch (error) {
      console.error(`infergate adapter: --requestheader-client-ca-file ${settings.clientCAFile} cannot be read: ${(error as Error).message}`);
      return 2;
    }
    if (!overrideCA.includes("-----BEGIN CERTIFICATE-----")) {
      console.error(`infergate adapter: --requestheader-client-ca-file ${settings.clientCAFile} holds no PEM certificate`);
      return 2;
    }
  }
  const fromFlags = (base: Omit<RequestHeaderConfig, "clientCA" | "allowedNames"> & Partial<RequestHeaderConfig>): RequestHeaderConfig | undefined => {
    const clientCA = overrideCA ?? base.clientCA;
    const allowedNames = settings.allowedNames ?? base.allowedNames;
    return clientCA && allowedNames ? { ...base, clientCA, allowedNames } : undefined;
  };
  const core = kc.makeApiClient(CoreV1Api);
  let requestHeader = fromFlags({ ...DEFAULT_HEADERS });
  let stopConfigWatch: () => Promise<void> = async () => undefined;
  if (!requestHeader) {
    try {
      const configMap = await core.readNamespacedConfigMap(AUTHENTICATION_CONFIGMAP);
      const result = requestHeaderConfigFromConfigMap(configMap.data);
      if (!result.ok) {
        console.error(`infergate adapter: ${result.message}`);
        return 1;
      }
      requestHeader = fromFlags(result.config)!;
    } catch (error) {
      console.error(
        `infergate adapter: cannot read ${AUTHENTICATION_CONFIGMAP.namespace}/${AUTHENTICATION_CONFIGMAP.name} (the adapter needs the extension-apiserver-authentication-reader role, or --requestheader-client-ca-file and --requestheader-allowed-names): ${(error as Error).message}`,
      );
      return 1;
    }
    stopConfigWatch = watchRequestHeaderConfig(kc, core, logger, (config) => {
      requestHeader = fromFlags(config)!;
    });
  }

  const metrics = createAdapterMetrics();
  const cache = new MetricCache({ windowMs: settings.windowMs });
  const pods = watchResource<V1Pod>({
    kc,
    logger,
    name: "pods",
    path: "/api/v1/pods",
    list: () => core.listPodForAllNamespaces(),
    onEvent: (event, pod) => (event === "DELETED" ? cache.removePod(pod.metadata?.namespace ?? "", pod.metadata?.name ?? "") : cache.upsertPod(pod)),
    onSynced: (all) => cache.retainPods(all),
  });

  let stopSource: () => Promise<void>;
  if (settings.prometheusUrl) {
    const source = createPrometheusSource({
      url: settings.prometheusUrl,
      cache,
      windowSeconds: Math.round(settings.windowMs / 1000),
      intervalMs: settings.scrapeIntervalMs,
      timeoutMs: settings.scrapeTimeoutMs,
      metrics,
      logger,
    });
    source.start();
    stopSource = source.stop;
  } else {
    const scraper = createScraper({
      cache,
      pods: () => (pods.synced() ? pods.list() : []),
      ...(hooks.resolveTarget ? { resolveTarget: hooks.resolveTarget } : {}),
      intervalMs: settings.scrapeIntervalMs,
      timeoutMs: settings.scrapeTimeoutMs,
      concurrency: settings.scrapeConcurrency,
      metrics,
      logger,
    });
    scraper.start();
    stopSource = scraper.stop;
  }

  let server;
  try {
    server = await startAdapterServer({
      address: settings.address,
      port: settings.port,
      cert: pair.cert,
      key: pair.key,
      deps: {
        reader: cache,
        requestHeader: () => requestHeader!,
        review: cachedAccessReviewer(hooks.accessReview ?? subjectAccessReviewer(kc)),
        metrics,
        ready: () => pods.synced(),
        logger,
      },
    });
  } catch (error) {
    console.error(`infergate adapter: cannot listen on ${settings.address}:${settings.port}: ${(error as Error).message}`);
    await Promise.all([stopSource(), pods.stop(), stopConfigWatch()]);
    return 1;
  }
  const running = server;
  const stopCertWatch = watchKeyPair(
    settings.certFile,
    settings.keyFile,
    (next) => {
      running.reloadCertificate(next);
      logger.log("info", "serving certificate reloaded", { cert: settings.certFile });
    },
    { onError: (error) => logger.log("warn", "certificate files changed but are not a usable pair yet; still serving the previous one", { error: error.message }) },
  );
  logger.log("info", "infergate adapter listening", {
    address: running.address,
    port: running.port,
    source: settings.prometheusUrl ? "prometheus" : "scrape",
    windowSeconds: Math.round(settings.windowMs / 1000),
  });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.log("info", "shutting down", { signal });
    stopCertWatch();
    await running.close();
    await Promise.all([stopSource(), pods.stop(), stopConfigWatch()]);
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  return -1;
}

/** The API server rewrites the ConfigMap when its front-proxy CA rotates; follow it. */
function watchRequestHeaderConfig(kc: KubeConfig, core: CoreV1Api, logger: Logger, apply: (config: RequestHeaderConfig) => void): () => Promise<void> {
  const { namespace, name } = AUTHENTICATION_CONFIGMAP;
  const watch = watchResource<V1ConfigMap>({
    kc,
    logger,
    name: `${namespace}/${name}`,
    path: `/api/v1/namespaces/${namespace}/configmaps`,
    fieldSelector: `metadata.name=${name}`,
    list: () => core.listNamespacedConfigMap({ namespace, fieldSelector: `metadata.name=${name}` }),
    onEvent: (event, configMap) => {
      if (event === "DELETED") return; // keep the last good settings
      const result = requestHeaderConfigFromConfigMap(configMap.data);
      if (result.ok) apply(result.config);
      else logger.log("warn", "ignoring an unusable requestheader configuration; keeping the previous one", { problem: result.message });
    },
  });
  return () => watch.stop();
}
