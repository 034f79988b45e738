// Leader election on a coordination.k8s.io/v1 Lease, so one replica writes Project status.
// The lease is taken or renewed by compare-and-swap; a holder that stops renewing loses it after
// leaseDurationSeconds.
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from "@kubernetes/client-node";
import type { Logger } from "../observability/log.ts";

export interface LeaderElection {
  isLeader(): boolean;
  stop(): Promise<void>;
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

export function electLeader(opts: LeaderOptions): LeaderElection {
  const api = opts.kc.makeApiClient(CoordinationV1Api);
  const duration = opts.leaseDurationSeconds ?? 15;
  const every = (opts.renewEverySeconds ?? 2) * 1000;
  let leader = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const setLeader = (value: boolean) => {
    if (value === leader) return;
    leader = value;
    opts.logger.log("info", value ? "became leader" : "lost leadership", { lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
    opts.onChange?.(value);
  };

  const tick = async () => {
    // Lease times are MicroTime: the API server refuses the millisecond form a plain Date serialises to.
    const now = new V1MicroTime();
    try {
      let lease: V1Lease | undefined;
      try {
        lease = await api.readNamespacedLease({ namespace: opts.namespace, name: opts.name });
      } catch (err: any) {
        if (err?.code !== 404) throw err;
      }
      const spec = lease?.spec;
      const renewed = spec?.renewTime ? new Date(spec.renewTime as any).getTime() : 0;
      const expired = now.getTime() - renewed > (spec?.leaseDurationSeconds ?? duration) * 1000;
      const mine = spec?.holderIdentity === opts.identity;
      // A holder that stepped down on shutdown clears its identity, so a successor need not wait out the lease.
      const released = !!lease && !spec?.holderIdentity;
      if (!lease) {
        await api.createNamespacedLease({
          namespace: opts.namespace,
          body: {
            metadata: { name: opts.name, namespace: opts.namespace },
            spec: { holderIdentity: opts.identity, leaseDurationSeconds: duration, acquireTime: now, renewTime: now, leaseTransitions: 0 },
          },
        });
        setLeader(true);
      } else if (mine || expired || released) {
        await api.replaceNamespacedLease({
          namespace: opts.namespace,
          name: opts.name,
          body: {
            ...lease,
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
        setLeader(true);
      } else {
        setLeader(false);
      }
    } catch (err: any) {
      // A conflict means another replica won this round; anything else, we cannot prove we hold it.
      if (err?.code !== 409) opts.logger.log("warn", "leader election failed", { error: String(err?.message ?? err) });
      setLeader(false);
    }
    if (!stopped) timer = setTimeout(tick, every);
  };
  void tick();

  return {
    isLeader: () => leader,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (!leader) return;
      setLeader(false);
      try {
        const lease = await api.readNamespacedLease({ namespace: opts.namespace, name: opts.name });
        if (lease.spec?.holderIdentity === opts.identity) {
          await api.replaceNamespacedLease({ namespace: opts.namespace, name: opts.name, body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined } } });
        }
      } catch {
        // Best effort: an unreleased lease simply expires after leaseDurationSeconds.
      }
    },
  };
}
