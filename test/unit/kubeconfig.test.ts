// SharedConnectionsKubeConfig against a real local HTTPS server standing in for the API server: TLS
// connections are counted by the server's `secureConnection` events. kube-apiserver negotiates HTTP/2,
// so every case runs against an HTTP/1.1-only server and an HTTP/2 one.
import http2 from "node:http2";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CoreV1Api, HttpMethod, KubeConfig, RequestContext, Watch } from "@kubernetes/client-node";
import { createCA, createClientCert, createServingCert, type PemPair } from "../../src/tls/certificates.ts";
import { SharedConnectionsKubeConfig, materialKey } from "../../src/kube/kubeconfig.ts";

const now = new Date();
const ca = createCA({ commonName: "test-ca", now });
const serving = createServingCert({ ca, hosts: ["127.0.0.1"], now });
const alice = createClientCert({ ca, commonName: "alice", now });
const bob = createClientCert({ ca, commonName: "bob", now });
const b64 = (text: string) => Buffer.from(text).toString("base64");

interface FakeApiServer {
  url: string;
  /** TLS connections accepted so far. */
  connections(): number;
  /** Sends a watch event to every open watch. */
  emit(type: string, name: string): void;
  openWatches(): number;
  close(): Promise<void>;
}

type Protocol = "http/1.1" | "h2";

/** What the handler uses of a response, HTTP/1.1's and HTTP/2's compatibility API alike. */
interface Response {
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  write(chunk: string): unknown;
  end(chunk: string): unknown;
  on(event: "close", listener: () => void): unknown;
}

