// The rotation plan: every transition, and a simulated run in which the apiserver's caBundle and the
// replicas' certificates lag the Secret, checking at every second that the bundle the apiserver uses
// verifies the certificate every replica serves.
import { describe, expect, it } from "vitest";
import { parseDuration, tlsSecretSettings } from "../../src/cli/serve-tls-secret.ts";
import { IN_CLUSTER_ADDRESS } from "../../src/cli/flags.ts";
import { createCA, createServingCert, inspectCert, keyMatchesCert, verifyChain } from "../../src/tls/certificates.ts";
import {
  ANNOTATIONS,
  annotationsOf,
  bundleCertificates,
  bundleDigest,
  carryOut,
  certificateDigest,
  materialFromSecretData,
  planRotation,
  recordFromAnnotations,
  rotationConfigProblems,
  secretDataOf,
} from "../../src/tls/rotation.ts";
import type { ReplicaReport, RotationConfig, RotationInput, RotationRecord, RotationStepKind, TlsMaterial } from "../../src/tls/rotation.ts";

const config: RotationConfig = {
  hosts: ["infergate-webhook.infergate-system.svc", "127.0.0.1"],
  certLifetimeMs: 20_000,
  caLifetimeMs: 60_000,
  renewBeforeFraction: 1 / 3,
  propagationMs: 5_000,
};
const t0 = new Date("2031-03-01T00:00:00Z");
const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);

function input(material: TlsMaterial, record: RotationRecord, seconds: number, replicas: ReplicaReport[] = []): RotationInput {
  return { material, record, now: at(seconds), config, replicas };
}

/** Plans at `seconds`, checks the step's kind, and carries it out. */
function advance(state: { material: TlsMaterial; record: RotationRecord }, seconds: number, kind: RotationStepKind, replicas: ReplicaReport[] = []) {
  const planned = planRotation(input(state.material, state.record, seconds, replicas));
  expect(planned.kind, planned.reason).toBe(kind);
  return carryOut(planned, input(state.material, state.record, seconds, replicas));
}

function published(state: { material: TlsMaterial; record: RotationRecord }, seconds: number) {
  return { ...state, record: { ...state.record, publishedBundle: bundleDigest(state.material.bundle!), publishedAt: at(seconds) } };
}

const cns = (bundle: string | undefined) => bundleCertificates(bundle).map((pem) => inspectCert(pem).subjectCN);
const report = (identity: string, cert: string, expiresAtSeconds: number): ReplicaReport => ({
  identity,
  servingDigest: certificateDigest(cert),
  expiresAt: at(expiresAtSeconds),
});

function bootstrapped() {
  return advance({ material: {}, record: { phase: "stable" } }, 0, "bootstrap");
}

