// Certificates kept in a Secret, managed by infergate itself (`infergate serve --tls-secret NAME`).
// - The replica holding the Lease named after the Secret runs rotation.ts's plan every few seconds:
//   it creates or updates the Secret by compare-and-swap, and patches the Secret's CA bundle into both
//   webhook configurations and the custom-metrics APIServices, recording in the Secret when it did.
// - Every replica watches the Secret and switches its TLS context when tls.crt/tls.key change (no
//   restart), then says which certificate it serves in a small Lease of its own; the leader reads
//   those reports before it drops an old CA from the bundle.
import { createHash } from "node:crypto";
import {
  AdmissionregistrationV1Api,
  ApiregistrationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  V1MicroTime,
  type KubeConfig,
  type V1Lease,
  type V1Secret,
} from "@kubernetes/client-node";
import { electLeader } from "../kube/leader.ts";
import { watchResource } from "../kube/watch.ts";
import type { Logger } from "../observability/log.ts";
import { caBundle, inspectCert, keyMatchesCert } from "./certificates.ts";
import type { KeyPair } from "./reload.ts";
import {
  ANNOTATIONS,
  SECRET_KEYS,
  annotationsOf,
  bundleCertificates,
  bundleDigest,
  carryOut,
  certificateDigest,
  materialFromSecretData,
  planRotation,
  recordFromAnnotations,
  secretDataOf,
  type ReplicaReport,
  type RotationConfig,
  type RotationResult,
  type RotationStep,
} from "./rotation.ts";

export const DEFAULT_TLS_SECRET = "infergate-webhook-tls";
export const CUSTOM_METRICS_APISERVICES = ["v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"];
/** On each replica's report Lease: which Secret it serves from. */
export const REPORT_LABEL = "infergate.dev/tls-secret";
/** On each replica's report Lease: certificateDigest of what it serves. */
export const REPORT_ANNOTATION = "infergate.dev/serving-certificate-sha256";

export interface SecretCertificatesOptions {
  kc: KubeConfig;
  namespace: string;
  secretName: string;
  /** Unique per replica (leader election and reports). */
  identity: string;
  logger: Logger;
  config: RotationConfig;
  /** Name of both the MutatingWebhookConfiguration and the ValidatingWebhookConfiguration. */
  webhookConfigName: string;
  /** APIServices that get the bundle when they exist. */
  apiServices?: string[];
  /** How often the leader checks; default from the lifetimes, 1 s to 30 s. */
  checkEveryMs?: number;
  /** How often a replica renews its report; default from the propagation time, 1 s to 30 s. */
  reportEveryMs?: number;
}

export interface ServerWithCertificate {
  reloadCertificate(pair: KeyPair): void;
}

export interface SecretCertificates {
  /** The Secret's first usable pair; the leader creates the Secret if it does not exist. */
  firstPair(): Promise<KeyPair>;
  /** From now on, `server` (which serves `serving`) gets each new pair from the Secret. */
  attach(server: ServerWithCertificate, serving: KeyPair): void;
  stop(): Promise<void>;
}

// Report Leases unrenewed this long belong to replicas that are gone for good.
const STALE_REPORT_MS = 60 * 60 * 1000;

