// Admission requests and policy stores as the webhook tests build them: one Project `team-a` owning the
// namespace `team-a`, one cluster-wide InferencePolicy, and requests shaped as the API server sends them.
import { runPipeline, type PipelineResult } from "../../src/admission/pipeline.ts";
import type { Phase, Plugin } from "../../src/admission/plugin.ts";
import type { AdmissionRequest, Operation } from "../../src/admission/types.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import type { InferencePolicySpec, ProjectSpec } from "../../src/policy/types.ts";
import { parseKnativeFeatures } from "../../src/workload/knative-features.ts";

export const PROJECT = "team-a";

export interface StoreOptions {
  policy?: InferencePolicySpec;
  /** Added to the Project's spec, which always owns the namespace `team-a`. */
  project?: Partial<ProjectSpec>;
  /** `knative-serving/config-features` data; Knative's defaults when absent. */
  knativeFeatures?: Record<string, string>;
}

export function storeWith({ policy = {}, project = {}, knativeFeatures }: StoreOptions = {}): PolicyStore {
  const store = new PolicyStore();
  store.upsertProject({ metadata: { name: PROJECT }, spec: { namespaces: [PROJECT], ...project } });
  store.upsertPolicy({ metadata: { name: "cluster-default" }, spec: policy });
  if (knativeFeatures) store.setKnativeFeatures(parseKnativeFeatures({ data: knativeFeatures }));
  return store;
}

/** What the API server names in a request for an object of each kind it sends to the webhooks. */
const REQUEST_TYPES: Record<string, Pick<AdmissionRequest, "kind" | "resource" | "subResource">> = {
  Deployment: { kind: { group: "apps", version: "v1", kind: "Deployment" }, resource: { group: "apps", version: "v1", resource: "deployments" } },
  Scale: {
    kind: { group: "autoscaling", version: "v1", kind: "Scale" },
    resource: { group: "apps", version: "v1", resource: "deployments" },
    subResource: "scale",
  },
  Service: {
    kind: { group: "serving.knative.dev", version: "v1", kind: "Service" },
    resource: { group: "serving.knative.dev", version: "v1", resource: "services" },
  },
  Pod: { kind: { group: "", version: "v1", kind: "Pod" }, resource: { group: "", version: "v1", resource: "pods" } },
};

export interface RequestOptions {
  /** UPDATE when there is an old object, else CREATE, unless given. */
  operation?: Operation;
  oldObject?: any;
  /** Who sends it; plugins do not read it, so it only says whose request a test plays. */
  username?: string;
}

/** The request the API server sends for `object`, in the object's namespace (else `team-a`). */
export function admissionRequest(object: any, { operation, oldObject, username = "alice@example.com" }: RequestOptions = {}): AdmissionRequest {
  const type = REQUEST_TYPES[object.kind];
  if (!type) throw new Error(`no admission request type for kind ${object.kind}`);
  return {
    uid: "7a3e9c51-0f42-4b8d-9e6a-2d4c8b1f0e37",
    ...type,
    namespace: object.metadata?.namespace ?? PROJECT,
    name: object.metadata?.name,
    operation: operation ?? (oldObject ? "UPDATE" : "CREATE"),
    userInfo: { username },
    object,
    ...(oldObject ? { oldObject } : {}),
  };
}

export function runAdmission(store: PolicyStore, request: AdmissionRequest, phase: Phase, plugins: readonly Plugin[]): PipelineResult {
  return runPipeline({ request, phase, plugins, policies: store, cluster: { knativeFeatures: store.knativeFeatures } });
}

export interface AdmitOptions extends RequestOptions {
  phase?: Phase;
  plugins?: readonly Plugin[];
}

/** `admit(store, object, options?)` for one test file: its plugins and phase unless a call names others. */
export function admitter(defaults: { plugins: readonly Plugin[]; phase?: Phase; username?: string }) {
  return (store: PolicyStore, object: any, { phase, plugins, ...request }: AdmitOptions = {}): PipelineResult =>
    runAdmission(store, admissionRequest(object, { username: defaults.username, ...request }), phase ?? defaults.phase ?? "mutate", plugins ?? defaults.plugins);
}

/** Mutation, then validation of the mutated object (what the API server does), then a second mutation. */
export function mutateThenValidate(store: PolicyStore, plugins: readonly Plugin[], object: any) {
  const mutated = runAdmission(store, admissionRequest(object), "mutate", plugins);
  const validated = runAdmission(store, admissionRequest(mutated.object), "validate", plugins);
  const again = runAdmission(store, admissionRequest(mutated.object), "mutate", plugins);
  return { mutated, validated, again, object: mutated.object as any };
}
