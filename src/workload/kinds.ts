// Which group/version/resource an object is, as the API server would name it in an AdmissionRequest.
import type { GroupVersionKind, GroupVersionResource } from "../admission/types.ts";

interface Target {
  kind: GroupVersionKind;
  resource: GroupVersionResource;
  namespaced: boolean;
}

const PLURALS: Record<string, { resource: string; namespaced: boolean }> = {
  "apps/Deployment": { resource: "deployments", namespaced: true },
  "apps/ReplicaSet": { resource: "replicasets", namespaced: true },
  "apps/StatefulSet": { resource: "statefulsets", namespaced: true },
  "/Pod": { resource: "pods", namespaced: true },
  "/ConfigMap": { resource: "configmaps", namespaced: true },
  "/Namespace": { resource: "namespaces", namespaced: false },
  "serving.knative.dev/Service": { resource: "services", namespaced: true },
  "serving.knative.dev/Revision": { resource: "revisions", namespaced: true },
  "serving.knative.dev/Configuration": { resource: "configurations", namespaced: true },
  "infergate.dev/Project": { resource: "projects", namespaced: false },
  "infergate.dev/InferencePolicy": { resource: "inferencepolicies", namespaced: false },
  "batch/Job": { resource: "jobs", namespaced: true },
  // Cluster-scoped kinds that GPU serving manifests ship alongside their workloads (the NVIDIA runtime
  // class, priority classes, storage classes, CRDs, RBAC): they get no namespace.
  "/Node": { resource: "nodes", namespaced: false },
  "/PersistentVolume": { resource: "persistentvolumes", namespaced: false },
  "scheduling.k8s.io/PriorityClass": { resource: "priorityclasses", namespaced: false },
  "node.k8s.io/RuntimeClass": { resource: "runtimeclasses", namespaced: false },
  "storage.k8s.io/StorageClass": { resource: "storageclasses", namespaced: false },
  "rbac.authorization.k8s.io/ClusterRole": { resource: "clusterroles", namespaced: false },
  "rbac.authorization.k8s.io/ClusterRoleBinding": { resource: "clusterrolebindings", namespaced: false },
  "apiextensions.k8s.io/CustomResourceDefinition": { resource: "customresourcedefinitions", namespaced: false },
  "admissionregistration.k8s.io/MutatingWebhookConfiguration": { resource: "mutatingwebhookconfigurations", namespaced: false },
  "admissionregistration.k8s.io/ValidatingWebhookConfiguration": { resource: "validatingwebhookconfigurations", namespaced: false },
  "apiregistration.k8s.io/APIService": { resource: "apiservices", namespaced: false },
};

export function resourceFor(object: any): Target | undefined {
  if (typeof object?.apiVersion !== "string" || typeof object?.kind !== "string" || !object?.metadata?.name) return undefined;
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/", 2) : ["", object.apiVersion];
  const known = PLURALS[`${group}/${object.kind}`];
  // Unknown kinds still get a plausible plural so the handler can answer "allowed, untouched".
  const resource = known?.resource ?? `${object.kind.toLowerCase()}s`;
  return { kind: { group, version, kind: object.kind }, resource: { group, version, resource }, namespaced: known?.namespaced ?? true };
}

export function sameObject(a: any, b: any): boolean {
  const group = (o: any) => (String(o?.apiVersion ?? "").includes("/") ? String(o.apiVersion).split("/")[0] : "");
  return (
    a?.kind === b?.kind &&
    group(a) === group(b) &&
    a?.metadata?.name === b?.metadata?.name &&
    (a?.metadata?.namespace ?? "default") === (b?.metadata?.namespace ?? "default")
  );
}
