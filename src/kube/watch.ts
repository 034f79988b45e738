// List-then-watch with restart. client-node's ListWatch relists on 410 Gone by itself but stops on
// other errors (API server restart, network loss, 429); we restart it with capped backoff, forever.
import { ListWatch, Watch, type KubeConfig, type KubernetesObject, type KubernetesListObject } from "@kubernetes/client-node";
import type { Logger } from "../observability/log.ts";

export type WatchEvent = "ADDED" | "MODIFIED" | "DELETED";

export interface WatchedResource<T extends KubernetesObject> {
  name: string;
  /** True once the first full list has been delivered. */
  synced(): boolean;
  list(): readonly T[];
  get(name: string, namespace?: string): T | undefined;
  stop(): Promise<void>;
}

export interface WatchOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  name: string;
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  onEvent: (event: WatchEvent, obj: T) => void;
  /** Called after each full (re)list has been applied, with every object now in the cache. */
  onSynced?: (objects: readonly T[]) => void;
  logger: Logger;
  fieldSelector?: string;
  labelSelector?: string;
}

export function watchResource<T extends KubernetesObject>(opts: WatchOptions<T>): WatchedResource<T> {
  let synced = false;
  let stopped = false;
  let backoffMs = 500;
  let timer: NodeJS.Timeout | undefined;
  const listFn = async () => {
    const list = await opts.list();
    // ListWatch applies the items right after this promise settles; mark sync after that.
    setImmediate(() => {
      synced = true;
      backoffMs = 500;
      opts.onSynced?.(lw.list());
    });
    return list;
  };
  const watch = watchReportingConnects(new Watch(opts.kc), () => (backoffMs = 500), () => stopped);
  const lw = new ListWatch<T>(opts.path, watch, listFn, false, opts.labelSelector, opts.fieldSelector);
  const deliver = (event: WatchEvent) => (o: T) => {
    if (!stopped) opts.onEvent(event, o);
  };
  lw.on("add", deliver("ADDED"));
  lw.on("update", deliver("MODIFIED"));
  lw.on("delete", deliver("DELETED"));
  lw.on("error", (err: any) => {
    if (stopped) return;
    opts.logger.log("warn", "watch interrupted; restarting", { resource: opts.name, error: String(err?.message ?? err), retryInMs: backoffMs });
    timer = setTimeout(() => {
      if (!stopped) lw.start().catch(() => undefined);
    }, backoffMs + Math.random() * backoffMs * 0.2);
    backoffMs = Math.min(backoffMs * 2, 30_000);
  });
  lw.start().catch(() => undefined);
  return {
    name: opts.name,
    synced: () => synced,
    list: () => lw.list(),
    get: (name, namespace) => lw.get(name, namespace),
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await lw.stop();
    },
  };
}

/**
 * A restart after an error usually resumes the watch from the last resourceVersion without a new list,
 * so a list alone cannot tell that the API server is back. Without this, the backoff grows with every
 * outage (or burst of 429s) and never shrinks: a later, short interruption would leave the cache stale
 * for up to the 30 s cap. A watch whose request was answered with 200 counts as connected.
 *
 * It also keeps a stopped watch stopped. ListWatch.stop() aborts only the watch request it already
 * holds: a list in flight at that moment is followed by a fresh watch request, a long poll nobody
 * would ever abort. Once `stopped()`, no request is made, and one whose answer arrives late is aborted.
 */
function watchReportingConnects(watch: Watch, onConnected: () => void, stopped: () => boolean): Watch {
  const reporting = Object.create(watch) as Watch;
  reporting.watch = async (path, query, callback, done) => {
    if (stopped()) {
      const idle = new AbortController();
      idle.abort();
      return idle;
    }
    let failed = false;
    const controller = await watch.watch(path, query, callback, (err) => {
      if (err) failed = true;
      done(err);
    });
    if (stopped()) controller.abort();
    // Watch.watch has already called `done` with the error when the request failed.
    else if (!failed) onConnected();
    return controller;
  };
  return reporting;
}
