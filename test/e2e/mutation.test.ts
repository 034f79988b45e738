// The mutation plugin set against the real control plane: what kubectl users see when they apply GPU
// Deployments into a Project's namespace under each scheduler profile, where the real kube-scheduler
// puts the pods, what happens outside every Project, how policy rules deny, how fast a policy change
// reaches admission, server-side dry runs, and that `infergate apply` offline agrees with the webhook.
// Every case has its own namespaces, Projects and project-targeted policies.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { poll } from "../../src/local-cluster/api.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { CPU_NODE_NAME, DEFAULT_NODE_POOLS, gpuNodeName } from "../../src/local-cluster/fake-nodes.ts";
import { IGNORE_NAMESPACE_LABEL } from "../../src/local-cluster/webhook-config.ts";
import { childEnv } from "../../src/local-cluster/processes.ts";
import { cliEntry, nodeBinary } from "../../src/local-cluster/webhook-server.ts";
import { DEFAULT_NODE_POOL_LABEL } from "../../src/policy/types.ts";
import { getJson, kubectlOk, requireWebhook, runningPods, uniqueName, useCluster } from "./harness.ts";

const cluster = useCluster();
const GPU = "nvidia.com/gpu";
const GPU_TOLERATION = { key: GPU, operator: "Exists", effect: "NoSchedule" };
const POOLS = ["pool-a", "pool-b"];
const REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution";

interface TestProject {
  name: string;
  /** The Project's namespace (one each). */
  namespace: string;
  projectSpec?: Record<string, unknown>;
  /** The spec of the Project's own InferencePolicy (`projects` is filled in). */
  policy: { scheduler: { profile: string }; defaults: { priorityClassName: string; [k: string]: unknown }; [k: string]: unknown };
}

function testProject(prefix: string, profile: string, extra: Partial<Pick<TestProject, "projectSpec">> & { policy?: Record<string, unknown> } = {}): TestProject {
  const name = uniqueName(prefix);
  return {
    name,
    namespace: name,
    projectSpec: extra.projectSpec,
    policy: {
      scheduler: { profile },
      defaults: { priorityClassName: "inference", tolerations: [GPU_TOLERATION] },
      ...extra.policy,
    },
  };
}

function projectObjects(p: TestProject): Record<string, any>[] {
  return [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: p.namespace } },
    { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name: p.name }, spec: { namespaces: [p.namespace], nodePools: POOLS, ...p.projectSpec } },
    { apiVersion: "infergate.dev/v1alpha1", kind: "InferencePolicy", metadata: { name: p.name }, spec: { projects: [p.name], ...p.policy } },
  ];
}

const asList = (items: unknown[]) => JSON.stringify({ apiVersion: "v1", kind: "List", items });

function gpuDeployment(
  name: string,
  namespace: string,
  options: { gpus?: number; replicas?: number; annotations?: Record<string, string>; image?: string; priorityClassName?: string } = {},
): Record<string, any> {
  const limits = options.gpus === undefined ? {} : { [GPU]: options.gpus };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace, labels: { app: name } },
    spec: {
      replicas: options.replicas ?? 1,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name }, ...(options.annotations ? { annotations: options.annotations } : {}) },
        spec: {
          containers: [{ name: "vllm", image: options.image ?? "registry.example.com/vllm:0.11", resources: { limits } }],
          ...(options.priorityClassName ? { priorityClassName: options.priorityClassName } : {}),
        },
      },
    },
  };
}

/** The webhook learns Projects and policies from watches: wait until a dry run shows both arrived. */
async function waitUntilWebhookKnows(p: TestProject, priorityClassName = p.policy.defaults.priorityClassName, timeoutMs = 60_000): Promise<void> {
  const probe = JSON.stringify(gpuDeployment("probe", p.namespace, { gpus: 1 }));
  await poll(
    `the webhook to apply project ${p.name}'s policy`,
    async () => {
      const res = await cluster.kubectl(["create", "--dry-run=server", "-o", "json", "-f", "-"], { input: probe });
      if (res.code !== 0) return undefined;
      const template = JSON.parse(res.stdout).spec.template;
      return template.metadata.labels?.["infergate.dev/project"] === p.name && template.spec.priorityClassName === priorityClassName ? true : undefined;
    },
    { timeoutMs, intervalMs: 300 },
  );
}

async function createProjects(...projects: TestProject[]): Promise<void> {
  await kubectlOk(cluster, ["apply", "-f", "-"], asList(projects.flatMap(projectObjects)));
  await Promise.all(projects.map((p) => waitUntilWebhookKnows(p)));
}

