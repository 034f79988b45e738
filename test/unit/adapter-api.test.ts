import https from "node:https";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createAdapterMetrics } from "../../src/adapter/adapter-metrics.ts";
import { formatQuantity, formatTimestamp, startAdapterServer, type RunningAdapterServer } from "../../src/adapter/api.ts";
import { DEFAULT_HEADERS, cachedAccessReviewer, requestHeaderConfigFromConfigMap, type AccessRequest, type RequestHeaderConfig } from "../../src/adapter/auth.ts";
import { MetricCache, type PodLike } from "../../src/adapter/cache.ts";
import type { Observation } from "../../src/adapter/mapping.ts";
import { createCA, createClientCert, createServingCert, type PemPair } from "../../src/tls/certificates.ts";

const T = Date.parse("2026-08-20T10:00:00Z");
const INF = Number.POSITIVE_INFINITY;
const PREFIX = "/apis/custom.metrics.k8s.io";

let server: RunningAdapterServer;
let servingCA: PemPair;
let frontProxy: PemPair;
let strangerFromOtherCA: PemPair;
let disallowedName: PemPair;
let frontProxyCA: PemPair;
let requestHeader: RequestHeaderConfig;
let ready = true;
const reviews: AccessRequest[] = [];

function pod(name: string): PodLike {
  return {
    metadata: {
      name,
      namespace: "team-a",
      uid: `uid-${name}`,
      labels: { app: "llama", "pod-template-hash": "5d8f9" },
      ownerReferences: [{ kind: "ReplicaSet", name: "llama-5d8f9", controller: true }],
    },
  };
}

function observation(at: number, parts: Partial<Observation>): Observation {
  return { at, engine: "vllm", ...parts };
}

beforeAll(async () => {
  const now = new Date();
  servingCA = createCA({ commonName: "adapter-serving-ca", now });
  frontProxyCA = createCA({ commonName: "front-proxy-ca", now });
  const otherCA = createCA({ commonName: "somebody-else", now });
  const serving = createServingCert({ ca: servingCA, hosts: ["127.0.0.1"], now });
  frontProxy = createClientCert({ ca: frontProxyCA, commonName: "front-proxy-client", now });
  strangerFromOtherCA = createClientCert({ ca: otherCA, commonName: "front-proxy-client", now });
  disallowedName = createClientCert({ ca: frontProxyCA, commonName: "intruder", now });

  const cache = new MetricCache({ windowMs: 60_000, now: () => T });
  cache.upsertPod(pod("llama-5d8f9-aaaaa"));
  cache.upsertPod(pod("llama-5d8f9-bbbbb"));
  const buckets = (b100: number, b500: number) => new Map([["", { buckets: new Map([[100, b100], [500, b500], [INF, b500]]) }]]);
  cache.recordObservation("team-a", "llama-5d8f9-aaaaa", undefined, observation(T - 15_000, { inFlight: 3, completed: new Map([["", 100]]), histogram: buckets(0, 0) }));
  cache.recordObservation("team-a", "llama-5d8f9-aaaaa", undefined, observation(T, { inFlight: 5, completed: new Map([["", 130]]), histogram: buckets(10, 30) }));
  cache.recordObservation("team-a", "llama-5d8f9-bbbbb", undefined, observation(T - 15_000, { inFlight: 1.5, completed: new Map([["", 0]]) }));
  cache.recordObservation("team-a", "llama-5d8f9-bbbbb", undefined, observation(T, { inFlight: 1.5, completed: new Map([["", 15]]) }));

  server = await startAdapterServer({
    address: "127.0.0.1",
    port: 0,
    cert: serving.certPem,
    key: serving.keyPem,
    deps: {
      reader: cache,
      requestHeader: () => requestHeader,
      review: async (request) => {
        reviews.push(request);
        return request.user.username === "mallory" ? { allowed: false, reason: "no RBAC policy matched" } : { allowed: true };
      },
      metrics: createAdapterMetrics({ defaults: false }),
      ready: () => ready,
    },
  });
});

