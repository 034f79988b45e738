// `infergate serve`: the admission webhook server.
import { startServer } from "../admission/server.ts";
import type { AdmissionDeps } from "../admission/handler.ts";
import { PolicyStore } from "../policy/store.ts";
import { plugins } from "../../webhooks/index.ts";
import { createAdmissionMetrics, registerProjectGauges } from "../observability/metrics.ts";
import { createLogger, isLevel, type Level } from "../observability/log.ts";
import { loadKeyPair, watchKeyPair } from "../tls/reload.ts";
import { watchPolicies } from "../kube/policy-watches.ts";
import { loadPolicyInput } from "../policy/sources.ts";
import { reviewPolicyRequest } from "../policy/validation.ts";
import { IN_CLUSTER_ADDRESS, intFlag, parseFlags, UsageError } from "./flags.ts";
import { hostname } from "node:os";
import { QuotaTotals } from "../quota/totals.ts";
import { QuotaLedger, kubeProjectStatusApi } from "../quota/ledger.ts";
import { ledgerLookup, refreshReserved, reserveAfterAdmission, watchQuotaObjects } from "../quota/edge.ts";
import { startReconciler } from "../quota/reconciler.ts";
import { electLeader } from "../kube/leader.ts";
import { loadKubeConfig } from "../kube/kubeconfig.ts";
import { startPodGroupReconciler } from "../podgroups/reconciler.ts";
import { startHpaReconciler } from "../autoscaling/reconciler.ts";
import { DeploymentDigest } from "../autoscaling/deployment-digest.ts";
import { chargeKey } from "../quota/view.ts";
import { milliToGpus, quotaMilliOf } from "../quota/accounting.ts";
import type { AdmissionRequest } from "../admission/types.ts";
import { openTlsSecret, TLS_SECRET_FLAGS, TLS_SECRET_HELP } from "./serve-tls-secret.ts";
import type { SecretCertificates } from "../tls/secret-manager.ts";
import type { PipelineResult } from "../admission/pipeline.ts";
import { MUTATION_TIMEOUT_SECONDS, VALIDATION_TIMEOUT_SECONDS } from "../install/webhook-config.ts";

/**
 * After the drain, how long requests still in flight may take: the longest webhook timeout infergate
 * installs. Past it the API server has given up on them, so closing their connections loses nothing.
 */
const IN_FLIGHT_GRACE_MS = Math.max(MUTATION_TIMEOUT_SECONDS, VALIDATION_TIMEOUT_SECONDS) * 1000;
/** What each shutdown step that talks to the API server may take (Lease release, a write in flight). */
const STEP_TIMEOUT_MS = 1_000;
const HELP = `usage: infergate serve [flags]

  --port N            HTTPS port (default 8443)
  --address ADDR      listen address (default 0.0.0.0; use 127.0.0.1 outside a cluster)
  --cert FILE         serving certificate (default certs/tls.crt); reloaded when it changes
  --key FILE          serving key (default certs/tls.key)
  --policy FILE       static mode: Projects, InferencePolicies (and config-features) from YAML; repeatable
  --kubeconfig FILE   watch policies in this cluster (default: in-cluster config when running in a pod)
  --namespace NS      where the leader-election Lease lives (default $POD_NAMESPACE, else infergate-system)
  --log-level LEVEL   debug, info, warn, error (default info)
  --debug-endpoints   serve GET /debug/cache (the policy store and quota charges) to loopback clients
  --drain-seconds N   on SIGTERM, keep answering N seconds (readyz failing, every answer closing its
                      connection) before closing idle connections and draining (default 2; SIGINT: 0)`;

