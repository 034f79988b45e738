// GPU quota (PRODUCT.md §5) end to end: real kubectl against the real apiserver, infergate's webhook in
// the admission chain, and `kubectl get projects` reading the status its leader-elected reconciler keeps.
// Each case has its own namespace and Project, so the numbers of one never leak into another.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poll } from "../../src/local-cluster/api.ts";
import type { KubectlResult } from "../../src/local-cluster/cluster.ts";
import { getJson, kubectlOk, requireWebhook, uniqueName, useCluster, webhookControl } from "./harness.ts";

const cluster = useCluster();
const run = uniqueName("quota");

interface Case {
  project: string;
  namespace: string;
  quota: string;
  /** Profile of the project's policy: fractions need one that renders them. */
  profile: "default" | "hami";
}

function quotaCase(suffix: string, quota: string, profile: Case["profile"] = "default"): Case {
  const name = `${run}-${suffix}`;
  return { project: name, namespace: name, quota, profile };
}

const cases = {
  deployment: quotaCase("deploy", "8"),
  knative: quotaCase("ksvc", "8"),
  scale: quotaCase("scale", "4"),
  rollout: quotaCase("roll", "4"),
  fractions: quotaCase("frac", "1", "hami"),
  pod: quotaCase("pod", "2"),
  sidecar: quotaCase("sidecar", "2"),
  dryRun: quotaCase("dry", "2"),
  restart: quotaCase("restart", "4"),
};
const all = Object.values(cases);
const gpuToleration = { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" };

function policy(name: string, profile: Case["profile"]) {
  return {
    apiVersion: "infergate.dev/v1alpha1",
    kind: "InferencePolicy",
    metadata: { name },
    spec: {
      projects: all.filter((c) => c.profile === profile).map((c) => c.project),
      scheduler: { profile },
      defaults: { tolerations: [gpuToleration] },
    },
  };
}

const policies = [policy(`${run}-whole`, "default"), policy(`${run}-hami`, "hami")];

interface GpuDeploymentOptions {
  replicas: number;
  /** Whole GPUs per pod. */
  gpus?: number;
  /** `gpu-fraction` of one GPU per pod, instead of whole GPUs. */
  fraction?: string;
  image?: string;
  strategy?: Record<string, unknown>;
}

function gpuDeployment(c: Case, name: string, o: GpuDeploymentOptions): Record<string, any> {
  const limits = o.fraction ? {} : { "nvidia.com/gpu": String(o.gpus ?? 1) };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: c.namespace },
    spec: {
      replicas: o.replicas,
      ...(o.strategy ? { strategy: o.strategy } : {}),
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name }, ...(o.fraction ? { annotations: { "gpu-fraction": o.fraction } } : {}) },
        spec: { containers: [{ name: "server", image: o.image ?? "registry.example.com/server:1", resources: { limits } }] },
      },
    },
  };
}

function knativeService(c: Case, name: string, minScale: number): Record<string, any> {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name, namespace: c.namespace },
    spec: {
      template: {
        metadata: { annotations: { "autoscaling.knative.dev/min-scale": String(minScale) } },
        spec: { containers: [{ image: "registry.example.com/server:1", resources: { limits: { "nvidia.com/gpu": "1" } } }] },
      },
    },
  };
}

function gpuPod(c: Case, name: string, gpus: number): Record<string, any> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: c.namespace },
    spec: { containers: [{ name: "main", image: "registry.example.com/tool:1", resources: { limits: { "nvidia.com/gpu": String(gpus) } } }] },
  };
}

const apply = (object: Record<string, any>, extra: string[] = []): Promise<KubectlResult> =>
  cluster.kubectl(["apply", ...extra, "-f", "-"], { input: JSON.stringify(object) });

async function applyOk(object: Record<string, any>, extra: string[] = []): Promise<KubectlResult> {
  const res = await apply(object, extra);
  if (res.code !== 0) throw new Error(`kubectl apply ${object.kind} ${object.metadata.name} failed (exit ${res.code}):\n${res.stderr}${res.stdout}`);
  return res;
}

/** A denial as kubectl shows it: non-zero exit, infergate's quota message on stderr. */
function expectQuotaDenial(res: KubectlResult, ...phrases: string[]): void {
  expect(res.code, `expected a denial, got: ${res.stdout}`).not.toBe(0);
  expect(res.stderr).toContain("GPU quota exceeded");
  for (const phrase of phrases) expect(res.stderr).toContain(phrase);
}

