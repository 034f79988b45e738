// Which gang (pod group) a pod belongs to: one group per Deployment revision (its ReplicaSet) or per
// Knative Revision. The admission plugin labels pods with this name and the reconciler creates the
// PodGroup of the same name, so both sides must compute it here and nowhere else.
import { createHash } from "node:crypto";
import type { ObjectMeta } from "../policy/types.ts";

/** Set by the Deployment controller on each ReplicaSet and its pods; the RS is named `<deployment>-<hash>`. */
export const POD_TEMPLATE_HASH_LABEL = "pod-template-hash";
/** Set by Knative on every pod of a Revision (knative/serving resources/meta.go). */
export const KNATIVE_REVISION_LABEL = "serving.knative.dev/revision";

/** The membership label kubernetes-sigs/scheduler-plugins' Coscheduling reads on pods. */
export const POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group";

/** Kubernetes label values are at most 63 characters. */
export const LABEL_VALUE_MAX = 63;
const DIGEST_LENGTH = 10;

function controllerOf(meta: ObjectMeta | undefined) {
  return meta?.ownerReferences?.find((o) => o.controller) ?? meta?.ownerReferences?.[0];
}

function isApps(apiVersion: string | undefined): boolean {
  return typeof apiVersion === "string" && apiVersion.startsWith("apps/");
}

/**
 * A name that is both a label value and a PodGroup name. Deployment names may be up to 253 characters,
 * label values only 63: a longer name keeps its start and ends in a digest of the whole, so two long
 * Deployments that share a prefix still get different groups.
 */
export function fitLabelValue(name: string): string {
  if (name.length <= LABEL_VALUE_MAX) return name;
  const digest = createHash("sha256").update(name).digest("hex").slice(0, DIGEST_LENGTH);
  // The prefix must not end in "." or "-": the PodGroup name is a DNS subdomain, whose parts end alphanumeric.
  const prefix = name.slice(0, LABEL_VALUE_MAX - DIGEST_LENGTH - 1).replace(/[-.]+$/, "");
  return `${prefix}-${digest}`;
}

/** `<deployment>-<pod-template-hash>`, the ReplicaSet's own name, when it has the Deployment controller's form. */
export function deploymentRevisionGroupName(replicaSetName: string | undefined, templateHash: string | undefined): string | undefined {
  if (!replicaSetName || !templateHash) return undefined;
  const suffix = `-${templateHash}`;
  if (!replicaSetName.endsWith(suffix) || replicaSetName.length === suffix.length) return undefined;
  return fitLabelValue(replicaSetName);
}

/**
 * The pod group of a pod at CREATE: the Knative revision for a revision's pod (which is also a
 * ReplicaSet's pod: the revision is the unit users think in), else the Deployment revision for a pod of
 * a Deployment's ReplicaSet; undefined for a bare pod or a pod of any other controller.
 */
export function podGroupNameForPod(pod: { metadata?: ObjectMeta } | undefined): string | undefined {
  const meta = pod?.metadata;
  const labels = meta?.labels ?? {};
  const revision = labels[KNATIVE_REVISION_LABEL];
  if (typeof revision === "string" && revision !== "") return revision;
  const owner = controllerOf(meta);
  if (owner?.kind !== "ReplicaSet" || !isApps(owner.apiVersion)) return undefined;
  return deploymentRevisionGroupName(owner.name, labels[POD_TEMPLATE_HASH_LABEL]);
}

/**
 * The pod group of a ReplicaSet that a Deployment controls; undefined for a ReplicaSet of Knative's
 * revision Deployment (its pods group by revision) or one made by hand.
 */
export function podGroupNameForReplicaSet(rs: { metadata?: ObjectMeta; spec?: any } | undefined): string | undefined {
  const meta = rs?.metadata;
  const owner = controllerOf(meta);
  if (owner?.kind !== "Deployment" || !isApps(owner.apiVersion)) return undefined;
  const templateLabels = rs?.spec?.template?.metadata?.labels ?? {};
  if (templateLabels[KNATIVE_REVISION_LABEL]) return undefined;
  const hash = meta?.labels?.[POD_TEMPLATE_HASH_LABEL] ?? templateLabels[POD_TEMPLATE_HASH_LABEL];
  return deploymentRevisionGroupName(meta?.name, hash);
}

/** The pod group of a Knative Revision: its name, which its pods carry as `serving.knative.dev/revision`. */
export function podGroupNameForRevision(revision: { metadata?: ObjectMeta } | undefined): string | undefined {
  const name = revision?.metadata?.name;
  return typeof name === "string" && name !== "" ? name : undefined;
}
