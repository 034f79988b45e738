// Property-based fuzzing of the two admission routes. Whatever arrives, the answer is a well-formed 200
// AdmissionReview or a 4xx with a message, and the process keeps serving. Most bodies go straight into
// handleAdmission (fast); a large share goes over real HTTPS as raw bytes, through express.json.
import { readFileSync } from "node:fs";
import https from "node:https";
import { deflateSync, gzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handleAdmission, type AdmissionDeps, type HttpAnswer } from "../../src/admission/handler.ts";
import type { ClusterView } from "../../src/admission/plugin.ts";
import { WARNED_VIOLATION_MAX, WARNING_MAX } from "../../src/admission/pipeline.ts";
import { startServer, type RunningServer } from "../../src/admission/server.ts";
import { createAdmissionMetrics, type AdmissionMetrics } from "../../src/observability/metrics.ts";
import { createLogger } from "../../src/observability/log.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { SCHEDULER_PROFILES, type InferencePolicy, type Project } from "../../src/policy/types.ts";
import type { QuotaView } from "../../src/quota/view.ts";
import { createCA, createServingCert } from "../../src/tls/certificates.ts";
import { DEFAULT_KNATIVE_FEATURES, FEATURE_FLAG_OF } from "../../src/workload/knative-features.ts";
import { plugins } from "../../webhooks/index.ts";

const DIRECT_RUNS = 7_000;
const HTTPS_RUNS = 4_000;

type Route = "mutate" | "validate";
type Path = (string | number)[];

const FIXTURE_NAMES = [
  "deployment-vllm-create",
  "deployment-vllm-update",
  "deployment-scale-update",
  "knative-service-create",
  "pod-knative-revision-create",
  "deployment-delete",
] as const;
const readFixture = (name: string): any => JSON.parse(readFileSync(new URL(`../fixtures/${name}.json`, import.meta.url), "utf8"));
const fixtures = FIXTURE_NAMES.map((name) => ({ name, review: readFixture(name), text: JSON.stringify(readFixture(name)) }));

// ---- the system under test: one server over HTTPS, and handler deps for every scheduler profile ----

const quota: QuotaView = { usage: () => ({ allocated: 3, reserved: 0.5, workloads: 2 }) };
const clusters: ClusterView[] = [
  { knativeFeatures: DEFAULT_KNATIVE_FEATURES, quota },
  { knativeFeatures: { flags: Object.fromEntries(Object.values(FEATURE_FLAG_OF).map((flag) => [flag, "enabled"])) }, quota },
];
let cluster = clusters[0]!;
const metrics: AdmissionMetrics = createAdmissionMetrics({ defaults: false });
/** Internal errors the handler caught (a plugin threw): answered, never a crash, but told apart here. */
const internalErrors = new Set<string>();
const logger = createLogger("info", (line) => {
  if (line.includes('"level":"error"')) internalErrors.add(String(JSON.parse(line).error).split("\n").slice(0, 3).join(" | "));
});

function storeFor(profile: (typeof SCHEDULER_PROFILES)[number], enforcement: "enforce" | "warn"): PolicyStore {
  const store = new PolicyStore();
  for (const item of readFixture("team-a-policy").items as (Project | InferencePolicy)[]) {
    if (item.kind === "Project") store.upsertProject(item);
    else {
      const policy = item as InferencePolicy;
      policy.spec.scheduler = { profile };
      policy.spec.enforcement = enforcement;
      store.upsertPolicy(policy);
    }
  }
  return store;
}

const depsByProfile: AdmissionDeps[] = SCHEDULER_PROFILES.map((profile, i) => ({
  plugins,
  policies: storeFor(profile, i % 2 === 0 ? "enforce" : "warn"),
  cluster: () => cluster,
  metrics,
  logger,
}));

let server: RunningServer;
let agent: https.Agent;

beforeAll(async () => {
  const now = new Date();
  const ca = createCA({ commonName: "infergate-fuzz-ca", now });
  const serving = createServingCert({ ca, hosts: ["127.0.0.1"], now });
  server = await startServer({ address: "127.0.0.1", port: 0, cert: serving.certPem, key: serving.keyPem, deps: depsByProfile[0]! });
  agent = new https.Agent({ ca: ca.certPem, keepAlive: true, maxSockets: 1 });
});

