// The loop the cluster reconcilers (HPAs, PodGroups) run: every second, on the leader only and once the
// policy store is complete, start what a round reads and, when all of it is synced, plan and apply. A
// round runs only after a watched change, a policy change (the store's generation moved), or
// `resyncEveryMs` without one, so an idle cluster costs one comparison per resync. What a round reads
// is started lazily, so a standby replica pays nothing for it.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../observability/log.ts";
import type { PolicyStore } from "../policy/store.ts";

/** What a reconciler of objects infergate keeps in the cluster is started with. */
export interface ClusterReconcilerOptions {
  kc: KubeConfig;
  store: PolicyStore;
  logger: Logger;
  isLeader: () => boolean;
  /**
   * True once the policy store holds every Project and InferencePolicy (pass the policy watches'
   * `synced`); no round runs before. Until then a namespace may look like it left its Project or
   * changed profile, and what infergate keeps for it unwanted.
   */
  ready?: () => boolean;
  /** A full comparison runs at least this often, besides after every watched change. */
  resyncEveryMs?: number;
}

export interface ReconcileLoopOptions<Caches> extends Omit<ClusterReconcilerOptions, "kc"> {
  /** Names the loop in its log line: `<name> reconcile failed`. */
  name: string;
  /**
   * Starts what a round reads (watches, which call `changed` on every event) and returns it once all of
   * it is synced; undefined skips this round.
   */
  prepare(changed: () => void): Caches | undefined | Promise<Caches | undefined>;
  /** One round: plan from the caches, then apply. */
  reconcile(caches: Caches): Promise<void>;
  /** Stops what `prepare` started; called after the last round has finished. */
  close(): Promise<unknown>;
}

const TICK_MS = 1_000;
/** How long `stop` waits for a round in flight by default. */
export const STOP_WAIT_MS = 1_000;

export interface ReconcileLoop {
  /**
   * No new round starts; the round in flight gets `timeoutMs` to finish, then what `prepare` started is
   * closed. A round cut short is safe to abandon: every round compares the whole desired state with
   * the cluster, so the next leader's first round redoes whatever this one did not get to.
   */
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

export function startReconcileLoop<Caches>(opts: ReconcileLoopOptions<Caches>): ReconcileLoop {
  const ready = opts.ready ?? (() => true);
  const resyncEveryMs = opts.resyncEveryMs ?? 30_000;
  let dirty = true;
  let lastRun = 0;
  let generation = -1;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;
  const changed = () => {
    dirty = true;
  };

  const round = async () => {
    if (!opts.isLeader() || !ready()) return;
    const caches = await opts.prepare(changed);
    if (caches === undefined || stopped) return;
    const due = dirty || opts.store.generation !== generation || performance.now() - lastRun >= resyncEveryMs;
    if (!due) return;
    dirty = false;
    generation = opts.store.generation;
    lastRun = performance.now();
    await opts.reconcile(caches);
  };

  const tick = () => {
    if (stopped) return;
    inFlight = round()
      .catch((err) => opts.logger.log("warn", `${opts.name} reconcile failed`, { error: String(err?.message ?? err) }))
      .finally(() => {
        inFlight = undefined;
        if (!stopped) timer = setTimeout(tick, TICK_MS);
      });
  };
  tick();

  let stopping: Promise<void> | undefined;
  const stop = async (timeoutMs: number) => {
    stopped = true;
    if (timer) clearTimeout(timer);
    if (inFlight) {
      let timedOut: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        inFlight.then(() => true),
        new Promise<false>((resolve) => (timedOut = setTimeout(() => resolve(false), timeoutMs))),
      ]);
      clearTimeout(timedOut);
      if (!finished) opts.logger.log("warn", `${opts.name} reconcile still running at shutdown; abandoned`, { waitedMs: timeoutMs });
    }
    await opts.close();
  };
  return {
    stop(options = {}) {
      stopping ??= stop(options.timeoutMs ?? STOP_WAIT_MS);
      return stopping;
    },
  };
}
