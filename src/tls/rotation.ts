// Rotation of the webhook's CA and serving certificate, decided from what the Secret holds. A pure
// plan: the Secret's PEMs, its rotation record (annotations), the clock and the replicas' reports go
// in; one step comes out. The leader (secret-manager.ts) carries the step out, writes the Secret by
// compare-and-swap and publishes the bundle.
//
// The invariant every step keeps: whatever certificate a replica serves, the caBundle the apiserver
// uses trusts it. Both lag the Secret (watches, informers), so
//   - a serving certificate from a new CA is issued only once a bundle holding the old and the new
//     CA has been in every webhook configuration for `propagationMs`;
//   - the old CA leaves the bundle only once every live replica reports serving a certificate from
//     the new CA (or once the old CA has expired, when nothing it signed can verify anyway).
import { X509Certificate, createHash } from "node:crypto";
import { createCA, createServingCert, hostProblem, inspectCert, keyMatchesCert, signingProblem, verifyChain } from "./certificates.ts";

/**
 * - stable: one CA signs the serving certificate; the bundle trusts it.
 * - trusting-new-ca: a new CA is in the bundle (next to the old one); the serving certificate still
 *   comes from the old CA until the bundle has been published long enough.
 * - serving-from-new-ca: the serving certificate comes from the new CA; the old CA stays in the bundle
 *   until every replica serves the new certificate.
 */
export const ROTATION_PHASES = ["stable", "trusting-new-ca", "serving-from-new-ca"] as const;
export type RotationPhase = (typeof ROTATION_PHASES)[number];

/** Keys of the Secret's data. `ca.crt` is always the issuer of `tls.crt`; `ca-bundle.crt` is what clients trust. */
export const SECRET_KEYS = {
  caCert: "ca.crt",
  caKey: "ca.key",
  tlsCert: "tls.crt",
  tlsKey: "tls.key",
  bundle: "ca-bundle.crt",
  nextCaCert: "next-ca.crt",
  nextCaKey: "next-ca.key",
} as const;

export const ANNOTATIONS = {
  phase: "infergate.dev/tls-rotation-phase",
  phaseSince: "infergate.dev/tls-rotation-phase-since",
  publishedBundle: "infergate.dev/tls-published-bundle-sha256",
  publishedAt: "infergate.dev/tls-published-at",
  lastStep: "infergate.dev/tls-last-step",
} as const;

/** PEM text of each entry; absent entries are simply missing. */
export interface TlsMaterial {
  caCert?: string;
  caKey?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** Every CA clients should trust, concatenated PEM. */
  bundle?: string;
  nextCaCert?: string;
  nextCaKey?: string;
}

export interface RotationRecord {
  phase: RotationPhase;
  phaseSince?: Date;
  /** Digest (bundleDigest) of the bundle last seen in every webhook configuration, and since when. */
  publishedBundle?: string;
  publishedAt?: Date;
}

export interface RotationConfig {
  /** DNS names and IP addresses the serving certificate must name. */
  hosts: string[];
  certLifetimeMs: number;
  caLifetimeMs: number;
  /** Renew when this fraction of the configured lifetime is left (1/3: at 2/3 of the lifetime). */
  renewBeforeFraction: number;
  /** How long apiservers may take to use a published bundle, and the least time a phase lasts. */
  propagationMs: number;
}

/** What one replica serves, from its report Lease. */
export interface ReplicaReport {
  identity: string;
  /** certificateDigest of the certificate it serves. */
  servingDigest: string;
  /** The report says nothing after this time (the replica may be gone). */
  expiresAt: Date;
}

export interface RotationInput {
  material: TlsMaterial;
  record: RotationRecord;
  now: Date;
  config: RotationConfig;
  replicas: readonly ReplicaReport[];
}

export type RotationStepKind = "none" | "bootstrap" | "renew-serving" | "add-ca" | "promote-ca" | "drop-old-cas" | "repair-bundle";

export interface RotationStep {
  kind: RotationStepKind;
  /** Why, for logs and the Secret's last-step annotation. */
  reason: string;
}

export interface RotationResult {
  material: TlsMaterial;
  record: RotationRecord;
}

/** The default propagation time: a quarter of the CA's renewal window, at most a minute. */
export function defaultPropagationMs(caLifetimeMs: number, renewBeforeFraction: number): number {
  return Math.min(60_000, Math.floor((caLifetimeMs * renewBeforeFraction) / 4));
}

