// The kwok-managed nodes of the local cluster: GPU nodes in two pools, tainted like real GPU nodes
// (so only workloads that tolerate nvidia.com/gpu land there), plus one untainted CPU node.
import { DEFAULT_NODE_POOL_LABEL } from "../policy/types.ts";

export interface NodePoolSpec {
  pool: string;
  nodes: number;
  gpusPerNode: number;
}

export const DEFAULT_NODE_POOLS: readonly NodePoolSpec[] = [
  { pool: "pool-a", nodes: 2, gpusPerNode: 8 },
  { pool: "pool-b", nodes: 2, gpusPerNode: 8 },
];

export const CPU_NODE_NAME = "cpu-node-0";
export const GPU_RESOURCE = "nvidia.com/gpu";

export function gpuNodeName(pool: string, index: number): string {
  return `gpu-${pool}-${index}`;
}

export function fakeNodes(pools: readonly NodePoolSpec[] = DEFAULT_NODE_POOLS): Record<string, any>[] {
  const gpuNodes = pools.flatMap((p) =>
    Array.from({ length: p.nodes }, (_, i) =>
      node(gpuNodeName(p.pool, i), { [DEFAULT_NODE_POOL_LABEL]: p.pool, "nvidia.com/gpu.present": "true" }, {
        taints: [{ key: GPU_RESOURCE, effect: "NoSchedule" }],
        extra: { [GPU_RESOURCE]: String(p.gpusPerNode) },
      }),
    ),
  );
  return [...gpuNodes, node(CPU_NODE_NAME, {}, { taints: [], extra: {} })];
}

function node(name: string, labels: Record<string, string>, opts: { taints: object[]; extra: Record<string, string> }) {
  const resources = { cpu: "32", memory: "256Gi", pods: "110", ...opts.extra };
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      annotations: { "node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake" },
      labels: {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        type: "kwok",
        ...labels,
      },
    },
    spec: opts.taints.length ? { taints: opts.taints } : {},
    status: { capacity: resources, allocatable: resources },
  };
}
