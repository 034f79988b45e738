// Certificates for the webhook server, the metrics adapter and tests. node-forge builds and signs
// (it is pure JavaScript and needs no openssl binary); node:crypto makes the RSA keys, because forge's
// own prime search takes seconds per 2048-bit key, and reads certificates back, because it parses
// every key type (cert-manager may hand us ECDSA) where forge only knows RSA.
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import forge from "node-forge";

// PrintableString (forge's default) cannot hold "@", "_" or "*", which Go's x509 parser then rejects;
// UTF8String carries any common name.
const UTF8 = forge.asn1.Type.UTF8;

const { pki } = forge;

export interface PemPair {
  certPem: string;
  keyPem: string;
}

export interface CertificateInfo {
  notBefore: Date;
  notAfter: Date;
  subjectCN: string;
  /** DNS names as written, IP addresses in their canonical text form. */
  sans: string[];
  isCA: boolean;
}

const DAY_MS = 24 * 60 * 60 * 1000;
// Another node's clock may run behind ours; a certificate that is "not yet valid" there fails every
// handshake, so validity starts a little in the past (as Kubernetes' own self-signed certs do).
const CLOCK_SKEW_MS = 60 * 60 * 1000;

export function createCA(options: { commonName: string; now: Date; validityDays?: number; validitySeconds?: number }): PemPair {
  const { commonName, now, validityDays = 3650 } = options;
  const validityMs = validityMsOf(validityDays, options.validitySeconds);
  const key = newRsaKey();
  const cert = pki.createCertificate();
  cert.serialNumber = randomSerial();
  cert.publicKey = key.publicKey;
  cert.validity.notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  cert.validity.notAfter = new Date(now.getTime() + validityMs);
  const subject = [{ name: "commonName", value: commonName, valueTagClass: UTF8 as any }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    // pathLen 0: this CA signs leaves only, never another CA.
    { name: "basicConstraints", cA: true, pathLenConstraint: 0, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(key.privateKey, forge.md.sha256.create());
  return { certPem: certificateToPem(cert), keyPem: key.pem };
}

export function createServingCert(options: {
  ca: PemPair;
  hosts: string[];
  now: Date;
  validityDays?: number;
  /** Overrides validityDays: short-lived certificates (rotation tests, frequent renewal). */
  validitySeconds?: number;
  commonName?: string;
}): PemPair {
  const { ca, hosts, now, validityDays = 365 } = options;
  const validityMs = validityMsOf(validityDays, options.validitySeconds);
  if (hosts.length === 0) throw new Error("a serving certificate needs at least one host (DNS name or IP address)");
  const problems = hosts.map(hostProblem).filter((problem) => problem !== undefined);
  if (problems.length > 0) throw new Error(`invalid hosts: ${problems.join("; ")}`);
  const unique = [...new Set(hosts)];
  return issueLeaf({
    ca,
    now,
    validityMs,
    // X.520 caps a common name at 64 characters; clients match SANs, so the CN is only a label.
    subject: [{ name: "commonName", value: options.commonName ?? (unique[0]!.length <= 64 ? unique[0]! : "infergate"), valueTagClass: UTF8 as any }],
    extensions: [
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: unique.map(subjectAltName) },
    ],
  });
}

/**
 * A client certificate as Kubernetes reads it: CN is the user name, each O is a group (for example
 * the aggregator's front-proxy client, or `system:masters` for a local admin).
 */
export function createClientCert(options: {
  ca: PemPair;
  commonName: string;
  organizations?: string[];
  now: Date;
  validityDays?: number;
}): PemPair {
  const { ca, commonName, organizations = [], now, validityDays = 365 } = options;
  return issueLeaf({
    ca,
    now,
    validityMs: validityMsOf(validityDays, undefined),
    subject: [
      ...organizations.map((organization) => ({ name: "organizationName", value: organization })),
      { name: "commonName", value: commonName, valueTagClass: UTF8 as any },
    ],
    extensions: [
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
      { name: "extKeyUsage", clientAuth: true },
    ],
  });
}

export function inspectCert(pem: string): CertificateInfo {
  const cert = new X509Certificate(pem);
  return {
    notBefore: cert.validFromDate,
    notAfter: cert.validToDate,
    subjectCN: commonNameOf(cert.subject),
    sans: parseSubjectAltName(cert.subjectAltName ?? ""),
    isCA: cert.ca,
  };
}

export function isExpired(pem: string, now: Date): boolean {
  return now.getTime() > new X509Certificate(pem).validToDate.getTime();
}

/** The base64 value for a webhook's or APIService's `caBundle`. */
export function caBundle(pems: string[]): string {
  const text = pems.map((pem) => `${pem.replace(/\r\n/g, "\n").trim()}\n`).join("");
  return Buffer.from(text, "utf8").toString("base64");
}

/**
 * Was `certPem` (a leaf, optionally followed by intermediates, as in a `tls.crt`) issued by one of
 * `caPems`? Every certificate in `caPems` is a trust anchor, as in a `caBundle`. With `now`, every
 * certificate on the path must also be within its validity period.
 */
export function verifyChain(certPem: string, caPems: string[], now?: Date): boolean {
  let chain: X509Certificate[];
  let anchors: X509Certificate[];
  try {
    chain = splitPem(certPem).map((pem) => new X509Certificate(pem));
    anchors = caPems.flatMap(splitPem).map((pem) => new X509Certificate(pem));
  } catch {
    return false;
  }
  const validAt = (cert: X509Certificate) =>
    now === undefined || (cert.validFromDate <= now && now <= cert.validToDate);
  const issues = (issuer: X509Certificate, cert: X509Certificate) =>
    issuer.ca && validAt(issuer) && cert.checkIssued(issuer) && cert.verify(issuer.publicKey);

  let current = chain[0];
  const intermediates = chain.slice(1);
  if (current === undefined || !validAt(current)) return false;
  // Bounded by the number of intermediates, so a chain that loops cannot spin forever.
  for (let step = 0; step <= intermediates.length; step++) {
    const cert: X509Certificate = current;
    if (anchors.some((anchor) => issues(anchor, cert))) return true;
    const next = intermediates.find((intermediate) => issues(intermediate, cert));
    if (next === undefined) return false;
    current = next;
  }
  return false;
}

/** Does the private key belong to the (first) certificate? False when either does not parse. */
export function keyMatchesCert(certPem: string, keyPem: string): boolean {
  try {
    return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

/** Why `ca` cannot sign certificates at `now`, or undefined when it can. */
export function signingProblem(ca: PemPair, now: Date): string | undefined {
  try {
    parseSigningCA(ca);
  } catch (error) {
    return messageOf(error);
  }
  const info = inspectCert(ca.certPem);
  if (!info.isCA) return "the CA certificate is not a CA (basicConstraints CA:FALSE)";
  if (isExpired(ca.certPem, now)) return `the CA certificate expired ${info.notAfter.toISOString()}`;
  return undefined;
}

/** Why `host` cannot go into a subjectAltName, or undefined when it can. */
export function hostProblem(host: string): string | undefined {
  if (isIP(host) !== 0) return undefined;
  if (isDnsName(host)) return undefined;
  return `"${host}" is neither an IP address nor a DNS name (letters, digits, '-', dot-separated labels, optional leading '*.')`;
}

// --- internals ---------------------------------------------------------------------------------

interface ForgeKey {
  privateKey: forge.pki.rsa.PrivateKey;
  publicKey: forge.pki.rsa.PublicKey;
  pem: string;
}

function newRsaKey(): ForgeKey {
  const { privateKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  const forgeKey = pki.privateKeyFromPem(privateKey);
  return { privateKey: forgeKey, publicKey: pki.setRsaPublicKey(forgeKey.n, forgeKey.e), pem: privateKey };
}

function issueLeaf(options: {
  ca: PemPair;
  now: Date;
  validityMs: number;
  subject: forge.pki.CertificateField[];
  extensions: object[];
}): PemPair {
  const { ca, now, validityMs } = options;
  const problem = signingProblem(ca, now);
  if (problem !== undefined) throw new Error(`cannot issue a certificate: ${problem}`);
  const issuer = parseSigningCA(ca);
  const key = newRsaKey();
  const cert = pki.createCertificate();
  cert.serialNumber = randomSerial();
  cert.publicKey = key.publicKey;
  cert.validity.notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  // A leaf that outlives its CA would fail verification anyway; say so in the certificate itself.
  const wanted = now.getTime() + validityMs;
  cert.validity.notAfter = new Date(Math.min(wanted, issuer.cert.validity.notAfter.getTime()));
  cert.setSubject(options.subject);
  cert.setIssuer(issuer.cert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    ...options.extensions,
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: subjectKeyIdentifierOf(issuer.cert) },
  ]);
  cert.sign(issuer.key, forge.md.sha256.create());
  return { certPem: certificateToPem(cert), keyPem: key.pem };
}

function parseSigningCA(ca: PemPair): { cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey } {
  let cert: forge.pki.Certificate;
  let key: forge.pki.rsa.PrivateKey;
  try {
    cert = pki.certificateFromPem(ca.certPem);
  } catch (error) {
    throw new Error(`CA certificate does not parse as an RSA certificate: ${messageOf(error)}`);
  }
  try {
    key = pki.privateKeyFromPem(ca.keyPem);
  } catch (error) {
    throw new Error(`CA key does not parse as an RSA private key: ${messageOf(error)}`);
  }
  if (!keyMatchesCert(ca.certPem, ca.keyPem)) throw new Error("CA key does not belong to the CA certificate");
  return { cert, key };
}

function subjectKeyIdentifierOf(cert: forge.pki.Certificate): string {
  const extension = cert.getExtension("subjectKeyIdentifier") as { subjectKeyIdentifier?: string } | undefined;
  // The authority key id must equal the issuer's own subject key id, whatever method made that one.
  if (extension?.subjectKeyIdentifier) return forge.util.hexToBytes(extension.subjectKeyIdentifier);
  return cert.generateSubjectKeyIdentifier().getBytes();
}

/** A positive serial of 127 random bits whose leading byte is non-zero, so its DER form is minimal. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString("hex");
}

function certificateToPem(cert: forge.pki.Certificate): string {
  return pki.certificateToPem(cert).replace(/\r\n/g, "\n");
}

function requirePositiveDays(name: string, days: number): void {
  if (!Number.isInteger(days) || days <= 0) throw new Error(`${name} must be a positive integer, got ${days}`);
}

function validityMsOf(validityDays: number, validitySeconds: number | undefined): number {
  if (validitySeconds === undefined) {
    requirePositiveDays("validityDays", validityDays);
    return validityDays * DAY_MS;
  }
  if (!Number.isInteger(validitySeconds) || validitySeconds <= 0) {
    throw new Error(`validitySeconds must be a positive integer, got ${validitySeconds}`);
  }
  return validitySeconds * 1000;
}

function subjectAltName(host: string): { type: number; value: string } {
  const version = isIP(host);
  // GeneralName tags (RFC 5280 4.2.1.6): 2 = dNSName, 7 = iPAddress (4 or 16 octets).
  if (version === 4) return { type: 7, value: String.fromCharCode(...ipv4Octets(host)) };
  if (version === 6) return { type: 7, value: String.fromCharCode(...ipv6Octets(host)) };
  return { type: 2, value: host };
}

function ipv4Octets(ip: string): number[] {
  return ip.split(".").map((part) => Number.parseInt(part, 10));
}

// forge's own IPv6 parser misreads "::ffff:1.2.3.4" and odd-length groups, so we encode it here.
function ipv6Octets(ip: string): number[] {
  const words = (part: string): number[] =>
    part === ""
      ? []
      : part.split(":").flatMap((group) => {
          if (!group.includes(".")) return [Number.parseInt(group, 16)];
          const [a, b, c, d] = ipv4Octets(group) as [number, number, number, number];
          return [(a << 8) | b, (c << 8) | d];
        });
  const [left = "", right] = ip.split("::");
  const head = words(left);
  const tail = right === undefined ? [] : words(right);
  const all = right === undefined ? head : [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  return all.flatMap((word) => [word >> 8, word & 0xff]);
}

function isDnsName(host: string): boolean {
  const name = host.startsWith("*.") ? host.slice(2) : host;
  if (name.length === 0 || name.length > 253) return false;
  return name.split(".").every((label) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label));
}

function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function commonNameOf(subject: string): string {
  const line = subject.split("\n").find((entry) => entry.startsWith("CN="));
  return line === undefined ? "" : line.slice(3);
}

// Node prints the extension OpenSSL-style ("DNS:a, IP Address:10.0.0.1") and quotes entries that
// contain separators; other name types (URI, email) are not hosts and are left out.
function parseSubjectAltName(text: string): string[] {
  const sans: string[] = [];
  for (const match of text.matchAll(/(DNS|IP Address):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/g)) {
    const raw = match[2]!.startsWith('"') ? (JSON.parse(match[2]!) as string) : match[2]!;
    sans.push(match[1] === "DNS" ? raw : canonicalIp(raw));
  }
  return sans;
}

function canonicalIp(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  const octets = ipv6Octets(ip);
  const words = Array.from({ length: 8 }, (_, i) => ((octets[2 * i]! << 8) | octets[2 * i + 1]!).toString(16));
  // RFC 5952: compress the longest run (of two or more) of zero words, the first such run on a tie.
  let best = { start: -1, length: 0 };
  for (let start = 0; start < 8; start++) {
    let length = 0;
    while (start + length < 8 && words[start + length] === "0") length++;
    if (length > best.length && length >= 2) best = { start, length };
  }
  if (best.start < 0) return words.join(":");
  return `${words.slice(0, best.start).join(":")}::${words.slice(best.start + best.length).join(":")}`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