/** Every problem with a configuration, each naming the setting, its value and what is allowed. */
export function rotationConfigProblems(config: RotationConfig): string[] {
  const problems: string[] = [];
  if (config.hosts.length === 0) problems.push("hosts: none given; the serving certificate needs at least one DNS name or IP address");
  for (const host of config.hosts) {
    const problem = hostProblem(host);
    if (problem !== undefined) problems.push(`hosts: ${problem}`);
  }
  for (const [name, value] of [
    ["certLifetime", config.certLifetimeMs],
    ["caLifetime", config.caLifetimeMs],
  ] as const) {
    if (!Number.isInteger(value) || value < 1000 || value % 1000 !== 0) problems.push(`${name}: ${value} ms; allowed: whole seconds, at least 1s`);
  }
  const fraction = config.renewBeforeFraction;
  if (!(fraction > 0 && fraction < 1)) problems.push(`renewBeforeFraction: ${fraction}; allowed: a number between 0 and 1 (exclusive)`);
  if (!(config.propagationMs >= 0)) problems.push(`propagation: ${config.propagationMs} ms; allowed: 0 or more`);
  // Both halves of a CA rotation wait propagationMs; the old CA must outlive them.
  const window = config.caLifetimeMs * fraction;
  if (problems.length === 0 && 2 * config.propagationMs >= window) {
    problems.push(
      `propagation: ${config.propagationMs} ms is too long for a CA renewed ${Math.round(window / 1000)}s before expiry; allowed: less than half of that window`,
    );
  }
  return problems;
}

export function planRotation(input: RotationInput): RotationStep {
  const { material: m, record, now, config } = input;
  const caProblem = caProblemOf(m.caCert, m.caKey, now);
  const nextProblem = caProblemOf(m.nextCaCert, m.nextCaKey, now);
  const phase = record.phase;

  if (caProblem !== undefined) {
    if (phase === "trusting-new-ca" && nextProblem === undefined) return step("promote-ca", `the current CA cannot sign (${caProblem}); switching to the new CA early`);
    return step("bootstrap", caProblem);
  }
  const serving = servingNeed(m, config, now);

  if (phase === "trusting-new-ca") {
    if (nextProblem !== undefined) return step("add-ca", `the new CA is unusable (${nextProblem}); making another`);
    const missing = missingFromBundle(m, [m.caCert!, m.nextCaCert!]);
    if (missing) return step("repair-bundle", missing);
    // The old CA can still sign, and unlike the new one it is trusted everywhere already.
    if (serving.broken !== undefined) return step("renew-serving", `${serving.broken} (issued from the old CA: the new one may not be trusted yet)`);
    const published = record.publishedBundle === bundleDigest(m.bundle ?? "") && record.publishedAt !== undefined;
    if (published && now.getTime() - record.publishedAt!.getTime() >= config.propagationMs) {
      return step("promote-ca", `the bundle with both CAs has been published since ${record.publishedAt!.toISOString()}`);
    }
    if (serving.due !== undefined) return step("renew-serving", `${serving.due} (still from the old CA: the new bundle is not published long enough)`);
    return step("none", published ? "waiting for the published bundle to propagate" : "waiting for the bundle with both CAs to be published");
  }

  const missing = missingFromBundle(m, [m.caCert!]);
  if (missing) return step("repair-bundle", missing);
  if (serving.broken !== undefined) return step("renew-serving", serving.broken);

  if (phase === "serving-from-new-ca") {
    const others = bundleCertificates(m.bundle).filter((pem) => digestOf(pem) !== digestOf(m.caCert!));
    if (others.every((pem) => isPastExpiry(pem, now))) {
      return step("drop-old-cas", others.length === 0 ? "no old CA is left in the bundle" : "the old CAs have expired");
    }
    if (serving.due !== undefined) return step("renew-serving", serving.due);
    const since = record.phaseSince?.getTime() ?? 0;
    if (now.getTime() - since < config.propagationMs) return step("none", "giving replicas time to load the certificate from the new CA");
    const live = input.replicas.filter((report) => report.expiresAt.getTime() > now.getTime());
    const servingDigest = certificateDigest(m.tlsCert!);
    const behind = live.filter((report) => report.servingDigest !== servingDigest);
    if (live.length === 0) return step("none", "no replica has reported what it serves; keeping the old CA until it expires");
    if (behind.length > 0) return step("none", `waiting for ${behind.map((r) => r.identity).join(", ")} to serve the certificate from the new CA`);
    return step("drop-old-cas", `all ${live.length} replica(s) serve the certificate from the new CA`);
  }

  const expired = bundleCertificates(m.bundle).filter((pem) => isPastExpiry(pem, now));
  if (expired.length > 0) return step("repair-bundle", `${expired.length} expired CA(s) in the bundle`);
  const caDueAt = inspectCert(m.caCert!).notAfter.getTime() - config.caLifetimeMs * config.renewBeforeFraction;
  if (now.getTime() >= caDueAt) return step("add-ca", `the CA is due for rotation since ${new Date(caDueAt).toISOString()}`);
  if (serving.due !== undefined) return step("renew-serving", serving.due);
  return step("none", "certificates are current");
}

