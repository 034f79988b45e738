import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it, vi } from "vitest";
import { parseExposition } from "../../src/adapter/exposition.ts";
import {
  formatProjectTable,
  formatVerdicts,
  gpuBar,
  projectRowOf,
  verdictsFromPrometheus,
  verdictsFromSamples,
  type ProjectRow,
} from "../../src/cli/status-format.ts";
import { runStatus } from "../../src/cli/status.ts";
import { freePort } from "../../src/local-cluster/ports.ts";
import { createAdmissionMetrics } from "../../src/observability/metrics.ts";

const row = (over: Partial<ProjectRow>): ProjectRow => ({ name: "team-a", allocatedMilli: 0, reservedMilli: 0, workloads: 0, hasStatus: true, ...over });

describe("gpuBar", () => {
  it("is empty when nothing is used", () => {
    expect(gpuBar(row({ quotaMilli: 8000 }))).toBe("[░░░░░░░░░░]");
  });

  it("rounds a fraction down but shows any use with at least one cell", () => {
    expect(gpuBar(row({ quotaMilli: 8000, allocatedMilli: 5250 }))).toBe("[██████░░░░]");
    expect(gpuBar(row({ quotaMilli: 8000, allocatedMilli: 1 }))).toBe("[█░░░░░░░░░]");
  });

  it("is full only when the quota is used up", () => {
    expect(gpuBar(row({ quotaMilli: 8000, allocatedMilli: 7999 }))).toBe("[█████████░]");
    expect(gpuBar(row({ quotaMilli: 8000, allocatedMilli: 8000 }))).toBe("[██████████]");
  });

  it("shows reserved GPUs apart from allocated ones", () => {
    expect(gpuBar(row({ quotaMilli: 10000, allocatedMilli: 3000, reservedMilli: 2000 }))).toBe("[███▒▒░░░░░]");
    expect(gpuBar(row({ quotaMilli: 10000, reservedMilli: 500 }))).toBe("[▒░░░░░░░░░]");
  });

  it("marks a project over its quota", () => {
    expect(gpuBar(row({ quotaMilli: 4000, allocatedMilli: 6000 }))).toBe("[██████████]!");
    expect(gpuBar(row({ quotaMilli: 4000, allocatedMilli: 4000, reservedMilli: 1 }))).toBe("[██████████]!");
  });

  it("says so when a project has no quota", () => {
    expect(gpuBar(row({ allocatedMilli: 3000 }))).toBe("[no quota  ]");
  });

  it("treats a zero quota with nothing used as empty, and any use as over it", () => {
    expect(gpuBar(row({ quotaMilli: 0 }))).toBe("[░░░░░░░░░░]");
    expect(gpuBar(row({ quotaMilli: 0, allocatedMilli: 500 }))).toBe("[██████████]!");
  });
});

describe("formatProjectTable", () => {
  it("prints one aligned line per project, sorted, with usage, reserved and workloads", () => {
    const text = formatProjectTable([
      row({ name: "team-b", quotaMilli: 4000, allocatedMilli: 6000, workloads: 3 }),
      row({ name: "team-a", quotaMilli: 8000, allocatedMilli: 5250, workloads: 4 }),
      row({ name: "research", allocatedMilli: 2500, reservedMilli: 500, workloads: 1 }),
    ]);
    expect(text.split("\n")).toEqual([
      "research  [no quota  ]   2.5 GPUs     reserved 0.5  workloads 1",
      "team-a    [██████░░░░]   5.25/8 GPUs  reserved 0  workloads 4",
      "team-b    [██████████]!  6/4 GPUs     reserved 0  workloads 3  OVER QUOTA by 2",
    ]);
  });

  it("says when there are no projects, and when a status was never written", () => {
    expect(formatProjectTable([])).toBe("no Projects in the cluster");
    expect(formatProjectTable([row({ quotaMilli: 2000, hasStatus: false })])).toContain("(no status yet)");
  });
});

describe("projectRowOf", () => {
  it("reads quota from the spec and usage from the status", () => {
    expect(
      projectRowOf({
        metadata: { name: "team-a" },
        spec: { gpuQuota: "8" },
        status: { allocatedGpus: "5.25", reservedGpus: "0.5", availableGpus: "2.25", workloads: 4 },
      }),
    ).toEqual({ name: "team-a", quotaMilli: 8000, allocatedMilli: 5250, reservedMilli: 500, workloads: 4, hasStatus: true });
  });

  it("reads a project without quota or status as unlimited and unused", () => {
    expect(projectRowOf({ metadata: { name: "x" }, spec: {} })).toEqual({
      name: "x",
      quotaMilli: undefined,
      allocatedMilli: 0,
      reservedMilli: 0,
      workloads: 0,
      hasStatus: false,
    });
  });
});

