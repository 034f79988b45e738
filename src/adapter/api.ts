// The custom.metrics.k8s.io API over HTTPS: discovery, MetricValueList for v1beta1 and v1beta2, and
// Kubernetes Status errors. Everything answered here comes from memory (MetricReader); the only
// outbound call is the SubjectAccessReview, and that is cached.
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import express, { type NextFunction, type Request, type Response } from "express";
import type { AdapterMetrics } from "./adapter-metrics.ts";
import { authenticate, peerChain, type AccessReviewer, type AccessRequest, type RequestHeaderConfig, type UserInfo } from "./auth.ts";
import { RESOURCES, RESOURCE_NAMES, isResourceName, type MetricReader, type NamedReading, type ResourceName } from "./cache.ts";
import { parseLabelSelector } from "./label-selector.ts";
import { METRIC_NAMES, isMetricName, type MetricName } from "./mapping.ts";
import type { Logger } from "../observability/log.ts";

export const GROUP = "custom.metrics.k8s.io";
export const VERSIONS = ["v1beta2", "v1beta1"] as const;
export type ApiVersion = (typeof VERSIONS)[number];
const PREFIX = `/apis/${GROUP}`;

// --- wire format -----------------------------------------------------------------------------

/** A Kubernetes Quantity: whole numbers plain ("12"), anything finer in milli-units ("1500m"). */
export function formatQuantity(value: number): string {
  const milli = Math.round(value * 1000);
  if (Object.is(milli, -0) || milli === 0) return "0";
  return milli % 1000 === 0 ? String(milli / 1000) : `${milli}m`;
}

/** metav1.Time: RFC 3339 in UTC, whole seconds. */
export function formatTimestamp(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

export function apiGroup() {
  const versions = VERSIONS.map((version) => ({ groupVersion: `${GROUP}/${version}`, version }));
  return { kind: "APIGroup", apiVersion: "v1", name: GROUP, versions, preferredVersion: versions[0] };
}

export function apiResourceList(version: ApiVersion) {
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: `${GROUP}/${version}`,
    resources: RESOURCE_NAMES.flatMap((resource) =>
      METRIC_NAMES.map((metric) => ({ name: `${resource}/${metric}`, singularName: "", namespaced: true, kind: "MetricValueList", verbs: ["get"] })),
    ),
  };
}

export function metricValueList(version: ApiVersion, namespace: string, resource: ResourceName, metric: MetricName, windowSeconds: number, items: readonly NamedReading[]) {
  const { kind, apiVersion } = RESOURCES[resource];
  return {
    kind: "MetricValueList",
    apiVersion: `${GROUP}/${version}`,
    metadata: {},
    items: items.map((item) => {
      const describedObject = { kind, namespace, name: item.name, apiVersion };
      const timestamp = formatTimestamp(item.timestamp);
      const value = formatQuantity(item.value);
      // The JSON name of the window differs between the versions: `window` in v1beta1.
      return version === "v1beta1"
        ? { describedObject, metricName: metric, timestamp, window: windowSeconds, value, selector: null }
        : { describedObject, metric: { name: metric }, timestamp, windowSeconds, value };
    }),
  };
}

export function statusBody(code: number, reason: string, message: string, details?: Record<string, string>) {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, ...(details ? { details } : {}), code };
}

// --- routing ---------------------------------------------------------------------------------

export type Route =
  | { kind: "group" }
  | { kind: "discovery"; version: ApiVersion }
  | { kind: "object"; version: ApiVersion; namespace: string; resource: string; name: string; metric: string }
  | { kind: "namespaceMetric"; version: ApiVersion; namespace: string; metric: string }
  | { kind: "clusterObject"; version: ApiVersion; resource: string; name: string; metric: string }
  | { kind: "none"; message: string };

