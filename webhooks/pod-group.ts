// Gang membership on pods (PRODUCT.md §3, last column; §4 "Pod (CREATE)"). The group is one Deployment
// revision or one Knative Revision, and its name is only known on the pod: a Deployment's template has no
// pod-template-hash yet. What each profile needs (shared/research/gpu-scheduler-conventions.md):
// - coscheduling: the label `scheduling.x-k8s.io/pod-group`; the PodGroup itself comes from
//   src/podgroups/reconciler.ts. Nothing else creates PodGroups there (§5).
// - volcano: nothing. Volcano's PodGroup controller gives every pod without `scheduling.k8s.io/group-name`
//   a PodGroup per ReplicaSet and writes that annotation itself (§4). Setting it here would stop the
//   controller from creating the group and leave the pods waiting on a PodGroup nobody makes.
// - kai: nothing. KAI's pod-grouper groups per pod or per Knative revision (§1.5); min-scale ≥ 1 for its
//   Knative gangs is webhooks/knative.ts's job.
// Pods of other controllers (a StatefulSet, a LeaderWorkerSet group, a Job) get no label: the reconciler
// makes PodGroups for Deployment revisions and Knative Revisions only. A foreign pod of a Deployment's
// ReplicaSet (one admitted while the mutating webhook was down) does get its revision's group.
import type { Plugin } from "../src/admission/plugin.ts";
import { POD_GROUP_LABEL, podGroupNameForPod } from "../src/podgroups/names.ts";

export { POD_GROUP_LABEL };

export const podGroup: Plugin = {
  name: "pod-group",

  // A pod's labels could change later, but the scheduler reads them once; only CREATE matters.
  appliesTo: (ctx) =>
    ctx.inference &&
    ctx.request.operation === "CREATE" &&
    (ctx.workload.role === "replica-pod" || ctx.workload.role === "foreign-pod" || ctx.workload.role === "knative-pod") &&
    ctx.policy.scheduler.profile === "coscheduling",

  mutate(ctx) {
    const name = podGroupNameForPod(ctx.workload.object);
    if (!name) return;
    const metadata = ctx.template()!.metadata;
    // A value already there is the user's own group (or ours, on reinvocation): never replaced.
    if (metadata.labels?.[POD_GROUP_LABEL] !== undefined) return;
    metadata.labels = { ...metadata.labels, [POD_GROUP_LABEL]: name };
    ctx.warn(`infergate: set label ${POD_GROUP_LABEL}=${name}`);
  },
};