afterAll(async () => {
  await server?.close();
});

beforeEach(() => {
  reviews.length = 0;
  ready = true;
  requestHeader = { clientCA: frontProxyCA.certPem, allowedNames: ["front-proxy-client"], ...DEFAULT_HEADERS };
});

interface Answer {
  status: number;
  body: any;
  text: string;
}

function get(path: string, options: { client?: PemPair | null; user?: string | null; headers?: Record<string, string | string[]>; method?: string; agent?: https.Agent } = {}): Promise<Answer> {
  const client = options.client === undefined ? frontProxy : options.client;
  const headers: Record<string, string | string[]> = { accept: "application/json", ...(options.headers ?? {}) };
  const user = options.user === undefined ? "system:serviceaccount:kube-system:horizontal-pod-autoscaler" : options.user;
  if (user !== null) headers["X-Remote-User"] = user;
  return new Promise((resolve, reject) => {
    const request = https.request(
      {
        host: "127.0.0.1",
        port: server.port,
        path,
        method: options.method ?? "GET",
        ca: servingCA.certPem,
        ...(client ? { cert: client.certPem, key: client.keyPem } : {}),
        agent: options.agent ?? false,
        headers,
      },
      (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => {
          let body: any;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          resolve({ status: response.statusCode ?? 0, body, text });
        });
      },
    );
    request.on("error", reject);
    request.end();
  });
}

describe("discovery", () => {
  it("lists every resource/metric pair for both versions, with no authorization call", async () => {
    for (const version of ["v1beta2", "v1beta1"]) {
      const answer = await get(`${PREFIX}/${version}`);
      expect(answer.status).toBe(200);
      expect(answer.body.kind).toBe("APIResourceList");
      expect(answer.body.apiVersion).toBe("v1");
      expect(answer.body.groupVersion).toBe(`custom.metrics.k8s.io/${version}`);
      expect(answer.body.resources).toHaveLength(20);
      expect(answer.body.resources[0]).toStrictEqual({ name: "pods/inference_concurrency", singularName: "", namespaced: true, kind: "MetricValueList", verbs: ["get"] });
      const names = answer.body.resources.map((resource: { name: string }) => resource.name);
      for (const expected of [
        "deployments.apps/inference_latency_p95_ms",
        "services.serving.knative.dev/inference_requests_per_second",
        "revisions.serving.knative.dev/inference_latency_p99_ms",
        "pods/inference_latency_p50_ms",
      ]) {
        expect(names).toContain(expected);
      }
    }
    const group = await get(PREFIX);
    expect(group.body).toStrictEqual({
      kind: "APIGroup",
      apiVersion: "v1",
      name: "custom.metrics.k8s.io",
      versions: [
        { groupVersion: "custom.metrics.k8s.io/v1beta2", version: "v1beta2" },
        { groupVersion: "custom.metrics.k8s.io/v1beta1", version: "v1beta1" },
      ],
      preferredVersion: { groupVersion: "custom.metrics.k8s.io/v1beta2", version: "v1beta2" },
    });
    expect(reviews).toEqual([]);
  });

  it("sends the aggregator to per-version discovery when it asks for aggregated discovery", async () => {
    const answer = await get("/apis", { headers: { accept: "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json" } });
    expect(answer.status).toBe(406);
  });
});

