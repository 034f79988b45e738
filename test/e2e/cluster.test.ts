// Plumbing of the local control plane: the real apiserver, controllers, scheduler and kwok work
// together, and the third-party CRDs are served. Runs in a namespace that belongs to no Project.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CPU_NODE_NAME, GPU_RESOURCE } from "../../src/local-cluster/fake-nodes.ts";
import { deployment, getJson, kubectlOk, runningPods, uniqueName, useCluster } from "./harness.ts";

const cluster = useCluster();
const namespace = uniqueName("plumbing");

beforeAll(async () => {
  await kubectlOk(cluster, ["create", "namespace", namespace]);
});

afterAll(async () => {
  await cluster.kubectl(["delete", "namespace", namespace, "--wait=false"]);
});

describe("local control plane", () => {
  it("reports ready through the real kubectl", async () => {
    const res = await kubectlOk(cluster, ["get", "--raw", "/readyz"]);
    expect(res.stdout.trim()).toBe("ok");
  });

  it("has four tainted GPU nodes in two pools and one plain CPU node, all Ready", async () => {
    const nodes = (await getJson(cluster, ["nodes"])).items as any[];
    const gpuNodes = nodes.filter((n) => n.metadata.labels["infergate.dev/node-pool"]);
    expect(gpuNodes.map((n) => n.metadata.labels["infergate.dev/node-pool"]).sort()).toEqual(["pool-a", "pool-a", "pool-b", "pool-b"]);
    for (const node of gpuNodes) {
      expect(node.status.allocatable[GPU_RESOURCE]).toBe("8");
      expect(node.spec.taints).toContainEqual({ key: GPU_RESOURCE, effect: "NoSchedule" });
    }
    const cpuNode = nodes.find((n) => n.metadata.name === CPU_NODE_NAME);
    expect(cpuNode?.spec.taints ?? []).toEqual([]);
    expect(cpuNode?.status.allocatable[GPU_RESOURCE]).toBeUndefined();
    for (const node of nodes) {
      expect(node.status.conditions.find((c: any) => c.type === "Ready")?.status).toBe("True");
    }
  });

  it("installs the PriorityClasses, following KAI-Scheduler's inference value", async () => {
    const inference = await getJson(cluster, ["priorityclass", "inference"]);
    const high = await getJson(cluster, ["priorityclass", "high"]);
    expect(inference.value).toBe(125);
    expect(high.value).toBeGreaterThan(inference.value);
  });

  it("schedules a plain Deployment onto the CPU node, and kwok runs its pods", async () => {
    const name = uniqueName("web");
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(deployment(name, namespace, { resources: { requests: { cpu: "100m" } } })));
    const pods = await runningPods(cluster, namespace, `app=${name}`, 1);
    expect(pods[0].spec.nodeName).toBe(CPU_NODE_NAME);
  });

  it("schedules a GPU Deployment that tolerates the GPU taint onto a GPU node", async () => {
    const name = uniqueName("gpu");
    const manifest = deployment(name, namespace, {
      resources: { limits: { [GPU_RESOURCE]: 2 } },
      tolerations: [{ key: GPU_RESOURCE, operator: "Exists", effect: "NoSchedule" }],
    });
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(manifest));
    const pods = await runningPods(cluster, namespace, `app=${name}`, 1);
    expect(pods[0].spec.nodeName).toMatch(/^gpu-pool-[ab]-\d$/);
  });

  it("serves the Knative Service CRD and stores a ksvc", async () => {
    const crd = await getJson(cluster, ["crd", "services.serving.knative.dev"]);
    expect(crd.status.conditions.find((c: any) => c.type === "Established")?.status).toBe("True");
    const name = uniqueName("ksvc");
    const ksvc = {
      apiVersion: "serving.knative.dev/v1",
      kind: "Service",
      metadata: { name, namespace },
      spec: { template: { spec: { containers: [{ image: "registry.example.com/server:1" }] } } },
    };
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(ksvc));
    const stored = await getJson(cluster, ["ksvc", name, "-n", namespace]);
    expect(stored.spec.template.spec.containers[0].image).toBe("registry.example.com/server:1");
  });

  it("installs Knative's shipped config-features: only the _example block, so every flag is at its default", async () => {
    const cm = await getJson(cluster, ["configmap", "config-features", "-n", "knative-serving"]);
    expect(Object.keys(cm.data)).toEqual(["_example"]);
    expect(cm.data._example).toContain('kubernetes.podspec-tolerations: "disabled"');
  });
});
