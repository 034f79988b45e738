import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { formatGpus, toMilli } from "./accounting.ts";
import { checkFit, settledReservations, withReservation, type ChargeLookup, type Reservation } from "./reservations.ts";

const lookupOf = (charges: Record<string, { milli: number; resourceVersion: string }>): ChargeLookup => ({ charge: (k) => charges[k] });
const now = new Date("2026-11-23T12:00:00Z");
const later = (ms: number) => new Date(now.getTime() + ms).toISOString();

describe("milli-GPU arithmetic", () => {
  it("formats without trailing zeros and round-trips", () => {
    expect(formatGpus(0)).toBe("0");
    expect(formatGpus(2500)).toBe("2.5");
    expect(formatGpus(5250)).toBe("5.25");
    expect(formatGpus(125)).toBe("0.125");
    expect(toMilli("0.1")).toBe(100);
    fc.assert(fc.property(fc.integer({ min: 0, max: 10_000_000 }), (m) => toMilli(formatGpus(m)) === m));
  });
});

describe("checkFit", () => {
  it("counts other reservations only for what the cache does not show yet", () => {
    const reservations: Reservation[] = [
      { key: "Deployment/a/x", gpus: "4", replaces: "", expiresAt: later(60_000) },
      { key: "Deployment/a/y", gpus: "2", replaces: "10", expiresAt: later(60_000) },
    ];
    // x is not in the cache yet (4 extra); y is cached at 1 GPU from its old version (1 extra).
    const lookup = lookupOf({ "Deployment/a/y": { milli: 1000, resourceVersion: "10" } });
    const fit = checkFit({ quotaMilli: 8000, allocatedMilli: 1000, reservations, lookup, key: "Deployment/a/z", targetMilli: 2000 });
    expect(fit).toEqual({ fits: true, freeMilli: 2000, neededMilli: 2000, reservedMilli: 5000 });
    const over = checkFit({ quotaMilli: 8000, allocatedMilli: 1000, reservations, lookup, key: "Deployment/a/z", targetMilli: 2001 });
    expect(over.fits).toBe(false);
  });

  it("charges an update only for its growth and never blocks a shrink", () => {
    const lookup = lookupOf({ "Deployment/a/x": { milli: 3000, resourceVersion: "5" } });
    const grow = checkFit({ quotaMilli: 8000, allocatedMilli: 3000, reservations: [], lookup, key: "Deployment/a/x", targetMilli: 11000 });
    expect(grow).toMatchObject({ fits: false, neededMilli: 8000, freeMilli: 5000 });
    const shrink = checkFit({ quotaMilli: 1000, allocatedMilli: 3000, reservations: [], lookup, key: "Deployment/a/x", targetMilli: 1000 });
    expect(shrink).toMatchObject({ fits: true, neededMilli: 0 });
  });

  it("replaces an object's own earlier reservation instead of adding to it", () => {
    const own: Reservation = { key: "Deployment/a/x", gpus: "4", replaces: "", expiresAt: later(60_000) };
    const fit = checkFit({ quotaMilli: 6000, allocatedMilli: 0, reservations: [own], lookup: lookupOf({}), key: "Deployment/a/x", targetMilli: 6000 });
    expect(fit).toMatchObject({ fits: true, neededMilli: 2000, freeMilli: 2000 });
  });
});

describe("reservation lifecycle", () => {
  it("drops expired entries when adding and keeps one entry per object", () => {
    const list: Reservation[] = [
      { key: "k1", gpus: "1", replaces: "", expiresAt: later(-1) },
      { key: "k2", gpus: "1", replaces: "", expiresAt: later(1000) },
    ];
    const next = withReservation(list, { key: "k2", gpus: "3", replaces: "", expiresAt: later(5000) }, now);
    expect(next).toEqual([{ key: "k2", gpus: "3", replaces: "", expiresAt: later(5000) }]);
  });

  it("settles a reservation only after its new version has been visible for the grace period", () => {
    const r: Reservation = { key: "k", gpus: "2", replaces: "7", expiresAt: later(60_000) };
    const firstSeen = new Map<string, number>();
    expect(settledReservations([r], lookupOf({ k: { milli: 1000, resourceVersion: "7" } }), firstSeen, now, 1000)).toEqual([]);
    const seen = lookupOf({ k: { milli: 2000, resourceVersion: "8" } });
    expect(settledReservations([r], seen, firstSeen, now, 1000)).toEqual([]);
    expect(settledReservations([r], seen, firstSeen, new Date(now.getTime() + 999), 1000)).toEqual([]);
    expect(settledReservations([r], seen, firstSeen, new Date(now.getTime() + 1000), 1000)).toEqual([r]);
  });

  it("settles a reservation at once when its object was seen and then deleted", () => {
    const r: Reservation = { key: "k", gpus: "2", replaces: "", expiresAt: later(60_000) };
    const firstSeen = new Map<string, number>();
    expect(settledReservations([r], lookupOf({ k: { milli: 2000, resourceVersion: "8" } }), firstSeen, now, 1000)).toEqual([]);
    expect(settledReservations([r], lookupOf({}), firstSeen, new Date(now.getTime() + 10), 1000)).toEqual([r]);
  });

  it("keeps a reservation whose object the cache has not shown yet", () => {
    const r: Reservation = { key: "k", gpus: "2", replaces: "", expiresAt: later(60_000) };
    expect(settledReservations([r], lookupOf({}), new Map(), new Date(now.getTime() + 30_000), 1000)).toEqual([]);
  });

  it("settles an expired reservation whose object never appeared", () => {
    const r: Reservation = { key: "k", gpus: "2", replaces: "", expiresAt: later(10) };
    expect(settledReservations([r], lookupOf({}), new Map(), new Date(now.getTime() + 10), 1000)).toEqual([r]);
  });
});
