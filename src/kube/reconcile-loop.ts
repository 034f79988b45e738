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

export function startReconcileLoop<Caches>(opts: ReconcileLoopOptions<Caches>): { stop(): Promise<void> } {
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
    if (caches === undefined) return;
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

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await inFlight;
      await opts.close();
    },
  };
}