/** Which API path this is; `segments` are the decoded path segments after /apis/custom.metrics.k8s.io. */
export function routeOf(segments: readonly string[]): Route {
  const [version, ...rest] = segments;
  if (version === undefined) return { kind: "group" };
  if (!(VERSIONS as readonly string[]).includes(version)) return { kind: "none", message: `version ${version} of ${GROUP} is not served; served: ${VERSIONS.join(", ")}` };
  const v = version as ApiVersion;
  if (rest.length === 0) return { kind: "discovery", version: v };
  if (rest[0] === "namespaces" && rest.length === 4 && rest[2] === "metrics") return { kind: "namespaceMetric", version: v, namespace: rest[1]!, metric: rest[3]! };
  if (rest[0] === "namespaces" && rest.length === 5) return { kind: "object", version: v, namespace: rest[1]!, resource: rest[2]!, name: rest[3]!, metric: rest[4]! };
  if (rest.length === 3) return { kind: "clusterObject", version: v, resource: rest[0]!, name: rest[1]!, metric: rest[2]! };
  return {
    kind: "none",
    message: `no such path under ${PREFIX}/${v}; use /namespaces/{namespace}/{resource}/{name or *}/{metric} with resource one of ${RESOURCE_NAMES.join(", ")}`,
  };
}

/** What the SubjectAccessReview asks for a route, as the generic API server would derive it. */
export function accessAttributes(route: Route): Omit<AccessRequest, "user"> | undefined {
  switch (route.kind) {
    case "object":
      return {
        resourceAttributes: { namespace: route.namespace, verb: "get", group: GROUP, version: route.version, resource: route.resource, subresource: route.metric, name: route.name },
      };
    case "namespaceMetric":
      return { resourceAttributes: { namespace: route.namespace, verb: "get", group: GROUP, version: route.version, resource: "metrics", name: route.metric } };
    case "clusterObject":
      return { resourceAttributes: { verb: "get", group: GROUP, version: route.version, resource: route.resource, subresource: route.metric, name: route.name } };
    default:
      return undefined;
  }
}

// --- the app ---------------------------------------------------------------------------------

export interface AdapterDeps {
  reader: MetricReader;
  /** The current requestheader settings (they may rotate while the adapter runs). */
  requestHeader: () => RequestHeaderConfig;
  review: AccessReviewer;
  metrics: AdapterMetrics;
  ready: () => boolean;
  logger?: Logger;
  now?: () => Date;
}

interface Locals {
  user: UserInfo;
}