afterAll(async () => {
  agent?.destroy();
  await server?.close();
});

function send(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; text: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port: server.port, method, path, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8"), contentType: String(res.headers["content-type"] ?? "") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

// ---- what every answer must look like ----

function uidOf(value: unknown): string | undefined {
  const uid = (value as any)?.request?.uid;
  return typeof uid === "string" ? uid : undefined;
}

/** A well-formed 200 AdmissionReview for the request's uid, or a 4xx Status with a message. */
function checkAnswer(answer: HttpAnswer, uid: string | undefined): void {
  const body = answer.body as any;
  if (answer.status === 200) {
    expect(body).toMatchObject({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" });
    const response = body.response;
    expect(typeof response?.allowed).toBe("boolean");
    expect(typeof response.uid).toBe("string");
    if (uid !== undefined) expect(response.uid).toBe(uid);
    if (response.patch !== undefined) {
      expect(response.patchType).toBe("JSONPatch");
      expect(Array.isArray(JSON.parse(Buffer.from(response.patch, "base64").toString("utf8")))).toBe(true);
    }
    if (!response.allowed) {
      expect(typeof response.status?.code).toBe("number");
      expect(response.status.message).toEqual(expect.any(String));
      expect(response.status.message.length).toBeGreaterThan(0);
    }
    for (const warning of response.warnings ?? []) {
      expect(typeof warning).toBe("string");
      expect(warning.length).toBeGreaterThan(0);
      // An injected default is said in 120 characters; a violation under `enforcement: warn` keeps what is
      // allowed, within the API server's 256.
      expect(warning.length).toBeLessThanOrEqual(warning.startsWith("policy (warn): ") ? WARNED_VIOLATION_MAX : WARNING_MAX);
    }
    return;
  }
  expect(answer.status).toBeGreaterThanOrEqual(400);
  expect(answer.status).toBeLessThan(500);
  expect(body?.message).toEqual(expect.any(String));
  expect(body.message.length).toBeGreaterThan(0);
}

// ---- generators ----

/** Every path into a value: each object key and array index, at every level. */
function pathsOf(value: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  if (typeof value !== "object" || value === null) return out;
  for (const [key, child] of Object.entries(value)) {
    const path = [...prefix, Array.isArray(value) ? Number(key) : key];
    out.push(path);
    pathsOf(child, path, out);
  }
  return out;
}
const fixturePaths = fixtures.map((f) => pathsOf(f.review));

/** Sets (or, with `remove`, deletes) the value at `path`; an own `__proto__` key stays a plain key, as JSON.parse makes it. */
function setAt(root: any, path: Path, value: unknown, remove = false): void {
  let node = root;
  for (const step of path.slice(0, -1)) {
    if (typeof node?.[step] !== "object" || node[step] === null) return;
    node = node[step];
  }
  const last = path[path.length - 1]!;
  if (remove && !Array.isArray(node)) delete node[last];
  else Object.defineProperty(node, last, { value, enumerable: true, writable: true, configurable: true });
}

const WRONG_VALUES: unknown[] = [null, 0, -1, 1.5, 1e308, -1e308, "", "x", " ", "1e999", true, false, [], {}, [null], [{}], { a: 1 }, ["CREATE"]];
/** One value of each JSON type, for the exhaustive pass over every field. */
const ONE_OF_EACH_TYPE: unknown[] = [null, 0, -1.5, "x", true, [], {}];

/** Nesting built iteratively, `depth` arrays and objects deep. */
function nested(depth: number, style: "array" | "object" | "mixed"): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = style === "array" || (style === "mixed" && i % 2 === 0) ? [value] : { a: value };
  return value;
}

const anyJson = fc.jsonValue({ maxDepth: 6 });
const route = fc.constantFrom<Route>("mutate", "validate");
const fixtureIndex = fc.nat({ max: fixtures.length - 1 });
const depth = fc.oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 500, max: 520 }), fc.integer({ min: 600, max: 12_000 }));
const nestingStyle = fc.constantFrom<"array" | "object" | "mixed">("array", "object", "mixed");
const pick = (i: number) => fc.nat().map((n) => fixturePaths[i]![n % fixturePaths[i]!.length]!);
const awkwardKey = fc.constantFrom("__proto__", "constructor", "prototype", "toString", "hasOwnProperty", "valueOf", "", "a.b/c~d", "\u0000", "💥");

