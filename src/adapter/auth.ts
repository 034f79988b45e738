// Who is asking, and may they. The kube-apiserver's aggregation layer authenticates the real caller,
// then calls us with its front-proxy client certificate and the caller's identity in X-Remote-*
// headers. Those headers are worth something only behind a certificate that chains to the
// requestheader CA and carries an allowed common name; anyone else could write them.
import { X509Certificate } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { TLSSocket } from "node:tls";
import { AuthorizationV1Api, type KubeConfig } from "@kubernetes/client-node";
import { verifyChain } from "../tls/certificates.ts";

export const AUTHENTICATION_CONFIGMAP = { namespace: "kube-system", name: "extension-apiserver-authentication" };

export interface RequestHeaderConfig {
  /** PEM, one or more CA certificates. */
  clientCA: string;
  /** Common names the front-proxy certificate may carry; empty = any certificate from the CA. */
  allowedNames: string[];
  usernameHeaders: string[];
  groupHeaders: string[];
  extraHeaderPrefixes: string[];
}

export const DEFAULT_HEADERS = {
  usernameHeaders: ["X-Remote-User"],
  groupHeaders: ["X-Remote-Group"],
  extraHeaderPrefixes: ["X-Remote-Extra-"],
};

export type ConfigResult = { ok: true; config: RequestHeaderConfig } | { ok: false; message: string };

/**
 * Reads the requestheader settings the kube-apiserver publishes in
 * kube-system/extension-apiserver-authentication. List values there are JSON arrays in strings.
 */
export function requestHeaderConfigFromConfigMap(data: Record<string, string> | undefined): ConfigResult {
  const where = `${AUTHENTICATION_CONFIGMAP.namespace}/${AUTHENTICATION_CONFIGMAP.name}`;
  const clientCA = data?.["requestheader-client-ca-file"];
  if (!clientCA || !clientCA.includes("-----BEGIN CERTIFICATE-----")) {
    return {
      ok: false,
      message: `${where} has no requestheader-client-ca-file: the API server's aggregation layer is not configured (--requestheader-client-ca-file); give --requestheader-client-ca-file to the adapter or enable it`,
    };
  }
  const problems: string[] = [];
  const list = (key: string, fallback: string[]): string[] => {
    const raw = data?.[key];
    if (raw === undefined || raw.trim() === "") return fallback;
    try {
      const parsed = JSON.parse(raw);
      if (Array.isArray(parsed) && parsed.every((entry) => typeof entry === "string")) return parsed;
    } catch {
      // reported below
    }
    problems.push(`${key} must be a JSON array of strings, got ${JSON.stringify(raw)}`);
    return fallback;
  };
  const config: RequestHeaderConfig = {
    clientCA,
    allowedNames: list("requestheader-allowed-names", []),
    usernameHeaders: list("requestheader-username-headers", DEFAULT_HEADERS.usernameHeaders),
    groupHeaders: list("requestheader-group-headers", DEFAULT_HEADERS.groupHeaders),
    extraHeaderPrefixes: list("requestheader-extra-headers-prefix", DEFAULT_HEADERS.extraHeaderPrefixes),
  };
  if (problems.length > 0) return { ok: false, message: `${where}: ${problems.join("; ")}` };
  return { ok: true, config };
}

export interface UserInfo {
  username: string;
  groups: string[];
  extra: Record<string, string[]>;
}

export type Authentication = { ok: true; user: UserInfo; proxyName: string } | { ok: false; message: string };

/** The client's certificate chain as PEM, leaf first; empty when it sent none. */
export function peerChain(socket: TLSSocket): string[] {
  const pems: string[] = [];
  let cert = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    pems.push(new X509Certificate(cert.raw).toString());
    cert = cert.issuerCertificate;
  }
  return pems;
}

/**
 * Authenticates a request from its client certificate chain (leaf first) and headers: the chain must
 * reach the requestheader CA, the leaf's CN must be allowed, and a user header must be set.
 */
