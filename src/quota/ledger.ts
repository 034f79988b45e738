// The race-free edge of quota: reserve GPUs in Project.status by compare-and-swap on its
// resourceVersion. Every replica writes the same object, so the API server serialises them; a loser
// gets 409 Conflict, re-reads, and decides again on the fresh status.
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { GROUP, VERSION, type Project } from "../policy/types.ts";
import { formatGpus, quotaMilliOf } from "./accounting.ts";
import { activeReservations, checkFit, reservedExtraMilli, withReservation, type ChargeLookup, type FitResult } from "./reservations.ts";

export interface ProjectStatusApi {
  /** An uncached read. */
  get(name: string): Promise<Project>;
  /** PUT /status carrying metadata.resourceVersion; rejects with `{ code: 409 }` on a conflict. */
  replaceStatus(project: Project): Promise<Project>;
}

export function kubeProjectStatusApi(kc: KubeConfig): ProjectStatusApi {
  const api = kc.makeApiClient(CustomObjectsApi);
  const plural = "projects";
  return {
    get: (name) => api.getClusterCustomObject({ group: GROUP, version: VERSION, plural, name }) as Promise<Project>,
    replaceStatus: (project) =>
      api.replaceClusterCustomObjectStatus({ group: GROUP, version: VERSION, plural, name: project.metadata.name ?? "", body: project }) as Promise<Project>,
  };
}

export interface LedgerLookup extends ChargeLookup {
  /** Σ of this replica's cached charges for a project, milli-GPU. */
  allocatedMilli(project: string): number;
}

export interface ReserveRequest {
  project: string;
  key: string;
  targetMilli: number;
  replaces: string;
}

export type ReserveOutcome =
  | { ok: true; wrote: boolean; fit: FitResult }
  | { ok: false; reason: "QuotaExceeded"; fit: FitResult; quotaMilli: number; allocatedMilli: number }
  | { ok: false; reason: "QuotaContention"; message: string };

export interface LedgerOptions {
  api: ProjectStatusApi;
  lookup: LedgerLookup;
  /** The informer's copy, tried first to save a read; a conflict falls back to a fresh GET. */
  cachedProject?: (name: string) => Project | undefined;
  ttlMs?: number;
  /** Give up (and deny) before the webhook's own timeout. */
  deadlineMs?: number;
  now?: () => Date;
}

interface Waiting {
  req: ReserveRequest;
  resolve: (outcome: ReserveOutcome) => void;
  reject: (error: unknown) => void;
}

export class QuotaLedger {
  private readonly waiting = new Map<string, Waiting[]>();
  private readonly draining = new Set<string>();
  private readonly opts: Required<Omit<LedgerOptions, "cachedProject">> & Pick<LedgerOptions, "cachedProject">;

  constructor(opts: LedgerOptions) {
    this.opts = { ttlMs: 120_000, deadlineMs: 3_500, now: () => new Date(), ...opts };
  }

  /**
   * Reservations for one project are decided one batch at a time inside a replica, so only replicas
   * contend: everything that arrived while the previous write was in flight is decided on one read
   * and written with one compare-and-swap. One write per request would queue a burst of N admissions
   * behind N round trips, past the webhook's timeout.
   */
  reserve(req: ReserveRequest): Promise<ReserveOutcome> {
    return new Promise((resolve, reject) => {
      const queue = this.waiting.get(req.project);
      if (queue) queue.push({ req, resolve, reject });
      else this.waiting.set(req.project, [{ req, resolve, reject }]);
      if (!this.draining.has(req.project)) void this.drain(req.project);
    });
  }

  private async drain(project: string): Promise<void> {
    this.draining.add(project);
    try {
      for (;;) {
        const batch = this.waiting.get(project);
        if (!batch?.length) return;
        this.waiting.delete(project);
        try {
          const outcomes = await this.decide(project, batch.map((w) => w.req));
          batch.forEach((w, i) => w.resolve(outcomes[i]!));
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      this.draining.delete(project);
    }
  }

  /**
   * Decides a batch in arrival order, each request on the reservations of those before it, and writes
   * them together. Nothing is final until the write succeeds: a conflict re-reads and decides the whole
   * batch again, since a fresher status may change every answer.
   */
  private async decide(projectName: string, reqs: readonly ReserveRequest[]): Promise<ReserveOutcome[]> {
    const { api, lookup, now } = this.opts;
    const started = Date.now();
    let project = this.opts.cachedProject?.(projectName);
    let fresh = false;
    for (let attempt = 1; ; attempt++) {
      if (!project) {
        project = await api.get(projectName);
        fresh = true;
      }
      const at = now();
      // Read exactly as the quota plugin reads it, so the two never disagree on what the quota is.
      const quotaMilli = quotaMilliOf(project) ?? Number.POSITIVE_INFINITY;
      let reservations = activeReservations(project.status?.reservations as any, at);
      const allocatedMilli = lookup.allocatedMilli(projectName);
      const outcomes: ReserveOutcome[] = [];
      let write = false;
      let stale = false;
      for (const req of reqs) {
        const fit = checkFit({ quotaMilli, allocatedMilli, reservations, lookup, key: req.key, targetMilli: req.targetMilli });
        if (!fit.fits) {
          // A cached copy may still hold reservations that have since settled: deny only on a fresh read.
          if (!fresh) {
            stale = true;
            break;
          }
          outcomes.push({ ok: false, reason: "QuotaExceeded", fit, quotaMilli, allocatedMilli });
        } else if (fit.neededMilli <= 0) {
          outcomes.push({ ok: true, wrote: false, fit });
        } else {
          reservations = withReservation(reservations, {
            key: req.key,
            gpus: formatGpus(req.targetMilli),
            replaces: req.replaces,
            expiresAt: new Date(at.getTime() + this.opts.ttlMs).toISOString(),
          }, at);
          outcomes.push({ ok: true, wrote: true, fit });
          write = true;
        }
      }
      if (stale) {
        project = undefined;
        continue;
      }
      if (!write) return outcomes;
      const reservedMilli = reservations.reduce((sum, r) => sum + reservedExtraMilli(r, lookup), 0);
      const body: Project = {
        ...project,
        status: { ...(project.status ?? {}), reservations, reservedGpus: formatGpus(reservedMilli) },
      };
      try {
        await api.replaceStatus(body);
        return outcomes;
      } catch (err: any) {
        // 429: the API server is shedding load (priority and fairness); like a conflict, it is worth a
        // jittered retry within the deadline rather than an immediate denial.
        if (err?.code !== 409 && err?.code !== 429) throw err;
        if (Date.now() - started > this.opts.deadlineMs) {
          const message = `project ${projectName}: too many concurrent changes to its GPU quota after ${attempt} attempts; retry`;
          return reqs.map(() => ({ ok: false, reason: "QuotaContention", message }));
        }
        project = undefined;
        await sleep(jitter(attempt));
      }
    }
  }
}

function jitter(attempt: number): number {
  const base = Math.min(10 * 2 ** Math.min(attempt, 5), 200);
  return base / 2 + Math.random() * base;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