/** A fixture review with up to three fields replaced by arbitrary JSON of any type, or removed. */
const wrongTypes = fixtureIndex.chain((i) =>
  fc
    .array(fc.record({ path: pick(i), value: fc.oneof(anyJson, fc.constantFrom(...WRONG_VALUES)), remove: fc.boolean() }), { minLength: 1, maxLength: 3 })
    .map((edits) => {
      const review = structuredClone(fixtures[i]!.review);
      for (const e of edits) setAt(review, e.path, e.value, e.remove);
      return review;
    }),
);

/** A fixture review whose kind, resource, operation and namespace are recombined, plausible or not. */
const recombined = fc
  .record({
    i: fixtureIndex,
    kind: fc.constantFrom(...fixtures.map((f) => f.review.request.kind), { group: "batch", version: "v1", kind: "Job" }, { group: "", version: "v1", kind: "ConfigMap" }),
    resource: fc.constantFrom(...fixtures.map((f) => f.review.request.resource), { group: "apps", version: "v1", resource: "statefulsets" }),
    subResource: fc.constantFrom(undefined, "", "scale", "status", "exec"),
    operation: fc.constantFrom("CREATE", "UPDATE", "DELETE", "CONNECT"),
    namespace: fc.constantFrom("team-a", "team-a-staging", "team-b", "", undefined),
    objectFrom: fixtureIndex,
    oldObjectFrom: fc.option(fixtureIndex),
    dryRun: fc.boolean(),
  })
  .map((r) => {
    const review = structuredClone(fixtures[r.i]!.review);
    Object.assign(review.request, { kind: r.kind, resource: r.resource, subResource: r.subResource, operation: r.operation, namespace: r.namespace, dryRun: r.dryRun });
    const source = (j: number) => structuredClone(fixtures[j]!.review.request.object ?? fixtures[j]!.review.request.oldObject);
    review.request.object = source(r.objectFrom);
    review.request.oldObject = r.oldObjectFrom === null ? null : source(r.oldObjectFrom);
    return review;
  });

/** Deep nesting somewhere inside a fixture review. */
const deeplyNested = fc.record({ i: fixtureIndex, n: fc.nat(), depth, style: nestingStyle }).map(({ i, n, depth, style }) => {
  const review = structuredClone(fixtures[i]!.review);
  setAt(review, fixturePaths[i]![n % fixturePaths[i]!.length]!, nested(depth, style));
  return review;
});

/** Awkward keys (`__proto__`, `constructor`, …) on some object of a fixture review. */
const awkwardKeys = fixtureIndex.chain((i) =>
  fc.array(fc.record({ path: pick(i), key: awkwardKey, value: anyJson }), { minLength: 1, maxLength: 4 }).map((edits) => {
    const review = structuredClone(fixtures[i]!.review);
    for (const e of edits) setAt(review, [...e.path, e.key], e.value);
    return review;
  }),
);

/** Review-shaped objects built from scratch, every field of any type. */
const randomReview = fc.record(
  {
    apiVersion: fc.oneof(fc.constant("admission.k8s.io/v1"), anyJson),
    kind: fc.oneof(fc.constant("AdmissionReview"), anyJson),
    request: fc.record(
      {
        uid: fc.oneof(fc.uuid(), anyJson),
        kind: fc.oneof(fc.record({ group: fc.constantFrom("", "apps", "serving.knative.dev"), version: fc.constant("v1"), kind: fc.string() }), anyJson),
        resource: fc.oneof(fc.record({ group: fc.constantFrom("", "apps", "serving.knative.dev"), version: fc.constant("v1"), resource: fc.constantFrom("deployments", "pods", "services") }), anyJson),
        subResource: fc.oneof(fc.constantFrom("", "scale"), anyJson),
        namespace: fc.oneof(fc.constant("team-a"), anyJson),
        operation: fc.oneof(fc.constantFrom("CREATE", "UPDATE", "DELETE", "CONNECT"), anyJson),
        userInfo: anyJson,
        object: anyJson,
        oldObject: anyJson,
        dryRun: anyJson,
      },
      { requiredKeys: [] },
    ),
  },
  { requiredKeys: [] },
);

