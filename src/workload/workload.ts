// The one place that knows kinds. Everything else sees a Workload: a pod template (or a pod), its
// replicas, and which fields infergate may write there.
import type { AdmissionRequest } from "../admission/types.ts";
import type { ObjectMeta } from "../policy/types.ts";
import { knativeAllows, type KnativeFeatures, type PodSpecFeatureField } from "./knative-features.ts";
import { KNATIVE_REVISION_LABEL, POD_TEMPLATE_HASH_LABEL } from "../podgroups/names.ts";

/**
 * The label infergate writes into every pod template it mutates (webhooks/labels.ts): on a pod, it says
 * the pod's policy came with its template.
 */
export const PROJECT_LABEL = "infergate.dev/project";

export type WorkloadKind = "Deployment" | "KnativeService" | "Pod" | "Scale";

/**
 * What an admitted object is to infergate:
 * - `deployment`, `knative-service`: the user's workload; policy goes into its pod template.
 * - `knative-deployment`: the Deployment Knative made for a Revision: never mutated, charged as the revision.
 * - `knative-pod`: a pod of a Knative revision; receives the fields Knative refuses on the Service.
 * - `replica-pod`: a pod of a Deployment's ReplicaSet that carries the project label: infergate mutated
 *   the Deployment's template, so the pod already carries the policy.
 * - `foreign-pod`: a pod of a controller infergate does not mutate (StatefulSet, LeaderWorkerSet, Job,
 *   KubeAI Model, Ray, a bare ReplicaSet), or of a Deployment admitted while the mutating webhook was
 *   down: the policy goes onto the pod at CREATE, as for a bare pod (docs/decisions/006).
 * - `bare-pod`: a pod nobody controls; treated like a one-replica workload.
 * - `scale`: the `deployments/scale` subresource.
 */
export type WorkloadRole =
  | "deployment"
  | "knative-service"
  | "knative-deployment"
  | "knative-pod"
  | "replica-pod"
  | "foreign-pod"
  | "bare-pod"
  | "scale";

/** Fields that are written into the pod spec and may be refused by Knative on a Service. */
export type PodField = PodSpecFeatureField;

export interface PodTemplate {
  metadata: ObjectMeta;
  spec: any;
}

export interface Workload {
  kind: WorkloadKind;
  role: WorkloadRole;
  namespace: string;
  name: string;
  /** The object being admitted; plugins edit it in place. */
  object: any;
  /** Path of the pod template inside `object` ("spec.template"), or "" for a pod. Undefined for scale. */
  templatePath?: string;
  /** Desired replicas (Deployment, scale); 1 for a pod; undefined for a Knative Service. */
  replicas?: number;
}

const KNATIVE_GROUP = "serving.knative.dev";

/** The controller among the owners, else the first; undefined when there is none (or no list of them). */
function controllerOf(meta: ObjectMeta | undefined) {
  const owners: unknown = meta?.ownerReferences;
  if (!Array.isArray(owners)) return undefined;
  const refs = owners.filter((o): o is NonNullable<ObjectMeta["ownerReferences"]>[number] => typeof o === "object" && o !== null);
  return refs.find((o) => o.controller === true) ?? refs[0];
}

/**
 * Builds the Workload for a request, or undefined when the object is not a kind infergate handles.
 * `object` is the (already copied) object to mutate.
 */
export function toWorkload(request: AdmissionRequest, object: any): Workload | undefined {
  if (!object || typeof object !== "object" || Array.isArray(object)) return undefined;
  const { group, resource } = request.resource;
  const sub = request.subResource ?? "";
  const namespace = request.namespace ?? object.metadata?.namespace ?? "";
  const name = request.name || object.metadata?.name || object.metadata?.generateName || "";
  const base = { namespace, name, object };

  if (group === "apps" && resource === "deployments") {
    if (sub === "scale") {
      const replicas = num(object.spec?.replicas);
      return { ...base, kind: "Scale", role: "scale", replicas: replicas ?? 0 };
    }
    if (sub !== "") return undefined;
    const owner = controllerOf(object.metadata);
    const role: WorkloadRole = owner?.kind === "Revision" && String(owner.apiVersion).startsWith(`${KNATIVE_GROUP}/`) ? "knative-deployment" : "deployment";
    return { ...base, kind: "Deployment", role, templatePath: "spec.template", replicas: num(object.spec?.replicas) ?? 1 };
  }
  if (group === KNATIVE_GROUP && resource === "services" && sub === "") {
    return { ...base, kind: "KnativeService", role: "knative-service", templatePath: "spec.template" };
  }
  if (group === "" && resource === "pods" && sub === "") {
    return { ...base, kind: "Pod", role: podRole(object.metadata), templatePath: "", replicas: 1 };
  }
  return undefined;
}

function podRole(meta: ObjectMeta | undefined): WorkloadRole {
  const labels = meta?.labels ?? {};
  if (labels[KNATIVE_REVISION_LABEL]) return "knative-pod";
  const owner = controllerOf(meta);
  if (!owner) return "bare-pod";
  // The two labels a Deployment's template hands down: the controller's revision hash, and the project
  // label infergate writes into the templates it mutates. Checking the owner too keeps a pod infergate
  // mutated itself (a StatefulSet's, say, which then carries the project label) a foreign pod, so that
  // validation, which sees the mutated pod, still judges it.
  const ofDeployment = owner.kind === "ReplicaSet" && String(owner.apiVersion ?? "").startsWith("apps/") && !!labels[POD_TEMPLATE_HASH_LABEL];
  return ofDeployment && labels[PROJECT_LABEL] ? "replica-pod" : "foreign-pod";
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** The pod template (or the pod), created on demand so plugins can write into it. Undefined for scale. */
export function podTemplate(w: Workload): PodTemplate | undefined {
  if (w.templatePath === undefined) return undefined;
  if (w.templatePath === "") {
    w.object.metadata ??= {};
    w.object.spec ??= {};
    return w.object as PodTemplate;
  }
  w.object.spec ??= {};
  w.object.spec.template ??= {};
  w.object.spec.template.metadata ??= {};
  w.object.spec.template.spec ??= {};
  return w.object.spec.template as PodTemplate;
}

/** Reads the pod template without creating anything. */
export function peekTemplate(w: Workload | undefined): { metadata?: ObjectMeta; spec?: any } | undefined {
  if (!w || w.templatePath === undefined) return undefined;
  return w.templatePath === "" ? w.object : w.object?.spec?.template;
}

/** A field path under the pod template, for messages: `spec.template.spec.priorityClassName`. */
export function templateFieldPath(w: Workload, sub: string): string {
  return w.templatePath ? `${w.templatePath}.${sub}` : sub;
}

/**
 * May infergate write `field` into this workload's pod spec? Knative Services refuse some fields unless
 * their `config-features` flag is on; those fields then go onto the revision's pods at CREATE instead.
 */
export function canSetPodField(w: Workload, field: PodField, features: KnativeFeatures): boolean {
  switch (w.role) {
    case "deployment":
    case "bare-pod":
    case "foreign-pod":
      return true;
    case "knative-service":
      return knativeAllows(features, field);
    case "knative-pod":
      return !knativeAllows(features, field);
    default:
      return false;
  }
}

/**
 * Is this a workload whose pod template is the user's and receives the whole policy (labels,
 * annotations, GPU share, scheduling)? A foreign pod is its own template, like a bare pod.
 */
export function carriesPolicy(w: Workload): boolean {
  return w.role === "deployment" || w.role === "knative-service" || w.role === "bare-pod" || w.role === "foreign-pod";
}