async function deleteProjects(...projects: TestProject[]): Promise<void> {
  const names = projects.map((p) => p.name);
  if (!names.length) return;
  await cluster.kubectl(["delete", "inferencepolicies.infergate.dev", ...names, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "projects.infergate.dev", ...names, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "namespace", ...projects.map((p) => p.namespace), "--ignore-not-found", "--wait=false"]);
}

/** kubectl's admission warnings from infergate, one per line. */
function infergateWarnings(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.startsWith("Warning: infergate: "));
}

function poolOf(nodeName: string): string | undefined {
  return DEFAULT_NODE_POOLS.find((p) => Array.from({ length: p.nodes }, (_, i) => gpuNodeName(p.pool, i)).includes(nodeName))?.pool;
}

const created: TestProject[] = [];
const outsideNamespace = uniqueName("mut-outside");
const ignoredNamespace = uniqueName("mut-ignored");
const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "infergate-mutation-e2e-"));

beforeAll(async () => {
  requireWebhook();
  await kubectlOk(cluster, ["create", "namespace", outsideNamespace]);
  await kubectlOk(cluster, ["create", "namespace", ignoredNamespace]);
  await kubectlOk(cluster, ["label", "namespace", ignoredNamespace, `${IGNORE_NAMESPACE_LABEL}=true`]);
});