/** Structured bodies that JSON.stringify can still write (no deep nesting). */
const serializableBody = fc.oneof(
  { weight: 1, arbitrary: anyJson },
  { weight: 2, arbitrary: randomReview },
  { weight: 4, arbitrary: wrongTypes },
  { weight: 3, arbitrary: recombined },
  { weight: 1, arbitrary: awkwardKeys },
);

/** Structured bodies: what express.json could hand the handler. */
const structuredBody = fc.oneof({ weight: 11, arbitrary: serializableBody }, { weight: 2, arbitrary: deeplyNested });

// Raw bodies: bytes no JSON serializer would produce.
const HUGE_NUMBERS = ["1e999", "-1e999", "123456789012345678901234567890", "1.7976931348623157e309", "-0", "0.0000000000000000000000000001", "9007199254740993"];

function nestedText(depth: number, style: "array" | "object" | "mixed"): string {
  if (style === "array") return "[".repeat(depth) + "]".repeat(depth);
  if (style === "object") return '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
  return '{"a":['.repeat(depth) + "]}".repeat(depth);
}

interface RawCase {
  bytes: Buffer;
  headers: Record<string, string>;
  /** The uid a 200 must echo: known when the bytes are a JSON review whose uid is a string. */
  uid?: string;
}

const json = (value: unknown): RawCase => ({ bytes: Buffer.from(JSON.stringify(value) ?? "null"), headers: {}, uid: uidOf(value) });

const rawBody: fc.Arbitrary<RawCase> = fc.oneof(
  { weight: 4, arbitrary: serializableBody.map(json) },
  {
    weight: 2,
    // Truncated reviews.
    arbitrary: fc.record({ i: fixtureIndex, cut: fc.nat() }).map(({ i, cut }) => ({ bytes: Buffer.from(fixtures[i]!.text.slice(0, cut % fixtures[i]!.text.length)), headers: {} })),
  },
  {
    weight: 2,
    // Byte-level damage to a review: flipped, inserted and deleted bytes, including invalid UTF-8.
    arbitrary: fc
      .record({ i: fixtureIndex, edits: fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }), op: fc.constantFrom("set", "insert", "delete") }), { minLength: 1, maxLength: 8 }) })
      .map(({ i, edits }) => {
        const bytes = [...Buffer.from(fixtures[i]!.text)];
        for (const { at, byte, op } of edits) {
          const pos = at % bytes.length;
          if (op === "set") bytes[pos] = byte;
          else if (op === "insert") bytes.splice(pos, 0, byte);
          else bytes.splice(pos, 1);
        }
        return { bytes: Buffer.from(bytes), headers: {} };
      }),
  },
  {
    weight: 1,
    // Random bytes: mostly invalid UTF-8, sometimes behind a JSON-looking prefix.
    arbitrary: fc.record({ prefix: fc.constantFrom("", "{", '{"apiVersion":"', "\uFEFF{"), bytes: fc.uint8Array({ maxLength: 2_000 }) }).map(({ prefix, bytes }) => ({
      bytes: Buffer.concat([Buffer.from(prefix), Buffer.from(bytes)]),
      headers: {},
    })),
  },
  {
    weight: 2,
    // Numbers no float holds, in a number field of a review.
    arbitrary: fc.record({ i: fixtureIndex, n: fc.nat(), number: fc.constantFrom(...HUGE_NUMBERS) }).map(({ i, n, number }) => {
      const review = structuredClone(fixtures[i]!.review);
      setAt(review, fixturePaths[i]![n % fixturePaths[i]!.length]!, "\u0000NUMBER\u0000");
      return { bytes: Buffer.from(JSON.stringify(review).replace('"\\u0000NUMBER\\u0000"', number)), headers: {}, uid: uidOf(review) };
    }),
  },
  {
    weight: 2,
    // Deep nesting written as text, up to 20,000 levels: deeper than JSON.stringify could produce.
    arbitrary: fc.record({ i: fixtureIndex, depth: fc.integer({ min: 1, max: 20_000 }), style: nestingStyle, n: fc.nat() }).map(({ i, depth, style, n }) => {
      const review = structuredClone(fixtures[i]!.review);
      setAt(review, fixturePaths[i]![n % fixturePaths[i]!.length]!, "\u0000DEEP\u0000");
      const text = JSON.stringify(review).replace('"\\u0000DEEP\\u0000"', nestedText(depth, style));
      return { bytes: Buffer.from(text), headers: {}, uid: uidOf(review) };
    }),
  },
  {
    weight: 2,
    // Odd content types, charsets and encodings around a valid or broken review.
    arbitrary: fc
      .record({
        i: fixtureIndex,
        broken: fc.boolean(),
        type: fc.constantFrom(undefined, "application/json", "application/json; charset=utf-8", "text/plain", "application/json; charset=latin1", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"),
        encoding: fc.constantFrom(undefined, "identity", "gzip", "deflate", "br", "compress", "gzip-but-not-really"),
      })
      .map(({ i, broken, type, encoding }) => {
        const text = broken ? fixtures[i]!.text.slice(0, fixtures[i]!.text.length / 2) : fixtures[i]!.text;
        let bytes = Buffer.from(text);
        if (encoding === "gzip") bytes = gzipSync(bytes);
        if (encoding === "deflate") bytes = deflateSync(bytes);
        const headers: Record<string, string> = {};
        if (type) headers["content-type"] = type;
        if (encoding) headers["content-encoding"] = encoding === "gzip-but-not-really" ? "gzip" : encoding;
        return { bytes, headers, uid: fixtures[i]!.review.request.uid };
      }),
  },
);

