import { describe, expect, it } from "vitest";
import type { Project } from "../policy/types.ts";
import { keepIdentityOnly, listInPages } from "./edge.ts";
import { QuotaTotals } from "./totals.ts";
import type { ChargedKind } from "./view.ts";

const gpu = (n: string) => ({ limits: { "nvidia.com/gpu": n } });

/** One of each shape the totals charge differently, with the bulk a real object carries. */
function cluster(): Array<{ kind: ChargedKind; object: any }> {
  const bulk = { managedFields: [{ manager: "kubectl", fieldsV1: { "f:spec": {} } }], annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" } };
  return [
    {
      kind: "Deployment",
      object: {
        metadata: { name: "rolling", namespace: "a", resourceVersion: "11", generation: 2, ...bulk },
        spec: { replicas: 4, strategy: { rollingUpdate: { maxSurge: 2 } }, template: { spec: { containers: [{ name: "c", args: ["--x"], resources: gpu("1") }] } } },
        status: { replicas: 5, updatedReplicas: 2, observedGeneration: 2 },
      },
    },
    {
      kind: "Deployment",
      object: {
        metadata: { name: "shared", namespace: "a", resourceVersion: "12", annotations: { "gpu-memory": "40960" } },
        spec: { replicas: 2, template: { spec: { containers: [{ name: "c", resources: {} }] } } },
      },
    },
    {
      kind: "KnativeService",
      object: {
        metadata: { name: "chat", namespace: "a", resourceVersion: "13", generation: 1 },
        spec: { template: { metadata: { annotations: { "autoscaling.knative.dev/min-scale": "3" } }, spec: { containers: [{ resources: gpu("1") }] } } },
        status: { observedGeneration: 1, latestCreatedRevisionName: "chat-00001" },
      },
    },
    {
      kind: "Deployment",
      object: {
        metadata: {
          name: "chat-00001-deployment",
          namespace: "a",
          resourceVersion: "14",
          labels: { "serving.knative.dev/service": "chat", "serving.knative.dev/revision": "chat-00001" },
          ownerReferences: [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "chat-00001", uid: "r", controller: true }],
        },
        spec: { replicas: 1, template: { spec: { containers: [{ name: "user-container", resources: gpu("1") }] } } },
      },
    },
    { kind: "Pod", object: { metadata: { name: "bare", namespace: "a", resourceVersion: "15", ...bulk }, spec: { containers: [{ name: "c", resources: gpu("2") }] } } },
  ];
}

describe("keepIdentityOnly", () => {
  it("leaves the name, namespace and resourceVersion a watch cache needs, and nothing else", () => {
    const [first] = cluster();
    keepIdentityOnly(first!.object);
    expect(first!.object).toEqual({ metadata: { name: "rolling", namespace: "a", resourceVersion: "11" } });
  });

  it("takes nothing from the running totals: they never read a watched object after applying it", () => {
    let project: Project = { metadata: { name: "team-a" }, spec: { namespaces: ["a"], gpuQuota: "64" } };
    const shrunk = new QuotaTotals(() => project);
    const kept = new QuotaTotals(() => project);
    const objects = cluster();
    for (const { kind, object } of objects) {
      kept.apply("ADDED", structuredClone(object), kind);
      shrunk.apply("ADDED", object, kind);
      keepIdentityOnly(object);
    }
    expect(shrunk.list()).toEqual(kept.list());
    expect(shrunk.usage("team-a")).toEqual(kept.usage("team-a"));
    expect(shrunk.usage("team-a").allocated).toBeGreaterThan(0);

    // A Project change re-derives every charge from what the totals kept, not from the objects.
    project = { ...project, spec: { ...project.spec, gpuMemoryPerDeviceMiB: 40960 } };
    shrunk.recomputeProjects();
    kept.recomputeProjects();
    expect(shrunk.list()).toEqual(kept.list());

    // A relist's deletions carry only what the cache kept.
    for (const { kind, object } of objects) shrunk.apply("DELETED", object, kind);
    expect(shrunk.usage("team-a")).toEqual({ allocated: 0, reserved: 0, workloads: 0 });
  });
});

describe("listInPages", () => {
  it("applies every item of every page whole, and returns only identities and the snapshot's resourceVersion", async () => {
    const objects = cluster().map((c) => c.object);
    const pages = [objects.slice(0, 2), objects.slice(2, 4), objects.slice(4)];
    const asked: Array<string | undefined> = [];
    const seen: any[] = [];
    const applied = new WeakSet<object>();
    const list = await listInPages(
      async (cont) => {
        asked.push(cont);
        const index = cont === undefined ? 0 : Number(cont);
        const next = index + 1 < pages.length ? String(index + 1) : undefined;
        // Typed lists from client-node name it `_continue`; raw custom-object lists, `continue`.
        return { items: pages[index], metadata: { resourceVersion: "99", ...(next ? (index === 0 ? { _continue: next } : { continue: next }) : {}) } };
      },
      (item) => seen.push(structuredClone(item)),
      applied,
    );
    expect(asked).toEqual([undefined, "1", "2"]);
    expect(seen.map((o) => o.spec !== undefined)).toEqual(objects.map(() => true));
    expect(list.metadata).toEqual({ resourceVersion: "99" });
    expect(list.items?.map((o) => o.metadata)).toEqual(seen.map((o) => ({ name: o.metadata.name, namespace: "a", resourceVersion: o.metadata.resourceVersion })));
    expect(list.items?.every((o) => o.spec === undefined && applied.has(o))).toBe(true);
  });
});
