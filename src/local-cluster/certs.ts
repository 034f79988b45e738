// Certificates for the local control plane and the local webhook server. Keys come from Node's native
// RSA generator (fast); node-forge only assembles and signs the X.509 certificates.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import forge from "node-forge";

export interface KeyPair {
  keyPem: string;
  publicKeyPem: string;
}

export interface Certificate extends KeyPair {
  certPem: string;
}

export interface Subject {
  commonName: string;
  organizations?: string[];
}

export interface LeafOptions {
  subject: Subject;
  usage: "server" | "client";
  ips?: string[];
  dnsNames?: string[];
}

const VALID_DAYS = 365;

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  return { keyPem: privateKey, publicKeyPem: publicKey };
}

export function createCa(commonName: string): Certificate {
  const keys = generateKeyPair();
  const cert = baseCertificate(keys, { commonName });
  cert.setIssuer(cert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(keys.keyPem), forge.md.sha256.create());
  return { ...keys, certPem: forge.pki.certificateToPem(cert) };
}

export function issueCertificate(ca: Certificate, options: LeafOptions): Certificate {
  const keys = generateKeyPair();
  const cert = baseCertificate(keys, options.subject);
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  cert.setIssuer(caCert.subject.attributes);
  const altNames = [
    ...(options.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(options.ips ?? []).map((ip) => ({ type: 7, ip })),
  ];
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: options.usage === "server", clientAuth: options.usage === "client" },
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    ...(altNames.length ? [{ name: "subjectAltName", altNames }] : []),
  ]);
  cert.sign(forge.pki.privateKeyFromPem(ca.keyPem), forge.md.sha256.create());
  return { ...keys, certPem: forge.pki.certificateToPem(cert) };
}

function baseCertificate(keys: KeyPair, subject: Subject): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicKeyPem);
  // A positive serial: clear the top bit so DER does not read it as negative (Go rejects those).
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  cert.serialNumber = serial.toString("hex");
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 60 * 60 * 1000); // tolerate small clock skew
  cert.validity.notAfter = new Date(now + VALID_DAYS * 24 * 60 * 60 * 1000);
  cert.setSubject([
    { name: "commonName", value: subject.commonName },
    ...(subject.organizations ?? []).map((value) => ({ name: "organizationName", value })),
  ]);
  return cert;
}

/** Paths of one certificate written as `<name>.crt` / `<name>.key` (and `<name>.pub`). */
export interface CertificateFiles {
  cert: string;
  key: string;
  pub: string;
}

export function certificateFiles(dir: string, name: string): CertificateFiles {
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`), pub: path.join(dir, `${name}.pub`) };
}

export function writeCertificate(dir: string, name: string, cert: Certificate): CertificateFiles {
  const files = certificateFiles(dir, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(files.key, cert.keyPem, { mode: 0o600 });
  fs.writeFileSync(files.pub, cert.publicKeyPem);
  fs.writeFileSync(files.cert, cert.certPem);
  return files;
}

export function readCertificate(dir: string, name: string): Certificate | undefined {
  const files = certificateFiles(dir, name);
  if (![files.cert, files.key, files.pub].every((f) => fs.existsSync(f))) return undefined;
  return {
    certPem: fs.readFileSync(files.cert, "utf8"),
    keyPem: fs.readFileSync(files.key, "utf8"),
    publicKeyPem: fs.readFileSync(files.pub, "utf8"),
  };
}

/** Every certificate the control plane needs, as files under `pkiDir`. */
export interface ControlPlanePki {
  ca: CertificateFiles;
  apiserver: CertificateFiles;
  admin: CertificateFiles;
  frontProxyCa: CertificateFiles;
  frontProxyClient: CertificateFiles;
  /** The service-account signing key pair (`key` signs, `pub` verifies); `cert` is unused. */
  serviceAccount: { key: string; pub: string };
  caPem: string;
  adminCertPem: string;
  adminKeyPem: string;
}

export function createControlPlanePki(pkiDir: string): ControlPlanePki {
  const ca = createCa("infergate-local-ca");
  const apiserver = issueCertificate(ca, {
    subject: { commonName: "kube-apiserver" },
    usage: "server",
    ips: ["127.0.0.1"],
    dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
  });
  const admin = issueCertificate(ca, {
    subject: { commonName: "infergate-admin", organizations: ["system:masters"] },
    usage: "client",
  });
  // The aggregation layer wants its own CA, separate from the cluster CA (kubernetes.io,
  // "Configure the Aggregation Layer"): extension servers trust only this one for proxied requests.
  const frontProxyCa = createCa("infergate-front-proxy-ca");
  const frontProxyClient = issueCertificate(frontProxyCa, {
    subject: { commonName: "front-proxy-client" },
    usage: "client",
  });
  const sa = generateKeyPair();
  fs.mkdirSync(pkiDir, { recursive: true });
  const saKey = path.join(pkiDir, "sa.key");
  const saPub = path.join(pkiDir, "sa.pub");
  fs.writeFileSync(saKey, sa.keyPem, { mode: 0o600 });
  fs.writeFileSync(saPub, sa.publicKeyPem);
  return {
    ca: writeCertificate(pkiDir, "ca", ca),
    apiserver: writeCertificate(pkiDir, "apiserver", apiserver),
    admin: writeCertificate(pkiDir, "admin", admin),
    frontProxyCa: writeCertificate(pkiDir, "front-proxy-ca", frontProxyCa),
    frontProxyClient: writeCertificate(pkiDir, "front-proxy-client", frontProxyClient),
    serviceAccount: { key: saKey, pub: saPub },
    caPem: ca.certPem,
    adminCertPem: admin.certPem,
    adminKeyPem: admin.keyPem,
  };
}

/** A webhook serving certificate for 127.0.0.1/localhost, reused when the files already exist. */
export interface ServingPki {
  ca: CertificateFiles;
  serving: CertificateFiles;
  caPem: string;
  /** Base64 of the CA certificate PEM, as `clientConfig.caBundle` wants it. */
  caBundle: string;
}

export function ensureServingPki(pkiDir: string, name: string): ServingPki {
  const caName = `${name}-ca`;
  let ca = readCertificate(pkiDir, caName);
  if (!ca || !readCertificate(pkiDir, name)) {
    ca = createCa(`${name}-local-ca`);
    const serving = issueCertificate(ca, {
      subject: { commonName: name },
      usage: "server",
      ips: ["127.0.0.1"],
      dnsNames: ["localhost"],
    });
    writeCertificate(pkiDir, caName, ca);
    writeCertificate(pkiDir, name, serving);
  }
  return {
    ca: certificateFiles(pkiDir, caName),
    serving: certificateFiles(pkiDir, name),
    caPem: ca.certPem,
    caBundle: Buffer.from(ca.certPem).toString("base64"),
  };
}
