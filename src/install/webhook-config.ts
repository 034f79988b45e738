// infergate's Mutating/ValidatingWebhookConfigurations, in one pure function for both places they are
// used: the committed install manifest (manifests/base/webhooks.yaml, clientConfig.service) and the local
// test cluster (clientConfig.url on 127.0.0.1: without kube-proxy the API server could not reach a
// Service). Data in, objects out; scripts/generate-manifests.ts writes the manifest from it.
import { KNATIVE_REVISION_LABEL, POD_TEMPLATE_HASH_LABEL } from "../podgroups/names.ts";
import { GPU_DEPLOYMENTS_ONLY, GPU_PODS_ONLY, type MatchCondition } from "./match-conditions.ts";

export const IGNORE_NAMESPACE_LABEL = "infergate.dev/ignore";
export const SYSTEM_NAMESPACE = "infergate-system";
export const CONFIGURATION_NAME = "infergate";
export const MUTATING_WEBHOOK_NAME = "mutate.infergate.dev";
export const VALIDATING_WEBHOOK_NAME = "validate.infergate.dev";
export const VALIDATING_PODS_WEBHOOK_NAME = "validate-pods.infergate.dev";
export const MUTATE_PATH = "/mutate";
export const VALIDATE_PATH = "/validate";
/** Mutation only adds defaults, so it may give up quickly; the API server's own default is 10 s. */
export const MUTATION_TIMEOUT_SECONDS = 2;
/** Room for a quota reservation by compare-and-swap (the ledger gives up after 3.5 s). */
export const VALIDATION_TIMEOUT_SECONDS = 5;

export interface ServiceReference {
  name: string;
  namespace: string;
  port?: number;
}

/** The webhook Service of the install manifests. */
export const WEBHOOK_SERVICE: ServiceReference = { name: "infergate-webhook", namespace: SYSTEM_NAMESPACE, port: 443 };

export interface LabelSelectorRequirement {
  key: string;
  operator: "In" | "NotIn" | "Exists" | "DoesNotExist";
  values?: string[];
}

interface CommonInput {
  /**
   * Base64 PEM of the CA that signed the serving certificate. Left out of the install manifest on
   * purpose: it is patched in at runtime, and a placeholder would overwrite the real bundle on every
   * `kubectl apply -k` (an upgrade would then break TLS and, through Fail, block GPU deploys).
   */
  caBundle?: string;
  /** Object name of both configurations. */
  name?: string;
  /** infergate's own namespace, excluded like kube-system. */
  systemNamespace?: string;
  /** More namespace-selector requirements, ANDed with the exclusions (a test scopes a configuration to its namespace). */
  namespaceRequirements?: LabelSelectorRequirement[];
}

/** Local form: e.g. https://127.0.0.1:8443, to which /mutate and /validate are appended. */
export interface UrlInput extends CommonInput {
  baseUrl: string;
  service?: undefined;
}

/** In-cluster form: the webhook's Service. */
export interface ServiceInput extends CommonInput {
  service: ServiceReference;
  baseUrl?: undefined;
}

export type WebhookConfigInput = UrlInput | ServiceInput;

export interface WebhookConfigurations {
  mutating: Record<string, any>;
  validating: Record<string, any>;
}

const CREATE_UPDATE = ["CREATE", "UPDATE"];

