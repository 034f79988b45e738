// What `infergate status` prints, as pure functions: Project objects and metric samples in, text out.
import { formatGpus, parseGpuMilli } from "../quota/accounting.ts";
import type { Sample } from "../adapter/exposition.ts";
import type { Project } from "../policy/types.ts";

export const BAR_WIDTH = 10;

export interface ProjectRow {
  name: string;
  /** Milli-GPUs; undefined when the Project sets no quota. */
  quotaMilli?: number;
  allocatedMilli: number;
  reservedMilli: number;
  workloads: number;
  /** False until infergate's reconciler has written the status once. */
  hasStatus: boolean;
}

export function projectRowOf(project: Project): ProjectRow {
  const status = project.status;
  const quota = project.spec?.gpuQuota;
  return {
    name: project.metadata.name ?? "",
    quotaMilli: quota === undefined || quota === "" ? undefined : parseGpuMilli(quota),
    allocatedMilli: parseGpuMilli(status?.allocatedGpus ?? "0") ?? 0,
    reservedMilli: parseGpuMilli(status?.reservedGpus ?? "0") ?? 0,
    workloads: status?.workloads ?? 0,
    hasStatus: status?.allocatedGpus !== undefined,
  };
}

/**
 * A bar of `width` cells: █ allocated, ▒ reserved, ░ free. Rounded down, except that any use shows at
 * least one cell and a bar is full only when the quota is used up, so the bar never hides the two
 * states an operator acts on (something running; nothing left). Over quota the bar is all █ and ends in "!".
 */
export function gpuBar(row: Pick<ProjectRow, "quotaMilli" | "allocatedMilli" | "reservedMilli">, width = BAR_WIDTH): string {
  const { quotaMilli, allocatedMilli, reservedMilli } = row;
  if (quotaMilli === undefined) return `[${"no quota".padEnd(width, " ").slice(0, width)}]`;
  const used = allocatedMilli + reservedMilli;
  if (used > quotaMilli) return `[${"█".repeat(width)}]!`;
  const cells = (milli: number) => {
    if (milli <= 0) return 0;
    if (milli >= quotaMilli) return width;
    return Math.min(width - 1, Math.max(1, Math.floor((milli / quotaMilli) * width)));
  };
  const usedCells = cells(used);
  const allocatedCells = reservedMilli > 0 ? Math.min(cells(allocatedMilli), Math.max(0, usedCells - 1)) : usedCells;
  return `[${"█".repeat(allocatedCells)}${"▒".repeat(usedCells - allocatedCells)}${"░".repeat(width - usedCells)}]`;
}

export function formatProjectTable(rows: readonly ProjectRow[]): string {
  if (rows.length === 0) return "no Projects in the cluster";
  const sorted = [...rows].sort((a, b) => a.name.localeCompare(b.name));
  const nameWidth = Math.max(...sorted.map((r) => r.name.length));
  const usage = sorted.map((r) => `${formatGpus(r.allocatedMilli)}${r.quotaMilli === undefined ? "" : `/${formatGpus(r.quotaMilli)}`} GPUs`);
  const usageWidth = Math.max(...usage.map((u) => u.length));
  const lines = sorted.map((row, i) => {
    const bar = gpuBar(row);
    const over = row.quotaMilli !== undefined && row.allocatedMilli + row.reservedMilli > row.quotaMilli
      ? `  OVER QUOTA by ${formatGpus(row.allocatedMilli + row.reservedMilli - row.quotaMilli)}`
      : "";
    const pending = row.hasStatus ? "" : "  (no status yet)";
    return `${row.name.padEnd(nameWidth)}  ${bar.padEnd(BAR_WIDTH + 3)}  ${usage[i]!.padEnd(usageWidth)}  reserved ${formatGpus(row.reservedMilli)}  workloads ${row.workloads}${over}${pending}`;
  });
  return lines.join("\n");
}

export interface VerdictCount {
  webhook: string;
  verdict: string;
  count: number;
}

/** Whole-request verdicts (plugin="all") from the webhook's own /metrics: cumulative since it started. */
export function verdictsFromSamples(samples: readonly Sample[]): VerdictCount[] {
  const sums = new Map<string, VerdictCount>();
  for (const s of samples) {
    if (s.name !== "infergate_admission_duration_seconds_count" || s.labels.plugin !== "all") continue;
    const webhook = s.labels.webhook ?? "";
    const verdict = s.labels.verdict ?? "";
    const key = `${webhook}\u0000${verdict}`;
    const entry = sums.get(key) ?? { webhook, verdict, count: 0 };
    entry.count += s.value;
    sums.set(key, entry);
  }
  return [...sums.values()];
}

/** The `data` of a Prometheus instant-vector query answer, grouped by webhook and verdict. */
export function verdictsFromPrometheus(answer: unknown): VerdictCount[] {
  const result = (answer as { data?: { resultType?: string; result?: unknown } })?.data?.result;
  if (!Array.isArray(result)) throw new Error("Prometheus answer has no data.result vector");
  return result.map((entry: { metric?: Record<string, string>; value?: [number, string] }) => ({
    webhook: entry.metric?.webhook ?? "",
    verdict: entry.metric?.verdict ?? "",
    count: Math.round(Number(entry.value?.[1] ?? 0)),
  }));
}

export type VerdictWindow = "last-hour" | "since-start";

export function formatVerdicts(counts: readonly VerdictCount[], window: VerdictWindow): string {
  const title = window === "last-hour" ? "admission verdicts, last hour (Prometheus):" : "admission verdicts since the webhook started (cumulative, this replica only):";
  const nonZero = counts.filter((c) => c.count > 0);
  if (nonZero.length === 0) return `${title}\n  none`;
  const webhooks = [...new Set(nonZero.map((c) => c.webhook))].sort();
  const width = Math.max(...webhooks.map((w) => w.length));
  const lines = webhooks.map((webhook) => {
    const parts = nonZero
      .filter((c) => c.webhook === webhook)
      .sort((a, b) => a.verdict.localeCompare(b.verdict))
      .map((c) => `${c.verdict} ${c.count}`);
    return `  ${webhook.padEnd(width)}  ${parts.join("  ")}`;
  });
  return `${title}\n${lines.join("\n")}`;
}