afterAll(async () => {
  await deleteProjects(...created);
  await cluster.kubectl(["delete", "namespace", outsideNamespace, ignoredNamespace, "--ignore-not-found", "--wait=false"]);
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

describe("GPU Deployments applied with kubectl, per scheduler profile", () => {
  const kai = testProject("mut-kai", "kai", { projectSpec: { queue: "research" } });
  const volcano = testProject("mut-volcano", "volcano");
  const hami = testProject("mut-hami", "hami");

  beforeAll(async () => {
    created.push(kai, volcano, hami);
    await createProjects(kai, volcano, hami);
  });

  function expectCommonPolicy(template: any, project: TestProject, queue = project.name) {
    expect(template.metadata.labels).toMatchObject({ "infergate.dev/project": project.name, "infergate.dev/queue": queue });
    expect(template.spec.priorityClassName).toBe("inference");
    expect(template.spec.tolerations).toEqual([GPU_TOLERATION]);
    const nodeAffinity = template.spec.affinity.nodeAffinity;
    expect(nodeAffinity[REQUIRED].nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: DEFAULT_NODE_POOL_LABEL, operator: "In", values: POOLS }] },
    ]);
    expect(nodeAffinity[PREFERRED]).toEqual([
      { weight: 100, preference: { matchExpressions: [{ key: DEFAULT_NODE_POOL_LABEL, operator: "In", values: ["pool-a"] }] } },
      { weight: 90, preference: { matchExpressions: [{ key: DEFAULT_NODE_POOL_LABEL, operator: "In", values: ["pool-b"] }] } },
    ]);
  }

  it("kai: scheduler, queue label, priority, toleration, pool affinity and labels on a whole-GPU Deployment, with warnings", async () => {
    const name = uniqueName("llama");
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment(name, kai.namespace, { gpus: 1 })));
    const warnings = infergateWarnings(res.stderr);
    expect(warnings).toContain("Warning: infergate: set schedulerName=kai-scheduler (scheduler profile kai)");
    expect(warnings).toContain("Warning: infergate: set priorityClassName=inference (policy default)");
    expect(warnings).toContain(`Warning: infergate: added toleration ${GPU}:NoSchedule op=Exists (policy default)`);
    expect(warnings.some((w) => w.includes("node affinity requires"))).toBe(true);
    const template = (await getJson(cluster, ["deployment", name, "-n", kai.namespace])).spec.template;
    expectCommonPolicy(template, kai, "research");
    expect(template.spec.schedulerName).toBe("kai-scheduler");
    expect(template.metadata.labels["kai.scheduler/queue"]).toBe("research");
    expect(template.spec.containers[0].resources.limits[GPU]).toBe("1");
  });

  it("kai: a gpu-fraction share stays an annotation (KAI reads it) and no nvidia.com/gpu limit appears", async () => {
    const name = uniqueName("qwen");
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment(name, kai.namespace, { annotations: { "gpu-fraction": "0.5" } })));
    const template = (await getJson(cluster, ["deployment", name, "-n", kai.namespace])).spec.template;
    expectCommonPolicy(template, kai, "research");
    expect(template.metadata.annotations["gpu-fraction"]).toBe("0.5");
    expect(template.spec.containers[0].resources.limits ?? {}).toEqual({});
  });

  it("kai: a bare GPU Pod gets the fields at CREATE, and the API server resolves the priority of the class infergate set", async () => {
    const name = uniqueName("bare");
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: kai.namespace },
      spec: { containers: [{ name: "main", image: "registry.example.com/tool:1", resources: { limits: { [GPU]: 1 } } }] },
    };
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(pod));
    expect(infergateWarnings(res.stderr)).toContain("Warning: infergate: set priorityClassName=inference (policy default)");
    const stored = await getJson(cluster, ["pod", name, "-n", kai.namespace]);
    expect(stored.metadata.labels).toMatchObject({ "infergate.dev/project": kai.name, "kai.scheduler/queue": "research" });
    expect(stored.spec.schedulerName).toBe("kai-scheduler");
    expect(stored.spec.priorityClassName).toBe("inference");
    // Next to the API server's own not-ready/unreachable tolerations.
    expect(stored.spec.tolerations).toContainEqual(GPU_TOLERATION);
    expect(stored.spec.affinity.nodeAffinity[REQUIRED].nodeSelectorTerms[0].matchExpressions[0].values).toEqual(POOLS);
    // The Priority admission plugin ran before the webhook (no class yet) and again after it.
    expect(stored.spec.priority).toBe(125);
  });

  it("volcano: a gpu-fraction becomes vgpu-number and vgpu-memory limits, the queue an annotation", async () => {
    const name = uniqueName("qwen");
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment(name, volcano.namespace, { annotations: { "gpu-fraction": "0.5" } })));
    expect(infergateWarnings(res.stderr)).toContain('Warning: infergate: set volcano.sh/vgpu-memory=40960 on container "vllm" (gpu-fraction 0.5)');
    const template = (await getJson(cluster, ["deployment", name, "-n", volcano.namespace])).spec.template;
    expectCommonPolicy(template, volcano);
    expect(template.spec.schedulerName).toBe("volcano");
    expect(template.metadata.annotations["scheduling.volcano.sh/queue-name"]).toBe(volcano.name);
    // Half of the default 80 GiB device, in MiB; requests follow limits for extended resources.
    expect(template.spec.containers[0].resources.limits).toEqual({ "volcano.sh/vgpu-number": "1", "volcano.sh/vgpu-memory": "40960" });
  });

  it("hami: a gpu-memory share becomes nvidia.com/gpu devices plus nvidia.com/gpumem", async () => {
    const name = uniqueName("qwen");
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment(name, hami.namespace, { annotations: { "gpu-memory": "20480" } })));
    expect(infergateWarnings(res.stderr)).toContain("Warning: infergate: set schedulerName=hami-scheduler (scheduler profile hami)");
    const template = (await getJson(cluster, ["deployment", name, "-n", hami.namespace])).spec.template;
    expectCommonPolicy(template, hami);
    expect(template.spec.schedulerName).toBe("hami-scheduler");
    expect(template.spec.containers[0].resources.limits).toEqual({ [GPU]: "1", "nvidia.com/gpumem": "20480" });
  });

  it("`kubectl apply --dry-run=server` shows the mutated Deployment and creates nothing", async () => {
    const name = uniqueName("dry");
    const res = await kubectlOk(cluster, ["apply", "--dry-run=server", "-o", "json", "-f", "-"], JSON.stringify(gpuDeployment(name, kai.namespace, { gpus: 1 })));
    expect(infergateWarnings(res.stderr).length).toBeGreaterThan(0);
    const shown = JSON.parse(res.stdout);
    expectCommonPolicy(shown.spec.template, kai, "research");
    expect(shown.spec.template.spec.schedulerName).toBe("kai-scheduler");
    const get = await cluster.kubectl(["get", "deployment", name, "-n", kai.namespace]);
    expect(get.code).not.toBe(0);
    expect(get.stderr).toContain("NotFound");
  });

  it("`infergate apply` offline prints the same Deployment the webhook made the API server store", async () => {
    const name = uniqueName("offline");
    const manifest = gpuDeployment(name, kai.namespace, { annotations: { "gpu-fraction": "0.25" } });
    await kubectlOk(cluster, ["create", "-f", "-"], JSON.stringify(manifest));
    const stored = await getJson(cluster, ["deployment", name, "-n", kai.namespace]);
    expect(stored.spec.template.spec.schedulerName).toBe("kai-scheduler");
    const offline = await infergateApply(kai, manifest);
    expect(offline.code).toBe(0);
    expect(offline.warnings).toEqual(expect.arrayContaining(["Warning: infergate: set schedulerName=kai-scheduler (scheduler profile kai)"]));
    // The API server defaults what infergate never touches (imagePullPolicy, strategy, …); defaulting
    // the offline result the same way, where no webhook runs, leaves only infergate's work to compare.
    expect((await serverDefaulted(offline.object)).spec).toEqual(stored.spec);
  });
});

