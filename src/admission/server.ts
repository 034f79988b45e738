// The HTTPS front of the webhook: express routes, body limits, TLS hot reload, graceful shutdown.
import type { IncomingMessage, ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import express, { type NextFunction, type Request, type Response } from "express";
import { handleAdmission, type AdmissionDeps } from "./handler.ts";

export const MAX_BODY_BYTES = 3 * 1024 * 1024;

export interface ServerOptions {
  address: string;
  port: number;
  cert: string;
  key: string;
  deps: AdmissionDeps;
  /** Readiness beyond "listening": e.g. the policy store's first sync. */
  ready?: () => boolean;
  /** Opt-in (`serve --debug-endpoints`): what `GET /debug/cache` shows, to loopback clients only. */
  debugCache?: () => unknown;
}

export interface RunningServer {
  port: number;
  address: string;
  /** Serve a new certificate pair to new connections; connections in flight keep theirs. */
  reloadCertificate(pair: { cert: string; key: string }): void;
  /**
   * Stop accepting, answer what is in flight, then close. With `drainDelayMs`, first keep answering
   * for that long while /readyz fails and every answer closes its connection: endpoints get removed
   * and keep-alive clients move to other replicas before any idle connection is closed under them.
   */
  close(drainDelayMs?: number): Promise<void>;
}

const ADMISSION_PATHS = new Map([
  ["/mutate", "mutate"],
  ["/validate", "validate"],
] as const);

/**
 * The API server sends plain UTF-8 JSON. Such a request takes a direct route: express's router and
 * body parser cost more CPU per review than infergate's whole decision (BENCHMARKS.md, "End-to-end
 * create latency"). Anything else (compressed, another charset) goes through express.json, which
 * decodes it or refuses it with the right status.
 */
function admissionFastPath(req: IncomingMessage): "mutate" | "validate" | undefined {
  if (req.method !== "POST") return undefined;
  const url = req.url ?? "";
  const query = url.indexOf("?");
  const phase = ADMISSION_PATHS.get((query === -1 ? url : url.slice(0, query)) as "/mutate");
  if (!phase) return undefined;
  const encoding = req.headers["content-encoding"];
  if (encoding !== undefined && encoding.toLowerCase() !== "identity") return undefined;
  const type = req.headers["content-type"];
  if (type !== undefined && !/^application\/json\s*(;\s*charset="?utf-8"?\s*)?$/i.test(type)) return undefined;
  return phase;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) };
  if (close) headers.connection = "close";
  res.writeHead(status, headers).end(text);
}

export interface JsonPostHandlers {
  /** Answers a body that parsed (undefined: the body was empty). */
  answer(body: unknown): Promise<{ status: number; body: unknown }> | { status: number; body: unknown };
  /** Counts a request refused before `answer`: 400 (not JSON) or 413 (too large). */
  refused?(code: number): void;
  /** Ask the client to close the connection after this answer (shutting down). */
  closing?(): boolean;
}

