// Quota reservations kept in Project.status, the one record every webhook replica agrees on.
// Pure: given a status and the local view of charges, decide whether a reservation fits and what
// the next status is. The compare-and-swap that makes it race-free lives in ledger.ts.
import { toMilli } from "./accounting.ts";

export interface Reservation {
  /** The charged object: `Deployment/ns/name`, `Service.serving.knative.dev/ns/name`, `Pod/ns/name`. */
  key: string;
  /** The object's charge once admitted (absolute, not a delta), decimal GPUs. */
  gpus: string;
  /** resourceVersion of the object the admission replaced ("" for CREATE): seeing another one means it landed. */
  replaces: string;
  /** After this instant the reservation is dropped even if the object never showed up (RFC 3339). */
  expiresAt: string;
}

export interface ChargeLookup {
  /** The charge this replica's cache holds for an object, in milli-GPU, and the resourceVersion it saw. */
  charge(key: string): { milli: number; resourceVersion: string } | undefined;
}

export function activeReservations(list: readonly Reservation[] | undefined, now: Date): Reservation[] {
  return (list ?? []).filter((r) => r && typeof r.key === "string" && Date.parse(r.expiresAt) > now.getTime());
}

/**
 * What a reservation adds on top of what the cache already charges for its object: the cache may
 * already show the admitted object (then nothing is added) or an older version of it.
 */
export function reservedExtraMilli(r: Reservation, lookup: ChargeLookup): number {
  return Math.max(0, toMilli(r.gpus) - (lookup.charge(r.key)?.milli ?? 0));
}

export interface FitInput {
  quotaMilli: number;
  /** Σ of cached charges of the project's objects. */
  allocatedMilli: number;
  reservations: readonly Reservation[];
  lookup: ChargeLookup;
  key: string;
  /** The object's charge after this admission. */
  targetMilli: number;
}

export interface FitResult {
  fits: boolean;
  /** Free GPUs before this admission, in milli-GPU. */
  freeMilli: number;
  /** What the admission adds, in milli-GPU. */
  neededMilli: number;
  reservedMilli: number;
}

export function checkFit(input: FitInput): FitResult {
  const others = input.reservations.filter((r) => r.key !== input.key);
  const own = input.reservations.find((r) => r.key === input.key);
  const reservedMilli = others.reduce((sum, r) => sum + reservedExtraMilli(r, input.lookup), 0);
  const current = Math.max(input.lookup.charge(input.key)?.milli ?? 0, own ? toMilli(own.gpus) : 0);
  const neededMilli = Math.max(0, input.targetMilli - current);
  const usedBefore = input.allocatedMilli + reservedMilli + (own ? reservedExtraMilli(own, input.lookup) : 0);
  const freeMilli = input.quotaMilli - usedBefore;
  return { fits: neededMilli <= 0 || neededMilli <= freeMilli, freeMilli, neededMilli, reservedMilli };
}

/** The reservation list after adding (or replacing) one, with expired entries dropped. */
export function withReservation(list: readonly Reservation[] | undefined, r: Reservation, now: Date): Reservation[] {
  return [...activeReservations(list, now).filter((x) => x.key !== r.key), r];
}

/**
 * Which reservations the reconciler may drop: expired ones, ones whose object this replica's cache
 * has shown in a new version for at least `graceMs` (so every replica's cache has caught up before
 * the reservation stops covering the object), and ones whose object the cache showed and then lost
 * (deleted, or a pod that finished): its GPUs are free again, so holding them until the TTL would
 * only block the project.
 */
export function settledReservations(
  list: readonly Reservation[] | undefined,
  lookup: ChargeLookup,
  firstSeen: Map<string, number>,
  now: Date,
  graceMs: number,
): Reservation[] {
  const settled: Reservation[] = [];
  for (const r of list ?? []) {
    if (Date.parse(r.expiresAt) <= now.getTime()) {
      settled.push(r);
      continue;
    }
    const seen = lookup.charge(r.key);
    const id = `${r.key}@${r.replaces}`;
    if (seen && seen.resourceVersion !== r.replaces) {
      const since = firstSeen.get(id) ?? now.getTime();
      firstSeen.set(id, since);
      if (now.getTime() - since >= graceMs) {
        settled.push(r);
        firstSeen.delete(id);
      }
    } else if (!seen && firstSeen.has(id)) {
      settled.push(r);
      firstSeen.delete(id);
    }
  }
  return settled;
}
