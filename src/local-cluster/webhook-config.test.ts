import { describe, expect, it } from "vitest";
import { IGNORE_NAMESPACE_LABEL, webhookConfigurations } from "./webhook-config.ts";

const { mutating, validating } = webhookConfigurations({ baseUrl: "https://127.0.0.1:8443/", caBundle: "Q0E=" });
const [mutate] = mutating.webhooks;
const [validate] = validating.webhooks;

describe("webhookConfigurations", () => {
  it("points both webhooks at URLs with the caBundle, never at a Service", () => {
    expect(mutate.clientConfig).toEqual({ url: "https://127.0.0.1:8443/mutate", caBundle: "Q0E=" });
    expect(validate.clientConfig).toEqual({ url: "https://127.0.0.1:8443/validate", caBundle: "Q0E=" });
  });

  it("lets mutation fail open quickly and be reinvoked, and validation fail closed", () => {
    expect(mutate).toMatchObject({ failurePolicy: "Ignore", timeoutSeconds: 2, reinvocationPolicy: "IfNeeded", sideEffects: "NoneOnDryRun" });
    expect(validate).toMatchObject({ failurePolicy: "Fail", timeoutSeconds: 5, sideEffects: "NoneOnDryRun" });
    expect(validate.reinvocationPolicy).toBeUndefined();
  });

  it("mutates Deployments, Knative Services and new Pods", () => {
    expect(mutate.rules).toEqual([
      expect.objectContaining({ apiGroups: ["apps"], apiVersions: ["v1"], resources: ["deployments"], operations: ["CREATE", "UPDATE"] }),
      expect.objectContaining({ apiGroups: ["serving.knative.dev"], apiVersions: ["v1"], resources: ["services"] }),
      expect.objectContaining({ apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], operations: ["CREATE"] }),
    ]);
  });

  it("validates scale-ups through deployments/scale and infergate's own resources", () => {
    const resources = validate.rules.flatMap((r: any) => r.resources);
    expect(resources).toEqual(["deployments", "deployments/scale", "services", "projects", "inferencepolicies"]);
    expect(validate.rules.at(-1)).toMatchObject({ apiGroups: ["infergate.dev"], apiVersions: ["v1alpha1"], scope: "Cluster" });
  });

  it("skips kube-system, infergate's namespace and namespaces that opt out", () => {
    for (const hook of [mutate, validate]) {
      expect(hook.namespaceSelector.matchExpressions).toEqual([
        { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", "infergate-system"] },
        { key: IGNORE_NAMESPACE_LABEL, operator: "DoesNotExist" },
      ]);
    }
  });

  it("honours a custom name and system namespace", () => {
    const custom = webhookConfigurations({ baseUrl: "https://127.0.0.1:1", caBundle: "x", name: "ig", systemNamespace: "ops" });
    expect(custom.mutating.metadata.name).toBe("ig");
    expect(custom.validating.webhooks[0].namespaceSelector.matchExpressions[0].values).toEqual(["kube-system", "ops"]);
  });
});