describe("verdicts", () => {
  it("counts whole-request verdicts from the webhook's own /metrics, ignoring per-plugin timings", async () => {
    const metrics = createAdmissionMetrics({ defaults: false });
    metrics.duration.observe({ webhook: "validate", plugin: "all", verdict: "allowed" }, 0.001);
    metrics.duration.observe({ webhook: "validate", plugin: "all", verdict: "denied" }, 0.001);
    metrics.duration.observe({ webhook: "validate", plugin: "all", verdict: "denied" }, 0.001);
    metrics.duration.observe({ webhook: "validate", plugin: "quota", verdict: "n/a" }, 0.001);
    metrics.duration.observe({ webhook: "mutate", plugin: "all", verdict: "patched" }, 0.001);
    const counts = verdictsFromSamples(parseExposition(await metrics.registry.metrics()).samples);
    expect(counts).toEqual(
      expect.arrayContaining([
        { webhook: "validate", verdict: "allowed", count: 1 },
        { webhook: "validate", verdict: "denied", count: 2 },
        { webhook: "mutate", verdict: "patched", count: 1 },
      ]),
    );
    expect(counts).toHaveLength(3);
  });

  it("reads a Prometheus vector answer, rounding increase()'s extrapolated values", () => {
    const answer = {
      status: "success",
      data: {
        resultType: "vector",
        result: [
          { metric: { webhook: "validate", verdict: "denied" }, value: [1700000000, "2.0000001"] },
          { metric: { webhook: "mutate", verdict: "patched" }, value: [1700000000, "11.9"] },
        ],
      },
    };
    expect(verdictsFromPrometheus(answer)).toEqual([
      { webhook: "validate", verdict: "denied", count: 2 },
      { webhook: "mutate", verdict: "patched", count: 12 },
    ]);
    expect(() => verdictsFromPrometheus({ status: "error" })).toThrow(/data.result/);
  });

  it("labels cumulative counts as such, and omits zero counts", () => {
    const counts = [
      { webhook: "validate", verdict: "denied", count: 2 },
      { webhook: "validate", verdict: "allowed", count: 5 },
      { webhook: "mutate", verdict: "patched", count: 0 },
    ];
    expect(formatVerdicts(counts, "since-start")).toBe(
      "admission verdicts since the webhook started (cumulative, this replica only):\n  validate  allowed 5  denied 2",
    );
    expect(formatVerdicts(counts, "last-hour")).toMatch(/^admission verdicts, last hour/);
    expect(formatVerdicts([], "last-hour")).toMatch(/\n {2}none$/);
  });
});

describe("runStatus", () => {
  it("exits 2 on bad flags", async () => {
    expect(await runStatus(["--bogus"])).toBe(2);
    expect(await runStatus(["--kubeconfig", "/dev/null", "--prometheus-url", "ftp://x"])).toBe(2);
    expect(await runStatus(["--kubeconfig", "/dev/null", "--timeout-seconds", "0"])).toBe(2);
    expect(await runStatus(["--kubeconfig", "/dev/null", "--metrics-ca", "ca.crt"])).toBe(2);
  });

  it("exits 1 with the server named when the cluster cannot be reached", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "infergate-status-"));
    const kubeconfig = path.join(dir, "kubeconfig");
    // A port just found free on loopback: nothing listens there, so the connection is refused at once.
    const port = await freePort();
    fs.writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "c", cluster: { server: `https://127.0.0.1:${port}`, "insecure-skip-tls-verify": true } }],
        users: [{ name: "u", user: { token: "t" } }],
        contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
        "current-context": "x",
      }),
    );
    const errors = vi.spyOn(console, "error").mockImplementation(() => undefined);
    try {
      expect(await runStatus(["--kubeconfig", kubeconfig, "--timeout-seconds", "5"])).toBe(1);
      expect(errors.mock.calls.flat().join("\n")).toMatch(new RegExp(`cannot list Projects from https://127\\.0\\.0\\.1:${port}: ECONNREFUSED`));
    } finally {
      errors.mockRestore();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