async function startFakeApiServer(protocol: Protocol): Promise<FakeApiServer> {
  let connections = 0;
  const watches = new Set<Response>();
  const handler = (req: { url?: string; socket: unknown }, res: Response) => {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    const configMap = (name: string) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "default", resourceVersion: "1" }, data: { clientCN: String(peer?.subject?.CN ?? "") } });
    if (url.searchParams.get("watch") === "true") {
      res.writeHead(200, { "content-type": "application/json" });
      res.write(`${JSON.stringify({ type: "ADDED", object: configMap("first") })}\n`);
      watches.add(res);
      res.on("close", () => watches.delete(res));
      return;
    }
    const name = /\/configmaps\/([^/]+)$/.exec(url.pathname)?.[1];
    const body = JSON.stringify(name ? configMap(name) : { apiVersion: "v1", kind: "ConfigMapList", metadata: { resourceVersion: "1" }, items: [] });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  };
  const tls = { cert: serving.certPem, key: serving.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: false };
  const server = protocol === "h2" ? http2.createSecureServer({ ...tls, allowHTTP1: false }, handler) : https.createServer(tls, handler);
  server.on("secureConnection", () => connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    connections: () => connections,
    emit(type, name) {
      for (const res of watches) res.write(`${JSON.stringify({ type, object: { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "default", resourceVersion: "2" } } })}\n`);
    },
    openWatches: () => watches.size,
    async close() {
      for (const res of watches) res.end("");
      if ("closeAllConnections" in server) server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function load(kc: KubeConfig, server: string, user: PemPair, extra: Record<string, unknown> = {}): KubeConfig {
  kc.loadFromOptions({
    clusters: [{ name: "test", server, caData: b64(ca.certPem), ...extra }],
    users: [{ name: "user", certData: b64(user.certPem), keyData: b64(user.keyPem) }],
    contexts: [{ name: "test", cluster: "test", user: "user" }],
    currentContext: "test",
  });
  return kc;
}

/** A watch through client-node's Watch: resolves `next(type)` as events arrive; `ended` once done is called. */
function startWatch(kc: KubeConfig) {
  const events: string[] = [];
  const waiting: { type: string; resolve: () => void }[] = [];
  let resolveEnded!: (err: unknown) => void;
  const ended = new Promise<unknown>((resolve) => (resolveEnded = resolve));
  let done = false;
  const started = new Watch(kc).watch(
    "/api/v1/namespaces/default/configmaps",
    {},
    (type, object) => {
      events.push(`${type} ${object?.metadata?.name}`);
      for (const w of [...waiting]) {
        if (events.includes(w.type)) {
          waiting.splice(waiting.indexOf(w), 1);
          w.resolve();
        }
      }
    },
    (err) => {
      done = true;
      resolveEnded(err);
    },
  );
  return {
    started,
    ended,
    isDone: () => done,
    next: (type: string) => (events.includes(type) ? Promise.resolve() : new Promise<void>((resolve) => waiting.push({ type, resolve }))),
  };
}

for (const protocol of ["http/1.1", "h2"] as const) {
  describe(`SharedConnectionsKubeConfig over ${protocol}`, () => {
    let server: FakeApiServer;
    const configs: SharedConnectionsKubeConfig[] = [];
    const shared = (user = alice) => {
      const kc = new SharedConnectionsKubeConfig();
      configs.push(kc);
      return load(kc, server.url, user) as SharedConnectionsKubeConfig;
    };

    beforeAll(async () => {
      server = await startFakeApiServer(protocol);
    });
    afterEach(async () => {
      await Promise.all(configs.splice(0).map((kc) => kc.close()));
    });
    afterAll(async () => {
      await server.close();
    });

    it("client-node's own KubeConfig opens a TLS connection per request (the cost this class removes)", async () => {
      const api = load(new KubeConfig(), server.url, alice).makeApiClient(CoreV1Api);
      const before = server.connections();
      for (let i = 0; i < 5; i++) await api.readNamespacedConfigMap({ name: `plain-${i}`, namespace: "default" });
      expect(server.connections() - before).toBe(5);
    });

    it("sends N sequential requests through makeApiClient(CoreV1Api) over a fixed number of TLS connections", async () => {
      const kc = shared();
      const api = kc.makeApiClient(CoreV1Api);
      const before = server.connections();
      const sequential = async (count: number, prefix: string) => {
        for (let i = 0; i < count; i++) {
          const configMap = await api.readNamespacedConfigMap({ name: `${prefix}-${i}`, namespace: "default" });
          expect(configMap.metadata?.name).toBe(`${prefix}-${i}`);
          expect(configMap.data?.clientCN).toBe("alice");
        }
      };
      await sequential(5, "warm");
      const warm = server.connections() - before;
      await sequential(20, "more");
      await api.listNamespacedConfigMap({ namespace: "default" });
      expect(server.connections() - before).toBe(warm);
      // Over HTTP/1.1 undici may dispatch the next request a moment before the previous connection
      // reports itself free and open a second one; both are reused from then on.
      if (protocol === "h2") expect(warm).toBe(1);
      expect(warm).toBeGreaterThanOrEqual(1);
      expect(warm).toBeLessThanOrEqual(2);
      expect(kc.sharedAgents).toBe(1);
    });

    it("keeps a watch open while concurrent and sequential requests complete on the same Agent", async () => {
      const kc = shared();
      const api = kc.makeApiClient(CoreV1Api);
      const before = server.connections();
      const watch = startWatch(kc);
      await watch.next("ADDED first");
      const concurrent = await Promise.all(Array.from({ length: 8 }, (_, i) => api.readNamespacedConfigMap({ name: `c-${i}`, namespace: "default" })));
      expect(concurrent.map((c) => c.metadata?.name)).toEqual(Array.from({ length: 8 }, (_, i) => `c-${i}`));
      const afterBurst = server.connections();
      for (let i = 0; i < 10; i++) await api.readNamespacedConfigMap({ name: `s-${i}`, namespace: "default" });
      // Sequential requests reuse what the burst opened; none of them waited for the watch to end.
      expect(server.connections()).toBe(afterBurst);
      expect(watch.isDone()).toBe(false);
      server.emit("MODIFIED", "second");
      await watch.next("MODIFIED second");
      expect(watch.isDone()).toBe(false);
      // HTTP/2 multiplexes everything onto one connection; HTTP/1.1 needs one per request in flight.
      if (protocol === "h2") expect(afterBurst - before).toBe(1);
      else expect(afterBurst - before).toBeLessThanOrEqual(1 + 8);
      (await watch.started).abort();
      await watch.ended;
    });

    it("opens a new connection with the new client certificate when the material changes", async () => {
      const kc = shared(alice);
      const api = () => kc.makeApiClient(CoreV1Api);
      const sequential = async (count: number) => {
        const before = server.connections();
        const seen = new Set<string | undefined>();
        for (let i = 0; i < count; i++) seen.add((await api().readNamespacedConfigMap({ name: `r-${i}`, namespace: "default" })).data?.clientCN);
        return { opened: server.connections() - before, seen: [...seen] };
      };
      const asAlice = await sequential(10);
      expect(asAlice.seen).toEqual(["alice"]);
      expect(asAlice.opened).toBeGreaterThanOrEqual(1);
      expect(asAlice.opened).toBeLessThanOrEqual(2);
      load(kc, server.url, bob);
      const asBob = await sequential(10);
      // Only a new TLS connection can present bob's certificate.
      expect(asBob.seen).toEqual(["bob"]);
      expect(asBob.opened).toBeGreaterThanOrEqual(1);
      expect(asBob.opened).toBeLessThanOrEqual(2);
      expect((await sequential(10)).opened).toBe(0);
      // The Agent of the old certificate was retired, not kept next to the new one.
      expect(kc.sharedAgents).toBe(1);
    });

    it("close() aborts a watch still in flight", async () => {
      const kc = shared();
      const watch = startWatch(kc);
      await watch.next("ADDED first");
      await kc.close();
      await watch.ended;
      expect(watch.isDone()).toBe(true);
    });
  });
}

describe("which requests share an Agent", () => {
  const dispatcherOf = async (kc: KubeConfig) => {
    const context = new RequestContext("https://127.0.0.1:6443/api/v1/namespaces", HttpMethod.GET);
    await kc.applySecurityAuthentication(context);
    return context.getDispatcher();
  };

  it("shares one dispatcher between requests with the same server and material", async () => {
    const kc = load(new SharedConnectionsKubeConfig(), "https://127.0.0.1:6443", alice) as SharedConnectionsKubeConfig;
    const first = await dispatcherOf(kc);
    expect(first).toBeDefined();
    expect(await dispatcherOf(kc)).toBe(first);
    await kc.close();
  });

  it("keeps client-node's per-request dispatcher behind a proxy", async () => {
    const kc = load(new SharedConnectionsKubeConfig(), "https://127.0.0.1:6443", alice, { proxyUrl: "http://127.0.0.1:3128" }) as SharedConnectionsKubeConfig;
    const first = await dispatcherOf(kc);
    const second = await dispatcherOf(kc);
    expect(first).toBeDefined();
    expect(second).not.toBe(first);
    expect(kc.sharedAgents).toBe(0);
    await Promise.all([first?.destroy(), second?.destroy(), kc.close()]);
  });

  it("keys on every TLS option and on the server", () => {
    const base = { ca: Buffer.from(ca.certPem), cert: Buffer.from(alice.certPem), key: Buffer.from(alice.keyPem), keepAlive: true };
    const key = materialKey("https://a:6443", base);
    expect(materialKey("https://a:6443", { ...base })).toBe(key);
    expect(materialKey("https://b:6443", base)).not.toBe(key);
    expect(materialKey("https://a:6443", { ...base, cert: Buffer.from(bob.certPem) })).not.toBe(key);
    expect(materialKey("https://a:6443", { ...base, servername: "kubernetes" })).not.toBe(key);
    expect(materialKey("https://a:6443", { ...base, rejectUnauthorized: false })).not.toBe(key);
    expect(materialKey("https://a:6443", { ...base, checkServerIdentity: () => undefined })).toBeUndefined();
  });
});