/** Makes the certificates a step calls for. Deterministic except for the keys and serial numbers. */
export function carryOut(planned: RotationStep, input: RotationInput): RotationResult {
  const { material: m, record, now, config } = input;
  const moved = (phase: RotationPhase): RotationRecord => ({ ...record, phase, phaseSince: now });
  const current = (): string[] => bundleCertificates(m.bundle).filter((pem) => !isPastExpiry(pem, now));
  switch (planned.kind) {
    case "none":
      return { material: m, record };
    case "bootstrap": {
      const ca = newCA(config, now);
      const leftovers = current();
      const serving = issueServing(ca, config, now);
      const material: TlsMaterial = { caCert: ca.certPem, caKey: ca.keyPem, tlsCert: serving.certPem, tlsKey: serving.keyPem, bundle: joinBundle([ca.certPem, ...leftovers]) };
      // Replicas may still serve a certificate from a CA that stays trusted for now: drop it the usual way.
      return { material, record: moved(leftovers.length > 0 ? "serving-from-new-ca" : "stable") };
    }
    case "renew-serving": {
      const serving = issueServing({ certPem: m.caCert!, keyPem: m.caKey! }, config, now);
      return { material: { ...m, tlsCert: serving.certPem, tlsKey: serving.keyPem }, record };
    }
    case "add-ca": {
      const next = newCA(config, now);
      const previousNext = m.nextCaCert === undefined ? undefined : digestOf(m.nextCaCert);
      const kept = current().filter((pem) => previousNext === undefined || digestOf(pem) !== previousNext);
      return {
        material: { ...m, nextCaCert: next.certPem, nextCaKey: next.keyPem, bundle: joinBundle([m.caCert!, ...kept, next.certPem]) },
        record: moved("trusting-new-ca"),
      };
    }
    case "promote-ca": {
      const ca = { certPem: m.nextCaCert!, keyPem: m.nextCaKey! };
      const serving = issueServing(ca, config, now);
      const material: TlsMaterial = {
        caCert: ca.certPem,
        caKey: ca.keyPem,
        tlsCert: serving.certPem,
        tlsKey: serving.keyPem,
        // Same order as published, so an unchanged bundle is not published again.
        bundle: joinBundle([...current(), ca.certPem]),
      };
      return { material, record: moved("serving-from-new-ca") };
    }
    case "drop-old-cas":
      return { material: { ...m, bundle: joinBundle([m.caCert!]) }, record: moved("stable") };
    case "repair-bundle": {
      const wanted = [m.caCert!, ...(record.phase === "trusting-new-ca" && m.nextCaCert ? [m.nextCaCert] : [])];
      return { material: { ...m, bundle: joinBundle([...wanted, ...current()]) }, record };
    }
  }
}

// --- Secret mapping ------------------------------------------------------------------------------

/** Reads the Secret's base64 data; entries that are not valid text are left out. */
export function materialFromSecretData(data: Record<string, string> | undefined): TlsMaterial {
  const text = (key: string): string | undefined => {
    const value = data?.[key];
    if (value === undefined || value === "") return undefined;
    return Buffer.from(value, "base64").toString("utf8");
  };
  const material: TlsMaterial = {};
  for (const [field, key] of Object.entries(SECRET_KEYS) as [keyof TlsMaterial, string][]) {
    const value = text(key);
    if (value !== undefined) material[field] = value;
  }
  return material;
}

export function secretDataOf(material: TlsMaterial): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [field, key] of Object.entries(SECRET_KEYS) as [keyof TlsMaterial, string][]) {
    const value = material[field];
    if (value !== undefined) data[key] = Buffer.from(value, "utf8").toString("base64");
  }
  return data;
}

export function recordFromAnnotations(annotations: Record<string, string> | undefined): RotationRecord {
  const phase = annotations?.[ANNOTATIONS.phase];
  const date = (key: string): Date | undefined => {
    const value = annotations?.[key];
    const parsed = value === undefined ? Number.NaN : Date.parse(value);
    return Number.isNaN(parsed) ? undefined : new Date(parsed);
  };
  const record: RotationRecord = { phase: (ROTATION_PHASES as readonly string[]).includes(phase ?? "") ? (phase as RotationPhase) : "stable" };
  const phaseSince = date(ANNOTATIONS.phaseSince);
  if (phaseSince) record.phaseSince = phaseSince;
  const publishedBundle = annotations?.[ANNOTATIONS.publishedBundle];
  const publishedAt = date(ANNOTATIONS.publishedAt);
  if (publishedBundle && publishedAt) {
    record.publishedBundle = publishedBundle;
    record.publishedAt = publishedAt;
  }
  return record;
}

