// GPU pods of a controller infergate does not mutate, against the real control plane: a StatefulSet that
// tolerates no GPU taint gets its pods mutated at CREATE (priority class, toleration, pool affinity,
// project labels), so the real kube-scheduler places them on the tainted GPU nodes of the project's
// pool, while the StatefulSet itself stays as written; and the pod validation webhook still judges the
// mutated pods by the policy's rules (docs/decisions/006-pods-of-other-controllers.md).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poll } from "../../src/local-cluster/api.ts";
import { gpuNodeName } from "../../src/local-cluster/fake-nodes.ts";
import { DEFAULT_NODE_POOL_LABEL } from "../../src/policy/types.ts";
import { getJson, kubectlOk, requireWebhook, runningPods, uniqueName, useCluster } from "./harness.ts";

const cluster = useCluster();
const GPU = "nvidia.com/gpu";
const GPU_TOLERATION = { key: GPU, operator: "Exists", effect: "NoSchedule" };
// One pool, so where the pods land says the affinity came from the project.
const POOL = "pool-b";
const project = uniqueName("foreign");
const namespace = project;

const asList = (items: unknown[]) => JSON.stringify({ apiVersion: "v1", kind: "List", items });

function gpuPod(name: string): Record<string, any> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace },
    spec: { containers: [{ name: "main", image: "registry.example.com/tool:1", resources: { limits: { [GPU]: 1 } } }] },
  };
}

function gpuStatefulSet(name: string, replicas: number, image = "registry.example.com/vllm:0.11"): Record<string, any> {
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: { name, namespace },
    spec: {
      replicas,
      serviceName: name,
      // Both at once: the test waits for the pods, not for ordered start-up.
      podManagementPolicy: "Parallel",
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: "vllm", image, resources: { limits: { [GPU]: 1 } } }] },
      },
    },
  };
}

beforeAll(async () => {
  requireWebhook();
  await kubectlOk(
    cluster,
    ["apply", "-f", "-"],
    asList([
      { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } },
      { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name: project }, spec: { namespaces: [namespace], nodePools: [POOL] } },
      {
        apiVersion: "infergate.dev/v1alpha1",
        kind: "InferencePolicy",
        metadata: { name: project },
        spec: {
          projects: [project],
          scheduler: { profile: "default" },
          defaults: { priorityClassName: "inference", tolerations: [GPU_TOLERATION] },
          rules: { imageRegistries: ["registry.example.com/"] },
        },
      },
    ]),
  );
  // The webhook learns Projects and policies from watches: wait until a dry run shows both arrived.
  const probe = JSON.stringify(gpuPod("probe"));
  await poll(
    `the webhook to apply project ${project}'s policy to pods`,
    async () => {
      const res = await cluster.kubectl(["create", "--dry-run=server", "-o", "json", "-f", "-"], { input: probe });
      if (res.code !== 0) return undefined;
      const pod = JSON.parse(res.stdout);
      return pod.metadata.labels?.["infergate.dev/project"] === project && pod.spec.priorityClassName === "inference" ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 300 },
  );
});

afterAll(async () => {
  // Free the GPUs for the files that run next.
  await cluster.kubectl(["delete", "statefulsets", "--all", "-n", namespace, "--cascade=foreground", "--wait=true"]);
  await cluster.kubectl(["delete", "inferencepolicies.infergate.dev", project, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "projects.infergate.dev", project, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "namespace", namespace, "--ignore-not-found", "--wait=false"]);
});

describe("a GPU StatefulSet in a Project's namespace", () => {
  it("gets pods the kube-scheduler places on the project pool's tainted GPU nodes, with the policy injected on each pod", async () => {
    const name = uniqueName("vllm");
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuStatefulSet(name, 2)));

    const pods = await runningPods(cluster, namespace, `app=${name}`, 2);
    const poolNodes = [gpuNodeName(POOL, 0), gpuNodeName(POOL, 1)];
    for (const pod of pods) {
      expect(poolNodes).toContain(pod.spec.nodeName);
      expect(pod.metadata.labels).toMatchObject({ app: name, "infergate.dev/project": project, "infergate.dev/queue": project });
      expect(pod.metadata.ownerReferences[0]).toMatchObject({ kind: "StatefulSet", name });
      expect(pod.spec.priorityClassName).toBe("inference");
      // The Priority admission plugin resolved the class infergate set.
      expect(pod.spec.priority).toBe(125);
      expect(pod.spec.tolerations).toContainEqual(GPU_TOLERATION);
      expect(pod.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
        { matchExpressions: [{ key: DEFAULT_NODE_POOL_LABEL, operator: "In", values: [POOL] }] },
      ]);
      expect(pod.spec.schedulerName).toBe("default-scheduler");
    }

    // Only the pods carry the policy: infergate does not mutate StatefulSets.
    const template = (await getJson(cluster, ["statefulset", name, "-n", namespace])).spec.template;
    expect(template.spec.priorityClassName).toBeUndefined();
    expect(template.spec.tolerations).toBeUndefined();
    expect(template.metadata.labels).toEqual({ app: name });
  });

  it("whose image breaks the policy's rules gets no pods: the pod validation webhook denies each, naming the pod's field", async () => {
    const name = uniqueName("docker-hub");
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(gpuStatefulSet(name, 1, "docker.io/library/vllm:latest")));
    // The StatefulSet controller reports the denial as an event on the StatefulSet.
    const message = await poll(
      `a FailedCreate event of StatefulSet ${name}`,
      async () => {
        const events = (await getJson(cluster, ["events", "-n", namespace, "--field-selector", `involvedObject.name=${name},reason=FailedCreate`])).items as any[];
        return events[0]?.message as string | undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    expect(message).toContain('admission webhook "validate-pods.infergate.dev" denied the request');
    expect(message).toContain('spec.containers[0].image: Invalid value: "docker.io/library/vllm:latest": image must start with one of: "registry.example.com/"');
    expect((await getJson(cluster, ["pods", "-n", namespace, "-l", `app=${name}`])).items).toEqual([]);
  });
});