export function webhookConfigurations(input: WebhookConfigInput): WebhookConfigurations {
  const name = input.name ?? CONFIGURATION_NAME;
  const clientConfig = (path: string) => ({
    ...(input.service !== undefined
      ? { service: { namespace: input.service.namespace, name: input.service.name, path, port: input.service.port ?? 443 } }
      : { url: `${input.baseUrl.replace(/\/+$/, "")}${path}` }),
    ...(input.caBundle ? { caBundle: input.caBundle } : {}),
  });
  const common = {
    admissionReviewVersions: ["v1"],
    // Quota reservations are side effects, and they are skipped for dryRun requests.
    sideEffects: "NoneOnDryRun",
    // Requests through any version of a selected resource are sent, converted to the version below.
    matchPolicy: "Equivalent",
    namespaceSelector: namespaceSelector(input.systemNamespace ?? SYSTEM_NAMESPACE, input.namespaceRequirements ?? []),
  };
  // Its own component label, so an install can apply everything else first (docs/operations.md).
  const metadata = () => ({ name, labels: { "app.kubernetes.io/name": "infergate", "app.kubernetes.io/component": "webhook-configuration" } });
  const mutating = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingWebhookConfiguration",
    metadata: metadata(),
    webhooks: [
      {
        name: MUTATING_WEBHOOK_NAME,
        clientConfig: clientConfig(MUTATE_PATH),
        ...common,
        // Mutation only adds defaults: an unavailable webhook must never block a deploy.
        failurePolicy: "Ignore",
        timeoutSeconds: MUTATION_TIMEOUT_SECONDS,
        // Later mutating webhooks may add a GPU limit or change the template; infergate's mutation is idempotent.
        reinvocationPolicy: "IfNeeded",
        rules: [
          rule("apps", "v1", ["deployments"], CREATE_UPDATE, "Namespaced"),
          rule("serving.knative.dev", "v1", ["services"], CREATE_UPDATE, "Namespaced"),
          rule("", "v1", ["pods"], ["CREATE"], "Namespaced"),
        ],
        matchConditions: conditions([GPU_DEPLOYMENTS_ONLY, GPU_PODS_ONLY]),
      },
    ],
  };
  const validating = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: metadata(),
    webhooks: [
      {
        name: VALIDATING_WEBHOOK_NAME,
        clientConfig: clientConfig(VALIDATE_PATH),
        ...common,
        // Quota must hold while the webhook is down; the matchConditions keep that to GPU workloads.
        failurePolicy: "Fail",
        timeoutSeconds: VALIDATION_TIMEOUT_SECONDS,
        rules: [
          rule("apps", "v1", ["deployments"], CREATE_UPDATE, "Namespaced"),
          // kubectl scale, the HPA and Knative's autoscaler change replicas here; scale-downs are allowed by the webhook.
          rule("apps", "v1", ["deployments/scale"], ["UPDATE"], "Namespaced"),
          rule("serving.knative.dev", "v1", ["services"], CREATE_UPDATE, "Namespaced"),
          // Cluster-scoped, so the namespaceSelector does not apply. Not projects/status: the quota ledger writes it.
          rule("infergate.dev", "v1alpha1", ["projects", "inferencepolicies"], CREATE_UPDATE, "Cluster"),
        ],
        matchConditions: conditions([GPU_DEPLOYMENTS_ONLY]),
      },
      {
        // GPU pods no Deployment or Knative revision covers (bare pods, other controllers' pods) are
        // charged at their own CREATE (PRODUCT.md §5), and the policy rules judge them on the pod
        // (docs/decisions/006). Pods of Deployments and revisions are already paid for, and judged, with
        // their workload, so they are not sent at all.
        name: VALIDATING_PODS_WEBHOOK_NAME,
        clientConfig: clientConfig(VALIDATE_PATH),
        ...common,
        objectSelector: {
          matchExpressions: [
            { key: POD_TEMPLATE_HASH_LABEL, operator: "DoesNotExist" },
            { key: KNATIVE_REVISION_LABEL, operator: "DoesNotExist" },
          ],
        },
        // Controllers and the kubelet must be able to recreate pods while infergate is down; a pod
        // admitted then still shows in the project's allocation, and later admissions see it.
        failurePolicy: "Ignore",
        timeoutSeconds: VALIDATION_TIMEOUT_SECONDS,
        rules: [rule("", "v1", ["pods"], ["CREATE"], "Namespaced")],
        matchConditions: conditions([GPU_PODS_ONLY]),
      },
    ],
  };
  return { mutating, validating };
}

function namespaceSelector(systemNamespace: string, extra: LabelSelectorRequirement[]) {
  return {
    matchExpressions: [
      // kubernetes.io/metadata.name is set by the API server on every namespace and cannot be changed.
      { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", systemNamespace] },
      { key: IGNORE_NAMESPACE_LABEL, operator: "DoesNotExist" },
      ...extra.map((r) => ({ ...r, ...(r.values ? { values: [...r.values] } : {}) })),
    ],
  };
}

function conditions(list: MatchCondition[]): MatchCondition[] {
  return list.map((c) => ({ name: c.name, expression: c.expression }));
}

function rule(apiGroup: string, apiVersion: string, resources: string[], operations: string[], scope: string) {
  return { apiGroups: [apiGroup], apiVersions: [apiVersion], resources, operations, scope };
}