export async function runServe(argv: string[]): Promise<number> {
  let flags;
  try {
    flags = parseFlags(
      argv,
      {
        port: { type: "string" },
        address: { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        policy: { type: "string", multiple: true },
        kubeconfig: { type: "string" },
        namespace: { type: "string" },
        "log-level": { type: "string" },
        "debug-endpoints": { type: "boolean" },
        "drain-seconds": { type: "string" },
        help: { type: "boolean" },
        ...TLS_SECRET_FLAGS,
      },
      "serve",
    ).values;
    if (flags.help) {
      console.log(HELP + TLS_SECRET_HELP);
      return 0;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(err.message);
      return 2;
    }
    throw err;
  }
  const level = flags["log-level"] ?? "info";
  if (!isLevel(level)) {
    console.error(`--log-level: must be one of debug, info, warn, error, got "${level}"`);
    return 2;
  }
  const logger = createLogger(level as Level);
  let port: number;
  let drainSeconds: number;
  try {
    port = intFlag(flags.port, "port", 8443, 0, 65535);
    drainSeconds = intFlag(flags["drain-seconds"], "drain-seconds", 2, 0, 300);
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  const certFile = flags.cert ?? "certs/tls.crt";
  const keyFile = flags.key ?? "certs/tls.key";
  let pair;
  let certificates: SecretCertificates | undefined;
  if (flags["tls-secret"] !== undefined) {
    const namespace = flags.namespace ?? process.env.POD_NAMESPACE ?? "infergate-system";
    const opened = await openTlsSecret(flags, { address: flags.address ?? IN_CLUSTER_ADDRESS, namespace, logger });
    if ("error" in opened) {
      console.error(opened.error);
      return 2;
    }
    ({ certificates, pair } = opened);
  } else {
    try {
      pair = loadKeyPair(certFile, keyFile);
    } catch (err) {
      console.error(`infergate serve: ${(err as Error).message}\nCreate certificates with: infergate certs --out certs --host localhost --host 127.0.0.1`);
      return 2;
    }
  }

  const store = new PolicyStore();
  const totals = new QuotaTotals((ns) => store.projectOf(ns));
  store.onProjectChange((previous, current) => {
    if (JSON.stringify(previous?.spec) !== JSON.stringify(current?.spec)) totals.recomputeProjects();
    if (current) refreshReserved(totals, current);
    else if (previous) totals.setReservations(previous.metadata.name ?? "", []);
  });
  let synced: () => boolean = () => true;
  // Shutdown, in two parts: `handOver` runs at once, beside the drain (leader-only work stops and the
  // Lease is released, so the next replica takes over within its renew interval rather than after this
  // one's drain); `disconnect` runs once nothing is in flight any more.
  let handOver: (drainMs: number) => Promise<void> = async () => undefined;
  let disconnect: () => Promise<void> = async () => undefined;
  let afterValidate: ((request: AdmissionRequest, result: PipelineResult) => Promise<any>) | undefined;
  if (flags.policy?.length) {
    if (flags.kubeconfig) {
      console.error("infergate serve: --policy (static mode) and --kubeconfig (cluster mode) exclude each other; give one");
      return 2;
    }
    const loaded = loadPolicyInput(flags.policy);
    if (loaded.errors.length) {
      console.error(`infergate serve: bad policy input:\n  ${loaded.errors.join("\n  ")}`);
      return 2;
    }
    loaded.fill(store);
    logger.log("info", "static policy mode", { projects: store.listProjects().length, policies: store.listPolicies().length });
  } else {
    const loaded = loadKubeConfig(flags.kubeconfig);
    if (!loaded.ok) {
      console.error(
        loaded.reason === "no-cluster"
          ? "infergate serve: no policy source; give --policy FILE (static mode) or --kubeconfig FILE, or run inside a cluster"
          : `infergate serve: cannot load kubeconfig: ${loaded.message}`,
      );
      return 2;
    }
    const kc = loaded.kc;
    const watches = watchPolicies(kc, store, logger);
    const statusApi = kubeProjectStatusApi(kc);
    const lookup = ledgerLookup(totals);
    const leader = electLeader({
      kc,
      logger,
      namespace: flags.namespace ?? process.env.POD_NAMESPACE ?? "infergate-system",
      name: "infergate-quota",
      identity: `${hostname()}-${process.pid}`,
    });
    const reconciler = startReconciler({
      api: statusApi,
      lookup,
      workloads: (p) => totals.usage(p).workloads,
      projects: () => store.listProjects(),
      isLeader: leader.isLeader,
      logger,
    });
    // One Deployment watch for the quota totals and the HPA reconciler (see deployment-digest.ts).
    let deploymentsSynced = () => false;
    const deploymentDigest = new DeploymentDigest(() => deploymentsSynced());
    const quotaWatches = watchQuotaObjects(kc, totals, logger, () => reconciler.trigger(), (event, deployment) => deploymentDigest.apply(event, deployment));
    deploymentsSynced = quotaWatches.synced;
    const podGroups = startPodGroupReconciler({ kc, store, logger, isLeader: leader.isLeader, ready: watches.synced });
    const hpas = startHpaReconciler({ kc, store, logger, isLeader: leader.isLeader, ready: watches.synced, deployments: deploymentDigest });
    const ledger = new QuotaLedger({ api: statusApi, lookup, cachedProject: (name) => store.getProject(name) });
    afterValidate = (request) => reserveAfterAdmission(request, store, totals, ledger);
    synced = () => watches.synced() && quotaWatches.synced();
    handOver = async (drainMs) => {
      await Promise.all([reconciler.stop({ timeoutMs: STEP_TIMEOUT_MS }), podGroups.stop(), hpas.stop()]);
      // The release may use the whole drain: this replica still answers admissions meanwhile, and
      // those need no Lease (the ledger's reservations are compare-and-swap writes from any replica).
      await leader.stop({ timeoutMs: drainMs + STEP_TIMEOUT_MS });
    };
    disconnect = async () => {
      await Promise.all([watches.stop(), quotaWatches.stop()]);
      // Aborts whatever still runs on the shared connections: a list, a write abandoned above.
      await kc.close();
    };
  }

  const metrics = createAdmissionMetrics();
  registerProjectGauges(metrics.registry, () =>
    store.listProjects().map((project) => {
      const name = project.metadata.name ?? "";
      const usage = totals.usage(name);
      const quota = quotaMilliOf(project);
      return { project: name, quota: quota === undefined ? undefined : milliToGpus(quota), allocated: usage.allocated, reserved: usage.reserved };
    }),
  );
  const deps: AdmissionDeps = {
    plugins,
    policies: store,
    cluster: () => ({ knativeFeatures: store.knativeFeatures, quota: totals }),
    metrics,
    logger,
    reviewOwnKinds: (request) => reviewPolicyRequest(request, store),
    afterValidate,
  };
  const debugCache = flags["debug-endpoints"] ? () => cacheSnapshot(store, totals, synced()) : undefined;
  const server = await startServer({ address: flags.address ?? IN_CLUSTER_ADDRESS, port, cert: pair.cert, key: pair.key, deps, ready: synced, debugCache });
  certificates?.attach(server, pair);
  const stopCertWatch = certificates ? () => undefined : watchKeyPair(
    certFile,
    keyFile,
    (next) => {
      server.reloadCertificate(next);
      logger.log("info", "serving certificate reloaded", { cert: certFile });
    },
    { onError: (error) => logger.log("warn", "certificate files changed but are not a usable pair yet; still serving the previous one", { error: error.message }) },
  );
  logger.log("info", "infergate webhook listening", { address: server.address, port: server.port });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const started = performance.now();
    // SIGTERM is how Kubernetes stops a pod; SIGINT is a person at a terminal, who should not wait.
    const drainMs = signal === "SIGTERM" ? drainSeconds * 1000 : 0;
    logger.log("info", "shutting down: draining requests in flight", { signal, drainMs });
    // Every step below is bounded; this is the backstop should one of them still hang.
    const budgetMs = drainMs + IN_FLIGHT_GRACE_MS + 2 * STEP_TIMEOUT_MS;
    setTimeout(() => {
      logger.log("warn", "shutdown did not finish in time; exiting anyway", { budgetMs });
      process.exit(0);
    }, budgetMs);
    stopCertWatch();
    const handedOver = handOver(drainMs).catch((err) => logger.log("warn", "handing over leadership failed", { error: String(err?.message ?? err) }));
    // server.close answers what is in flight (with `Connection: close`), then closes every connection,
    // including spare ones a client opened and never used (Go's transport keeps those for 90 s).
    const closed = await Promise.race([server.close(drainMs).then(() => true), sleep(drainMs + IN_FLIGHT_GRACE_MS).then(() => false)]);
    if (!closed) logger.log("warn", "requests still in flight after the webhook timeout; closing their connections", { waitedMs: drainMs + IN_FLIGHT_GRACE_MS });
    await Promise.all([
      handedOver,
      // Its own Lease release and report deletion; bounded, like ours.
      bounded(certificates?.stop() ?? Promise.resolve(), 2 * STEP_TIMEOUT_MS),
    ]);
    await bounded(disconnect(), STEP_TIMEOUT_MS);
    logger.log("info", "stopped", { signal, ms: Math.round(performance.now() - started) });
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  return -1;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Waits for `work` at most `ms`; says whether it finished (a failure counts as finished). */
async function bounded(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const finished = await Promise.race([
    work.then(
      () => true,
      () => true,
    ),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
  ]);
  clearTimeout(timer);
  return finished;
}

/** What `GET /debug/cache` shows: enough to compare this replica's caches with a fresh list from the API server. */
function cacheSnapshot(store: PolicyStore, totals: QuotaTotals, synced: boolean) {
  const identity = (o: { metadata: { name?: string; resourceVersion?: string } }) => ({ name: o.metadata.name ?? "", resourceVersion: o.metadata.resourceVersion ?? "" });
  return {
    synced,
    projects: store.listProjects().map((p) => ({ ...identity(p), usage: totals.usage(p.metadata.name ?? "") })),
    policies: store.listPolicies().map(identity),
    charges: totals.list().map((c) => ({
      key: chargeKey(c.kind, c.namespace, c.name),
      project: c.project,
      pods: c.pods,
      milli: c.milli,
      resourceVersion: c.resourceVersion ?? "",
    })),
  };
}
