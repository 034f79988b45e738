// Writing a plan for objects infergate keeps in the cluster (HPAs, PodGroups): create what is missing,
// update what drifted, delete what is unwanted. Errors are logged and left to the next round, which
// starts from fresher caches.
import type { Logger } from "../observability/log.ts";

export interface NamespacedObject {
  metadata: { namespace: string; name: string };
}

/** The few calls a reconciler makes; an interface so the write path is testable without a cluster. */
export interface ManagedObjectApi<T> {
  create(object: T): Promise<void>;
  replace(object: T): Promise<void>;
  get(namespace: string, name: string): Promise<T | undefined>;
  /** Deletes this object, and not a newer one of the same name (UID precondition). */
  remove(object: T): Promise<void>;
}

export interface ManagedObjectPlan<T> {
  create: readonly T[];
  update: ReadonlyArray<{ observed: T; desired: T }>;
  delete: readonly T[];
}

export interface ManagedKind<T> {
  /** Starts each log line: `<noun> created`, `<noun> update failed`. */
  noun: string;
  /** The fields naming an object in every log line. */
  identify(object: T): Record<string, unknown>;
  /** The fields of a `created` or `updated` line. */
  describe(object: T): Record<string, unknown>;
  /** The object to write over `observed`. */
  merged(observed: T, desired: T): T;
  isManaged(object: T): boolean;
  upToDate(observed: T, desired: T): boolean;
}

export function errorCode(err: any): number | undefined {
  return typeof err?.code === "number" ? err.code : typeof err?.statusCode === "number" ? err.statusCode : undefined;
}

const CONFLICT_ATTEMPTS = 3;

export async function applyManagedPlan<T extends NamespacedObject>(
  plan: ManagedObjectPlan<T>,
  api: ManagedObjectApi<T>,
  kind: ManagedKind<T>,
  logger: Logger,
): Promise<void> {
  const fail = (action: string, object: T, err: unknown) =>
    logger.log("warn", `${kind.noun} ${action} failed`, { ...kind.identify(object), error: String((err as any)?.message ?? err) });

  for (const object of plan.create) {
    try {
      await api.create(object);
      logger.log("info", `${kind.noun} created`, kind.describe(object));
    } catch (err) {
      // 409: made meanwhile (by us a moment ago, or by someone else); the watch will tell whose it is.
      if (errorCode(err) !== 409) fail("create", object, err);
    }
  }

  for (const { observed, desired } of plan.update) {
    let current: T | undefined = observed;
    for (let attempt = 1; current && attempt <= CONFLICT_ATTEMPTS; attempt++) {
      try {
        await api.replace(kind.merged(current, desired));
        logger.log("info", `${kind.noun} updated`, kind.describe(desired));
        break;
      } catch (err) {
        if (errorCode(err) !== 409 || attempt === CONFLICT_ATTEMPTS) {
          if (errorCode(err) !== 404) fail("update", desired, err);
          break;
        }
        try {
          current = await api.get(desired.metadata.namespace, desired.metadata.name);
        } catch (getErr) {
          fail("update", desired, getErr);
          break;
        }
        // Gone, taken over, or already right: nothing left to write.
        if (current && (!kind.isManaged(current) || kind.upToDate(current, desired))) current = undefined;
      }
    }
  }

  for (const object of plan.delete) {
    try {
      await api.remove(object);
      logger.log("info", `${kind.noun} deleted`, kind.identify(object));
    } catch (err) {
      // 404: garbage collection was quicker; 409: a newer object of that name, not the one to delete.
      const code = errorCode(err);
      if (code !== 404 && code !== 409) fail("delete", object, err);
    }
  }
}
