import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCerts } from "../../src/cli/certs.ts";
import type { CertsIo } from "../../src/cli/certs.ts";
import {
  caBundle,
  createCA,
  createClientCert,
  createServingCert,
  inspectCert,
  isExpired,
  keyMatchesCert,
  signingProblem,
  verifyChain,
} from "../../src/tls/certificates.ts";
import type { PemPair } from "../../src/tls/certificates.ts";
import { loadKeyPair, watchKeyPair } from "../../src/tls/reload.ts";
import type { KeyPair } from "../../src/tls/reload.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

// The https tests run against the real clock, so these certificates are issued "now".
const now = new Date();
let ca: PemPair;
let otherCa: PemPair;
let serving: PemPair;
let scratch: string;

beforeAll(() => {
  ca = createCA({ commonName: "infergate-test-ca", now });
  otherCa = createCA({ commonName: "someone-else", now });
  serving = createServingCert({
    ca,
    hosts: ["localhost", "127.0.0.1", "::1", "infergate-webhook.infergate-system.svc"],
    now,
  });
  scratch = mkdtempSync(join(tmpdir(), "infergate-tls-"));
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

function days(from: Date, to: Date): number {
  return (to.getTime() - from.getTime()) / DAY_MS;
}

function freshDir(name: string): string {
  const dir = join(scratch, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

describe("certificates", () => {
  it("creates a CA valid for about ten years that can sign", () => {
    const info = inspectCert(ca.certPem);
    expect(info.isCA).toBe(true);
    expect(info.subjectCN).toBe("infergate-test-ca");
    expect(days(now, info.notAfter)).toBeCloseTo(3650, 0);
    expect(info.notBefore.getTime()).toBeLessThanOrEqual(now.getTime());
    expect(keyMatchesCert(ca.certPem, ca.keyPem)).toBe(true);
    expect(signingProblem(ca, now)).toBeUndefined();
  });

  it("issues a one-year serving certificate with DNS and IP SANs, serverAuth and a positive serial", () => {
    const info = inspectCert(serving.certPem);
    expect(info.isCA).toBe(false);
    expect(info.subjectCN).toBe("localhost");
    expect(info.sans).toEqual(["localhost", "127.0.0.1", "::1", "infergate-webhook.infergate-system.svc"]);
    expect(days(now, info.notAfter)).toBeCloseTo(365, 0);

    const x509 = new X509Certificate(serving.certPem);
    expect(x509.subjectAltName).toContain("IP Address:127.0.0.1");
    expect(x509.subjectAltName).toContain("DNS:localhost");
    expect(x509.keyUsage).toEqual([SERVER_AUTH]);
    expect(x509.issuer).toBe("CN=infergate-test-ca");
    // 16 bytes, top bit clear: a positive INTEGER of minimal length.
    expect(x509.serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/);
    const again = createServingCert({ ca, hosts: ["localhost"], now });
    expect(new X509Certificate(again.certPem).serialNumber).not.toBe(x509.serialNumber);

    expect(keyMatchesCert(serving.certPem, serving.keyPem)).toBe(true);
    expect(keyMatchesCert(serving.certPem, ca.keyPem)).toBe(false);
  });

  it("verifies a chain only against the issuing CA, and only while valid when given a time", () => {
    expect(verifyChain(serving.certPem, [ca.certPem])).toBe(true);
    expect(verifyChain(serving.certPem, [otherCa.certPem, ca.certPem])).toBe(true);
    expect(verifyChain(serving.certPem, [otherCa.certPem])).toBe(false);
    expect(verifyChain(serving.certPem, [])).toBe(false);
    // A CA-less bundle: the leaf is not a CA, so it cannot vouch for anything.
    expect(verifyChain(ca.certPem, [serving.certPem])).toBe(false);
    // A tls.crt that carries the CA after the leaf still needs a trusted anchor.
    expect(verifyChain(serving.certPem + ca.certPem, [ca.certPem])).toBe(true);
    expect(verifyChain(serving.certPem + ca.certPem, [otherCa.certPem])).toBe(false);
    expect(verifyChain(serving.certPem, [ca.certPem], now)).toBe(true);
    expect(verifyChain(serving.certPem, [ca.certPem], new Date(now.getTime() + 400 * DAY_MS))).toBe(false);
    expect(verifyChain("not a certificate", [ca.certPem])).toBe(false);
  });

  it("reports expiry against the given time", () => {
    expect(isExpired(serving.certPem, now)).toBe(false);
    expect(isExpired(serving.certPem, new Date(now.getTime() + 366 * DAY_MS))).toBe(true);
    expect(isExpired(ca.certPem, new Date(now.getTime() + 366 * DAY_MS))).toBe(false);
  });

  it("never lets a leaf outlive its CA, and refuses to sign with an expired CA", () => {
    const shortCa = createCA({ commonName: "short", now, validityDays: 10 });
    const leaf = createServingCert({ ca: shortCa, hosts: ["localhost"], now });
    expect(inspectCert(leaf.certPem).notAfter).toEqual(inspectCert(shortCa.certPem).notAfter);

    const later = new Date(now.getTime() + 11 * DAY_MS);
    expect(signingProblem(shortCa, later)).toMatch(/expired/);
    expect(() => createServingCert({ ca: shortCa, hosts: ["localhost"], now: later })).toThrow(/expired/);
    expect(signingProblem(serving, now)).toMatch(/not a CA/);
    expect(signingProblem({ certPem: ca.certPem, keyPem: otherCa.keyPem }, now)).toMatch(/does not belong/);
  });

  it("rejects hosts that cannot be SANs, naming every one", () => {
    expect(() => createServingCert({ ca, hosts: ["good.example", "bad_host", "also bad"], now })).toThrow(
      /"bad_host".*"also bad"/,
    );
    expect(() => createServingCert({ ca, hosts: [], now })).toThrow(/at least one host/);
  });

  it("writes IPv6 and wildcard SANs in canonical form", () => {
    const leaf = createServingCert({ ca, hosts: ["*.svc.example", "2001:db8::5:0:0:1", "fe80::1"], now });
    expect(inspectCert(leaf.certPem).sans).toEqual(["*.svc.example", "2001:db8::5:0:0:1", "fe80::1"]);
  });

  it("issues client certificates with the user as CN and groups as O", () => {
    const client = createClientCert({ ca, commonName: "front-proxy-client", organizations: ["system:masters", "ops"], now });
    const x509 = new X509Certificate(client.certPem);
    expect(x509.subject.split("\n").sort()).toEqual(["CN=front-proxy-client", "O=ops", "O=system:masters"]);
    expect(x509.keyUsage).toEqual([CLIENT_AUTH]);
    expect(inspectCert(client.certPem).subjectCN).toBe("front-proxy-client");
    expect(verifyChain(client.certPem, [ca.certPem])).toBe(true);
  });

  it("builds a caBundle from PEMs, one newline after each", () => {
    const bundle = Buffer.from(caBundle([ca.certPem.replace(/\n/g, "\r\n"), otherCa.certPem]), "base64").toString("utf8");
    expect(bundle).toBe(`${ca.certPem.trim()}\n${otherCa.certPem.trim()}\n`);
  });
});

interface HttpsResult {
  body?: string;
  code?: string;
}

function get(port: number, trusted: string, servername?: string): Promise<HttpsResult> {
  return new Promise((resolve) => {
    const request = https.get(
      { host: "127.0.0.1", port, path: "/", ca: trusted, agent: false, ...(servername ? { servername } : {}) },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => (body += chunk));
        response.on("end", () => resolve({ body }));
      },
    );
    request.on("error", (error: NodeJS.ErrnoException) => resolve({ code: error.code ?? error.message }));
  });
}

async function listen(pair: PemPair): Promise<{ server: https.Server; port: number }> {
  const server = https.createServer({ cert: pair.certPem, key: pair.keyPem }, (_request, response) => response.end("ok"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

async function stop(server: https.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

describe("serving over node:https", () => {
  it("is trusted by a client that trusts only the CA, for IP and DNS names, and by nobody else", async () => {
    const { server, port } = await listen(serving);
    try {
      expect(await get(port, ca.certPem)).toEqual({ body: "ok" });
      expect(await get(port, ca.certPem, "localhost")).toEqual({ body: "ok" });
      expect(await get(port, ca.certPem, "infergate-webhook.infergate-system.svc")).toEqual({ body: "ok" });
      expect(await get(port, otherCa.certPem)).toEqual({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
      expect(await get(port, ca.certPem, "elsewhere.example")).toEqual({ code: "ERR_TLS_CERT_ALTNAME_INVALID" });
    } finally {
      await stop(server);
    }
  });
});

/** Collects a watcher's callbacks and lets a test wait for the next one it cares about. */
function recorder() {
  const changes: KeyPair[] = [];
  const errors: Error[] = [];
  let waiters: Array<() => void> = [];
  const notify = () => {
    const current = waiters;
    waiters = [];
    for (const wake of current) wake();
  };
  return {
    changes,
    errors,
    onChange: (pair: KeyPair) => {
      changes.push(pair);
      notify();
    },
    onError: (error: Error) => {
      errors.push(error);
      notify();
    },
    async until(condition: () => boolean): Promise<void> {
      while (!condition()) await new Promise<void>((resolve) => waiters.push(resolve));
    },
  };
}

// Writers that replace files by rename, as `infergate certs` and kubelet do, so a reader sees either
// the old or the new file; the half-written test writes in place on purpose.
function replace(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

describe("loadKeyPair", () => {
  it("loads a matching pair and names the file that is wrong", () => {
    const dir = freshDir("load");
    const certFile = join(dir, "tls.crt");
    const keyFile = join(dir, "tls.key");
    expect(() => loadKeyPair(certFile, keyFile)).toThrow(`TLS certificate ${certFile} does not exist`);
    writeFileSync(certFile, serving.certPem);
    expect(() => loadKeyPair(certFile, keyFile)).toThrow(`TLS private key ${keyFile} does not exist`);
    writeFileSync(keyFile, "garbage");
    expect(() => loadKeyPair(certFile, keyFile)).toThrow(`TLS private key ${keyFile} does not parse`);
    writeFileSync(keyFile, ca.keyPem);
    expect(() => loadKeyPair(certFile, keyFile)).toThrow(`TLS private key ${keyFile} does not belong to certificate ${certFile}`);
    writeFileSync(keyFile, serving.keyPem);
    expect(loadKeyPair(certFile, keyFile)).toEqual({ cert: serving.certPem, key: serving.keyPem });
    writeFileSync(certFile, serving.certPem.slice(0, 200));
    expect(() => loadKeyPair(certFile, keyFile)).toThrow(`TLS certificate ${certFile} does not parse`);
  });
});

describe("watchKeyPair", () => {
  const fast = { debounceMs: 10, pollIntervalMs: 25 };

  it("skips a mismatched and a half-written pair and delivers the complete replacement once", async () => {
    const dir = freshDir("watch");
    const certFile = join(dir, "tls.crt");
    const keyFile = join(dir, "tls.key");
    writeFileSync(certFile, serving.certPem);
    writeFileSync(keyFile, serving.keyPem);
    const next = createServingCert({ ca, hosts: ["localhost"], now });
    const seen = recorder();
    const close = watchKeyPair(certFile, keyFile, seen.onChange, { ...fast, onError: seen.onError });
    try {
      replace(certFile, next.certPem);
      // Waiting stops at a delivered change too, so a watcher that took the bad pair fails here.
      await seen.until(() => seen.changes.length > 0 || seen.errors.some((error) => /does not belong/.test(error.message)));
      expect(seen.changes).toEqual([]);

      writeFileSync(keyFile, next.keyPem.slice(0, next.keyPem.length / 2));
      await seen.until(
        () => seen.changes.length > 0 || seen.errors.some((error) => /private key .* does not parse/.test(error.message)),
      );
      expect(seen.changes).toEqual([]);

      writeFileSync(keyFile, next.keyPem);
      await seen.until(() => seen.changes.length > 0);
      expect(seen.changes).toEqual([{ cert: next.certPem, key: next.keyPem }]);
    } finally {
      close();
    }
  });

  it("follows a Kubernetes Secret volume's ..data symlink swap", async () => {
    const dir = freshDir("secret-volume");
    const first = join(dir, "..2026_01_01_00_00_00.1");
    const second = join(dir, "..2026_01_02_00_00_00.2");
    mkdirSync(first);
    writeFileSync(join(first, "tls.crt"), serving.certPem);
    writeFileSync(join(first, "tls.key"), serving.keyPem);
    symlinkSync("..2026_01_01_00_00_00.1", join(dir, "..data"));
    symlinkSync("..data/tls.crt", join(dir, "tls.crt"));
    symlinkSync("..data/tls.key", join(dir, "tls.key"));

    const next = createServingCert({ ca, hosts: ["localhost"], now });
    const seen = recorder();
    const close = watchKeyPair(join(dir, "tls.crt"), join(dir, "tls.key"), seen.onChange, { ...fast, onError: seen.onError });
    try {
      mkdirSync(second);
      writeFileSync(join(second, "tls.crt"), next.certPem);
      writeFileSync(join(second, "tls.key"), next.keyPem);
      symlinkSync("..2026_01_02_00_00_00.2", join(dir, "..data_tmp"));
      renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
      await seen.until(() => seen.changes.length > 0);
      expect(seen.changes).toEqual([{ cert: next.certPem, key: next.keyPem }]);
    } finally {
      close();
    }
  });

  it("lets a running https server switch to a certificate from another CA without a restart", async () => {
    const dir = freshDir("hot-swap");
    const certFile = join(dir, "tls.crt");
    const keyFile = join(dir, "tls.key");
    writeFileSync(certFile, serving.certPem);
    writeFileSync(keyFile, serving.keyPem);
    const { server, port } = await listen(serving);
    const seen = recorder();
    const close = watchKeyPair(
      certFile,
      keyFile,
      (pair) => {
        server.setSecureContext({ cert: pair.cert, key: pair.key });
        seen.onChange(pair);
      },
      { ...fast, onError: seen.onError },
    );
    try {
      expect(await get(port, ca.certPem)).toEqual({ body: "ok" });
      const renewed = createServingCert({ ca: otherCa, hosts: ["127.0.0.1"], now });
      replace(keyFile, renewed.keyPem);
      replace(certFile, renewed.certPem);
      await seen.until(() => seen.changes.length > 0);
      expect(await get(port, otherCa.certPem)).toEqual({ body: "ok" });
      expect(await get(port, ca.certPem)).toEqual({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
    } finally {
      close();
      await stop(server);
    }
  });
});

describe("infergate certs", () => {
  function io(at: Date = now) {
    const out = { stdout: "", stderr: "" };
    const streams: CertsIo = {
      stdout: (text) => (out.stdout += text),
      stderr: (text) => (out.stderr += text),
      now: () => at,
    };
    return { out, streams };
  }

  function read(dir: string, name: string): string {
    return readFileSync(join(dir, name), "utf8");
  }

  it("writes a CA and a serving certificate and prints only the caBundle", async () => {
    const dir = join(scratch, "cli-write", "nested");
    const { out, streams } = io();
    const code = await runCerts(["--out", dir, "--host", "localhost", "--host", "127.0.0.1", "--host", "webhook.ns.svc"], streams);
    expect(code).toBe(0);
    expect(out.stdout).toBe(`${caBundle([read(dir, "ca.crt")])}\n`);
    expect(out.stderr).toContain("creating CA");

    for (const key of ["ca.key", "tls.key"]) expect(statSync(join(dir, key)).mode & 0o777).toBe(0o600);
    expect(keyMatchesCert(read(dir, "ca.crt"), read(dir, "ca.key"))).toBe(true);
    expect(keyMatchesCert(read(dir, "tls.crt"), read(dir, "tls.key"))).toBe(true);
    expect(verifyChain(read(dir, "tls.crt"), [read(dir, "ca.crt")], now)).toBe(true);
    expect(inspectCert(read(dir, "tls.crt")).sans).toEqual(["localhost", "127.0.0.1", "webhook.ns.svc"]);
    expect(days(now, inspectCert(read(dir, "ca.crt")).notAfter)).toBeCloseTo(3650, 0);
    expect(days(now, inspectCert(read(dir, "tls.crt")).notAfter)).toBeCloseTo(365, 0);
  });

  it("defaults to localhost and 127.0.0.1 and honours --days and --ca-days", async () => {
    const dir = freshDir("cli-defaults");
    const { streams } = io();
    expect(await runCerts(["--out", dir, "--days", "30", "--ca-days", "90"], streams)).toBe(0);
    expect(inspectCert(read(dir, "tls.crt")).sans).toEqual(["localhost", "127.0.0.1"]);
    expect(days(now, inspectCert(read(dir, "tls.crt")).notAfter)).toBeCloseTo(30, 0);
    expect(days(now, inspectCert(read(dir, "ca.crt")).notAfter)).toBeCloseTo(90, 0);
  });

  it("keeps an unexpired CA, reissues the serving certificate, and replaces the CA with --force", async () => {
    const dir = freshDir("cli-reuse");
    expect(await runCerts(["--out", dir], io().streams)).toBe(0);
    const firstCa = read(dir, "ca.crt");
    const firstCaKey = read(dir, "ca.key");
    const firstServing = read(dir, "tls.crt");

    const second = io();
    expect(await runCerts(["--out", dir, "--host", "other.example"], second.streams)).toBe(0);
    expect(read(dir, "ca.crt")).toBe(firstCa);
    expect(read(dir, "ca.key")).toBe(firstCaKey);
    expect(read(dir, "tls.crt")).not.toBe(firstServing);
    expect(inspectCert(read(dir, "tls.crt")).sans).toEqual(["other.example"]);
    expect(verifyChain(read(dir, "tls.crt"), [firstCa], now)).toBe(true);
    expect(second.out.stdout).toBe(`${caBundle([firstCa])}\n`);
    expect(second.out.stderr).toContain("reusing CA");

    const forced = io();
    expect(await runCerts(["--out", dir, "--force"], forced.streams)).toBe(0);
    expect(read(dir, "ca.crt")).not.toBe(firstCa);
    expect(verifyChain(read(dir, "tls.crt"), [read(dir, "ca.crt")], now)).toBe(true);
    expect(verifyChain(read(dir, "tls.crt"), [firstCa])).toBe(false);
    expect(forced.out.stdout).toBe(`${caBundle([read(dir, "ca.crt")])}\n`);
  });

  it("replaces an expired or unusable CA without --force", async () => {
    const dir = freshDir("cli-expired");
    expect(await runCerts(["--out", dir, "--ca-days", "2"], io().streams)).toBe(0);
    const oldCa = read(dir, "ca.crt");
    const later = io(new Date(now.getTime() + 3 * DAY_MS));
    expect(await runCerts(["--out", dir], later.streams)).toBe(0);
    expect(read(dir, "ca.crt")).not.toBe(oldCa);
    expect(later.out.stderr).toMatch(/replacing the old one: .*expired/);

    writeFileSync(join(dir, "ca.key"), otherCa.keyPem);
    const mismatched = io();
    expect(await runCerts(["--out", dir], mismatched.streams)).toBe(0);
    expect(mismatched.out.stderr).toMatch(/replacing the old one: .*does not belong/);
    expect(keyMatchesCert(read(dir, "ca.crt"), read(dir, "ca.key"))).toBe(true);
  });

  it.each([
    [["--bogus"], "--bogus"],
    [["--out"], "--out"],
    [["--days", "0"], "--days"],
    [["--days", "1.5"], "--days"],
    [["--days", "abc"], "--days"],
    [["--ca-days=-3"], "--ca-days"],
    [["--host", "not_a_host!"], "--host"],
    [["stray"], "stray"],
  ])("exits 2 on %j, naming %s", async (argv, named) => {
    const dir = freshDir("cli-bad");
    const { out, streams } = io();
    expect(await runCerts([...argv, ...(argv.includes("--out") ? [] : ["--out", dir])], streams)).toBe(2);
    expect(out.stderr).toContain(named);
    expect(out.stdout).toBe("");
  });

  it("exits 2 naming --out when the directory cannot be created", async () => {
    const file = join(freshDir("cli-unwritable"), "a-file");
    writeFileSync(file, "not a directory");
    const { out, streams } = io();
    expect(await runCerts(["--out", join(file, "certs")], streams)).toBe(2);
    expect(out.stderr).toContain("--out");
    expect(out.stdout).toBe("");
  });
});

describe("common names outside PrintableString", () => {
  it("encodes a CN with '@', '_' and '*' so Node's (and Go's) x509 parser reads it back", async () => {
    const { createCA, createServingCert, inspectCert } = await import("../../src/tls/certificates.ts");
    const now = new Date();
    const ca = createCA({ commonName: "infergate_ca@cluster", now });
    expect(inspectCert(ca.certPem).subjectCN).toBe("infergate_ca@cluster");
    const leaf = createServingCert({ ca, hosts: ["*.example.com", "127.0.0.1"], now });
    expect(inspectCert(leaf.certPem).subjectCN).toBe("*.example.com");
    expect(new (await import("node:crypto")).X509Certificate(leaf.certPem).subject).toContain("CN=*.example.com");
  });
});
