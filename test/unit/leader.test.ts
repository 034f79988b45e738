// Leader election's hand-over on shutdown, against an in-memory Lease with the API server's
// compare-and-swap: the Lease is released (so a standby takes over at its next try), a renewal in
// flight cannot take it back afterwards, and an API server that never answers does not hold stop().
import { describe, expect, it } from "vitest";
import type { KubeConfig, V1Lease } from "@kubernetes/client-node";
import { electLeader } from "../../src/kube/leader.ts";
import type { Logger } from "../../src/observability/log.ts";

const NAMESPACE = "infergate-system";
const NAME = "infergate-quota";

class FakeLeases {
  lease: V1Lease | undefined;
  private version = 0;
  /** While set, every call waits for it before it is carried out. */
  gate: Promise<void> | undefined;
  calls: string[] = [];

  /** Calls are recorded as `<who>:<verb>`. */
  api(who: string) {
    const conflict = () => Object.assign(new Error("Conflict"), { code: 409 });
    const copy = (lease: V1Lease) => structuredClone(lease);
    const pass = async (call: string) => {
      this.calls.push(`${who}:${call}`);
      if (this.gate) await this.gate;
    };
    return {
      readNamespacedLease: async () => {
        await pass("read");
        if (!this.lease) throw Object.assign(new Error("NotFound"), { code: 404 });
        return copy(this.lease);
      },
      createNamespacedLease: async ({ body }: { body: V1Lease }) => {
        await pass("create");
        if (this.lease) throw conflict();
        this.lease = { ...copy(body), metadata: { ...body.metadata, resourceVersion: String(++this.version) } };
        return copy(this.lease);
      },
      replaceNamespacedLease: async ({ body }: { body: V1Lease }) => {
        await pass("replace");
        if (body.metadata?.resourceVersion !== this.lease?.metadata?.resourceVersion) throw conflict();
        this.lease = { ...copy(body), metadata: { ...body.metadata, resourceVersion: String(++this.version) } };
        return copy(this.lease);
      },
    };
  }

  kubeConfig(who: string): KubeConfig {
    return { makeApiClient: () => this.api(who) } as unknown as KubeConfig;
  }

  count(who: string, verb?: string): number {
    return this.calls.filter((c) => c.startsWith(`${who}:`) && (verb === undefined || c === `${who}:${verb}`)).length;
  }

  holder(): string | undefined {
    return this.lease?.spec?.holderIdentity;
  }
}

function recordingLogger(): Logger & { lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = [];
  return { lines, log: (level: string, msg: string) => void lines.push({ level, msg }) } as unknown as Logger & { lines: { level: string; msg: string }[] };
}

const until = async (what: string, condition: () => boolean) => {
  for (let i = 0; i < 1000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error(`never happened: ${what}`);
};

function elect(leases: FakeLeases, identity: string, logger = recordingLogger()) {
  return electLeader({ kc: leases.kubeConfig(identity), namespace: NAMESPACE, name: NAME, identity, logger, renewEverySeconds: 0.02 });
}

describe("electLeader stop()", () => {
  it("releases the Lease it holds, and a standby takes it over", async () => {
    const leases = new FakeLeases();
    const a = elect(leases, "a");
    await until("a leads", () => a.isLeader());
    const b = elect(leases, "b");
    await until("b has tried at least once", () => leases.count("b", "read") >= 1);
    expect(b.isLeader()).toBe(false);
    await a.stop();
    expect(a.isLeader()).toBe(false);
    await until("b leads", () => b.isLeader());
    expect(leases.holder()).toBe("b");
    await b.stop();
    expect(leases.holder()).toBeUndefined();
  });

  it("does not let a renewal in flight take the Lease back after the release", async () => {
    const leases = new FakeLeases();
    const a = elect(leases, "a");
    await until("a leads", () => a.isLeader());
    // Hold the next renewal inside the API server, then stop while it waits.
    let open!: () => void;
    leases.gate = new Promise((resolve) => (open = resolve));
    const before = leases.count("a");
    await until("a renewal is in flight", () => leases.count("a") > before);
    const stopped = a.stop({ timeoutMs: 5_000 });
    leases.gate = undefined;
    open();
    await stopped;
    expect(leases.holder()).toBeUndefined();
    const calls = leases.count("a");
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Stopped means stopped: no renewal after the release.
    expect(leases.count("a")).toBe(calls);
    expect(leases.holder()).toBeUndefined();
  });

  it("gives up on an API server that does not answer", async () => {
    const leases = new FakeLeases();
    const logger = recordingLogger();
    const a = elect(leases, "a", logger);
    await until("a leads", () => a.isLeader());
    leases.gate = new Promise(() => undefined);
    await a.stop({ timeoutMs: 50 });
    expect(a.isLeader()).toBe(false);
    expect(logger.lines.some((l) => l.level === "warn" && l.msg.includes("did not confirm the Lease release"))).toBe(true);
  });

  it("a standby writes nothing when it stops", async () => {
    const leases = new FakeLeases();
    const a = elect(leases, "a");
    await until("a leads", () => a.isLeader());
    const b = elect(leases, "b");
    await until("b has looked twice", () => leases.count("b", "read") >= 2);
    await b.stop();
    expect(leases.holder()).toBe("a");
    expect(leases.count("b") - leases.count("b", "read")).toBe(0);
    await a.stop();
    expect(leases.holder()).toBeUndefined();
  });
});
