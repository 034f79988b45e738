import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { diffJson, type PatchOperation } from "./json-diff.ts";

/**
 * What the API server does with a patch: applies it, in order, to the object it sent. Written out here
 * because JavaScript appliers refuse (or misapply) "__proto__", which in JSON is a key like any other.
 */
function patched(from: unknown, ops: PatchOperation[]): unknown {
  const root = { doc: structuredClone(from) as any };
  for (const op of ops) {
    const segments = op.path === "" ? [] : op.path.slice(1).split("/").map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
    let parent: any = root;
    let last = "doc";
    for (const segment of segments) {
      parent = parent[last];
      last = segment;
    }
    if (Array.isArray(parent)) {
      const i = Number(last);
      if (op.op === "add") parent.splice(i, 0, op.value);
      else if (op.op === "remove") parent.splice(i, 1);
      else parent[i] = op.value;
    } else if (op.op === "remove") {
      delete parent[last];
    } else {
      if (op.op === "replace" && !Object.prototype.hasOwnProperty.call(parent, last)) throw new Error(`replace of a missing ${op.path}`);
      Object.defineProperty(parent, last, { value: structuredClone(op.value), enumerable: true, writable: true, configurable: true });
    }
  }
  return root.doc;
}

// Keys that test pointer escaping and prototype-looking names as plain data.
const key = fc.oneof(fc.constantFrom("a", "b", "c", "a/b", "~x", "~1", "", "__proto__", "constructor", "nvidia.com/gpu"), fc.string({ maxLength: 6 }));
const json = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: "small", withCrossShrink: true }, fc.constantFrom(null, true, false, 0, 1, "x", ""), fc.integer(), fc.string({ maxLength: 5 }), tie("array"), tie("object")),
  array: fc.array(tie("value"), { maxLength: 4 }),
  object: fc.dictionary(key, tie("value"), { maxKeys: 5 }),
})).value;

describe("diffJson", () => {
  it("yields a patch that turns any JSON value into any other", () => {
    fc.assert(
      fc.property(json, json, (a, b) => {
        expect(patched(a, diffJson(a, b))).toEqual(b);
      }),
      { numRuns: 3000, seed: 20261123 },
    );
  });

  it("yields a patch that undoes a random edit of a value, and nothing for the value itself", () => {
    fc.assert(
      fc.property(json, json, (a, edit) => {
        expect(diffJson(a, structuredClone(a))).toEqual([]);
        const b = structuredClone({ root: a, extra: edit });
        expect(patched({ root: a }, diffJson({ root: a }, b))).toEqual(b);
      }),
      { numRuns: 1000, seed: 7 },
    );
  });

  it("writes the patches a mutation needs: appended list entries, new and replaced keys, escaped pointers", () => {
    const before = { metadata: { labels: { app: "x" } }, spec: { tolerations: [{ key: "a" }], priorityClassName: "low" } };
    const after = {
      metadata: { labels: { app: "x", "infergate.dev/project": "team-a" } },
      spec: { tolerations: [{ key: "a" }, { key: "nvidia.com/gpu", operator: "Exists" }], priorityClassName: "inference", schedulerName: "kai-scheduler" },
    };
    expect(diffJson(before, after)).toEqual([
      { op: "add", path: "/metadata/labels/infergate.dev~1project", value: "team-a" },
      { op: "add", path: "/spec/tolerations/1", value: { key: "nvidia.com/gpu", operator: "Exists" } },
      { op: "replace", path: "/spec/priorityClassName", value: "inference" },
      { op: "add", path: "/spec/schedulerName", value: "kai-scheduler" },
    ]);
  });

  it("removes trailing list entries from the end down, and treats undefined as absent", () => {
    expect(diffJson({ l: [1, 2, 3] }, { l: [1] })).toEqual([
      { op: "remove", path: "/l/2" },
      { op: "remove", path: "/l/1" },
    ]);
    expect(diffJson({ a: 1, b: undefined }, { a: undefined, c: undefined })).toEqual([{ op: "remove", path: "/a" }]);
  });
});
