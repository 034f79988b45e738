// infergate's Mutating/ValidatingWebhookConfigurations, pointed at a URL (never a ClusterIP Service:
// without kube-proxy the apiserver would dial an unroutable service IP). Pure: data in, objects out.

export interface WebhookConfigInput {
  /** e.g. https://127.0.0.1:8443 — the paths /mutate and /validate are appended. */
  baseUrl: string;
  /** Base64 PEM of the CA that signed the webhook's serving certificate. */
  caBundle: string;
  /** Object name of both configurations. */
  name?: string;
  /** infergate's own namespace, excluded like kube-system. */
  systemNamespace?: string;
}

export interface WebhookConfigurations {
  mutating: Record<string, any>;
  validating: Record<string, any>;
}

export const IGNORE_NAMESPACE_LABEL = "infergate.dev/ignore";

const CREATE_UPDATE = ["CREATE", "UPDATE"];

export function webhookConfigurations(input: WebhookConfigInput): WebhookConfigurations {
  const name = input.name ?? "infergate";
  const base = input.baseUrl.replace(/\/+$/, "");
  const namespaceSelector = {
    matchExpressions: [
      { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", input.systemNamespace ?? "infergate-system"] },
      { key: IGNORE_NAMESPACE_LABEL, operator: "DoesNotExist" },
    ],
  };
  const common = {
    admissionReviewVersions: ["v1"],
    // Quota reservations are side effects, skipped for dryRun requests.
    sideEffects: "NoneOnDryRun",
    matchPolicy: "Equivalent",
    namespaceSelector,
  };
  const mutating = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingWebhookConfiguration",
    metadata: { name, labels: { "app.kubernetes.io/name": "infergate" } },
    webhooks: [
      {
        name: "mutate.infergate.dev",
        clientConfig: { url: `${base}/mutate`, caBundle: input.caBundle },
        ...common,
        // Mutation only adds defaults: an unavailable webhook must never block deploys.
        failurePolicy: "Ignore",
        timeoutSeconds: 2,
        reinvocationPolicy: "IfNeeded",
        rules: [
          rule("apps", "v1", ["deployments"], CREATE_UPDATE, "Namespaced"),
          rule("serving.knative.dev", "v1", ["services"], CREATE_UPDATE, "Namespaced"),
          rule("", "v1", ["pods"], ["CREATE"], "Namespaced"),
        ],
      },
    ],
  };
  const validating = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: { name, labels: { "app.kubernetes.io/name": "infergate" } },
    webhooks: [
      {
        name: "validate.infergate.dev",
        clientConfig: { url: `${base}/validate`, caBundle: input.caBundle },
        ...common,
        // Quota must hold even when the webhook is down.
        failurePolicy: "Fail",
        timeoutSeconds: 5,
        rules: [
          rule("apps", "v1", ["deployments", "deployments/scale"], CREATE_UPDATE, "Namespaced"),
          rule("serving.knative.dev", "v1", ["services"], CREATE_UPDATE, "Namespaced"),
          // namespaceSelector never skips cluster-scoped objects, so these always reach the webhook.
          rule("infergate.dev", "v1alpha1", ["projects", "inferencepolicies"], CREATE_UPDATE, "Cluster"),
        ],
      },
    ],
  };
  return { mutating, validating };
}

function rule(apiGroup: string, apiVersion: string, resources: string[], operations: string[], scope: string) {
  return { apiGroups: [apiGroup], apiVersions: [apiVersion], resources, operations, scope };
}
