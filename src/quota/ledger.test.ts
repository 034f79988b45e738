import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { Project } from "../policy/types.ts";
import { QuotaLedger, type LedgerLookup, type ProjectStatusApi, type ReserveOutcome } from "./ledger.ts";

/** One Project behind a compare-and-swap on resourceVersion, as the API server keeps it; calls yield to each other. */
function fakeApi(quota: string): ProjectStatusApi & { writes: number; conflicts: number; current(): Project } {
  let stored: Project = { metadata: { name: "team-a", resourceVersion: "1" }, spec: { namespaces: ["a"], gpuQuota: quota } };
  const pause = () => new Promise((r) => setTimeout(r, Math.random() * 3));
  const api = {
    writes: 0,
    conflicts: 0,
    current: () => structuredClone(stored),
    async get() {
      await pause();
      return structuredClone(stored);
    },
    async replaceStatus(project: Project) {
      await pause();
      if (project.metadata.resourceVersion !== stored.metadata.resourceVersion) {
        api.conflicts++;
        throw Object.assign(new Error("conflict"), { code: 409 });
      }
      api.writes++;
      stored = { ...structuredClone(project), metadata: { ...project.metadata, resourceVersion: String(Number(stored.metadata.resourceVersion) + 1) } };
      return structuredClone(stored);
    },
  };
  return api;
}

/** A cache that shows none of the admitted objects yet, so only the reservations hold them. */
const emptyCache: LedgerLookup = { charge: () => undefined, allocatedMilli: () => 0 };

const replicas = (api: ProjectStatusApi, n: number) =>
  Array.from({ length: n }, () => new QuotaLedger({ api, lookup: emptyCache, deadlineMs: 60_000 }));

describe("QuotaLedger", () => {
  it("lets three replicas admit exactly what fits of 50 concurrent 1-GPU requests", async () => {
    const api = fakeApi("17");
    const ledgers = replicas(api, 3);
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, (_, i) => ledgers[i % 3]!.reserve({ project: "team-a", key: `Deployment/a/d${i}`, targetMilli: 1000, replaces: "" })),
    );
    expect(outcomes.filter((o) => o.ok)).toHaveLength(17);
    expect(outcomes.filter((o) => !o.ok && o.reason === "QuotaExceeded")).toHaveLength(33);
    expect(api.current().status?.reservations).toHaveLength(17);
    expect(api.current().status?.reservedGpus).toBe("17");
  });

  it("never admits more than the quota, and denies only what no longer fits, for any mix of sizes", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 4000 }), { minLength: 1, maxLength: 25 }), fc.integer({ min: 0, max: 20_000 }), async (sizes, quotaMilli) => {
        const api = fakeApi(String(quotaMilli / 1000));
        const ledgers = replicas(api, 3);
        const outcomes: ReserveOutcome[] = await Promise.all(
          sizes.map((milli, i) => ledgers[i % 3]!.reserve({ project: "team-a", key: `Deployment/a/d${i}`, targetMilli: milli, replaces: "" })),
        );
        const admitted = sizes.filter((_, i) => outcomes[i]!.ok).reduce((a, b) => a + b, 0);
        expect(admitted).toBeLessThanOrEqual(quotaMilli);
        // Free GPUs only shrink here, so a denied request cannot fit in what is left at the end either.
        sizes.forEach((milli, i) => {
          if (!outcomes[i]!.ok) expect(quotaMilli - admitted).toBeLessThan(milli);
        });
      }),
      { numRuns: 40 },
    );
  });

  it("decides a burst in one replica with one write per batch, not one per request", async () => {
    const api = fakeApi("100");
    const [ledger] = replicas(api, 1);
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) => ledger!.reserve({ project: "team-a", key: `Deployment/a/d${i}`, targetMilli: 1000, replaces: "" })),
    );
    expect(outcomes.every((o) => o.ok)).toBe(true);
    // The first request starts a batch alone; the other 19 arrive while it is in flight and go together.
    expect(api.writes).toBe(2);
  });

  it("does not write for a request that needs nothing more", async () => {
    const api = fakeApi("4");
    const [ledger] = replicas(api, 1);
    const first = await ledger!.reserve({ project: "team-a", key: "Deployment/a/x", targetMilli: 3000, replaces: "" });
    const again = await ledger!.reserve({ project: "team-a", key: "Deployment/a/x", targetMilli: 2000, replaces: "" });
    expect(first).toMatchObject({ ok: true, wrote: true });
    expect(again).toMatchObject({ ok: true, wrote: false });
    expect(api.writes).toBe(1);
  });
});

describe("QuotaLedger under API Priority and Fairness", () => {
  it("retries a 429 on the status write instead of denying", async () => {
    const api = fakeApi("4");
    const real = api.replaceStatus.bind(api);
    let throttled = 0;
    api.replaceStatus = async (project: Project) => {
      if (throttled < 2) {
        throttled++;
        throw Object.assign(new Error("Too Many Requests"), { code: 429 });
      }
      return real(project);
    };
    const ledger = new QuotaLedger({ api, lookup: emptyCache, deadlineMs: 60_000 });
    const outcome = await ledger.reserve({ project: "team-a", key: "Deployment/a/d", targetMilli: 2000, replaces: "" });
    expect(throttled).toBe(2);
    expect(outcome.ok).toBe(true);
    expect(api.current().status?.reservedGpus).toBe("2");
  });
});