describe("planRotation: the steady state", () => {
  it("creates a CA and a serving certificate from nothing, the bundle trusting exactly that CA", () => {
    const { material, record } = bootstrapped();
    expect(record.phase).toBe("stable");
    expect(keyMatchesCert(material.caCert!, material.caKey!)).toBe(true);
    expect(keyMatchesCert(material.tlsCert!, material.tlsKey!)).toBe(true);
    expect(bundleCertificates(material.bundle)).toHaveLength(1);
    expect(verifyChain(material.tlsCert!, bundleCertificates(material.bundle), at(0))).toBe(true);
    expect(inspectCert(material.tlsCert!).sans).toEqual(config.hosts);
    expect(inspectCert(material.tlsCert!).notAfter).toEqual(at(20));
    expect(inspectCert(material.caCert!).notAfter).toEqual(at(60));
  });

  it("does nothing before 2/3 of the serving lifetime, and renews from the same CA after it", () => {
    const state = bootstrapped();
    expect(planRotation(input(state.material, state.record, 13)).kind).toBe("none");
    const renewed = advance(state, 14, "renew-serving");
    expect(renewed.material.caCert).toBe(state.material.caCert);
    expect(renewed.material.bundle).toBe(state.material.bundle);
    expect(renewed.material.tlsCert).not.toBe(state.material.tlsCert);
    expect(renewed.record).toEqual(state.record);
    expect(verifyChain(renewed.material.tlsCert!, bundleCertificates(state.material.bundle), at(14))).toBe(true);
  });

  it("reissues the serving certificate at once when its key does not match, or a host is missing", () => {
    const state = bootstrapped();
    const other = bootstrapped();
    advance({ ...state, material: { ...state.material, tlsKey: other.material.tlsKey } }, 1, "renew-serving");
    const renamed = planRotation({ ...input(state.material, state.record, 1), config: { ...config, hosts: [...config.hosts, "localhost"] } });
    expect(renamed).toMatchObject({ kind: "renew-serving", reason: expect.stringContaining("localhost") });
  });

  it("starts a CA rotation at 2/3 of the CA lifetime: the new CA joins the bundle, the serving certificate stays", () => {
    let state = bootstrapped();
    state = advance(state, 14, "renew-serving");
    state = advance(state, 28, "renew-serving");
    const rotating = advance(state, 40, "add-ca");
    expect(rotating.record).toMatchObject({ phase: "trusting-new-ca", phaseSince: at(40) });
    expect(rotating.material.tlsCert).toBe(state.material.tlsCert);
    expect(rotating.material.caCert).toBe(state.material.caCert);
    expect(cns(rotating.material.bundle)).toEqual([inspectCert(state.material.caCert!).subjectCN, inspectCert(rotating.material.nextCaCert!).subjectCN]);
  });

  it("puts a CA that went missing from the bundle back, and drops expired CAs from it", () => {
    const state = bootstrapped();
    const stranger = createCA({ commonName: "stranger", now: at(0), validitySeconds: 10 });
    const wrong = { ...state, material: { ...state.material, bundle: stranger.certPem } };
    const repaired = advance(wrong, 1, "repair-bundle");
    expect(cns(repaired.material.bundle)).toEqual([inspectCert(state.material.caCert!).subjectCN, "stranger"]);
    const expired = advance(repaired, 11, "repair-bundle");
    expect(cns(expired.material.bundle)).toEqual([inspectCert(state.material.caCert!).subjectCN]);
  });

  it("replaces an unusable CA, keeping the previous CA trusted until replicas have moved on", () => {
    const state = bootstrapped();
    const broken = { ...state, material: { ...state.material, caKey: bootstrapped().material.caKey } };
    const replaced = advance(broken, 2, "bootstrap");
    expect(replaced.record).toMatchObject({ phase: "serving-from-new-ca", phaseSince: at(2) });
    expect(bundleCertificates(replaced.material.bundle)).toHaveLength(2);
    expect(verifyChain(state.material.tlsCert!, bundleCertificates(replaced.material.bundle), at(2))).toBe(true);
    expect(verifyChain(replaced.material.tlsCert!, bundleCertificates(replaced.material.bundle), at(2))).toBe(true);
  });
});

describe("planRotation: a CA rotation", () => {
  const rotating = () => {
    let state = bootstrapped();
    state = advance(state, 14, "renew-serving");
    state = advance(state, 28, "renew-serving");
    return advance(state, 40, "add-ca");
  };

  it("waits for the bundle with both CAs to be published, then for it to propagate, then issues from the new CA", () => {
    const state = rotating();
    expect(planRotation(input(state.material, state.record, 41))).toMatchObject({ kind: "none", reason: expect.stringContaining("published") });
    const stale = { ...state, record: { ...state.record, publishedBundle: "0".repeat(64), publishedAt: at(40) } };
    expect(planRotation(input(stale.material, stale.record, 41)).kind).toBe("none");
    // Due at 41.3 s: renewed from the old CA, capped at its expiry, so no renewal is due after that.
    const shown = advance(published(state, 41), 42, "renew-serving");
    expect(inspectCert(shown.material.tlsCert!).notAfter).toEqual(at(60));
    expect(planRotation(input(shown.material, shown.record, 45))).toMatchObject({ kind: "none", reason: expect.stringContaining("propagate") });
    const promoted = advance(shown, 46, "promote-ca");
    expect(promoted.record).toMatchObject({ phase: "serving-from-new-ca", phaseSince: at(46) });
    expect(promoted.material.caCert).toBe(state.material.nextCaCert);
    expect(promoted.material.nextCaCert).toBeUndefined();
    expect(promoted.material.bundle).toBe(state.material.bundle);
    expect(verifyChain(promoted.material.tlsCert!, [state.material.nextCaCert!], at(46))).toBe(true);
    expect(verifyChain(promoted.material.tlsCert!, [state.material.caCert!], at(46))).toBe(false);
  });

  it("renews a due serving certificate from the old CA while the new bundle is not yet in force", () => {
    const state = rotating();
    const renewed = advance(state, 42, "renew-serving");
    expect(verifyChain(renewed.material.tlsCert!, [state.material.caCert!], at(42))).toBe(true);
    expect(renewed.record.phase).toBe("trusting-new-ca");
  });

  it("switches to the new CA early when the old one can no longer sign", () => {
    const state = rotating();
    const dead = { ...state, material: { ...state.material, caKey: undefined } };
    advance(dead, 41, "promote-ca");
  });

  it("makes another new CA when the pending one is unusable", () => {
    const state = rotating();
    const lost = { ...state, material: { ...state.material, nextCaKey: undefined } };
    const again = advance(lost, 41, "add-ca");
    expect(again.material.nextCaCert).not.toBe(state.material.nextCaCert);
    const digests = bundleCertificates(again.material.bundle).map(certificateDigest);
    expect(digests).toEqual([certificateDigest(state.material.caCert!), certificateDigest(again.material.nextCaCert!)]);
  });

  it("drops the old CA only once every live replica serves the certificate from the new CA", () => {
    const before = rotating();
    const state = advance(published(before, 41), 46, "promote-ca");
    const newCert = state.material.tlsCert!;
    const oldCert = before.material.tlsCert!;
    expect(planRotation(input(state.material, state.record, 50, [report("a", newCert, 60)]))).toMatchObject({ kind: "none", reason: expect.stringContaining("time") });
    const behind = planRotation(input(state.material, state.record, 51, [report("a", newCert, 60), report("b", oldCert, 60)]));
    expect(behind).toMatchObject({ kind: "none", reason: expect.stringContaining("b") });
    expect(planRotation(input(state.material, state.record, 51, [])).kind).toBe("none");
    // A report that has expired belongs to a replica that is gone.
    const dropped = advance(state, 51, "drop-old-cas", [report("a", newCert, 60), report("gone", oldCert, 50)]);
    expect(dropped.record).toMatchObject({ phase: "stable", phaseSince: at(51) });
    expect(cns(dropped.material.bundle)).toEqual([inspectCert(state.material.caCert!).subjectCN]);
  });

  it("drops the old CA without reports once it has expired", () => {
    const state = advance(published(rotating(), 41), 46, "promote-ca");
    advance(state, 61, "drop-old-cas");
  });
});