/** Reads a JSON body of at most MAX_BODY_BYTES and sends what `answer` makes of it. */
export function serveJsonPost(req: IncomingMessage, res: ServerResponse, handlers: JsonPostHandlers): void {
  const closing = () => handlers.closing?.() ?? false;
  const fail = (code: number, message: string) => {
    handlers.refused?.(code);
    // The rest of an oversized body is not worth reading: answer, then drop the connection.
    sendJson(res, code, status(code, message), code === 413 || closing());
  };
  if (Number(req.headers["content-length"]) > MAX_BODY_BYTES) return fail(413, `request body exceeds ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let received = 0;
  let refused = false;
  req.on("data", (chunk: Buffer) => {
    if (refused) return;
    received += chunk.length;
    if (received > MAX_BODY_BYTES) {
      refused = true;
      fail(413, `request body exceeds ${MAX_BODY_BYTES} bytes`);
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (refused) return;
    const text = (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString("utf8");
    let body: unknown;
    try {
      body = text.length === 0 ? undefined : JSON.parse(text);
    } catch (err) {
      return fail(400, `request body is not valid JSON: ${(err as Error).message}`);
    }
    Promise.resolve()
      .then(() => handlers.answer(body))
      .then(
        (answer) => sendJson(res, answer.status, answer.body, closing()),
        // The admission handler never throws; should that change, the API server still gets an answer.
        (err) => sendJson(res, 500, status(500, `infergate: ${String((err as Error)?.message ?? err)}`), closing()),
      );
  });
  req.on("error", () => res.destroy());
}

/**
 * The server's request listener: admission reviews the API server sends (plain UTF-8 JSON) take the
 * direct route, everything else goes through the express app.
 */
export function createRequestListener(deps: AdmissionDeps, ready: () => boolean, shuttingDown: () => boolean, debugCache?: () => unknown) {
  const app = createApp(deps, ready, shuttingDown, debugCache);
  return (req: IncomingMessage, res: ServerResponse) => {
    const phase = admissionFastPath(req);
    if (!phase) return void app(req, res);
    serveJsonPost(req, res, {
      answer: (body) => handleAdmission(phase, body, deps),
      refused: (code) => deps.metrics.badRequests.inc({ webhook: phase, code: String(code) }),
      closing: shuttingDown,
    });
  };
}

export function createApp(deps: AdmissionDeps, ready: () => boolean, shuttingDown: () => boolean, debugCache?: () => unknown) {
  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");
  const json = express.json({ limit: MAX_BODY_BYTES, type: () => true });
  for (const phase of ["mutate", "validate"] as const) {
    app.post(`/${phase}`, json, async (req: Request, res: Response) => {
      const answer = await handleAdmission(phase, req.body, deps);
      if (shuttingDown()) res.setHeader("Connection", "close");
      res.status(answer.status).json(answer.body);
    });
  }
  app.get("/healthz", (_req, res) => {
    res.type("text/plain").send("ok");
  });
  app.get("/readyz", (_req, res) => {
    const ok = ready() && !shuttingDown();
    res.status(ok ? 200 : 503).type("text/plain").send(ok ? "ok" : shuttingDown() ? "shutting down" : "policy store not synced yet");
  });
  app.get("/metrics", async (_req, res) => {
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  if (debugCache) {
    app.get("/debug/cache", (req, res) => {
      // The caches name every Project and charged workload: nothing beyond this machine may read them.
      if (!isLoopback(req.socket.remoteAddress)) {
        res.status(403).json(status(403, "/debug/cache answers loopback clients only"));
        return;
      }
      res.json(debugCache());
    });
  }
  app.use((req: Request, res: Response) => {
    res.status(404).json(status(404, `no route for ${req.method} ${req.path}; use POST /mutate or POST /validate`));
  });
  // express.json reports its own failures here: oversized (413) and unparseable (400) bodies.
  app.use((err: any, _req: Request, res: Response, _next: NextFunction) => {
    const code = err?.type === "entity.too.large" ? 413 : typeof err?.status === "number" && err.status < 500 ? err.status : 500;
    const webhook = _req.path.replace("/", "");
    deps.metrics.badRequests.inc({ webhook, code: String(code) });
    const message =
      code === 413
        ? `request body exceeds ${MAX_BODY_BYTES} bytes`
        : err?.type === "entity.parse.failed"
          ? `request body is not valid JSON: ${err.message}`
          : String(err?.message ?? err);
    res.status(code).json(status(code, message));
  });
  return app;
}

function isLoopback(address: string | undefined): boolean {
  return address === "::1" || /^(::ffff:)?127\./.test(address ?? "");
}

function status(code: number, message: string) {
  return { kind: "Status", apiVersion: "v1", status: "Failure", code, message };
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  let closing = false;
  const listener = createRequestListener(opts.deps, opts.ready ?? (() => true), () => closing, opts.debugCache);
  const server = https.createServer({ cert: opts.cert, key: opts.key, minVersion: "TLSv1.2" }, listener);
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 35_000;
  server.requestTimeout = 30_000;
  // Requests in flight per connection. Node counts a connection that never carried a request as
  // neither idle nor active: closeIdleConnections() skips it and server.close() waits for it, while
  // the API server's Go client keeps spare connections open for 90 s after a burst.
  const inFlight = new Map<Socket, number>();
  server.on("secureConnection", (socket: Socket) => {
    inFlight.set(socket, 0);
    socket.once("close", () => inFlight.delete(socket));
  });
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
    res.once("close", () => {
      if (inFlight.has(socket)) inFlight.set(socket, Math.max(0, inFlight.get(socket)! - 1));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.address, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    port: addr.port,
    address: addr.address,
    reloadCertificate(pair) {
      server.setSecureContext({ cert: pair.cert, key: pair.key, minVersion: "TLSv1.2" } as any);
    },
    async close(drainDelayMs = 0) {
      closing = true;
      // Closing an idle keep-alive connection races with a request the client is just sending on it
      // (seen as EOF, and a POST is not retried): let busy connections leave with `Connection: close`.
      if (drainDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, drainDelayMs));
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // Busy connections close after their answer (`Connection: close`); nothing else is left to wait for.
        for (const [socket, requests] of inFlight) if (requests === 0) socket.destroy();
      });
    },
  };
}
