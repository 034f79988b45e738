// PriorityClasses the policies refer to. `inference` follows KAI-Scheduler's chart (value 125; KAI
// reads ≥ 100 as non-preemptible and leaves preemptionPolicy at the Kubernetes default), see
// shared/research/gpu-scheduler-conventions.md §1.3. `high` sits above it for urgent serving.
export function priorityClasses(): Record<string, any>[] {
  return [
    {
      apiVersion: "scheduling.k8s.io/v1",
      kind: "PriorityClass",
      metadata: { name: "inference" },
      value: 125,
      globalDefault: false,
      description: "Inference workloads (KAI-Scheduler convention: value >= 100 is non-preemptible).",
    },
    {
      apiVersion: "scheduling.k8s.io/v1",
      kind: "PriorityClass",
      metadata: { name: "high" },
      value: 1000,
      globalDefault: false,
      description: "Urgent inference workloads, scheduled ahead of `inference`.",
    },
  ];
}
