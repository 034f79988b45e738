// Registers infergate's webhooks with a running cluster and waits until the apiserver enforces them.
// The apiserver learns about webhook configurations through an informer, so "created" is not yet
// "in force"; a probe configuration created afterwards shows when the informer has caught up.
import { poll } from "./api.ts";
import { applyObjects } from "./apply.ts";
import type { ClusterAccess } from "./cluster.ts";
import { freePort, LOOPBACK } from "./ports.ts";
import { webhookConfigurations } from "../install/webhook-config.ts";

export interface WebhookRegistration {
  baseUrl: string;
  caBundle: string;
  name?: string;
}

/**
 * Not the install manifests' name ("infergate"): `kubectl apply -k manifests/ --dry-run=server` in the
 * e2e suite would otherwise patch a url-form configuration with a service and be rejected.
 */
export const LOCAL_CONFIGURATION_NAME = "infergate-local";

const PROBE_LABEL = "infergate.dev/webhook-probe";
const PROBE_NAME = "infergate-probe";

export async function registerWebhooks(cluster: Pick<ClusterAccess, "kubectl" | "api">, registration: WebhookRegistration): Promise<void> {
  const { mutating, validating } = webhookConfigurations({
    baseUrl: registration.baseUrl,
    caBundle: registration.caBundle,
    name: registration.name ?? LOCAL_CONFIGURATION_NAME,
  });
  await applyObjects(cluster, [mutating, validating]);
  await waitUntilEnforced(cluster);
}

export async function unregisterWebhooks(cluster: Pick<ClusterAccess, "api">, name = LOCAL_CONFIGURATION_NAME): Promise<void> {
  for (const kind of ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"]) {
    await cluster.api("DELETE", `/apis/admissionregistration.k8s.io/v1/${kind}/${name}`);
  }
}

/**
 * Creates probe webhooks (after the real ones) that fail every dry-run ConfigMap carrying the probe
 * label, pointing at a closed loopback port. Informer events arrive in order, so once the apiserver
 * calls a probe it also knows the real configuration of the same kind.
 */
async function waitUntilEnforced(cluster: Pick<ClusterAccess, "kubectl" | "api">): Promise<void> {
  const deadUrl = `https://${LOOPBACK}:${await freePort()}/probe`;
  const probe = (kind: string, webhookName: string) => ({
    apiVersion: "admissionregistration.k8s.io/v1",
    kind,
    metadata: { name: PROBE_NAME },
    webhooks: [
      {
        name: webhookName,
        clientConfig: { url: deadUrl },
        admissionReviewVersions: ["v1"],
        sideEffects: "None",
        failurePolicy: "Fail",
        timeoutSeconds: 1,
        objectSelector: { matchLabels: { [PROBE_LABEL]: "true" } },
        rules: [{ apiGroups: [""], apiVersions: ["v1"], resources: ["configmaps"], operations: ["CREATE"] }],
      },
    ],
  });
  const tryCreate = async () => {
    const res = await cluster.api("POST", "/api/v1/namespaces/default/configmaps?dryRun=All", {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { generateName: "probe-", labels: { [PROBE_LABEL]: "true" } },
    });
    return res.status < 300 ? "" : res.text;
  };
  const admissionPath = "/apis/admissionregistration.k8s.io/v1";
  try {
    await applyObjects(cluster, [
      probe("MutatingWebhookConfiguration", "mutate-probe.infergate.dev"),
      probe("ValidatingWebhookConfiguration", "validate-probe.infergate.dev"),
    ]);
    const seen = (name: string) => async () => ((await tryCreate()).includes(name) ? true : undefined);
    await poll("the mutating webhook configuration to take effect", seen("mutate-probe.infergate.dev"), { timeoutMs: 30_000 });
    await cluster.api("DELETE", `${admissionPath}/mutatingwebhookconfigurations/${PROBE_NAME}`);
    await poll("the validating webhook configuration to take effect", seen("validate-probe.infergate.dev"), { timeoutMs: 30_000 });
  } finally {
    await cluster.api("DELETE", `${admissionPath}/mutatingwebhookconfigurations/${PROBE_NAME}`);
    await cluster.api("DELETE", `${admissionPath}/validatingwebhookconfigurations/${PROBE_NAME}`);
  }
  await poll("the probe webhooks to be gone", async () => ((await tryCreate()) === "" ? true : undefined), { timeoutMs: 30_000 });
}
