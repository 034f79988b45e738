// A minimal HTTPS client for the apiserver (and the components' health endpoints), used for polling:
// cheaper than spawning kubectl hundreds of times while waiting for readiness or discovery.
import https from "node:https";

export interface TlsIdentity {
  caPem?: string;
  certPem?: string;
  keyPem?: string;
  /** Only for the controllers' self-signed health endpoints on 127.0.0.1. */
  insecure?: boolean;
}

export interface ApiResponse {
  status: number;
  text: string;
  json(): any;
}

export function httpsRequest(
  url: string,
  tls: TlsIdentity,
  options: { method?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<ApiResponse> {
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: options.method ?? "GET",
        ca: tls.caPem,
        cert: tls.certPem,
        key: tls.keyPem,
        rejectUnauthorized: !tls.insecure,
        headers: payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {},
        timeout: options.timeoutMs ?? 10_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text, json: () => JSON.parse(text) }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`timeout calling ${url}`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** Polls `check` until it returns a value other than undefined; `check` may throw to mean "not yet". */
export async function poll<T>(
  what: string,
  check: () => Promise<T | undefined>,
  options: { timeoutMs: number; intervalMs?: number; abort?: () => string | undefined },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let last = "";
  for (;;) {
    const aborted = options.abort?.();
    if (aborted) throw new Error(`${what}: ${aborted}`);
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${Math.round(options.timeoutMs / 1000)}s waiting for ${what}${last ? ` (last error: ${last})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 250));
  }
}
