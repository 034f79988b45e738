// infergate's webhook in the real admission chain: the examples/ Project and cluster policy make a
// plain GPU Deployment an inference workload, which gets the policy's defaults and kubectl prints
// a warning for each.
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { poll } from "../../src/local-cluster/api.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { getJson, kubectlOk, requireWebhook, uniqueName, useCluster } from "./harness.ts";

const cluster = useCluster();
const example = (file: string) => path.join(REPO_ROOT, "examples", file);
const outsider = uniqueName("no-project");

beforeAll(async () => {
  requireWebhook();
  await kubectlOk(cluster, ["apply", "-f", example("project.yaml"), "-f", example("policy-kai.yaml")]);
  await kubectlOk(cluster, ["create", "namespace", outsider]);
  // The webhook learns about Projects and policies from watches: wait until a dry run shows it has.
  await poll(
    "the webhook to see Project team-a and the cluster policy",
    async () => {
      const res = await cluster.kubectl(["apply", "--dry-run=server", "-f", example("gpu-deployment.yaml"), "-o", "json"]);
      return res.code === 0 && JSON.parse(res.stdout).spec.template.spec.priorityClassName ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
});

afterAll(async () => {
  await cluster.kubectl(["delete", "-f", example("gpu-deployment.yaml"), "--ignore-not-found"]);
  await cluster.kubectl(["delete", "-f", example("policy-kai.yaml"), "-f", example("project.yaml"), "--ignore-not-found", "--wait=false"]);
  await cluster.kubectl(["delete", "namespace", outsider, "--wait=false"]);
});

describe("infergate webhook on a real apiserver", () => {
  it("injects the policy's priority class and toleration into the project's GPU Deployment, with warnings", async () => {
    const res = await kubectlOk(cluster, ["apply", "-f", example("gpu-deployment.yaml")]);
    expect(res.stderr).toMatch(/^Warning: .*priorityClassName/m);
    const stored = await getJson(cluster, ["deployment", "llama-8b", "-n", "team-a"]);
    const spec = stored.spec.template.spec;
    expect(spec.priorityClassName).toBe("inference");
    expect(spec.tolerations ?? []).toContainEqual(expect.objectContaining({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }));
  });

  it("leaves the same Deployment untouched, without warnings, in a namespace outside every project", async () => {
    const manifest = parse(fs.readFileSync(example("gpu-deployment.yaml"), "utf8"));
    manifest.metadata.namespace = outsider;
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(manifest));
    expect(res.stderr).not.toMatch(/Warning:/);
    const stored = await getJson(cluster, ["deployment", "llama-8b", "-n", outsider]);
    expect(stored.spec.template.spec.priorityClassName).toBeUndefined();
  });
});
