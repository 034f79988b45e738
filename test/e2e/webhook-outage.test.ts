// With infergate's webhook server stopped, the cluster keeps working where it must: kube-system,
// opted-out namespaces and workloads without GPUs are never sent to the webhook, and mutation fails
// open, while quota validation of GPU workloads fails closed. The server is started
// again afterwards for the files that run later.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IGNORE_NAMESPACE_LABEL } from "../../src/local-cluster/webhook-config.ts";
import { deployment, getJson, kubectlOk, requireWebhook, uniqueName, useCluster, webhookControl } from "./harness.ts";

const cluster = useCluster();
const plainNamespace = uniqueName("outage");
const ignoredNamespace = uniqueName("ignored");
const systemDeployment = uniqueName("system-addon");
let stopped = false;

beforeAll(async () => {
  requireWebhook();
  await kubectlOk(cluster, ["create", "namespace", plainNamespace]);
  await kubectlOk(cluster, ["create", "namespace", ignoredNamespace]);
  await kubectlOk(cluster, ["label", "namespace", ignoredNamespace, `${IGNORE_NAMESPACE_LABEL}=true`]);
  await webhookControl("stop");
  stopped = true;
});

afterAll(async () => {
  if (stopped) await webhookControl("start");
  await cluster.kubectl(["delete", "deployment", systemDeployment, "-n", "kube-system", "--ignore-not-found"]);
  await cluster.kubectl(["delete", "namespace", plainNamespace, ignoredNamespace, "--wait=false"]);
});

describe("while infergate's webhook server is down", () => {
  it("still creates a Deployment in kube-system", async () => {
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(deployment(systemDeployment, "kube-system")));
    const stored = await getJson(cluster, ["deployment", systemDeployment, "-n", "kube-system"]);
    expect(stored.metadata.name).toBe(systemDeployment);
  });

  it(`still creates a Deployment in a namespace labelled ${IGNORE_NAMESPACE_LABEL}`, async () => {
    const name = uniqueName("opted-out");
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(deployment(name, ignoredNamespace)));
    expect((await getJson(cluster, ["deployment", name, "-n", ignoredNamespace])).metadata.name).toBe(name);
  });

  it("rejects a GPU Deployment in an ordinary namespace, because quota validation fails closed", async () => {
    const gpu = deployment(uniqueName("blocked"), plainNamespace, { resources: { limits: { "nvidia.com/gpu": 1 } } });
    const res = await cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify(gpu) });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('failed calling webhook "validate.infergate.dev"');
  });

  it("still creates a Deployment without GPUs in an ordinary namespace: the webhooks' matchConditions skip it", async () => {
    const name = uniqueName("plain");
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(deployment(name, plainNamespace)));
    expect((await getJson(cluster, ["deployment", name, "-n", plainNamespace])).metadata.name).toBe(name);
  });

  it("still creates a Pod in an ordinary namespace, because mutation fails open", async () => {
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "standalone", namespace: plainNamespace },
      spec: { containers: [{ name: "main", image: "registry.example.com/tool:1" }] },
    };
    await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(pod));
    expect((await getJson(cluster, ["pod", "standalone", "-n", plainNamespace])).metadata.name).toBe("standalone");
  });
});
