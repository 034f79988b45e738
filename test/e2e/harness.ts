// What every e2e file shares: the running cluster (started by global-setup.ts), failure logs, and
// small waits built on the real kubectl.
import { randomBytes } from "node:crypto";
import { afterEach, inject } from "vitest";
import { poll } from "../../src/local-cluster/api.ts";
import { attachCluster } from "../../src/local-cluster/cluster.ts";
import type { ClusterAccess, KubectlResult } from "../../src/local-cluster/cluster.ts";

export function useCluster(): ClusterAccess {
  const cluster = attachCluster(inject("stateDir"));
  // The control-plane logs are files; show their tails next to the failure.
  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") console.error(`control-plane logs for "${ctx.task.name}":\n${cluster.logs(40)}`);
  });
  return cluster;
}

/** Fails the calling hook with the reason when infergate's webhook server is not running. */
export function requireWebhook(): void {
  const error = inject("webhookError");
  if (error) throw new Error(`this test needs infergate's webhook server, which did not start:\n${error}`);
}

export async function webhookControl(action: "stop" | "start"): Promise<void> {
  const res = await fetch(`${inject("controlUrl")}/webhook/${action}`, { method: "POST" });
  if (!res.ok) throw new Error(`webhook ${action} failed: ${res.status} ${await res.text()}`);
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString("hex")}`;
}

/** kubectl that must succeed; returns stdout (and stderr, where kubectl prints admission warnings). */
export async function kubectlOk(cluster: ClusterAccess, args: string[], input?: string): Promise<KubectlResult> {
  const res = await cluster.kubectl(args, { input });
  if (res.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed (exit ${res.code}):\n${res.stderr}${res.stdout}`);
  return res;
}

export async function getJson(cluster: ClusterAccess, args: string[]): Promise<any> {
  return JSON.parse((await kubectlOk(cluster, ["get", ...args, "-o", "json"])).stdout);
}

/** Waits until the Deployment's pods exist, are bound to nodes and kwok reports them Running. */
export async function runningPods(cluster: ClusterAccess, namespace: string, selector: string, count: number): Promise<any[]> {
  return poll(
    `${count} Running pods matching ${selector} in ${namespace}`,
    async () => {
      const pods = (await getJson(cluster, ["pods", "-n", namespace, "-l", selector])).items as any[];
      const running = pods.filter((p) => p.status?.phase === "Running" && p.spec?.nodeName);
      return running.length === count ? running : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
}

export function deployment(
  name: string,
  namespace: string,
  pod: { resources?: object; tolerations?: object[] } = {},
): Record<string, any> {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          containers: [{ name: "server", image: "registry.example.com/server:1", resources: pod.resources ?? {} }],
          ...(pod.tolerations ? { tolerations: pod.tolerations } : {}),
        },
      },
    },
  };
}
