import { isDeepStrictEqual } from "node:util";
// Keeps Project.status current (allocated, reserved, available, workloads, conditions) and settles
// reservations. Runs on the leader only; every write is a compare-and-swap, so a stale leader's
// write fails instead of overwriting a newer reservation.
import type { Project, ProjectStatus } from "../policy/types.ts";
import type { Logger } from "../observability/log.ts";
import type { ProjectStatusApi, LedgerLookup } from "./ledger.ts";
import { formatGpus, quotaMilliOf } from "./accounting.ts";
import { activeReservations, reservedExtraMilli, settledReservations, type Reservation } from "./reservations.ts";

export interface ReconcilerOptions {
  api: ProjectStatusApi;
  lookup: LedgerLookup;
  workloads: (project: string) => number;
  projects: () => Project[];
  isLeader: () => boolean;
  logger: Logger;
  everyMs?: number;
  /** How long an admitted object must be visible before its reservation stops covering it. */
  graceMs?: number;
  now?: () => Date;
}

/** The status a project should have now; pure. */
export function desiredStatus(
  project: Project,
  lookup: LedgerLookup,
  workloads: number,
  settled: readonly Reservation[],
  now: Date,
): ProjectStatus {
  const name = project.metadata.name ?? "";
  const drop = new Set(settled.map((r) => `${r.key}@${r.replaces}`));
  const reservations = activeReservations(project.status?.reservations as Reservation[] | undefined, now).filter((r) => !drop.has(`${r.key}@${r.replaces}`));
  const allocated = lookup.allocatedMilli(name);
  const reserved = reservations.reduce((sum, r) => sum + reservedExtraMilli(r, lookup), 0);
  const quotaMilli = quotaMilliOf(project);
  const status: ProjectStatus & { availableGpus?: string } = {
    ...project.status,
    allocatedGpus: formatGpus(allocated),
    reservedGpus: formatGpus(reserved),
    workloads,
    reservations,
  };
  const within = quotaMilli === undefined || allocated + reserved <= quotaMilli;
  if (quotaMilli !== undefined) status.availableGpus = formatGpus(Math.max(0, quotaMilli - allocated - reserved));
  else delete status.availableGpus;
  const previous = (project.status?.conditions as any[] | undefined)?.find((c) => c?.type === "WithinQuota");
  const condStatus = within ? "True" : "False";
  status.conditions = [
    {
      type: "WithinQuota",
      status: condStatus,
      reason: within ? "UsageWithinQuota" : "UsageOverQuota",
      message: quotaMilli === undefined ? "no GPU quota set" : `${formatGpus(allocated + reserved)} of ${formatGpus(quotaMilli)} GPUs in use or reserved`,
      lastTransitionTime: previous?.status === condStatus ? previous.lastTransitionTime : now.toISOString(),
    },
  ];
  return status;
}

function sameStatus(a: ProjectStatus | undefined, b: ProjectStatus): boolean {
  // Key order differs between the API server's copy and a freshly built status: compare by value.
  const strip = (s: any) => JSON.parse(JSON.stringify({ ...s, conditions: (s?.conditions ?? []).map((c: any) => ({ ...c, lastTransitionTime: undefined })) }));
  return isDeepStrictEqual(strip(a ?? {}), strip(b));
}

export interface StatusReconciler {
  trigger(): void;
  runOnce(): Promise<void>;
  /**
   * No new round starts; the status write in flight gets `timeoutMs` to land. The writes not yet made
   * are abandoned, safely: Project status is derived (watched objects plus the reservations already in
   * the status), every write is a compare-and-swap, and the next leader recomputes it all in its first
   * round. Reservations themselves are written by the ledger while admitting, never here.
   */
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

export const STOP_WAIT_MS = 1_000;

export function startReconciler(opts: ReconcilerOptions): StatusReconciler {
  const firstSeen = new Map<string, number>();
  const now = opts.now ?? (() => new Date());
  let timer: NodeJS.Timeout | undefined;
  let pending: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  let stopping: Promise<void> | undefined;

  const runOnce = async () => {
    if (!opts.isLeader() || running || stopped) return;
    running = writeStatuses();
    try {
      await running;
    } finally {
      running = undefined;
    }
  };
  const writeStatuses = async () => {
    for (const project of opts.projects()) {
      if (stopped || !opts.isLeader()) return;
      const name = project.metadata.name ?? "";
      const at = now();
      const settled = settledReservations(project.status?.reservations as Reservation[] | undefined, opts.lookup, firstSeen, at, opts.graceMs ?? 3_000);
      const status = desiredStatus(project, opts.lookup, opts.workloads(name), settled, at);
      if (sameStatus(project.status, status)) continue;
      try {
        await opts.api.replaceStatus({ ...project, status });
      } catch (err: any) {
        // 409: someone reserved meanwhile; the next round works from the newer copy.
        if (err?.code !== 409 && err?.code !== 404 && !stopped) opts.logger.log("warn", "project status update failed", { project: name, error: String(err?.message ?? err) });
      }
    }
  };
  const loop = () => {
    if (stopped) return;
    void runOnce().finally(() => {
      if (!stopped) timer = setTimeout(loop, opts.everyMs ?? 1_000);
    });
  };
  loop();
  return {
    runOnce,
    trigger() {
      if (pending || stopped) return;
      pending = setTimeout(() => {
        pending = undefined;
        void runOnce();
      }, 100);
    },
    stop(options = {}) {
      stopping ??= (async () => {
        stopped = true;
        if (timer) clearTimeout(timer);
        if (pending) clearTimeout(pending);
        if (!running) return;
        const timeoutMs = options.timeoutMs ?? STOP_WAIT_MS;
        let timedOut: NodeJS.Timeout | undefined;
        const landed = await Promise.race([running.then(() => true, () => true), new Promise<false>((resolve) => (timedOut = setTimeout(() => resolve(false), timeoutMs)))]);
        clearTimeout(timedOut);
        if (!landed) opts.logger.log("warn", "project status write still running at shutdown; abandoned, the next leader redoes it", { waitedMs: timeoutMs });
      })();
      return stopping;
    },
  };
}
