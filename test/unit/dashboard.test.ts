// The Grafana dashboard queries only metrics that infergate's code actually registers, so renaming a
// metric without updating the dashboard fails here rather than as an empty panel in production.
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createAdapterMetrics } from "../../src/adapter/adapter-metrics.ts";
import { createAdmissionMetrics, registerProjectGauges } from "../../src/observability/metrics.ts";

const DASHBOARD = path.resolve(import.meta.dirname, "../../manifests/grafana/infergate-dashboard.json");

const PROMQL_WORDS = new Set([
  "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right",
  "rate", "irate", "increase", "histogram_quantile", "and", "or", "unless", "offset", "bool",
]);

/** Metric names an expression selects: identifiers outside label matchers, ranges and strings, minus PromQL's own words. */
function metricNamesOf(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, "")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, " ");
  const names = bare.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return [...new Set(names.filter((n) => !PROMQL_WORDS.has(n)))];
}

interface Target {
  panel: string;
  refId?: string;
  expr?: string;
}

function targetsOf(dashboard: any): Target[] {
  const panels = (dashboard.panels as any[]).flatMap((p) => [p, ...(p.panels ?? [])]);
  return panels.flatMap((p) => (p.targets ?? []).map((t: any) => ({ panel: p.title, refId: t.refId, expr: t.expr })));
}

/** Every series name the webhook and the adapter expose, read from the registries the code builds. */
async function exportedSeriesNames(): Promise<Set<string>> {
  const admission = createAdmissionMetrics();
  registerProjectGauges(admission.registry, () => []);
  const adapter = createAdapterMetrics();
  const names = new Set<string>();
  for (const registry of [admission.registry, adapter.registry]) {
    for (const metric of await registry.getMetricsAsJSON()) {
      names.add(metric.name);
      if (String(metric.type) === "histogram") for (const suffix of ["_bucket", "_count", "_sum"]) names.add(metric.name + suffix);
    }
  }
  return names;
}

describe("Grafana dashboard", () => {
  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, "utf8"));
  const targets = targetsOf(dashboard);

  it("parses, and every panel target has a PromQL expression and a refId", () => {
    expect(dashboard.title).toBe("infergate");
    expect(targets.length).toBeGreaterThan(10);
    for (const t of targets) {
      expect(t.expr, `panel "${t.panel}"`).toMatch(/\S/);
      expect(t.refId, `panel "${t.panel}"`).toMatch(/^[A-Z]$/);
    }
  });

  it("queries only metrics that infergate registers", async () => {
    const exported = await exportedSeriesNames();
    const unknown = targets.flatMap((t) => metricNamesOf(t.expr ?? "").filter((n) => !exported.has(n)).map((n) => `${t.panel}: ${n}`));
    expect(unknown).toEqual([]);
    for (const t of targets) expect(metricNamesOf(t.expr ?? "").length, `panel "${t.panel}" selects no metric`).toBeGreaterThan(0);
  });

  it("covers admission latency, verdicts, denials, project quota and the adapter", () => {
    const used = new Set(targets.flatMap((t) => metricNamesOf(t.expr ?? "")));
    for (const name of [
      "infergate_admission_duration_seconds_bucket",
      "infergate_admission_duration_seconds_count",
      "infergate_admission_denials_total",
      "infergate_project_gpu_quota",
      "infergate_project_gpu_allocated",
      "infergate_project_gpu_reserved",
      "infergate_adapter_scrape_errors_total",
      "infergate_adapter_scrape_targets",
      "infergate_adapter_request_duration_seconds_bucket",
    ]) {
      expect(used, name).toContain(name);
    }
  });

  it("uses the datasource variable in every panel, so it imports into any Grafana", () => {
    const panels = (dashboard.panels as any[]).filter((p) => p.type !== "row");
    for (const p of panels) expect(p.datasource?.uid, p.title).toBe("${datasource}");
    expect(dashboard.templating.list.map((v: any) => v.name)).toContain("datasource");
  });

  it("extracts metric names from expressions, not label names or functions", () => {
    expect(metricNamesOf('histogram_quantile(0.99, sum by (webhook, le) (rate(a_bucket{plugin="all"}[$__rate_interval])))')).toEqual(["a_bucket"]);
    expect(metricNamesOf("max by (project) (x + y) / max by (project) (z)")).toEqual(["x", "y", "z"]);
  });
});

describe("project GPU gauges", () => {
  it("report what the reader returns at scrape time, drop Projects that are gone, and omit a missing quota", async () => {
    const admission = createAdmissionMetrics({ defaults: false });
    let readings = [
      { project: "team-a", quota: 8, allocated: 5.25, reserved: 0.5 },
      { project: "research", allocated: 2, reserved: 0 },
    ];
    registerProjectGauges(admission.registry, () => readings);
    const first = await admission.registry.metrics();
    expect(first).toContain('infergate_project_gpu_quota{project="team-a"} 8');
    expect(first).toContain('infergate_project_gpu_allocated{project="team-a"} 5.25');
    expect(first).toContain('infergate_project_gpu_reserved{project="team-a"} 0.5');
    expect(first).toContain('infergate_project_gpu_allocated{project="research"} 2');
    expect(first).not.toContain('infergate_project_gpu_quota{project="research"}');
    readings = [{ project: "research", allocated: 3, reserved: 0 }];
    const second = await admission.registry.metrics();
    expect(second).not.toContain("team-a");
    expect(second).toContain('infergate_project_gpu_allocated{project="research"} 3');
  });
});
