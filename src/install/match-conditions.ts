// CEL matchConditions that keep infergate's webhooks away from everything that is not a GPU workload
// (PRODUCT.md §2), so that a fail-closed validating webhook that is down blocks GPU deploys and nothing
// else. They mirror isInferenceWorkload (src/workload/gpu.ts) from the outside: a condition may send the
// webhook an object it then admits untouched, but must never skip one the webhook has to see.
//
// The API server evaluates these on unstructured, dynamically typed objects: a missing field is an
// error, not null, and an error counts as failure (failurePolicy Fail rejects the request). So every
// step is guarded with has(), one field at a time. `object` is null on DELETE and `oldObject` on CREATE.
import { ANNOTATION_DEVICES, ANNOTATION_FRACTION, ANNOTATION_MEMORY, GPU_RESOURCE, INFERENCE_LABEL } from "../workload/gpu.ts";
import { KNATIVE_REVISION_LABEL } from "../podgroups/names.ts";

export interface MatchCondition {
  name: string;
  expression: string;
}

const SHARE_ANNOTATION_KEYS = [ANNOTATION_FRACTION, ANNOTATION_MEMORY, ANNOTATION_DEVICES];

const quote = (text: string) => `'${text.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
// Expressions are laid out one operand a line once they get long, so the committed manifest can be
// reviewed; CEL ignores the whitespace.
const WIDTH = 100;
function join(operator: "&&" | "||", terms: string[]): string {
  const flat = `(${terms.join(` ${operator} `)})`;
  if (flat.length <= WIDTH && !flat.includes("\n")) return flat;
  const indent = (text: string) => text.replace(/^/gm, "  ");
  return `(\n${terms.map((term, i) => indent(i === 0 ? term : `${operator} ${term}`)).join("\n")}\n)`;
}
const any = (terms: string[]) => join("||", terms);
const all = (terms: string[]) => join("&&", terms);

/** `has(r.a) && has(r.a.b) && …`: true when every field along the path is present. */
export function presentPath(root: string, fields: string[]): string {
  return all(fields.map((_, i) => `has(${[root, ...fields.slice(0, i + 1)].join(".")})`));
}

/** Alternatives, any of which marks one ObjectMeta: `infergate.dev/inference: "true"`, share annotations. */
function markedMetadata(meta: string, extraLabelKeys: string[] = []): string[] {
  const inferenceLabel = all([`has(${meta}.labels)`, `${quote(INFERENCE_LABEL)} in ${meta}.labels`, `${meta}.labels[${quote(INFERENCE_LABEL)}] == 'true'`]);
  const otherLabels = extraLabelKeys.map((key) => all([`has(${meta}.labels)`, `${quote(key)} in ${meta}.labels`]));
  const share = all([`has(${meta}.annotations)`, any(SHARE_ANNOTATION_KEYS.map((key) => `${quote(key)} in ${meta}.annotations`))]);
  return [inferenceLabel, ...otherLabels, share];
}

/**
 * Some container of a pod spec asks for `nvidia.com/gpu`, as a limit or a request. Init containers
 * count: a native sidecar (restartPolicy Always) holds its GPU for the pod's life, and quota charges an
 * init container's GPUs too, so skipping them would let such a pod past the quota check.
 */
function gpuContainers(podSpec: string): string {
  const asks = (part: string) => all([`has(c.resources.${part})`, `${quote(GPU_RESOURCE)} in c.resources.${part}`]);
  const inList = (list: string) => all([`has(${podSpec}.${list})`, `${podSpec}.${list}.exists(c, ${all(["has(c.resources)", any([asks("limits"), asks("requests")])])})`]);
  return any([inList("containers"), inList("initContainers")]);
}

/** A Deployment that infergate treats as an inference workload (or may have to: Knative's runtime). */
export function gpuDeployment(root: string): string {
  const ownedByRevision = all([
    `has(${root}.metadata.ownerReferences)`,
    `${root}.metadata.ownerReferences.exists(o, has(o.kind) && o.kind == 'Revision' && has(o.apiVersion) && o.apiVersion.startsWith('serving.knative.dev/'))`,
  ]);
  const template = `${root}.spec.template`;
  return all([
    `${root} != null`,
    `has(${root}.metadata)`,
    any([
      ...markedMetadata(`${root}.metadata`),
      ownedByRevision,
      all([presentPath(root, ["spec", "template", "metadata"]), any(markedMetadata(`${template}.metadata`))]),
      all([presentPath(root, ["spec", "template", "spec"]), gpuContainers(`${template}.spec`)]),
    ]),
  ]);
}

/** A Pod the mutating webhook may have to complete: GPU, marked, or one of a Knative revision's. */
export function gpuPod(root: string): string {
  return all([
    `${root} != null`,
    `has(${root}.metadata)`,
    any([...markedMetadata(`${root}.metadata`, [KNATIVE_REVISION_LABEL]), all([`has(${root}.spec)`, gpuContainers(`${root}.spec`)])]),
  ]);
}

const isKind = (group: string, kind: string) => `(request.kind.group == ${quote(group)} && request.kind.kind == ${quote(kind)})`;

/**
 * Deployments reach the webhook only when they (or, on UPDATE, their previous version) are GPU
 * workloads; every other request the rules select (Knative Services, deployments/scale, Pods,
 * infergate's own kinds) passes this condition untouched. The Scale object of deployments/scale has
 * no template, so scale requests are always sent: the webhook looks the Deployment up itself.
 */
export const GPU_DEPLOYMENTS_ONLY: MatchCondition = {
  name: "gpu-deployments-only",
  expression: any([`!${isKind("apps", "Deployment")}`, gpuDeployment("object"), gpuDeployment("oldObject")]),
};

/** Pods reach the (mutating) webhook only when they are GPU pods or a Knative revision's. */
export const GPU_PODS_ONLY: MatchCondition = {
  name: "gpu-pods-only",
  expression: any([`!${isKind("", "Pod")}`, gpuPod("object")]),
};
