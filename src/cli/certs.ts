// `infergate certs`: a CA and a serving certificate on disk, and the caBundle on stdout so that it can
// be piped straight into a webhook configuration or an APIService.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { caBundle, createCA, createServingCert, hostProblem, inspectCert, signingProblem } from "../tls/certificates.ts";
import type { PemPair } from "../tls/certificates.ts";

export interface CertsIo {
  stdout(text: string): void;
  stderr(text: string): void;
  now(): Date;
}

const processIo: CertsIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  now: () => new Date(),
};

const USAGE = `usage: infergate certs [--out DIR] [--host NAME]... [--force] [--ca-days N] [--days N]

Writes ca.crt, ca.key, tls.crt and tls.key into DIR (default: certs) and prints the base64 caBundle.
An existing, unexpired CA in DIR is kept unless --force; the serving certificate is always reissued.

  --out DIR      directory for the files, created if missing (default: certs)
  --host NAME    DNS name or IP address for the serving certificate; repeatable
                 (default: localhost and 127.0.0.1)
  --force        replace the CA even when the existing one is still valid
  --ca-days N    validity of a new CA in days (default: 3650)
  --days N       validity of the serving certificate in days (default: 365)
`;

const DEFAULT_HOSTS = ["localhost", "127.0.0.1"];

/** Exit codes: 0 written, 1 failed unexpectedly, 2 bad input (flags, hosts, output directory). */
export async function runCerts(argv: string[], io: CertsIo = processIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        out: { type: "string", default: "certs" },
        host: { type: "string", multiple: true },
        force: { type: "boolean", default: false },
        "ca-days": { type: "string", default: "3650" },
        days: { type: "string", default: "365" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (error) {
    io.stderr(`infergate certs: ${messageOf(error)}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout(USAGE);
    return 0;
  }

  const problems: string[] = [];
  const caDays = positiveInteger("--ca-days", values["ca-days"], problems);
  const days = positiveInteger("--days", values.days, problems);
  const hosts = [...new Set(values.host ?? DEFAULT_HOSTS)];
  for (const host of hosts) {
    const problem = hostProblem(host);
    if (problem !== undefined) problems.push(`--host: ${problem}`);
  }
  if (values.out === "") problems.push("--out: must not be empty");
  if (problems.length > 0) {
    io.stderr(`${problems.map((problem) => `infergate certs: ${problem}`).join("\n")}\n`);
    return 2;
  }

  const out = values.out;
  const files = {
    caCert: join(out, "ca.crt"),
    caKey: join(out, "ca.key"),
    cert: join(out, "tls.crt"),
    key: join(out, "tls.key"),
  };
  try {
    mkdirSync(out, { recursive: true });
  } catch (error) {
    io.stderr(`infergate certs: --out ${out}: cannot create the directory: ${messageOf(error)}\n`);
    return 2;
  }

  try {
    const now = io.now();
    const existing = readExistingCA(files.caCert, files.caKey, now);
    let ca: PemPair;
    const writes: Array<{ file: string; text: string; secret: boolean }> = [];
    if (existing.ca !== undefined && !values.force) {
      ca = existing.ca;
      io.stderr(`reusing CA ${files.caCert} (valid until ${inspectCert(ca.certPem).notAfter.toISOString()})\n`);
    } else {
      const why = values.force && existing.ca !== undefined ? "--force" : existing.reason;
      ca = createCA({ commonName: "infergate-ca", now, validityDays: caDays });
      io.stderr(`creating CA ${files.caCert}${why === undefined ? "" : ` (replacing the old one: ${why})`}\n`);
      writes.push({ file: files.caKey, text: ca.keyPem, secret: true }, { file: files.caCert, text: ca.certPem, secret: false });
    }

    const serving = createServingCert({ ca, hosts, now, validityDays: days });
    const servingEnd = inspectCert(serving.certPem).notAfter;
    writes.push({ file: files.key, text: serving.keyPem, secret: true }, { file: files.cert, text: serving.certPem, secret: false });
    io.stderr(`issuing ${files.cert} for ${hosts.join(", ")} (valid until ${servingEnd.toISOString()})\n`);
    if (servingEnd.getTime() < now.getTime() + days * 24 * 60 * 60 * 1000 - 60 * 60 * 1000) {
      io.stderr("note: the CA expires first, so the serving certificate ends with it; use --force for a new CA\n");
    }

    for (const write of writes) {
      try {
        writeAtomically(write.file, write.text, write.secret ? 0o600 : 0o644);
      } catch (error) {
        io.stderr(`infergate certs: --out ${out}: cannot write ${write.file}: ${messageOf(error)}\n`);
        return 2;
      }
    }
    io.stdout(`${caBundle([ca.certPem])}\n`);
    return 0;
  } catch (error) {
    io.stderr(`infergate certs: ${messageOf(error)}\n`);
    return 1;
  }
}

function positiveInteger(flag: string, text: string, problems: string[]): number {
  if (/^[1-9][0-9]{0,5}$/.test(text)) return Number(text);
  problems.push(`${flag}: "${text}" is not a positive whole number of days (1 to 999999)`);
  return 0;
}

/** The CA in the output directory if it can sign now; otherwise why not (nothing: there is none). */
function readExistingCA(certFile: string, keyFile: string, now: Date): { ca?: PemPair; reason?: string } {
  let certPem: string;
  let keyPem: string;
  try {
    certPem = readFileSync(certFile, "utf8");
  } catch {
    return {};
  }
  try {
    keyPem = readFileSync(keyFile, "utf8");
  } catch {
    return { reason: `${keyFile} is missing or unreadable` };
  }
  const problem = signingProblem({ certPem, keyPem }, now);
  return problem === undefined ? { ca: { certPem, keyPem } } : { reason: problem };
}

// A server watching these files never sees half of one; it may briefly see a new key next to the old
// certificate, which the reloader rejects as a mismatch until the certificate follows.
function writeAtomically(file: string, text: string, mode: number): void {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, text, { mode });
    renameSync(temporary, file);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