export function createAdapterApp(deps: AdapterDeps, shuttingDown: () => boolean = () => false) {
  const now = deps.now ?? (() => new Date());
  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");
  app.set("query parser", "simple");

  const send = (res: Response, code: number, body: unknown) => {
    if (shuttingDown()) res.setHeader("Connection", "close");
    res.status(code).type("application/json").send(JSON.stringify(body));
  };
  const fail = (res: Response, code: number, reason: string, message: string, details?: Record<string, string>) => send(res, code, statusBody(code, reason, message, details));

  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    res.on("finish", () => {
      const route = (res.locals.route as string | undefined) ?? "other";
      deps.metrics.requestDuration.observe({ route, code: String(res.statusCode) }, Number(process.hrtime.bigint() - started) / 1e9);
    });
    next();
  });

  // Probes come from the kubelet, which has no front-proxy certificate.
  app.get("/healthz", (_req, res) => {
    res.locals.route = "probe";
    res.type("text/plain").send("ok");
  });
  app.get("/readyz", (_req, res) => {
    res.locals.route = "probe";
    const ok = deps.ready() && !shuttingDown();
    res.status(ok ? 200 : 503).type("text/plain").send(ok ? "ok" : shuttingDown() ? "shutting down" : "pod watch not synced yet");
  });

  app.use((req: Request, res: Response, next: NextFunction) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      fail(res, 405, "MethodNotAllowed", `${req.method} is not supported; the metrics API is read-only (GET)`);
      return;
    }
    const result = authenticate(peerChain(req.socket as TLSSocket), req.headersDistinct, deps.requestHeader(), now());
    if (!result.ok) {
      deps.logger?.log("debug", "unauthenticated request", { path: req.path, reason: result.message });
      fail(res, 401, "Unauthorized", result.message);
      return;
    }
    (res.locals as Locals).user = result.user;
    next();
  });

  const authorize = async (res: Response, request: Omit<AccessRequest, "user">, what: string): Promise<boolean> => {
    const user = (res.locals as Locals).user;
    let decision;
    try {
      decision = await deps.review({ user, ...request });
    } catch (error) {
      deps.logger?.log("warn", "SubjectAccessReview failed", { user: user.username, error: (error as Error).message });
      fail(res, 500, "InternalError", `could not check authorization with the API server: ${(error as Error).message}`);
      return false;
    }
    if (decision.allowed) return true;
    const because = decision.reason ? `: ${decision.reason}` : "";
    fail(res, 403, "Forbidden", `user "${user.username}" cannot get ${what}${because}`);
    return false;
  };

  app.get("/metrics", async (_req, res) => {
    res.locals.route = "metrics";
    if (!(await authorize(res, { nonResourceAttributes: { path: "/metrics", verb: "get" } }, "/metrics"))) return;
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  // The aggregator asks /apis with the aggregated-discovery media type first; 406 sends it to the
  // per-version documents below, which every version of it understands.
  app.get("/apis", (req, res) => {
    res.locals.route = "discovery";
    if (String(req.headers.accept ?? "").includes("as=APIGroupDiscoveryList")) {
      fail(res, 406, "NotAcceptable", "aggregated discovery is not served; use /apis/custom.metrics.k8s.io/{version}");
      return;
    }
    send(res, 200, { kind: "APIGroupList", apiVersion: "v1", groups: [apiGroup()] });
  });
  app.get("/openapi/v2", (_req, res) => {
    res.locals.route = "discovery";
    send(res, 200, { swagger: "2.0", info: { title: "infergate custom metrics", version: VERSIONS[0] }, paths: {} });
  });
  app.get("/openapi/v3", (_req, res) => {
    res.locals.route = "discovery";
    send(res, 200, { paths: {} });
  });

  const answerObject = (route: Extract<Route, { kind: "object" }>, req: Request, res: Response) => {
    const { version, namespace, resource, name, metric } = route;
    const notFound = (message: string) => fail(res, 404, "NotFound", message, { group: GROUP, kind: metric, name });
    if (!isResourceName(resource)) {
      notFound(`the server could not find the metric ${metric} for ${resource}: the resource is not served; served: ${RESOURCE_NAMES.join(", ")}`);
      return;
    }
    if (!isMetricName(metric)) {
      notFound(`the server could not find the metric ${metric} for ${resource}: unknown metric; served: ${METRIC_NAMES.join(", ")}`);
      return;
    }
    const reader = deps.reader;
    if (name !== "*") {
      const lookup = reader.object(namespace, resource, name, metric);
      if (!lookup.ok) {
        notFound(`the server could not find the metric ${metric} for ${resource} ${namespace}/${name}: ${lookup.reason}`);
        return;
      }
      send(res, 200, metricValueList(version, namespace, resource, metric, reader.windowSeconds, [{ name, ...lookup.reading }]));
      return;
    }
    const query = req.query.labelSelector;
    if (query !== undefined && typeof query !== "string") {
      fail(res, 400, "BadRequest", "labelSelector must be given once");
      return;
    }
    const parsed = parseLabelSelector(query ?? "");
    if (!parsed.ok) {
      fail(res, 400, "BadRequest", parsed.message);
      return;
    }
    if (resource !== "pods" && parsed.requirements.length > 0) {
      fail(res, 400, "BadRequest", `labelSelector is supported for pods only; ask for ${resource} by name (${PREFIX}/${version}/namespaces/${namespace}/${resource}/{name}/${metric})`);
      return;
    }
    const listing = reader.list(namespace, resource, metric, parsed.requirements);
    if (listing.items.length === 0) {
      const selector = query ? ` matching "${query}"` : "";
      notFound(`the server could not find the metric ${metric} for ${resource}${selector} in namespace ${namespace}: ${listing.reason ?? "no values"}`);
      return;
    }
    send(res, 200, metricValueList(version, namespace, resource, metric, reader.windowSeconds, listing.items));
  };

  app.use(PREFIX, async (req: Request, res: Response) => {
    let segments: string[];
    try {
      segments = req.path.split("/").filter((segment) => segment !== "").map((segment) => decodeURIComponent(segment));
    } catch {
      fail(res, 400, "BadRequest", `the path ${req.originalUrl} is not valid percent-encoding`);
      return;
    }
    const route = routeOf(segments);
    switch (route.kind) {
      case "group":
        res.locals.route = "discovery";
        send(res, 200, apiGroup());
        return;
      case "discovery":
        res.locals.route = "discovery";
        send(res, 200, apiResourceList(route.version));
        return;
      case "none":
        fail(res, 404, "NotFound", route.message);
        return;
    }
    const attributes = accessAttributes(route)!;
    if (route.kind === "namespaceMetric") {
      res.locals.route = "namespace";
      if (!(await authorize(res, attributes, `metric ${route.metric} of namespace ${route.namespace}`))) return;
      fail(res, 404, "NotFound", `the server could not find the metric ${route.metric} for namespace ${route.namespace}: infergate serves metrics of ${RESOURCE_NAMES.join(", ")}, not of namespaces`, {
        group: GROUP,
        kind: route.metric,
        name: route.namespace,
      });
      return;
    }
    if (route.kind === "clusterObject") {
      res.locals.route = "object";
      if (!(await authorize(res, attributes, `${route.resource}/${route.metric}`))) return;
      fail(res, 404, "NotFound", `the server could not find the metric ${route.metric} for ${route.resource} ${route.name}: every resource infergate serves is namespaced`, {
        group: GROUP,
        kind: route.metric,
        name: route.name,
      });
      return;
    }
    const wildcard = route.name === "*";
    res.locals.route = wildcard ? "list" : "object";
    const target = wildcard ? `${route.resource}/${route.metric} in namespace ${route.namespace}` : `${route.resource}/${route.metric} of ${route.namespace}/${route.name}`;
    if (!(await authorize(res, attributes, target))) return;
    answerObject(route, req, res);
  });

  app.use((req: Request, res: Response) => {
    fail(res, 404, "NotFound", `no route for ${req.method} ${req.path}; the metrics API lives under ${PREFIX}/{${VERSIONS.join(",")}}`);
  });
  app.use((error: any, _req: Request, res: Response, _next: NextFunction) => {
    deps.logger?.log("error", "request failed", { error: String(error?.message ?? error) });
    fail(res, 500, "InternalError", String(error?.message ?? error));
  });
  return app;
}

// --- the server ------------------------------------------------------------------------------

export interface AdapterServerOptions {
  address: string;
  port: number;
  cert: string;
  key: string;
  deps: AdapterDeps;
}

export interface RunningAdapterServer {
  address: string;
  port: number;
  reloadCertificate(pair: { cert: string; key: string }): void;
  close(): Promise<void>;
}

export async function startAdapterServer(options: AdapterServerOptions): Promise<RunningAdapterServer> {
  let closing = false;
  const app = createAdapterApp(options.deps, () => closing);
  // The certificate is checked in middleware, not by TLS, so a caller without one gets a 401 with a
  // reason instead of a handshake error, and a rotated requestheader CA applies to the next request.
  const server = https.createServer({ cert: options.cert, key: options.key, minVersion: "TLSv1.2", requestCert: true, rejectUnauthorized: false }, app);
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 35_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.address, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    address: address.address,
    port: address.port,
    reloadCertificate(pair) {
      server.setSecureContext({ cert: pair.cert, key: pair.key, minVersion: "TLSv1.2" } as any);
    },
    close() {
      closing = true;
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    },
  };
}