describe("metric values", () => {
  it("answers one pod in the v1beta2 shape", async () => {
    const answer = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/llama-5d8f9-aaaaa/inference_concurrency`);
    expect(answer.status).toBe(200);
    expect(answer.body).toStrictEqual({
      kind: "MetricValueList",
      apiVersion: "custom.metrics.k8s.io/v1beta2",
      metadata: {},
      items: [
        {
          describedObject: { kind: "Pod", namespace: "team-a", name: "llama-5d8f9-aaaaa", apiVersion: "v1" },
          metric: { name: "inference_concurrency" },
          timestamp: "2026-08-20T10:00:00Z",
          windowSeconds: 60,
          value: "4",
        },
      ],
    });
  });

  it("answers one pod in the v1beta1 shape: metricName, window, selector", async () => {
    const answer = await get(`${PREFIX}/v1beta1/namespaces/team-a/pods/llama-5d8f9-bbbbb/inference_concurrency`);
    expect(answer.status).toBe(200);
    expect(answer.body).toStrictEqual({
      kind: "MetricValueList",
      apiVersion: "custom.metrics.k8s.io/v1beta1",
      metadata: {},
      items: [
        {
          describedObject: { kind: "Pod", namespace: "team-a", name: "llama-5d8f9-bbbbb", apiVersion: "v1" },
          metricName: "inference_concurrency",
          timestamp: "2026-08-20T10:00:00Z",
          window: 60,
          value: "1500m",
          selector: null,
        },
      ],
    });
  });

  it("aggregates a Deployment: summed concurrency and throughput, quantile over merged buckets", async () => {
    const concurrency = await get(`${PREFIX}/v1beta2/namespaces/team-a/deployments.apps/llama/inference_concurrency`);
    expect(concurrency.body.items).toStrictEqual([
      {
        describedObject: { kind: "Deployment", namespace: "team-a", name: "llama", apiVersion: "apps/v1" },
        metric: { name: "inference_concurrency" },
        timestamp: "2026-08-20T10:00:00Z",
        windowSeconds: 60,
        value: "5500m",
      },
    ]);
    const rps = await get(`${PREFIX}/v1beta1/namespaces/team-a/deployments.apps/llama/inference_requests_per_second`);
    expect(rps.body.items[0].value).toBe("3");
    expect(rps.body.items[0].metricName).toBe("inference_requests_per_second");
    // 30 requests: 10 within 100 ms, 20 more within 500 ms. Rank 15: 100 + 400 × 5/20 = 200 ms.
    const p50 = await get(`${PREFIX}/v1beta2/namespaces/team-a/deployments.apps/llama/inference_latency_p50_ms`);
    expect(p50.body.items[0].value).toBe("200");
  });

  it("lists pods by labelSelector through the wildcard, `*` percent-encoded as the HPA sends it", async () => {
    const answer = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/%2A/inference_requests_per_second?labelSelector=app%3Dllama%2Cpod-template-hash+in+%285d8f9%29`);
    expect(answer.status).toBe(200);
    expect(answer.body.items.map((item: any) => [item.describedObject.name, item.value])).toEqual([
      ["llama-5d8f9-aaaaa", "2"],
      ["llama-5d8f9-bbbbb", "1"],
    ]);
    const none = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/*/inference_requests_per_second?labelSelector=app%3Dnothing`);
    expect(none.status).toBe(404);
    expect(none.body.message).toBe(
      'the server could not find the metric inference_requests_per_second for pods matching "app=nothing" in namespace team-a: no pods in namespace team-a match the selector',
    );
  });

  it("lists Deployments with the wildcard, but refuses a selector on them", async () => {
    const answer = await get(`${PREFIX}/v1beta1/namespaces/team-a/deployments.apps/*/inference_concurrency`);
    expect(answer.body.items.map((item: any) => [item.describedObject.name, item.value])).toEqual([["llama", "5500m"]]);
    const refused = await get(`${PREFIX}/v1beta1/namespaces/team-a/deployments.apps/*/inference_concurrency?labelSelector=app%3Dllama`);
    expect(refused.status).toBe(400);
    expect(refused.body.reason).toBe("BadRequest");
    const bad = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/*/inference_concurrency?labelSelector=%3D%3Dx`);
    expect(bad.status).toBe(400);
  });

  it("answers 404 with a Status naming the object and metric when there is no series", async () => {
    const ghost = await get(`${PREFIX}/v1beta2/namespaces/team-a/deployments.apps/ghost/inference_concurrency`);
    expect(ghost.status).toBe(404);
    expect(ghost.body).toStrictEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "the server could not find the metric inference_concurrency for deployments.apps team-a/ghost: deployments.apps team-a/ghost has no pods known to the adapter",
      reason: "NotFound",
      details: { group: "custom.metrics.k8s.io", kind: "inference_concurrency", name: "ghost" },
      code: 404,
    });
    const noHistogram = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/llama-5d8f9-bbbbb/inference_latency_p99_ms`);
    expect(noHistogram.status).toBe(404);
    expect(noHistogram.body.message).toMatch(/^the server could not find the metric inference_latency_p99_ms for pods team-a\/llama-5d8f9-bbbbb: pod team-a\/llama-5d8f9-bbbbb: no latency histogram/);
    const unknownMetric = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/llama-5d8f9-aaaaa/gpu_temperature`);
    expect(unknownMetric.status).toBe(404);
    expect(unknownMetric.body.message).toContain("unknown metric; served: inference_concurrency");
    const unknownResource = await get(`${PREFIX}/v1beta2/namespaces/team-a/statefulsets.apps/db/inference_concurrency`);
    expect(unknownResource.status).toBe(404);
    const namespaceMetric = await get(`${PREFIX}/v1beta1/namespaces/team-a/metrics/inference_concurrency`);
    expect(namespaceMetric.status).toBe(404);
    expect(namespaceMetric.body.message).toContain("not of namespaces");
  });
});

describe("authentication and authorization", () => {
  it("answers probes without a certificate", async () => {
    expect((await get("/healthz", { client: null, user: null })).status).toBe(200);
    expect((await get("/readyz", { client: null, user: null })).status).toBe(200);
    ready = false;
    expect((await get("/readyz", { client: null, user: null })).status).toBe(503);
  });

  it("rejects a caller without a client certificate with 401", async () => {
    const answer = await get(`${PREFIX}/v1beta2`, { client: null });
    expect(answer.status).toBe(401);
    expect(answer.body.reason).toBe("Unauthorized");
    expect(answer.body.message).toMatch(/client certificate is required/);
  });

  it("rejects a certificate from another CA, and one whose CN is not allowed, with 401", async () => {
    const stranger = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/llama-5d8f9-aaaaa/inference_concurrency`, { client: strangerFromOtherCA });
    expect(stranger.status).toBe(401);
    expect(stranger.body.message).toMatch(/not signed by the requestheader client CA/);
    const intruder = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/llama-5d8f9-aaaaa/inference_concurrency`, { client: disallowedName });
    expect(intruder.status).toBe(401);
    expect(intruder.body.message).toBe('client certificate common name "intruder" is not an allowed front-proxy name (front-proxy-client)');
    expect(reviews).toEqual([]);
  });

  it("accepts any CN from the CA when the allowed list is empty, but still needs the user header", async () => {
    requestHeader = { ...requestHeader, allowedNames: [] };
    expect((await get(`${PREFIX}/v1beta2`, { client: disallowedName })).status).toBe(200);
    const anonymous = await get(`${PREFIX}/v1beta2`, { user: null });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.message).toMatch(/sent no user/);
  });

  it("authorizes the remote user with a SubjectAccessReview on the metric and answers 403 when denied", async () => {
    const allowed = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/%2A/inference_concurrency?labelSelector=app%3Dllama`, {
      user: "alice",
      headers: { "X-Remote-Group": ["system:authenticated", "team-a"], "X-Remote-Extra-Scopes": "read" },
    });
    expect(allowed.status).toBe(200);
    expect(reviews).toStrictEqual([
      {
        user: { username: "alice", groups: ["system:authenticated", "team-a"], extra: { scopes: ["read"] } },
        resourceAttributes: {
          namespace: "team-a",
          verb: "get",
          group: "custom.metrics.k8s.io",
          version: "v1beta2",
          resource: "pods",
          subresource: "inference_concurrency",
          name: "*",
        },
      },
    ]);
    const denied = await get(`${PREFIX}/v1beta2/namespaces/team-a/deployments.apps/llama/inference_concurrency`, { user: "mallory" });
    expect(denied.status).toBe(403);
    expect(denied.body.reason).toBe("Forbidden");
    expect(denied.body.message).toBe('user "mallory" cannot get deployments.apps/inference_concurrency of team-a/llama: no RBAC policy matched');
  });

  it("authenticates every request on a kept-alive connection and on a resumed TLS session", async () => {
    for (const agent of [new https.Agent({ keepAlive: true }), new https.Agent({ keepAlive: false })]) {
      for (let i = 0; i < 3; i++) {
        const answer = await get(`${PREFIX}/v1beta2/namespaces/team-a/pods/llama-5d8f9-aaaaa/inference_concurrency`, { agent });
        expect(answer.status).toBe(200);
      }
      agent.destroy();
    }
  });

  it("guards /metrics with authentication and authorization, and refuses writes", async () => {
    expect((await get("/metrics", { client: null })).status).toBe(401);
    const metrics = await get("/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain("infergate_adapter_request_duration_seconds_bucket");
    expect(reviews.at(-1)?.nonResourceAttributes).toEqual({ path: "/metrics", verb: "get" });
    expect((await get(`${PREFIX}/v1beta2`, { method: "POST" })).status).toBe(405);
  });
});