describe("where the real kube-scheduler puts the pods (profile default)", () => {
  const project = testProject("mut-sched", "default");

  beforeAll(async () => {
    created.push(project);
    await createProjects(project);
    // Earlier e2e files may still be tearing down GPU pods; this case needs both pools empty.
    await poll("no pods bound to GPU nodes", async () => ((await podsOnGpuNodes()).length === 0 ? true : undefined), {
      timeoutMs: 120_000,
      intervalMs: 1000,
    });
  });

  afterAll(async () => {
    // Free the GPUs for the files that run next.
    await cluster.kubectl(["delete", "deployments", "--all", "-n", project.namespace, "--wait=true"]);
  });

  async function podsOnGpuNodes(): Promise<any[]> {
    const pods = (await getJson(cluster, ["pods", "--all-namespaces"])).items as any[];
    return pods.filter((p) => p.spec.nodeName && poolOf(p.spec.nodeName));
  }

  it("places whole-GPU pods without tolerations of their own on the tainted nodes of the first pool, then the second", async () => {
    // Two pods of 8 GPUs fill pool-a (2 nodes × 8 GPUs); the next pods only fit pool-b.
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment("fill", project.namespace, { gpus: 8, replicas: 2 })));
    const fill = await runningPods(cluster, project.namespace, "app=fill", 2);
    expect(fill.map((p) => p.spec.nodeName).sort()).toEqual([gpuNodeName("pool-a", 0), gpuNodeName("pool-a", 1)]);
    for (const pod of fill) {
      expect(pod.spec.tolerations).toContainEqual(GPU_TOLERATION);
      expect(pod.spec.priorityClassName).toBe("inference");
      expect(pod.spec.priority).toBe(125);
      expect(pod.spec.schedulerName).toBe("default-scheduler");
    }

    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment("spill", project.namespace, { gpus: 4, replicas: 2 })));
    const spill = await runningPods(cluster, project.namespace, "app=spill", 2);
    for (const pod of spill) {
      expect(poolOf(pod.spec.nodeName)).toBe("pool-b");
      expect(pod.spec.nodeName).not.toBe(CPU_NODE_NAME);
    }
  });
});

describe("outside every Project", () => {
  it("admits a GPU Deployment and a GPU Pod untouched: no patch, no warnings", async () => {
    const name = uniqueName("plain");
    const deploymentManifest = gpuDeployment(name, outsideNamespace, { gpus: 1 });
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: outsideNamespace, labels: { app: name } },
      // No token volume: its generated name would differ between the two copies compared below.
      spec: { automountServiceAccountToken: false, containers: [{ name: "main", image: "registry.example.com/tool:1", resources: { limits: { [GPU]: 1 } } }] },
    };
    const res = await kubectlOk(cluster, ["create", "-f", "-"], asList([deploymentManifest, pod]));
    expect(res.stderr).not.toContain("Warning:");

    // The same objects in a namespace the webhook configuration excludes: the API server alone.
    const inIgnored = (o: any) => ({ ...o, metadata: { ...o.metadata, namespace: ignoredNamespace } });
    await kubectlOk(cluster, ["create", "-f", "-"], asList([inIgnored(deploymentManifest), inIgnored(pod)]));

    const [outside, ignored] = await Promise.all([outsideNamespace, ignoredNamespace].map((ns) => getJson(cluster, ["deployment", name, "-n", ns])));
    expect(outside.spec).toEqual(ignored.spec);
    expect(outside.metadata.labels).toEqual(ignored.metadata.labels);
    const [outsidePod, ignoredPod] = await Promise.all([outsideNamespace, ignoredNamespace].map((ns) => getJson(cluster, ["pod", name, "-n", ns])));
    // nodeName stays empty in both: the pods tolerate no GPU taint.
    expect(outsidePod.spec).toEqual(ignoredPod.spec);
    expect(outsidePod.metadata.labels).toEqual(ignoredPod.metadata.labels);
    expect(outsidePod.spec.priorityClassName).toBeUndefined();
  });
});