export function annotationsOf(record: RotationRecord, lastStep?: RotationStep): Record<string, string> {
  const annotations: Record<string, string> = { [ANNOTATIONS.phase]: record.phase };
  if (record.phaseSince) annotations[ANNOTATIONS.phaseSince] = record.phaseSince.toISOString();
  if (record.publishedBundle && record.publishedAt) {
    annotations[ANNOTATIONS.publishedBundle] = record.publishedBundle;
    annotations[ANNOTATIONS.publishedAt] = record.publishedAt.toISOString();
  }
  if (lastStep) annotations[ANNOTATIONS.lastStep] = `${lastStep.kind}: ${lastStep.reason}`.slice(0, 1024);
  return annotations;
}

// --- digests and bundles -------------------------------------------------------------------------

/** Hex SHA-256 of a certificate's DER (the first one in `pem`), as replicas report it. */
export function certificateDigest(pem: string): string {
  return createHash("sha256").update(new X509Certificate(pem).raw).digest("hex");
}

/** Hex SHA-256 of a bundle's certificates in order, independent of PEM line endings. */
export function bundleDigest(bundle: string): string {
  const hash = createHash("sha256");
  for (const pem of bundleCertificates(bundle)) hash.update(digestOf(pem) ?? pem);
  return hash.digest("hex");
}

export function bundleCertificates(bundle: string | undefined): string[] {
  return bundle?.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((pem) => `${pem}\n`) ?? [];
}

// --- internals -----------------------------------------------------------------------------------

function step(kind: RotationStepKind, reason: string): RotationStep {
  return { kind, reason };
}

function caProblemOf(certPem: string | undefined, keyPem: string | undefined, now: Date): string | undefined {
  if (certPem === undefined || keyPem === undefined) return "no CA certificate and key";
  return signingProblem({ certPem, keyPem }, now);
}

/** `broken`: must be reissued now; `due`: the renewal time has come. */
function servingNeed(m: TlsMaterial, config: RotationConfig, now: Date): { broken?: string; due?: string } {
  if (m.tlsCert === undefined || m.tlsKey === undefined) return { broken: "no serving certificate and key" };
  if (!keyMatchesCert(m.tlsCert, m.tlsKey)) return { broken: "the serving key does not belong to the serving certificate" };
  if (!verifyChain(m.tlsCert, [m.caCert!], now)) return { broken: "the serving certificate is not valid now or not issued by the current CA" };
  const info = inspectCert(m.tlsCert);
  const missingHosts = config.hosts.filter((host) => !info.sans.includes(host));
  if (missingHosts.length > 0) return { broken: `the serving certificate does not name ${missingHosts.join(", ")}` };
  const dueAt = info.notAfter.getTime() - config.certLifetimeMs * config.renewBeforeFraction;
  // A certificate capped at its CA's expiry gains nothing from renewal; the CA rotation replaces it.
  const caNotAfter = inspectCert(m.caCert!).notAfter.getTime();
  if (now.getTime() >= dueAt && caNotAfter - info.notAfter.getTime() >= 1000) {
    return { due: `the serving certificate is due for renewal since ${new Date(dueAt).toISOString()}` };
  }
  return {};
}

function missingFromBundle(m: TlsMaterial, required: string[]): string | undefined {
  const present = new Set(bundleCertificates(m.bundle).map(digestOf));
  const absent = required.filter((pem) => !present.has(digestOf(pem)));
  if (absent.length === 0) return undefined;
  return `the bundle lacks ${absent.map((pem) => inspectCert(pem).subjectCN).join(", ")}`;
}

function newCA(config: RotationConfig, now: Date) {
  // A distinct name per CA keeps old and new apart in logs and in clients that look issuers up by name.
  // forge writes the name as a PrintableString, which Go's parser (the apiserver's) holds to its
  // character set: no '@', '_' or '*'.
  return createCA({ commonName: `infergate-webhook-ca-${Math.floor(now.getTime() / 1000)}`, now, validitySeconds: config.caLifetimeMs / 1000 });
}

function issueServing(ca: { certPem: string; keyPem: string }, config: RotationConfig, now: Date) {
  return createServingCert({ ca, hosts: config.hosts, now, validitySeconds: config.certLifetimeMs / 1000 });
}

function joinBundle(pems: string[]): string {
  const seen = new Set<string>();
  const kept: string[] = [];
  for (const pem of pems) {
    const digest = digestOf(pem);
    if (digest === undefined || seen.has(digest)) continue;
    seen.add(digest);
    kept.push(`${pem.replace(/\r\n/g, "\n").trim()}\n`);
  }
  return kept.join("");
}

function digestOf(pem: string): string | undefined {
  try {
    return certificateDigest(pem);
  } catch {
    return undefined;
  }
}

function isPastExpiry(pem: string, now: Date): boolean {
  try {
    return new X509Certificate(pem).validToDate.getTime() < now.getTime();
  } catch {
    return true;
  }
}