/**
 * One row of `kubectl get projects`, read by the header's column offsets so that an empty cell (no
 * status yet) stays empty instead of shifting the columns after it.
 */
function projectRow(table: string, project: string): Record<string, string> | undefined {
  const [header, ...rows] = table.split("\n").filter((l) => l.trim() !== "");
  if (!header) return undefined;
  const columns = [...header.matchAll(/\S+/g)].map((m) => ({ name: m[0], start: m.index }));
  const row = rows.find((r) => r.split(/\s+/)[0] === project);
  if (!row) return undefined;
  return Object.fromEntries(columns.map((col, i) => [col.name, row.slice(col.start, columns[i + 1]?.start ?? row.length).trim()]));
}

/** Waits until `kubectl get projects` shows these ALLOCATED and AVAILABLE figures for the case's Project. */
async function expectProjectShows(c: Case, allocated: string, available: string): Promise<void> {
  let last: Record<string, string> | undefined;
  try {
    await poll(
      `kubectl get projects to show ${c.project} ALLOCATED ${allocated} AVAILABLE ${available}`,
      async () => {
        const res = await kubectlOk(cluster, ["get", "projects"]);
        last = projectRow(res.stdout, c.project);
        return last?.ALLOCATED === allocated && last?.AVAILABLE === available ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last row: ${JSON.stringify(last)}`, { cause: err });
  }
  expect(last).toMatchObject({ QUOTA: c.quota, ALLOCATED: allocated, AVAILABLE: available });
}

/** Waits until the Deployment controller has acted on the latest spec and no pods of an older template remain. */
async function settled(c: Case, name: string): Promise<void> {
  await poll(
    `Deployment ${c.namespace}/${name} to settle`,
    async () => {
      const d = await getJson(cluster, ["deployment", name, "-n", c.namespace]);
      const s = d.status ?? {};
      return s.observedGeneration === d.metadata.generation && (s.replicas ?? 0) === (s.updatedReplicas ?? 0) ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 300 },
  );
}

async function projectStatus(c: Case): Promise<any> {
  return (await getJson(cluster, ["project", c.project])).status ?? {};
}

beforeAll(async () => {
  requireWebhook();
  const namespaces = all.map((c) => ({ apiVersion: "v1", kind: "Namespace", metadata: { name: c.namespace } }));
  const projects = all.map((c) => ({
    apiVersion: "infergate.dev/v1alpha1",
    kind: "Project",
    metadata: { name: c.project },
    spec: { namespaces: [c.namespace], gpuQuota: c.quota },
  }));
  await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: [...namespaces, ...projects, ...policies] }));
  // The webhook learns Projects and policies from watches: a dry run shows when it applies each case's policy.
  for (const c of all) {
    const probe = gpuDeployment(c, "probe", c.profile === "hami" ? { replicas: 1, fraction: "0.5" } : { replicas: 1 });
    await poll(
      `the webhook to apply ${c.project}'s policy`,
      async () => {
        const res = await apply(probe, ["--dry-run=server", "-o", "json"]);
        const spec = res.code === 0 ? JSON.parse(res.stdout).spec.template.spec : undefined;
        return spec?.tolerations?.some((t: any) => t.key === gpuToleration.key) ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
  }
  // The leader's reconciler fills in every Project's status.
  for (const c of all) await expectProjectShows(c, "0", c.quota);
});

afterAll(async () => {
  await cluster.kubectl(["delete", "inferencepolicies", ...policies.map((p) => p.metadata.name), "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "projects", ...all.map((c) => c.project), "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "namespaces", ...all.map((c) => c.namespace), "--ignore-not-found", "--wait=false"]);
});

describe("GPU quota through kubectl", () => {
  it("Run:ai's 3 → 8 example on a Deployment: an update to 8 replicas with a new template is denied, the same template fits", async () => {
    const c = cases.deployment;
    await applyOk(gpuDeployment(c, "llm", { replicas: 3 }));
    await settled(c, "llm");
    await expectProjectShows(c, "3", "5");

    // A new template is a rollout: max(3, 8) + 25% surge = 10 pods, 7 more than the 3 held, 5 free.
    const denied = await apply(gpuDeployment(c, "llm", { replicas: 8, image: "registry.example.com/server:2" }));
    expectQuotaDenial(denied, `project ${c.project}`, "this update needs 7 GPUs (10 pods × 1 GPU, rollout with maxSurge 2, less 3 already held) but 5 of 8 are free (3 allocated)");
    expect((await getJson(cluster, ["deployment", "llm", "-n", c.namespace])).spec.replicas).toBe(3);
    await expectProjectShows(c, "3", "5");

    // Only the replica count changing: 8 pods, exactly the quota.
    await applyOk(gpuDeployment(c, "llm", { replicas: 8 }));
    await settled(c, "llm");
    await expectProjectShows(c, "8", "0");
    expectQuotaDenial(await apply(gpuDeployment(c, "extra", { replicas: 1 })), "this create needs 1 GPU", "but 0 of 8 are free");
  });

  it("Run:ai's 3 → 8 example on a Knative Service: the new revision must fit in full while the old one keeps its GPUs", async () => {
    const c = cases.knative;
    await applyOk(knativeService(c, "chat", 3));
    // Knative's controller does not run here, so the Service keeps its first revision's charge itself.
    await expectProjectShows(c, "3", "5");
    const denied = await apply(knativeService(c, "chat", 8));
    expectQuotaDenial(denied, "this update needs 8 GPUs (8 pods × 1 GPU, new revision) but 5 of 8 are free (3 allocated)", `raise Project ${c.project} spec.gpuQuota`);
    const stored = await getJson(cluster, ["services.serving.knative.dev", "chat", "-n", c.namespace]);
    expect(stored.spec.template.metadata.annotations["autoscaling.knative.dev/min-scale"]).toBe("3");
    await expectProjectShows(c, "3", "5");
  });

  it("denies kubectl scale beyond the quota and allows scaling down", async () => {
    const c = cases.scale;
    await applyOk(gpuDeployment(c, "llm", { replicas: 2 }));
    await settled(c, "llm");
    await expectProjectShows(c, "2", "2");

    const denied = await cluster.kubectl(["scale", "deployment", "llm", "-n", c.namespace, "--replicas=5"]);
    expectQuotaDenial(denied, "this scale-up needs 3 GPUs (5 pods × 1 GPU, scale 2 → 5, less 2 already held) but 2 of 4 are free");
    await expectProjectShows(c, "2", "2");

    await kubectlOk(cluster, ["scale", "deployment", "llm", "-n", c.namespace, "--replicas=4"]);
    await settled(c, "llm");
    await expectProjectShows(c, "4", "0");
    await kubectlOk(cluster, ["scale", "deployment", "llm", "-n", c.namespace, "--replicas=1"]);
    await settled(c, "llm");
    await expectProjectShows(c, "1", "3");
  });

  it("denies a rollout that fits only without surge, and admits it with maxSurge 0 or Recreate", async () => {
    const c = cases.rollout;
    await applyOk(gpuDeployment(c, "llm", { replicas: 4 }));
    await settled(c, "llm");
    await expectProjectShows(c, "4", "0");

    const surging = await apply(gpuDeployment(c, "llm", { replicas: 4, image: "registry.example.com/server:2" }));
    expectQuotaDenial(surging, "this update needs 1 GPU (5 pods × 1 GPU, rollout with maxSurge 1, less 4 already held) but 0 of 4 are free", "Lower replicas or maxSurge");

    const noSurge = { type: "RollingUpdate", rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } };
    await applyOk(gpuDeployment(c, "llm", { replicas: 4, image: "registry.example.com/server:2", strategy: noSurge }));
    await settled(c, "llm");
    await expectProjectShows(c, "4", "0");

    await applyOk(gpuDeployment(c, "llm", { replicas: 4, image: "registry.example.com/server:3", strategy: { type: "Recreate" } }));
    await settled(c, "llm");
    const stored = await getJson(cluster, ["deployment", "llm", "-n", c.namespace]);
    expect(stored.spec.template.spec.containers[0].image).toBe("registry.example.com/server:3");
    await expectProjectShows(c, "4", "0");
  });

  it("admits fractional GPUs that sum exactly to the quota and denies any more", async () => {
    const c = cases.fractions;
    // 0.1 + 0.2 + 0.3 + 0.4 is 1.0000000000000002 in binary floating point; quota counts exact thousandths.
    for (const [i, fraction] of ["0.1", "0.2", "0.3", "0.4"].entries()) {
      await applyOk(gpuDeployment(c, `share-${i}`, { replicas: 1, fraction }));
    }
    await expectProjectShows(c, "1", "0");
    const denied = await apply(gpuDeployment(c, "one-more", { replicas: 1, fraction: "0.1" }));
    expectQuotaDenial(denied, "this create needs 0.1 GPU (1 pod × 0.1 GPU, new Deployment) but 0 of 1 are free");
    await expectProjectShows(c, "1", "0");
  });

  it("denies a bare GPU pod over the quota", async () => {
    const c = cases.pod;
    expectQuotaDenial(await apply(gpuPod(c, "too-big", 3)), "this create needs 3 GPUs (1 pod × 3 GPUs, bare pod) but 2 of 2 are free");
    await applyOk(gpuPod(c, "fits", 2));
    await expectProjectShows(c, "2", "0");
    expectQuotaDenial(await apply(gpuPod(c, "one-more", 1)), "this create needs 1 GPU (1 pod × 1 GPU, bare pod) but 0 of 2 are free");
    const pods = (await getJson(cluster, ["pods", "-n", c.namespace])).items.map((p: any) => p.metadata.name);
    expect(pods).toEqual(["fits"]);
  });

  it("counts a GPU held only by a native sidecar init container, and denies past the quota", async () => {
    const c = cases.sidecar;
    // The model server runs as an init container with restartPolicy Always; the main container asks for no GPU.
    const withSidecar = (name: string, replicas: number) => {
      const d = gpuDeployment(c, name, { replicas });
      const spec = d.spec.template.spec;
      spec.initContainers = [{ name: "model", image: "registry.example.com/server:1", restartPolicy: "Always", resources: { limits: { "nvidia.com/gpu": "1" } } }];
      spec.containers[0].resources = {};
      return d;
    };
    const admitted = await applyOk(withSidecar("engine", 2), ["-o", "json"]);
    expect(JSON.parse(admitted.stdout).spec.template.spec.tolerations).toEqual(expect.arrayContaining([expect.objectContaining({ key: gpuToleration.key })]));
    await expectProjectShows(c, "2", "0");
    expectQuotaDenial(await apply(withSidecar("more", 1)), "this create needs 1 GPU", "but 0 of 2 are free");
  });

  it("reserves nothing for --dry-run=server", async () => {
    const c = cases.dryRun;
    const before = await projectStatus(c);
    for (const name of ["dry-a", "dry-b", "dry-c"]) {
      const res = await applyOk(gpuDeployment(c, name, { replicas: 2 }), ["--dry-run=server"]);
      expect(res.stdout).toContain("(server dry run)");
    }
    // A real reservation would be in the status by now: the CAS write happens before the API server answers.
    const after = await projectStatus(c);
    expect(after.reservations ?? []).toEqual([]);
    expect(after.reservedGpus ?? "0").toBe("0");
    expect(after.allocatedGpus).toBe(before.allocatedGpus);
    await expectProjectShows(c, "0", "2");
    // Each dry run asked for the whole quota; a real create of another Deployment still gets all of it.
    await applyOk(gpuDeployment(c, "real", { replicas: 2 }));
    await expectProjectShows(c, "2", "0");
  });

  it("loses no reservation and no accounting when the webhook process restarts", async () => {
    const c = cases.restart;
    await applyOk(gpuDeployment(c, "first", { replicas: 2 }));
    await webhookControl("stop");
    try {
      // Whatever the status held when the process went away (the reservation, or the settled allocation)
      // is in the API server, not in the process.
      const held = await projectStatus(c);
      const reserved = (held.reservations ?? []).map((r: any) => r.key);
      expect(reserved.every((key: string) => key === `Deployment/${c.namespace}/first`)).toBe(true);
    } finally {
      await webhookControl("start");
    }
    await expectProjectShows(c, "2", "2");
    expectQuotaDenial(await apply(gpuDeployment(c, "second", { replicas: 3 })), "this create needs 3 GPUs", "but 2 of 4 are free (2 allocated)");
    await applyOk(gpuDeployment(c, "second", { replicas: 2 }));
    await expectProjectShows(c, "4", "0");
    expectQuotaDenial(await apply(gpuDeployment(c, "third", { replicas: 1 })), "but 0 of 4 are free");
  });
});
