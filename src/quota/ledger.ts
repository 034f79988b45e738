// The race-free edge of quota: reserve GPUs in Project.status by compare-and-swap on its
// resourceVersion. Every replica writes the same object, so the API server serialises them; a loser
// gets 409 Conflict, re-reads, and decides again on the fresh status.
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { GROUP, VERSION, type Project } from "../policy/types.ts";
import { activeReservations, checkFit, formatGpus, reservedExtraMilli, toMilli, withReservation, type ChargeLookup, type FitResult } from "./reservations.ts";

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

export class QuotaLedger {
  private queues = new Map<string, Promise<unknown>>();
  private readonly opts: Required<Omit<LedgerOptions, "cachedProject">> & Pick<LedgerOptions, "cachedProject">;

  constructor(opts: LedgerOptions) {
    this.opts = { ttlMs: 120_000, deadlineMs: 3_500, now: () => new Date(), ...opts };
  }

  /** Reservations for one project are serialised inside a replica, so only replicas contend. */
  reserve(req: ReserveRequest): Promise<ReserveOutcome> {
    const previous = this.queues.get(req.project) ?? Promise.resolve();
    const next = previous.then(() => this.reserveNow(req), () => this.reserveNow(req));
    const tail = next.catch(() => undefined);
    this.queues.set(req.project, tail);
    void tail.then(() => {
      if (this.queues.get(req.project) === tail) this.queues.delete(req.project);
    });
    return next;
  }

  private async reserveNow(req: ReserveRequest): Promise<ReserveOutcome> {
    const { api, lookup, now } = this.opts;
    const started = Date.now();
    let project = this.opts.cachedProject?.(req.project);
    let fresh = false;
    for (let attempt = 1; ; attempt++) {
      if (!project) {
        project = await api.get(req.project);
        fresh = true;
      }
      const at = now();
      const quotaMilli = project.spec?.gpuQuota === undefined ? Number.POSITIVE_INFINITY : toMilli(project.spec.gpuQuota);
      const reservations = activeReservations(project.status?.reservations as any, at);
      const allocatedMilli = lookup.allocatedMilli(req.project);
      const fit = checkFit({ quotaMilli, allocatedMilli, reservations, lookup, key: req.key, targetMilli: req.targetMilli });
      if (!fit.fits) {
        // A cached copy may still hold reservations that have since settled: decide only on a fresh read.
        if (!fresh) {
          project = undefined;
          continue;
        }
        return { ok: false, reason: "QuotaExceeded", fit, quotaMilli, allocatedMilli };
      }
      if (fit.neededMilli <= 0) return { ok: true, wrote: false, fit };
      const next = withReservation(reservations, {
        key: req.key,
        gpus: formatGpus(req.targetMilli),
        replaces: req.replaces,
        expiresAt: new Date(at.getTime() + this.opts.ttlMs).toISOString(),
      }, at);
      const reservedMilli = next.reduce((sum, r) => sum + reservedExtraMilli(r, lookup), 0);
      const body: Project = {
        ...project,
        status: { ...(project.status ?? {}), reservations: next, reservedGpus: formatGpus(reservedMilli) },
      };
      try {
        await api.replaceStatus(body);
        return { ok: true, wrote: true, fit };
      } catch (err: any) {
        if (err?.code !== 409) throw err;
        if (Date.now() - started > this.opts.deadlineMs) {
          return { ok: false, reason: "QuotaContention", message: `project ${req.project}: too many concurrent changes to its GPU quota after ${attempt} attempts; retry` };
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