describe("the Secret's data and annotations", () => {
  it("round-trips material and record", () => {
    const { material, record } = bootstrapped();
    expect(materialFromSecretData(secretDataOf(material))).toEqual(material);
    const full: RotationRecord = { ...record, phase: "trusting-new-ca", phaseSince: at(3), publishedBundle: bundleDigest(material.bundle!), publishedAt: at(4) };
    const annotations = annotationsOf(full, { kind: "add-ca", reason: "due" });
    expect(annotations[ANNOTATIONS.lastStep]).toBe("add-ca: due");
    expect(recordFromAnnotations(annotations)).toEqual(full);
  });

  it("reads missing or unknown annotations as the stable phase with nothing published", () => {
    expect(recordFromAnnotations(undefined)).toEqual({ phase: "stable" });
    expect(recordFromAnnotations({ [ANNOTATIONS.phase]: "dancing", [ANNOTATIONS.publishedAt]: "yesterday" })).toEqual({ phase: "stable" });
  });

  it("digests a bundle independently of line endings", () => {
    const { material } = bootstrapped();
    expect(bundleDigest(material.bundle!.replace(/\n/g, "\r\n"))).toBe(bundleDigest(material.bundle!));
  });
});

describe("configuration", () => {
  it("collects every problem", () => {
    const problems = rotationConfigProblems({ hosts: ["bad host"], certLifetimeMs: 1500, caLifetimeMs: 0, renewBeforeFraction: 1, propagationMs: -1 });
    expect(problems).toHaveLength(5);
    expect(problems.join("\n")).toMatch(/hosts: .*bad host/);
    expect(problems.join("\n")).toMatch(/certLifetime: 1500 ms/);
    expect(problems.join("\n")).toMatch(/renewBeforeFraction: 1;/);
  });

  it("refuses a propagation time the CA renewal window cannot hold twice", () => {
    expect(rotationConfigProblems({ ...config, propagationMs: 10_000 })).toEqual([expect.stringContaining("too long")]);
    expect(rotationConfigProblems(config)).toEqual([]);
  });

  it("reads serve's flags: durations, the fraction, and loopback hosts", () => {
    expect(parseDuration("8760h")).toBe(8760 * 3_600_000);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("20s")).toBe(20_000);
    expect(parseDuration("20")).toBeUndefined();
    const { settings } = tlsSecretSettings({ "tls-secret": "webhook-tls", "cert-lifetime": "20s", "ca-lifetime": "60s" }, "127.0.0.1");
    expect(settings).toMatchObject({
      secretName: "webhook-tls",
      webhookConfigName: "infergate",
      config: { hosts: ["infergate-webhook.infergate-system.svc", "127.0.0.1", "localhost"], certLifetimeMs: 20_000, caLifetimeMs: 60_000, propagationMs: 5_000 },
    });
    expect(settings!.config.renewBeforeFraction).toBeCloseTo(1 / 3);
    const bad = tlsSecretSettings({ "tls-secret": "Bad_Name", "cert-lifetime": "soon", "renew-before-fraction": "3/2", cert: "x.crt" }, IN_CLUSTER_ADDRESS);
    expect(bad.settings).toBeUndefined();
    expect(bad.problems).toHaveLength(4);
  });
});