// ---- the properties ----

function serialized(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}

describe("fuzzing the admission routes", () => {
  it(`${DIRECT_RUNS} generated bodies through the handler: always a well-formed answer`, async () => {
    await fc.assert(
      fc.asyncProperty(structuredBody, route, fc.nat({ max: depsByProfile.length - 1 }), fc.nat({ max: clusters.length - 1 }), async (body, phase, profile, features) => {
        cluster = clusters[features]!;
        // The handler never edits what it was given (checked where JSON.stringify can write it down).
        const before = serialized(body);
        checkAnswer(await handleAdmission(phase, body, depsByProfile[profile]!), uidOf(body));
        expect(serialized(body)).toBe(before);
      }),
      { numRuns: DIRECT_RUNS },
    );
    cluster = clusters[0]!;
  }, 300_000);

  it(`${HTTPS_RUNS} generated raw bodies over HTTPS: always a well-formed answer, and the server stays up`, async () => {
    await fc.assert(
      fc.asyncProperty(rawBody, route, async (c, phase) => {
        const answer = await send("POST", `/${phase}`, c.bytes, { "content-type": "application/json", ...c.headers });
        expect(answer.contentType).toMatch(/^application\/json/);
        let body: unknown;
        expect(() => (body = JSON.parse(answer.text))).not.toThrow();
        checkAnswer({ status: answer.status, body }, c.uid);
      }),
      { numRuns: HTTPS_RUNS },
    );
    const health = await send("GET", "/healthz");
    expect(health.status).toBe(200);
    expect(health.text).toBe("ok");
  }, 300_000);

  it("every field of every fixture, set to a value of each JSON type or removed, on both routes", async () => {
    let bodies = 0;
    for (const [i, f] of fixtures.entries()) {
      for (const path of fixturePaths[i]!) {
        for (const value of [...ONE_OF_EACH_TYPE, undefined]) {
          const review = structuredClone(f.review);
          setAt(review, path, value, value === undefined);
          for (const phase of ["mutate", "validate"] as const) {
            checkAnswer(await handleAdmission(phase, review, depsByProfile[bodies % depsByProfile.length]!), uidOf(review));
            bodies++;
          }
        }
      }
    }
    expect(bodies).toBeGreaterThan(10_000);
  }, 300_000);

  it("no request ran the server out of stack, however deep it nested", () => {
    // Plugins that meet a field of the wrong type may throw; that is answered (mutation fails open,
    // validation closed) and counted. Running out of stack would mean the depth guard let one through.
    expect([...internalErrors].filter((e) => /call stack|RangeError/i.test(e))).toEqual([]);
  });
});