describe("policy rules", () => {
  const project = testProject("mut-rules", "kai", {
    policy: {
      rules: {
        gpuFraction: { min: "0.1", max: "0.5" },
        priorityClassNames: ["inference"],
        imageRegistries: ["registry.example.com/"],
      },
    },
  });

  beforeAll(async () => {
    created.push(project);
    await createProjects(project);
  });

  it("denies every violation at once, each with its field path and what is allowed; kubectl exits non-zero", async () => {
    const name = uniqueName("bad");
    const manifest = gpuDeployment(name, project.namespace, {
      annotations: { "gpu-fraction": "0.75" },
      priorityClassName: "high",
      image: "docker.io/library/vllm:latest",
    });
    const res = await cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify(manifest) });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('admission webhook "validate.infergate.dev" denied the request');
    expect(res.stderr).toContain('spec.template.metadata.annotations[gpu-fraction]: Invalid value: "0.75": between 0.1 and 0.5 (policy rules.gpuFraction)');
    expect(res.stderr).toContain('spec.template.spec.priorityClassName: Invalid value: "high": supported values: "inference"');
    expect(res.stderr).toContain('spec.template.spec.containers[0].image: Invalid value: "docker.io/library/vllm:latest": image must start with one of: "registry.example.com/"');
    const get = await cluster.kubectl(["get", "deployment", name, "-n", project.namespace]);
    expect(get.stderr).toContain("NotFound");
  });

  it("admits the same Deployment once it keeps to the rules", async () => {
    const name = uniqueName("good");
    const manifest = gpuDeployment(name, project.namespace, { annotations: { "gpu-fraction": "0.5" }, priorityClassName: "inference" });
    const res = await cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify(manifest) });
    expect(res.stderr).not.toContain("denied");
    expect(res.code).toBe(0);
  });
});

describe("policy updates", () => {
  const project = testProject("mut-update", "default", { policy: { rules: { priorityClassNames: ["inference", "high"] } } });

  beforeAll(async () => {
    created.push(project);
    await createProjects(project);
  });

  it("take effect for the next admission within seconds, and leave admitted objects as they were", async () => {
    const before = uniqueName("before");
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment(before, project.namespace, { gpus: 1 })));
    expect((await getJson(cluster, ["deployment", before, "-n", project.namespace])).spec.template.spec.priorityClassName).toBe("inference");

    const patch = JSON.stringify([{ op: "replace", path: "/spec/defaults/priorityClassName", value: "high" }]);
    await kubectlOk(cluster, ["patch", "inferencepolicy", project.name, "--type=json", "-p", patch]);
    // Watches carry the change to the webhook; a policy update should not take longer than this.
    await waitUntilWebhookKnows(project, "high", 15_000);

    const after = uniqueName("after");
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuDeployment(after, project.namespace, { gpus: 1 })));
    expect(infergateWarnings(res.stderr)).toContain("Warning: infergate: set priorityClassName=high (policy default)");
    expect((await getJson(cluster, ["deployment", after, "-n", project.namespace])).spec.template.spec.priorityClassName).toBe("high");
    expect((await getJson(cluster, ["deployment", before, "-n", project.namespace])).spec.template.spec.priorityClassName).toBe("inference");
  });
});

interface OfflineResult {
  code: number | null;
  object: any;
  warnings: string[];
  stderr: string;
}

/** Runs `infergate apply` (node24, the CLI entry) with the project's objects as the policy input. */
async function infergateApply(project: TestProject, resource: object): Promise<OfflineResult> {
  const policyFile = path.join(tmpDir, `${project.name}-policy.yaml`);
  const resourceFile = path.join(tmpDir, `${project.name}-resource.json`);
  fs.writeFileSync(policyFile, asList(projectObjects(project).filter((o) => o.kind !== "Namespace")));
  fs.writeFileSync(resourceFile, JSON.stringify(resource));
  const args = [cliEntry(REPO_ROOT), "apply", "--policy", policyFile, "--resource", resourceFile];
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(nodeBinary(REPO_ROOT), args, { cwd: REPO_ROOT, env: childEnv(), timeout: 60_000 }, (error, out, err) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : null) : 0, stdout: out, stderr: err });
    });
  });
  return { code, object: parse(stdout), warnings: stderr.split("\n").filter((l) => l.startsWith("Warning: ")), stderr };
}

/** The object as the API server would store it, created (dry run) where no webhook is called. */
async function serverDefaulted(object: any): Promise<any> {
  const copy = { ...object, metadata: { ...object.metadata, namespace: ignoredNamespace } };
  const res = await kubectlOk(cluster, ["create", "--dry-run=server", "-o", "json", "-f", "-"], JSON.stringify(copy));
  return JSON.parse(res.stdout);
}
