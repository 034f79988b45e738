// Leader election on a coordination.k8s.io/v1 Lease, so one replica writes Project status.
// The lease is taken or renewed by compare-and-swap; a holder that stops renewing loses it after
// leaseDurationSeconds.
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from "@kubernetes/client-node";
import type { Logger } from "../observability/log.ts";

export interface LeaderElection {
  isLeader(): boolean;
  /**
   * Stops renewing and, when this replica holds the Lease, releases it (clears the holder) so the next
   * replica takes over at its next try instead of after leaseDurationSeconds. Gives up on the release
   * after `timeoutMs` (default 1 s): an API server that does not answer must not hold up a shutdown,
   * and an unreleased Lease still expires.
   */
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

export interface LeaderOptions {
  kc: KubeConfig;
  namespace: string;
  name: string;
  identity: string;
  logger: Logger;
  leaseDurationSeconds?: number;
  renewEverySeconds?: number;
  onChange?: (leader: boolean) => void;
}

export const RELEASE_TIMEOUT_MS = 1_000;

export function electLeader(opts: LeaderOptions): LeaderElection {
  const api = opts.kc.makeApiClient(CoordinationV1Api);
  const duration = opts.leaseDurationSeconds ?? 15;
  const every = (opts.renewEverySeconds ?? 2) * 1000;
  const lease = `${opts.namespace}/${opts.name}`;
  let leader = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | undefined;
  let stopping: Promise<void> | undefined;

  const setLeader = (value: boolean) => {
    if (value === leader) return;
    leader = value;
    opts.logger.log("info", value ? "became leader" : "lost leadership", { lease, identity: opts.identity });
    opts.onChange?.(value);
  };

  const tick = async () => {
    // Lease times are MicroTime: the API server refuses the millisecond form a plain Date serialises to.
    const now = new V1MicroTime();
    try {
      let current: V1Lease | undefined;
      try {
        current = await api.readNamespacedLease({ namespace: opts.namespace, name: opts.name });
      } catch (err: any) {
        if (err?.code !== 404) throw err;
      }
      // Stopped while reading: take nothing more. A write already sent is undone by stop's release.
      if (stopped) return;
      const spec = current?.spec;
      const renewed = spec?.renewTime ? new Date(spec.renewTime as any).getTime() : 0;
      const expired = now.getTime() - renewed > (spec?.leaseDurationSeconds ?? duration) * 1000;
      const mine = spec?.holderIdentity === opts.identity;
      // A holder that stepped down on shutdown clears its identity, so a successor need not wait out the lease.
      const released = !!current && !spec?.holderIdentity;
      if (!current) {
        await api.createNamespacedLease({
          namespace: opts.namespace,
          body: {
            metadata: { name: opts.name, namespace: opts.namespace },
            spec: { holderIdentity: opts.identity, leaseDurationSeconds: duration, acquireTime: now, renewTime: now, leaseTransitions: 0 },
          },
        });
        if (!stopped) setLeader(true);
      } else if (mine || expired || released) {
        await api.replaceNamespacedLease({
          namespace: opts.namespace,
          name: opts.name,
          body: {
            ...current,
            spec: {
              ...spec,
              holderIdentity: opts.identity,
              leaseDurationSeconds: duration,
              renewTime: now,
              acquireTime: mine ? spec?.acquireTime : now,
              leaseTransitions: (spec?.leaseTransitions ?? 0) + (mine ? 0 : 1),
            },
          },
        });
        if (!stopped) setLeader(true);
      } else {
        setLeader(false);
      }
    } catch (err: any) {
      // A conflict means another replica won this round; anything else, we cannot prove we hold it.
      if (err?.code !== 409 && !stopped) opts.logger.log("warn", "leader election failed", { lease, error: String(err?.message ?? err) });
      setLeader(false);
    }
  };

  const loop = () => {
    ticking = tick().finally(() => {
      ticking = undefined;
      if (!stopped) timer = setTimeout(loop, every);
    });
  };
  loop();

  /** Clears the holder if it is still us; a conflict means the Lease changed under us: look again. */
  const release = async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const current = await api.readNamespacedLease({ namespace: opts.namespace, name: opts.name });
      if (current.spec?.holderIdentity !== opts.identity) return;
      try {
        await api.replaceNamespacedLease({
          namespace: opts.namespace,
          name: opts.name,
          body: { ...current, spec: { ...current.spec, holderIdentity: undefined } },
        });
        opts.logger.log("info", "released leadership", { lease, identity: opts.identity });
        return;
      } catch (err: any) {
        if (err?.code !== 409) throw err;
      }
    }
  };

  const stop = async (timeoutMs: number) => {
    stopped = true;
    if (timer) clearTimeout(timer);
    // A renewal in flight may land after a release and take the Lease back: let it finish first. It
    // only counts if we held the Lease or were about to take it.
    const inFlight = ticking;
    const mayHold = leader || inFlight !== undefined;
    setLeader(false);
    if (!mayHold) return;
    let deadline: NodeJS.Timeout | undefined;
    let gaveUp = false;
    const released = (async () => {
      await inFlight;
      await release();
    })().catch((err: any) => {
      // After giving up, the failure is only the abandoned request being cut off.
      if (err?.code !== 404 && !gaveUp) opts.logger.log("warn", "cannot release the Lease; the next leader waits for it to expire", { lease, error: String(err?.message ?? err) });
    });
    const inTime = await Promise.race([released.then(() => true), new Promise<false>((resolve) => (deadline = setTimeout(() => resolve(false), timeoutMs)))]);
    clearTimeout(deadline);
    if (!inTime) {
      gaveUp = true;
      opts.logger.log("warn", "the API server did not confirm the Lease release in time; the next leader waits for it to expire", { lease, timeoutMs, leaseDurationSeconds: duration });
    }
  };

  return {
    isLeader: () => leader,
    stop(options = {}) {
      stopping ??= stop(options.timeoutMs ?? RELEASE_TIMEOUT_MS);
      return stopping;
    },
  };
}