describe("wire helpers", () => {
  it("formats quantities the way Kubernetes does", () => {
    expect(formatQuantity(12)).toBe("12");
    expect(formatQuantity(1.5)).toBe("1500m");
    expect(formatQuantity(0.25)).toBe("250m");
    expect(formatQuantity(0)).toBe("0");
    expect(formatQuantity(0.0001)).toBe("0");
    expect(formatQuantity(791.6666)).toBe("791667m");
    expect(formatTimestamp(Date.parse("2026-08-20T10:00:00.987Z"))).toBe("2026-08-20T10:00:00Z");
  });

  it("reads the extension-apiserver-authentication ConfigMap", () => {
    const result = requestHeaderConfigFromConfigMap({
      "requestheader-client-ca-file": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
      "requestheader-allowed-names": '["front-proxy-client"]',
      "requestheader-username-headers": '["X-Remote-User"]',
      "requestheader-group-headers": '["X-Remote-Group"]',
      "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    });
    expect(result.ok && result.config.allowedNames).toEqual(["front-proxy-client"]);
    expect(requestHeaderConfigFromConfigMap({ "client-ca-file": "x" })).toEqual({ ok: false, message: expect.stringContaining("has no requestheader-client-ca-file") });
    const broken = requestHeaderConfigFromConfigMap({ "requestheader-client-ca-file": "-----BEGIN CERTIFICATE-----", "requestheader-allowed-names": "front-proxy-client" });
    expect(broken).toEqual({ ok: false, message: expect.stringContaining("requestheader-allowed-names must be a JSON array of strings") });
  });

  it("caches access decisions for their lifetime and shares one in flight", async () => {
    let clock = 0;
    let calls = 0;
    const reviewer = cachedAccessReviewer(
      async (request) => {
        calls++;
        return { allowed: request.user.username === "alice" };
      },
      { ttlMs: 10_000, now: () => clock },
    );
    const ask = (username: string) => reviewer({ user: { username, groups: [], extra: {} }, resourceAttributes: { verb: "get", group: "g", version: "v", resource: "pods" } });
    const [first, second] = await Promise.all([ask("alice"), ask("alice")]);
    expect(first.allowed && second.allowed).toBe(true);
    expect(calls).toBe(1);
    expect((await ask("bob")).allowed).toBe(false);
    expect((await ask("bob")).allowed).toBe(false);
    expect(calls).toBe(2);
    clock = 10_001;
    await ask("alice");
    expect(calls).toBe(3);
  });
});