export function authenticate(chain: readonly string[], headers: IncomingHttpHeaders | NodeJS.Dict<string[]>, config: RequestHeaderConfig, now: Date): Authentication {
  if (chain.length === 0) return { ok: false, message: "a client certificate is required: only the API server's front proxy may call this server" };
  if (!verifyChain(chain.join("\n"), [config.clientCA], now)) {
    return { ok: false, message: "the client certificate is not signed by the requestheader client CA (or is expired)" };
  }
  const proxyName = commonName(chain[0]!);
  if (config.allowedNames.length > 0 && !config.allowedNames.includes(proxyName)) {
    return { ok: false, message: `client certificate common name "${proxyName}" is not an allowed front-proxy name (${config.allowedNames.join(", ")})` };
  }
  const values = (name: string): string[] => {
    const raw = headers[name.toLowerCase()];
    if (raw === undefined) return [];
    return (Array.isArray(raw) ? raw : [raw]).filter((value) => value !== "");
  };
  const username = config.usernameHeaders.map((name) => values(name)[0]).find((value) => value !== undefined);
  if (!username) return { ok: false, message: `the front proxy sent no user (${config.usernameHeaders.join(", ")} header)` };
  const groups = config.groupHeaders.flatMap(values);
  const extra: Record<string, string[]> = {};
  for (const prefix of config.extraHeaderPrefixes.map((p) => p.toLowerCase())) {
    for (const header of Object.keys(headers)) {
      if (!header.startsWith(prefix) || header.length === prefix.length) continue;
      const key = safeDecode(header.slice(prefix.length));
      (extra[key] ??= []).push(...values(header));
    }
  }
  return { ok: true, user: { username, groups, extra }, proxyName };
}

export interface ResourceAttributes {
  namespace?: string;
  verb: string;
  group: string;
  version: string;
  resource: string;
  subresource?: string;
  name?: string;
}

export interface AccessRequest {
  user: UserInfo;
  resourceAttributes?: ResourceAttributes;
  nonResourceAttributes?: { path: string; verb: string };
}

export interface AccessDecision {
  allowed: boolean;
  reason?: string;
}

export type AccessReviewer = (request: AccessRequest) => Promise<AccessDecision>;

/** Asks the API server with a SubjectAccessReview (the adapter needs system:auth-delegator). */
export function subjectAccessReviewer(kc: KubeConfig): AccessReviewer {
  const api = kc.makeApiClient(AuthorizationV1Api);
  return async (request) => {
    const review = await api.createSubjectAccessReview({
      body: {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SubjectAccessReview",
        spec: {
          user: request.user.username,
          groups: request.user.groups,
          extra: request.user.extra,
          ...(request.resourceAttributes ? { resourceAttributes: request.resourceAttributes } : {}),
          ...(request.nonResourceAttributes ? { nonResourceAttributes: request.nonResourceAttributes } : {}),
        },
      },
    });
    return { allowed: review.status?.allowed === true && review.status?.denied !== true, reason: review.status?.reason };
  };
}

export interface CacheOptions {
  /** How long a decision is reused; Kubernetes' delegated authorizer uses 10 s. */
  ttlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

/**
 * Remembers decisions (allowed and denied alike) for a short time, so an HPA polling every 15 s
 * costs one review per window, and shares a review already in flight. Errors are not remembered.
 */
export function cachedAccessReviewer(review: AccessReviewer, options: CacheOptions = {}): AccessReviewer {
  const { ttlMs = 10_000, maxEntries = 4096, now = Date.now } = options;
  const decisions = new Map<string, { decision: AccessDecision; expires: number }>();
  const pending = new Map<string, Promise<AccessDecision>>();
  return async (request) => {
    const key = cacheKey(request);
    const cached = decisions.get(key);
    if (cached && cached.expires > now()) return cached.decision;
    if (cached) decisions.delete(key);
    const inFlight = pending.get(key);
    if (inFlight) return inFlight;
    const promise = review(request)
      .then((decision) => {
        if (decisions.size >= maxEntries) decisions.delete(decisions.keys().next().value!);
        decisions.set(key, { decision, expires: now() + ttlMs });
        return decision;
      })
      .finally(() => pending.delete(key));
    pending.set(key, promise);
    return promise;
  };
}

function cacheKey(request: AccessRequest): string {
  const extra = Object.keys(request.user.extra)
    .sort()
    .map((key) => [key, [...request.user.extra[key]!].sort()]);
  return JSON.stringify([request.user.username, [...request.user.groups].sort(), extra, request.resourceAttributes ?? null, request.nonResourceAttributes ?? null]);
}

function commonName(pem: string): string {
  const line = new X509Certificate(pem).subject.split("\n").find((entry) => entry.startsWith("CN="));
  return line === undefined ? "" : line.slice(3);
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text).toLowerCase();
  } catch {
    return text.toLowerCase();
  }
}