describe("a simulated run: lagging apiserver and replicas", () => {
  it("never serves a certificate the apiserver's bundle does not verify, through several CA rotations", () => {
    // Replicas must reload within the serving renewal window (30 s × 1/3 here); the slowest one takes
    // longer than the propagation time (90 s × 1/3 ÷ 4 = 7.5 s), so only its report keeps the old CA.
    const sim: RotationConfig = { ...config, certLifetimeMs: 30_000, caLifetimeMs: 90_000, propagationMs: 7_500 };
    // Secret versions and published bundles, each with the second it was written.
    const secretHistory: { second: number; tlsCert: string }[] = [];
    const bundleHistory: { second: number; bundle: string }[] = [];
    const apiserverLag = 3;
    const replicas = [
      { identity: "a", lag: 1 },
      { identity: "b", lag: 2 },
      { identity: "slow", lag: 9 },
    ];
    const seenAt = <T extends { second: number }>(history: T[], second: number) => history.filter((entry) => entry.second <= second).at(-1);
    let state: { material: TlsMaterial; record: RotationRecord } = { material: {}, record: { phase: "stable" } };
    let publishedBundle = "";
    const steps: string[] = [];
    const failures: string[] = [];

    for (let second = 0; second <= 300; second++) {
      const now = at(second);
      const trusted = seenAt(bundleHistory, second - apiserverLag);
      const reports: ReplicaReport[] = [];
      for (const replica of replicas) {
        const serving = seenAt(secretHistory, second - replica.lag);
        if (!serving) continue;
        reports.push({ identity: replica.identity, servingDigest: certificateDigest(serving.tlsCert), expiresAt: at(second + 3) });
        if (trusted && !verifyChain(serving.tlsCert, bundleCertificates(trusted.bundle), now)) {
          failures.push(`t=${second}s: replica ${replica.identity} serves ${inspectCert(serving.tlsCert).subjectCN} not trusted by [${cns(trusted.bundle).join(", ")}]`);
        }
      }

      const planned = planRotation({ ...state, now, config: sim, replicas: reports });
      if (planned.kind !== "none") {
        state = carryOut(planned, { ...state, now, config: sim, replicas: reports });
        steps.push(`${second}:${planned.kind}`);
        if (secretHistory.at(-1)?.tlsCert !== state.material.tlsCert) secretHistory.push({ second, tlsCert: state.material.tlsCert! });
      }
      if (state.material.bundle !== publishedBundle) {
        publishedBundle = state.material.bundle!;
        bundleHistory.push({ second, bundle: publishedBundle });
        state = published(state, second);
      }
    }

    expect(failures).toEqual([]);
    const count = (kind: string) => steps.filter((entry) => entry.endsWith(`:${kind}`)).length;
    expect(count("bootstrap")).toBe(1);
    expect(count("add-ca")).toBeGreaterThanOrEqual(3);
    expect(count("promote-ca")).toBeGreaterThanOrEqual(3);
    expect(count("add-ca") - count("promote-ca")).toBeLessThanOrEqual(1);
    expect(count("drop-old-cas")).toBeGreaterThanOrEqual(3);
    expect(count("renew-serving")).toBeGreaterThanOrEqual(6);
    // The slowest replica (9 s behind) holds each drop back past the 7.5 s minimum.
    for (const [index, entry] of steps.entries()) {
      if (!entry.endsWith(":promote-ca")) continue;
      const promotedAt = Number(entry.split(":")[0]);
      const drop = steps.slice(index).find((later) => later.endsWith(":drop-old-cas"))!;
      expect(Number(drop.split(":")[0]) - promotedAt).toBeGreaterThanOrEqual(9);
    }
  });

  it("would fail the same check if the old CA were dropped as soon as the new one signs", () => {
    // The guard against a vacuous simulation: a certificate from the new CA is not trusted by an
    // apiserver that only knows the old one.
    const old = createCA({ commonName: "old", now: t0, validitySeconds: 60 });
    const fresh = createCA({ commonName: "new", now: t0, validitySeconds: 60 });
    const served = createServingCert({ ca: fresh, hosts: config.hosts, now: t0, validitySeconds: 20 });
    expect(verifyChain(served.certPem, [old.certPem], t0)).toBe(false);
    expect(verifyChain(served.certPem, [old.certPem, fresh.certPem], t0)).toBe(true);
  });
});