export function startSecretCertificates(opts: SecretCertificatesOptions): SecretCertificates {
  const { kc, namespace, secretName, identity, logger, config } = opts;
  const core = kc.makeApiClient(CoreV1Api);
  const leases = kc.makeApiClient(CoordinationV1Api);
  const admission = kc.makeApiClient(AdmissionregistrationV1Api);
  const registration = kc.makeApiClient(ApiregistrationV1Api);
  const apiServices = opts.apiServices ?? CUSTOM_METRICS_APISERVICES;
  const checkEveryMs = opts.checkEveryMs ?? clamp(Math.min(config.certLifetimeMs * config.renewBeforeFraction, config.propagationMs) / 5, 1000, 30_000);
  const reportEveryMs = opts.reportEveryMs ?? clamp(config.propagationMs / 2, 1000, 30_000);
  const reportLeaseSeconds = Math.ceil((3 * reportEveryMs) / 1000);
  const reportLabelValue = labelValue(secretName);
  const reportName = `${secretName}-${createHash("sha256").update(identity).digest("hex").slice(0, 10)}`;
  const secretRef = { namespace, name: secretName };
  const where = `${namespace}/${secretName}`;

  let stopped = false;
  let latest: KeyPair | undefined;
  let served: KeyPair | undefined;
  let server: ServerWithCertificate | undefined;
  let waiting: ((pair: KeyPair) => void)[] = [];
  let lastUnusable: string | undefined;
  let lastWait: string | undefined;
  let reconciling = false;
  let reporting: Promise<void> = Promise.resolve();

  // --- every replica: follow the Secret -----------------------------------------------------------

  const take = (secret: V1Secret) => {
    const material = materialFromSecretData(secret.data);
    if (material.tlsCert === undefined || material.tlsKey === undefined || !keyMatchesCert(material.tlsCert, material.tlsKey)) {
      const problem = "the Secret has no usable tls.crt/tls.key pair yet";
      if (problem !== lastUnusable) logger.log("warn", problem, { secret: where });
      lastUnusable = problem;
      return;
    }
    lastUnusable = undefined;
    if (latest?.cert === material.tlsCert && latest.key === material.tlsKey) return;
    latest = { cert: material.tlsCert, key: material.tlsKey };
    for (const resolve of waiting) resolve(latest);
    waiting = [];
    serveLatest();
  };

  const serveLatest = () => {
    if (!server || !latest || (served?.cert === latest.cert && served.key === latest.key)) return;
    server.reloadCertificate(latest);
    served = latest;
    const info = inspectCert(latest.cert);
    logger.log("info", "serving certificate reloaded from Secret", {
      secret: where,
      sha256: certificateDigest(latest.cert),
      notAfter: info.notAfter.toISOString(),
    });
    report();
  };

  const secretWatch = watchResource<V1Secret>({
    kc,
    logger,
    name: `secret ${where}`,
    path: `/api/v1/namespaces/${namespace}/secrets`,
    fieldSelector: `metadata.name=${secretName}`,
    list: () => core.listNamespacedSecret({ namespace, fieldSelector: `metadata.name=${secretName}` }),
    // A deleted Secret changes nothing here: the leader writes a new one, and until then the current
    // certificate is still the best there is.
    onEvent: (event, secret) => {
      if (event !== "DELETED") take(secret);
    },
  });

  // --- every replica: report what it serves -------------------------------------------------------

  const report = () => {
    reporting = reporting.then(writeReport).catch((err: unknown) => {
      logger.log("warn", "cannot write the serving-certificate report Lease", { lease: `${namespace}/${reportName}`, error: messageOf(err) });
    });
  };

  const writeReport = async () => {
    if (stopped || !served) return;
    const metadata = {
      name: reportName,
      namespace,
      labels: { [REPORT_LABEL]: reportLabelValue, "app.kubernetes.io/name": "infergate" },
      annotations: { [REPORT_ANNOTATION]: certificateDigest(served.cert) },
    };
    const spec = { holderIdentity: identity, leaseDurationSeconds: reportLeaseSeconds, renewTime: new V1MicroTime() };
    let existing: V1Lease | undefined;
    try {
      existing = await leases.readNamespacedLease({ namespace, name: reportName });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
    if (existing === undefined) {
      await leases.createNamespacedLease({ namespace, body: { metadata, spec } });
    } else {
      await leases.replaceNamespacedLease({
        namespace,
        name: reportName,
        body: { ...existing, metadata: { ...existing.metadata, ...metadata, resourceVersion: existing.metadata?.resourceVersion }, spec },
      });
    }
  };

  const heartbeat = setInterval(report, reportEveryMs);
  heartbeat.unref();

  // --- the leader: rotate and publish -------------------------------------------------------------

  const readSecret = async (): Promise<V1Secret | undefined> => {
    try {
      return await core.readNamespacedSecret(secretRef);
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  };

  const replicaReports = async (now: Date): Promise<ReplicaReport[]> => {
    const list = await leases.listNamespacedLease({ namespace, labelSelector: `${REPORT_LABEL}=${reportLabelValue}` });
    const reports: ReplicaReport[] = [];
    for (const lease of list.items) {
      const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime as unknown as string).getTime() : Number.NaN;
      const expiresAt = new Date(renewed + (lease.spec?.leaseDurationSeconds ?? 0) * 1000);
      const digest = lease.metadata?.annotations?.[REPORT_ANNOTATION];
      if (Number.isNaN(expiresAt.getTime()) || !digest) continue;
      if (now.getTime() - expiresAt.getTime() > STALE_REPORT_MS && lease.metadata?.name) {
        await leases.deleteNamespacedLease({ namespace, name: lease.metadata.name }).catch(() => undefined);
        continue;
      }
      reports.push({ identity: lease.spec?.holderIdentity ?? lease.metadata?.name ?? "?", servingDigest: digest, expiresAt });
    }
    return reports;
  };

  const writeSecret = async (existing: V1Secret | undefined, result: RotationResult, planned?: RotationStep): Promise<V1Secret> => {
    const ours = new Set<string>([...Object.values(SECRET_KEYS)]);
    const ourAnnotations = new Set<string>(Object.values(ANNOTATIONS));
    const keptData = Object.fromEntries(Object.entries(existing?.data ?? {}).filter(([key]) => !ours.has(key)));
    const keptAnnotations = Object.fromEntries(Object.entries(existing?.metadata?.annotations ?? {}).filter(([key]) => !ourAnnotations.has(key)));
    const lastStep = existing?.metadata?.annotations?.[ANNOTATIONS.lastStep];
    const annotations = { ...keptAnnotations, ...(lastStep ? { [ANNOTATIONS.lastStep]: lastStep } : {}), ...annotationsOf(result.record, planned) };
    const data = { ...keptData, ...secretDataOf(result.material) };
    if (existing === undefined) {
      return core.createNamespacedSecret({
        namespace,
        body: {
          apiVersion: "v1",
          kind: "Secret",
          type: "kubernetes.io/tls",
          metadata: { name: secretName, namespace, labels: { "app.kubernetes.io/name": "infergate" }, annotations },
          data,
        },
      });
    }
    // resourceVersion makes this a compare-and-swap: a concurrent writer (a second leader during a
    // Lease handover, a person) makes it fail with 409, and the next check starts from what they wrote.
    return core.replaceNamespacedSecret({ ...secretRef, body: { ...existing, metadata: { ...existing.metadata, annotations }, data } });
  };

  /** Puts `bundle` into every webhook entry and APIService that lacks it; says which objects changed. */
  const publish = async (encoded: string): Promise<string[]> => {
    const changed: string[] = [];
    const name = opts.webhookConfigName;
    const mutating = await orUndefined(admission.readMutatingWebhookConfiguration({ name }));
    if (mutating && (mutating.webhooks ?? []).some((webhook) => webhook.clientConfig.caBundle !== encoded)) {
      for (const webhook of mutating.webhooks ?? []) webhook.clientConfig.caBundle = encoded;
      await admission.replaceMutatingWebhookConfiguration({ name, body: mutating });
      changed.push(`MutatingWebhookConfiguration/${name}`);
    }
    const validating = await orUndefined(admission.readValidatingWebhookConfiguration({ name }));
    if (validating && (validating.webhooks ?? []).some((webhook) => webhook.clientConfig.caBundle !== encoded)) {
      for (const webhook of validating.webhooks ?? []) webhook.clientConfig.caBundle = encoded;
      await admission.replaceValidatingWebhookConfiguration({ name, body: validating });
      changed.push(`ValidatingWebhookConfiguration/${name}`);
    }
    for (const apiService of apiServices) {
      const found = await orUndefined(registration.readAPIService({ name: apiService }));
      // The API server refuses a caBundle next to insecureSkipTLSVerify; that choice is the admin's.
      if (!found?.spec || found.spec.insecureSkipTLSVerify || found.spec.caBundle === encoded) continue;
      found.spec.caBundle = encoded;
      await registration.replaceAPIService({ name: apiService, body: found });
      changed.push(`APIService/${apiService}`);
    }
    return changed;
  };

  const reconcileOnce = async () => {
    const now = new Date();
    let secret = await readSecret();
    const input = {
      material: materialFromSecretData(secret?.data),
      record: recordFromAnnotations(secret?.metadata?.annotations),
      now,
      config,
      replicas: await replicaReports(now),
    };
    const planned = planRotation(input);
    if (planned.kind === "none") {
      if (planned.reason !== lastWait) logger.log("debug", "certificate rotation: nothing to do", { secret: where, reason: planned.reason });
      lastWait = planned.reason;
    } else {
      lastWait = undefined;
      const result = carryOut(planned, input);
      secret = await writeSecret(secret, result, planned);
      logger.log("info", "certificate rotation step", { secret: where, step: planned.kind, reason: planned.reason, phase: result.record.phase });
    }
    const material = materialFromSecretData(secret?.data);
    if (!secret || material.bundle === undefined) return;
    const changed = await publish(caBundle(bundleCertificates(material.bundle)));
    const record = recordFromAnnotations(secret.metadata?.annotations);
    const digest = bundleDigest(material.bundle);
    if (changed.length === 0 && record.publishedBundle === digest) return;
    // Recorded after the writes succeeded, so "published at" is never earlier than the truth.
    await writeSecret(secret, { material, record: { ...record, publishedBundle: digest, publishedAt: new Date() } });
    logger.log("info", "CA bundle published", { secret: where, cas: bundleCertificates(material.bundle).length, objects: changed });
  };

  const reconcile = async () => {
    if (reconciling || stopped) return;
    reconciling = true;
    try {
      await reconcileOnce();
    } catch (err) {
      const status = statusOf(err);
      // 409: someone else wrote first; the next check starts from their version.
      logger.log(status === 409 ? "info" : "warn", "certificate rotation check failed; retrying", { secret: where, status, error: messageOf(err) });
    } finally {
      reconciling = false;
    }
  };

  const election = electLeader({
    kc,
    logger,
    namespace,
    name: secretName,
    identity,
    onChange: (leader) => {
      if (leader) void reconcile();
    },
  });
  const ticker = setInterval(() => {
    if (election.isLeader()) void reconcile();
  }, checkEveryMs);
  ticker.unref();

  return {
    firstPair() {
      if (latest) return Promise.resolve(latest);
      logger.log("info", "waiting for the serving certificate in Secret", { secret: where });
      return new Promise((resolve) => waiting.push(resolve));
    },
    attach(target, serving) {
      server = target;
      served = serving;
      report();
      serveLatest();
    },
    async stop() {
      stopped = true;
      clearInterval(ticker);
      clearInterval(heartbeat);
      await election.stop();
      await secretWatch.stop();
      await reporting;
      // Leaving at once spares the leader waiting for this replica's report to expire.
      await leases.deleteNamespacedLease({ namespace, name: reportName }).catch(() => undefined);
    },
  };
}

/** A label value standing for `name`: itself when it fits, else a digest. */
function labelValue(name: string): string {
  return name.length <= 63 ? name : createHash("sha256").update(name).digest("hex").slice(0, 63);
}

async function orUndefined<T>(request: Promise<T>): Promise<T | undefined> {
  try {
    return await request;
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw err;
  }
}

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "number" ? code : undefined;
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, Math.round(value)));
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
