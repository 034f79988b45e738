// The webhook server over real HTTPS: routes, bad input, and what each kind of request gets back.
import { readFileSync } from "node:fs";
import https from "node:https";
import tls from "node:tls";
import fastJsonPatch from "fast-json-patch";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { AdmissionDeps } from "../../src/admission/handler.ts";
import type { Plugin } from "../../src/admission/plugin.ts";
import { MAX_NESTING_DEPTH } from "../../src/admission/review.ts";
import { MAX_BODY_BYTES, startServer, type RunningServer } from "../../src/admission/server.ts";
import { createAdmissionMetrics } from "../../src/observability/metrics.ts";
import { createLogger } from "../../src/observability/log.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { createCA, createServingCert } from "../../src/tls/certificates.ts";
import { plugins } from "../../webhooks/index.ts";

const fixture = (name: string): any => JSON.parse(readFileSync(new URL(`../fixtures/${name}.json`, import.meta.url), "utf8"));

const FIXTURES = [
  "deployment-vllm-create",
  "deployment-vllm-update",
  "deployment-scale-update",
  "knative-service-create",
  "pod-knative-revision-create",
  "deployment-delete",
] as const;

interface Answer {
  status: number;
  contentType: string;
  text: string;
  body: any;
}

let server: RunningServer;
let agent: https.Agent;
/** How often any plugin was even asked whether it applies: "no work" means this does not move. */
let consulted = 0;
const logLines: string[] = [];

// Registered last, it sees every request that reaches the plugins and never changes anything.
const probe: Plugin = {
  name: "probe",
  appliesTo: () => {
    consulted++;
    return false;
  },
};

beforeAll(async () => {
  const now = new Date();
  const ca = createCA({ commonName: "infergate-server-test-ca", now });
  const serving = createServingCert({ ca, hosts: ["127.0.0.1", "localhost"], now });
  const store = new PolicyStore();
  for (const item of fixture("team-a-policy").items) {
    if (item.kind === "Project") store.upsertProject(item);
    else store.upsertPolicy(item);
  }
  const deps: AdmissionDeps = {
    plugins: [...plugins, probe],
    policies: store,
    cluster: () => ({ knativeFeatures: store.knativeFeatures }),
    metrics: createAdmissionMetrics({ defaults: false }),
    logger: createLogger("info", (line) => logLines.push(line)),
  };
  server = await startServer({ address: "127.0.0.1", port: 0, cert: serving.certPem, key: serving.keyPem, deps });
  agent = new https.Agent({ ca: ca.certPem, keepAlive: true, maxSockets: 4 });
});

afterAll(async () => {
  agent?.destroy();
  await server?.close();
});

function send(method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: "127.0.0.1", port: server.port, method, path, agent, headers: { "content-type": "application/json", ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const contentType = String(res.headers["content-type"] ?? "");
          resolve({ status: res.statusCode ?? 0, contentType, text, body: contentType.includes("json") ? JSON.parse(text) : undefined });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const post = (path: string, body: unknown) => send("POST", path, typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body));

function decodePatch(response: any): any[] {
  expect(response.patchType).toBe("JSONPatch");
  const patch = JSON.parse(Buffer.from(response.patch, "base64").toString("utf8"));
  expect(Array.isArray(patch)).toBe(true);
  return patch;
}

/** Applies a patch the way the API server does: every operation must be valid against the object. */
function applyCleanly(object: unknown, patch: any[]): any {
  return fastJsonPatch.applyPatch(structuredClone(object), patch, true, false).newDocument;
}

function expectWellFormedReview(answer: Answer, uid: string) {
  expect(answer.status).toBe(200);
  expect(answer.contentType).toMatch(/^application\/json/);
  expect(answer.body).toMatchObject({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid } });
  expect(typeof answer.body.response.allowed).toBe("boolean");
  expect(answer.body.request).toBeUndefined();
}

function expectFailureStatus(answer: Answer, code: number): string {
  expect(answer.status).toBe(code);
  expect(answer.contentType).toMatch(/^application\/json/);
  expect(answer.body).toMatchObject({ kind: "Status", apiVersion: "v1", status: "Failure", code });
  expect(typeof answer.body.message).toBe("string");
  expect(answer.body.message.length).toBeGreaterThan(0);
  return answer.body.message;
}

