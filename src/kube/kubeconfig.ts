// A KubeConfig whose requests and watches share their connections to the API server.
//
// client-node 2.0.1 builds a new undici Agent in every `applySecurityAuthentication`, i.e. for every
// request and every watch (re)start, so each one opened its own TLS connection: createSecureContext
// and a full handshake on both ends, ~7% of `infergate serve`'s CPU under load. Here the first Agent
// built for a given API server and TLS material is kept and handed to every later request with the
// same material; the Agent client-node just built for that request is closed unused.
//
// - The key is a digest of the server URL and of exactly the options client-node built the Agent's
//   TLS connections from (createDispatcherOptions: ca, cert, key, pfx, passphrase, servername,
//   rejectUnauthorized...). client-node reads certificate files on every request, so a rotated client
//   certificate (or CA) gives a new key and a new Agent at once; the Agent of the previous material for
//   that server is retired: closed after a grace period, which lets requests in flight (watches
//   included) finish on it. At most MAX_SHARED_AGENTS are kept; the least recently used goes first.
// - A proxy (cluster.proxyUrl) or no TLS material at all keeps client-node's own behaviour: a fresh
//   proxy agent per request, or undici's global dispatcher (which pools by itself).
// - undici pools per origin: over HTTP/1.1 a request in flight owns its connection and another
//   request opens a new one, over HTTP/2 (what kube-apiserver negotiates) they are streams of one
//   connection. Either way a watch's long poll never makes a short request wait.
import { createHash, type Hash } from "node:crypto";
import type { AgentOptions } from "node:https";
import { KubeConfig, type Cluster, type DispatcherOptions, type RequestContext } from "@kubernetes/client-node";

type Dispatcher = NonNullable<ReturnType<RequestContext["getDispatcher"]>>;

export const MAX_SHARED_AGENTS = 4;
export const RETIRE_GRACE_MS = 30_000;

export interface SharedConnectionsOptions {
  /** How long a retired Agent (older TLS material, or evicted) keeps serving what is in flight on it. */
  retireGraceMs?: number;
}

interface Shared {
  server: string;
  dispatcher: Dispatcher;
}

export class SharedConnectionsKubeConfig extends KubeConfig {
  readonly #shared = new Map<string, Shared>();
  readonly #retiring = new Map<Dispatcher, NodeJS.Timeout>();
  readonly #retireGraceMs: number;
  /** Set by createDispatcherOptions and taken by the setDispatcher that follows it in the same synchronous run. */
  #observed: { server: string; key: string } | undefined;
  #closed = false;

  constructor(options: SharedConnectionsOptions = {}) {
    super();
    this.#retireGraceMs = options.retireGraceMs ?? RETIRE_GRACE_MS;
  }

  override createDispatcherOptions(cluster: Cluster | null, agentOptions: AgentOptions): DispatcherOptions {
    const options = super.createDispatcherOptions(cluster, agentOptions);
    const key = options.type === "agent" && cluster ? materialKey(cluster.server, options.connect) : undefined;
    this.#observed = key === undefined ? undefined : { server: cluster!.server, key };
    return options;
  }

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    if (this.#closed) return super.applySecurityAuthentication(context);
    // client-node builds the dispatcher from createDispatcherOptions and sets it on the context right
    // away, without an await in between: the key observed there belongs to this very dispatcher.
    const setDispatcher = context.setDispatcher;
    context.setDispatcher = (fresh: Dispatcher) => {
      const observed = this.#observed;
      this.#observed = undefined;
      setDispatcher.call(context, observed ? this.#share(observed.server, observed.key, fresh) : fresh);
    };
    try {
      await super.applySecurityAuthentication(context);
    } finally {
      Reflect.deleteProperty(context, "setDispatcher");
    }
  }

  /** How many Agents are shared now (retired ones not counted). */
  get sharedAgents(): number {
    return this.#shared.size;
  }

  /**
   * Aborts whatever is still in flight on the shared Agents (watches included) and closes their
   * connections. Requests made afterwards get client-node's own per-request Agent.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...[...this.#shared.values()].map((s) => s.dispatcher), ...this.#retiring.keys()];
    for (const timer of this.#retiring.values()) clearTimeout(timer);
    this.#shared.clear();
    this.#retiring.clear();
    await Promise.all(all.map((dispatcher) => dispatcher.destroy().catch(() => undefined)));
  }

  #share(server: string, key: string, fresh: Dispatcher): Dispatcher {
    const existing = this.#shared.get(key);
    if (existing) {
      // Re-inserted: the Map's order is least recently used first.
      this.#shared.delete(key);
      this.#shared.set(key, existing);
      void fresh.close().catch(() => undefined);
      return existing.dispatcher;
    }
    for (const [otherKey, other] of this.#shared) {
      // New material for a server replaces the old (a rotated certificate): nothing will ask for it again.
      if (other.server === server) this.#retire(otherKey, other);
    }
    this.#shared.set(key, { server, dispatcher: fresh });
    for (const [oldestKey, oldest] of this.#shared) {
      if (this.#shared.size <= MAX_SHARED_AGENTS) break;
      this.#retire(oldestKey, oldest);
    }
    return fresh;
  }

  #retire(key: string, shared: Shared): void {
    this.#shared.delete(key);
    const timer = setTimeout(() => {
      this.#retiring.delete(shared.dispatcher);
      // close, not destroy: a watch still running on it ends in its own time.
      void shared.dispatcher.close().catch(() => undefined);
    }, this.#retireGraceMs);
    timer.unref();
    this.#retiring.set(shared.dispatcher, timer);
  }
}

/**
 * A digest of the server and of every TLS option, so that two configurations share an Agent only when
 * identical; undefined when an option cannot be compared (a function such as checkServerIdentity).
 */
export function materialKey(server: string, connect: object): string | undefined {
  const hash = createHash("sha256");
  hash.update(server);
  return feed(hash, connect) ? hash.digest("base64") : undefined;
}

function feed(hash: Hash, value: unknown): boolean {
  if (value === undefined || value === null) hash.update("n;");
  else if (value instanceof Uint8Array) {
    hash.update(`b${value.byteLength}:`);
    hash.update(value);
  } else if (typeof value === "string") hash.update(`s${Buffer.byteLength(value)}:${value}`);
  else if (typeof value === "number" || typeof value === "boolean") hash.update(`${typeof value}:${String(value)};`);
  else if (Array.isArray(value)) {
    hash.update(`a${value.length}[`);
    if (!value.every((item) => feed(hash, item))) return false;
    hash.update("]");
  } else if (typeof value === "object") {
    hash.update("{");
    for (const key of Object.keys(value).sort()) {
      hash.update(`k${key.length}:${key}`);
      if (!feed(hash, (value as Record<string, unknown>)[key])) return false;
    }
    hash.update("}");
  } else return false;
  return true;
}

export type LoadedKubeConfig =
  | { ok: true; kc: SharedConnectionsKubeConfig }
  | { ok: false; reason: "no-cluster" }
  | { ok: false; reason: "unreadable"; message: string };

/**
 * The commands' one way to find their cluster: the --kubeconfig file when given, else the pod's
 * service account inside a cluster. Each command words "no cluster" for what it needed one for.
 */
export function loadKubeConfig(file: string | undefined): LoadedKubeConfig {
  const kc = new SharedConnectionsKubeConfig();
  try {
    if (file) kc.loadFromFile(file);
    else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else return { ok: false, reason: "no-cluster" };
  } catch (err) {
    return { ok: false, reason: "unreadable", message: (err as Error).message };
  }
  return { ok: true, kc };
}