describe("a vLLM GPU Deployment under a policy", () => {
  it("is mutated with a base64 JSONPatch that applies cleanly and injects the policy defaults", async () => {
    const review = fixture("deployment-vllm-create");
    const answer = await post("/mutate", review);
    expectWellFormedReview(answer, review.request.uid);
    const { response } = answer.body;
    expect(response.allowed).toBe(true);
    const patched = applyCleanly(review.request.object, decodePatch(response));
    const spec = patched.spec.template.spec;
    expect(spec.priorityClassName).toBe("inference");
    expect(spec.tolerations).toContainEqual({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
    // Nothing the user wrote is lost on the way.
    expect(spec.containers[0].image).toBe("vllm/vllm-openai:v0.8.5");
    expect(spec.containers[0].resources.limits["nvidia.com/gpu"]).toBe("1");
  });

  it("reports every injected default as a warning of at most 120 characters", async () => {
    const review = fixture("deployment-vllm-create");
    const { response } = (await post("/mutate", review)).body;
    expect(response.warnings.length).toBeGreaterThan(0);
    for (const warning of response.warnings) {
      expect(typeof warning).toBe("string");
      expect(warning.length).toBeLessThanOrEqual(120);
    }
    expect(response.warnings.some((w: string) => w.includes("priorityClassName=inference"))).toBe(true);
  });

  it("gets no patch when the already mutated object comes back (reinvocationPolicy: IfNeeded)", async () => {
    const review = fixture("deployment-vllm-create");
    const first = (await post("/mutate", review)).body.response;
    review.request.object = applyCleanly(review.request.object, decodePatch(first));
    const again = await post("/mutate", review);
    expectWellFormedReview(again, review.request.uid);
    expect(again.body.response.allowed).toBe(true);
    expect(again.body.response.patch).toBeUndefined();
  });

  it("is allowed by /validate with no patch", async () => {
    const review = fixture("deployment-vllm-create");
    const answer = await post("/validate", review);
    expectWellFormedReview(answer, review.request.uid);
    expect(answer.body.response.allowed).toBe(true);
    expect(answer.body.response.patch).toBeUndefined();
    expect(answer.body.response.patchType).toBeUndefined();
  });

  it("is denied by /validate with status.code and a message naming each violation", async () => {
    const review = fixture("deployment-vllm-create");
    review.request.object.spec.template.spec.priorityClassName = "batch-low";
    review.request.object.spec.template.spec.containers[0].image = "ghcr.io/someone/vllm:latest";
    const answer = await post("/validate", review);
    expectWellFormedReview(answer, review.request.uid);
    const { response } = answer.body;
    expect(response.allowed).toBe(false);
    expect(response.status.code).toBe(403);
    expect(response.status.message).toContain('Deployment "llama-3-8b-instruct" is invalid');
    expect(response.status.message).toContain("spec.template.spec.priorityClassName");
    expect(response.status.message).toContain('"batch-low"');
    expect(response.status.message).toContain("spec.template.spec.containers[0].image");
  });
});

describe("keys that mean something to JavaScript", () => {
  it("stay plain keys: the patch neither removes nor rewrites them", async () => {
    const review = fixture("deployment-vllm-create");
    const text = JSON.stringify(review).replace('"annotations":{"prometheus.io/scrape"', '"annotations":{"__proto__":"x","constructor":"y","prometheus.io/scrape"');
    const parsed = JSON.parse(text);
    expect(Object.keys(parsed.request.object.spec.template.metadata.annotations)).toContain("__proto__");
    const answer = await post("/mutate", text);
    expectWellFormedReview(answer, review.request.uid);
    const patch = decodePatch(answer.body.response);
    expect(patch.filter((op: any) => /__proto__|constructor/.test(op.path))).toEqual([]);
    const annotations = applyCleanly(parsed.request.object, patch).spec.template.metadata.annotations;
    expect(Object.getOwnPropertyDescriptor(annotations, "__proto__")?.value).toBe("x");
    expect(annotations.constructor).toBe("y");
  });
});

describe("every fixture", () => {
  for (const name of FIXTURES) {
    for (const route of ["mutate", "validate"] as const) {
      it(`${name} gets a well-formed answer from /${route}, with a patch that applies cleanly`, async () => {
        const review = fixture(name);
        const answer = await post(`/${route}`, review);
        expectWellFormedReview(answer, review.request.uid);
        const { response } = answer.body;
        expect(response.allowed).toBe(true);
        if (route === "validate" || !response.patch) {
          expect(response.patch).toBeUndefined();
          return;
        }
        const patched = applyCleanly(review.request.object, decodePatch(response));
        expect(patched.metadata).toEqual(expect.objectContaining({ namespace: review.request.object.metadata.namespace }));
      });
    }
  }

  it("a Pod of a Knative revision receives the fields Knative refuses on the Service", async () => {
    const review = fixture("pod-knative-revision-create");
    const { response } = (await post("/mutate", review)).body;
    const pod = applyCleanly(review.request.object, decodePatch(response));
    expect(pod.spec.priorityClassName).toBe("inference");
    expect(pod.spec.tolerations).toContainEqual({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
  });
});

describe("requests that need no work", () => {
  it("an unknown kind is allowed with no patch, and no plugin is consulted", async () => {
    const before = consulted;
    const job = fixture("deployment-vllm-create");
    job.request.kind = { group: "batch", version: "v1", kind: "Job" };
    job.request.resource = { group: "batch", version: "v1", resource: "jobs" };
    job.request.object.kind = "Job";
    job.request.object.apiVersion = "batch/v1";
    for (const route of ["/mutate", "/validate"]) {
      const answer = await post(route, job);
      expectWellFormedReview(answer, job.request.uid);
      expect(answer.body.response).toEqual({ uid: job.request.uid, allowed: true });
    }
    expect(consulted).toBe(before);
  });

  it("a DELETE is allowed with no patch and no warnings, and no plugin is consulted", async () => {
    const before = consulted;
    const review = fixture("deployment-delete");
    for (const route of ["/mutate", "/validate"]) {
      const answer = await post(route, review);
      expectWellFormedReview(answer, review.request.uid);
      expect(answer.body.response).toEqual({ uid: review.request.uid, allowed: true });
    }
    expect(consulted).toBe(before);
  });

  it("a CONNECT (kubectl exec) is allowed with no patch and no warnings, and no plugin is consulted", async () => {
    const before = consulted;
    const review = {
      apiVersion: "admission.k8s.io/v1",
      kind: "AdmissionReview",
      request: {
        uid: "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
        kind: { group: "", version: "v1", kind: "PodExecOptions" },
        resource: { group: "", version: "v1", resource: "pods" },
        subResource: "exec",
        name: "llama-3-8b-instruct-6d9f7c8b5d-x2k8p",
        namespace: "team-a",
        operation: "CONNECT",
        userInfo: { username: "alice@example.com", groups: ["system:authenticated"] },
        object: { kind: "PodExecOptions", apiVersion: "v1", stdin: true, tty: true, container: "vllm", command: ["/bin/sh"] },
        oldObject: null,
        dryRun: false,
        options: null,
      },
    };
    for (const route of ["/mutate", "/validate"]) {
      const answer = await post(route, review);
      expectWellFormedReview(answer, review.request.uid);
      expect(answer.body.response).toEqual({ uid: review.request.uid, allowed: true });
    }
    expect(consulted).toBe(before);
  });

  it("a Deployment in a namespace of no Project is allowed untouched", async () => {
    const review = fixture("deployment-vllm-create");
    review.request.namespace = "somebody-else";
    review.request.object.metadata.namespace = "somebody-else";
    const answer = await post("/mutate", review);
    expect(answer.body.response).toEqual({ uid: review.request.uid, allowed: true });
  });
});

describe("bad input", () => {
  it("malformed JSON is a 400 that says the body is not valid JSON", async () => {
    const text = JSON.stringify(fixture("deployment-vllm-create")).slice(0, 900);
    for (const route of ["/mutate", "/validate"]) {
      const message = expectFailureStatus(await post(route, text), 400);
      expect(message).toMatch(/^request body is not valid JSON: /);
    }
  });

  it("a body that is not an AdmissionReview v1 is a 400 naming each offending field", async () => {
    const review = fixture("deployment-vllm-create");
    review.apiVersion = "admission.k8s.io/v1beta1";
    delete review.request.uid;
    review.request.operation = "PATCH";
    const message = expectFailureStatus(await post("/validate", review), 400);
    expect(message).toContain('apiVersion: must be "admission.k8s.io/v1", got "admission.k8s.io/v1beta1"');
    expect(message).toContain("request.uid: must be a non-empty string, got nothing");
    expect(message).toContain('request.operation: must be one of CREATE, UPDATE, DELETE, CONNECT, got "PATCH"');
  });

  it("a JSON value that is no object, or an empty body, is a 400", async () => {
    for (const body of ["[]", '"AdmissionReview"', "42", "null", ""]) {
      const message = expectFailureStatus(await post("/mutate", body), 400);
      expect(message.length).toBeGreaterThan(10);
    }
  });

  it("a review nested 10,000 levels deep is a 400, and the server keeps answering", async () => {
    const text = JSON.stringify(fixture("deployment-vllm-create")).replace('"status":{}', `"status":${"[".repeat(10_000)}${"]".repeat(10_000)}`);
    for (const route of ["/mutate", "/validate"]) {
      const message = expectFailureStatus(await post(route, text), 400);
      expect(message).toContain(`nested more than ${MAX_NESTING_DEPTH} levels deep`);
    }
    const health = await send("GET", "/healthz");
    expect(health.status).toBe(200);
  });

  it("a body over 3 MiB is a 413; one just under the limit is admitted", async () => {
    const review = fixture("deployment-vllm-create");
    review.request.kind = { group: "", version: "v1", kind: "ConfigMap" };
    review.request.resource = { group: "", version: "v1", resource: "configmaps" };
    review.request.object = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "big", namespace: "team-a" }, data: { blob: "" } };
    const overhead = Buffer.byteLength(JSON.stringify(review));
    review.request.object.data.blob = "x".repeat(MAX_BODY_BYTES - overhead);
    const fits = JSON.stringify(review);
    expect(Buffer.byteLength(fits)).toBe(MAX_BODY_BYTES);
    expectWellFormedReview(await post("/validate", fits), review.request.uid);

    review.request.object.data.blob += "x";
    const message = expectFailureStatus(await post("/validate", JSON.stringify(review)), 413);
    expect(message).toBe(`request body exceeds ${MAX_BODY_BYTES} bytes`);
  });

  it("unknown routes and methods are a 404 that names the admission routes", async () => {
    for (const [method, path] of [
      ["GET", "/mutate"],
      ["POST", "/mutate/extra"],
      ["POST", "/admit"],
      ["PUT", "/validate"],
      ["GET", "/"],
    ] as const) {
      const message = expectFailureStatus(await send(method, path, method === "GET" ? undefined : "{}"), 404);
      expect(message).toBe(`no route for ${method} ${path}; use POST /mutate or POST /validate`);
    }
  });
});

describe("operations endpoints", () => {
  it("/healthz and /readyz answer ok", async () => {
    for (const path of ["/healthz", "/readyz"]) {
      const answer = await send("GET", path);
      expect(answer.status).toBe(200);
      expect(answer.text).toBe("ok");
    }
  });

  it("/metrics exposes the admission latency histogram and the bad-request counter", async () => {
    const answer = await send("GET", "/metrics");
    expect(answer.status).toBe(200);
    expect(answer.text).toContain('infergate_admission_duration_seconds_bucket{le="0.005",webhook="mutate",plugin="all",verdict="patched"}');
    expect(answer.text).toMatch(/infergate_admission_bad_requests_total\{webhook="(mutate|validate)",code="400"\} \d+/);
  });

  it("logs each admission it worked on as one JSON line", () => {
    const entries = logLines.map((line) => JSON.parse(line));
    expect(entries.some((e) => e.msg === "admission" && e.webhook === "mutate" && e.verdict === "patched" && e.project === "team-a")).toBe(true);
  });
});

describe("closing", () => {
  it("does not wait for a connection that never carried a request, and answers the request in flight", async () => {
    const now = new Date();
    const ca = createCA({ commonName: "infergate-close-test-ca", now });
    const serving = createServingCert({ ca, hosts: ["127.0.0.1"], now });
    let held = false;
    let release: () => void = () => undefined;
    const slow: Plugin = { name: "slow", appliesTo: () => true, validate: () => undefined };
    const store = new PolicyStore();
    for (const item of fixture("team-a-policy").items) {
      if (item.kind === "Project") store.upsertProject(item);
      else store.upsertPolicy(item);
    }
    const deps: AdmissionDeps = {
      plugins: [slow],
      policies: store,
      cluster: () => ({ knativeFeatures: store.knativeFeatures }),
      metrics: createAdmissionMetrics({ defaults: false }),
      logger: createLogger("error", () => undefined),
      // Holds one validation open until the test lets it go.
      afterValidate: () =>
        new Promise((resolve) => {
          held = true;
          release = () => resolve(undefined);
        }),
    };
    const closing = await startServer({ address: "127.0.0.1", port: 0, cert: serving.certPem, key: serving.keyPem, deps });
    // A spare connection, as the API server's client leaves behind: TLS done, no request ever sent.
    const spare = tls.connect({ host: "127.0.0.1", port: closing.port, ca: ca.certPem });
    await new Promise((resolve) => spare.once("secureConnect", resolve));
    const spareClosed = new Promise((resolve) => spare.once("close", resolve));
    const oneShot = new https.Agent({ ca: ca.certPem, keepAlive: true });
    const body = JSON.stringify(fixture("deployment-vllm-create"));
    const answer = new Promise<{ status: number; text: string; connection: string | undefined }>((resolve, reject) => {
      const req = https.request(
        { agent: oneShot, host: "127.0.0.1", port: closing.port, path: "/validate", method: "POST", headers: { "content-type": "application/json" } },
        (res) => {
          let text = "";
          res.on("data", (d) => (text += d));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text, connection: res.headers.connection }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });
    await vi.waitFor(() => expect(held).toBe(true), { timeout: 5_000 });
    let closed = false;
    const done = closing.close().then(() => (closed = true));
    await spareClosed;
    expect(closed).toBe(false);
    release();
    const answered = await answer;
    expect(answered.status).toBe(200);
    expect(JSON.parse(answered.text).response.allowed).toBe(true);
    expect(answered.connection).toBe("close");
    await done;
    expect(closed).toBe(true);
    oneShot.destroy();
  });
});
