import { describe, expect, it } from "vitest";
import {
  IGNORE_NAMESPACE_LABEL,
  MUTATING_WEBHOOK_NAME,
  VALIDATING_PODS_WEBHOOK_NAME,
  VALIDATING_WEBHOOK_NAME,
  WEBHOOK_SERVICE,
  webhookConfigurations,
} from "./webhook-config.ts";
import { GPU_DEPLOYMENTS_ONLY, GPU_PODS_ONLY, presentPath } from "./match-conditions.ts";

const local = webhookConfigurations({ baseUrl: "https://127.0.0.1:8443/", caBundle: "Q0E=" });
const installed = webhookConfigurations({ service: WEBHOOK_SERVICE });
const byName = (config: Record<string, any>, name: string) => config.webhooks.find((w: any) => w.name === name);

describe("webhookConfigurations: where the API server sends requests", () => {
  it("local form: URLs with the caBundle", () => {
    expect(byName(local.mutating, MUTATING_WEBHOOK_NAME).clientConfig).toEqual({ url: "https://127.0.0.1:8443/mutate", caBundle: "Q0E=" });
    expect(byName(local.validating, VALIDATING_WEBHOOK_NAME).clientConfig).toEqual({ url: "https://127.0.0.1:8443/validate", caBundle: "Q0E=" });
    expect(byName(local.validating, VALIDATING_PODS_WEBHOOK_NAME).clientConfig).toEqual({ url: "https://127.0.0.1:8443/validate", caBundle: "Q0E=" });
  });

  it("install form: the infergate-webhook Service, and no caBundle to overwrite the injected one", () => {
    expect(byName(installed.mutating, MUTATING_WEBHOOK_NAME).clientConfig).toEqual({
      service: { namespace: "infergate-system", name: "infergate-webhook", path: "/mutate", port: 443 },
    });
    for (const hook of installed.validating.webhooks) {
      expect(hook.clientConfig).toEqual({ service: { namespace: "infergate-system", name: "infergate-webhook", path: "/validate", port: 443 } });
    }
  });

  it("names both configurations infergate unless told otherwise", () => {
    expect(installed.mutating.metadata.name).toBe("infergate");
    expect(installed.validating.metadata.name).toBe("infergate");
    const custom = webhookConfigurations({ baseUrl: "https://127.0.0.1:1", name: "ig" });
    expect([custom.mutating.metadata.name, custom.validating.metadata.name]).toEqual(["ig", "ig"]);
  });

  it("returns independent objects: editing one configuration leaves the other alone", () => {
    const { mutating, validating } = webhookConfigurations({ service: WEBHOOK_SERVICE });
    mutating.metadata.labels.extra = "x";
    expect(validating.metadata.labels.extra).toBeUndefined();
  });
});

describe("webhookConfigurations: failure behaviour", () => {
  const mutate = byName(installed.mutating, MUTATING_WEBHOOK_NAME);
  const validate = byName(installed.validating, VALIDATING_WEBHOOK_NAME);
  const validatePods = byName(installed.validating, VALIDATING_PODS_WEBHOOK_NAME);

  it("mutation fails open within 2 s and may be reinvoked", () => {
    expect(mutate).toMatchObject({ failurePolicy: "Ignore", timeoutSeconds: 2, reinvocationPolicy: "IfNeeded" });
  });

  it("quota and policy validation fail closed, with 5 s for the compare-and-swap", () => {
    expect(validate).toMatchObject({ failurePolicy: "Fail", timeoutSeconds: 5 });
    expect(validate.reinvocationPolicy).toBeUndefined();
  });

  it("bare GPU pods are validated but fail open, so controllers can recreate pods during an outage", () => {
    expect(validatePods).toMatchObject({ failurePolicy: "Ignore", timeoutSeconds: 5 });
    expect(validatePods.objectSelector.matchExpressions).toEqual([
      { key: "pod-template-hash", operator: "DoesNotExist" },
      { key: "serving.knative.dev/revision", operator: "DoesNotExist" },
    ]);
  });

  it("every webhook: v1 reviews, side effects only outside dry runs, equivalent versions matched", () => {
    for (const hook of [...installed.mutating.webhooks, ...installed.validating.webhooks]) {
      expect(hook).toMatchObject({ admissionReviewVersions: ["v1"], sideEffects: "NoneOnDryRun", matchPolicy: "Equivalent" });
    }
  });
});

describe("webhookConfigurations: what is intercepted", () => {
  const rulesOf = (hook: any) => hook.rules.map((r: any) => ({ group: r.apiGroups, version: r.apiVersions, resources: r.resources, ops: r.operations, scope: r.scope }));

  it("mutates Deployments and Knative Services on create and update, Pods on create", () => {
    expect(rulesOf(byName(installed.mutating, MUTATING_WEBHOOK_NAME))).toEqual([
      { group: ["apps"], version: ["v1"], resources: ["deployments"], ops: ["CREATE", "UPDATE"], scope: "Namespaced" },
      { group: ["serving.knative.dev"], version: ["v1"], resources: ["services"], ops: ["CREATE", "UPDATE"], scope: "Namespaced" },
      { group: [""], version: ["v1"], resources: ["pods"], ops: ["CREATE"], scope: "Namespaced" },
    ]);
  });

  it("validates Deployments, their scale subresource, Knative Services and infergate's own kinds", () => {
    expect(rulesOf(byName(installed.validating, VALIDATING_WEBHOOK_NAME))).toEqual([
      { group: ["apps"], version: ["v1"], resources: ["deployments"], ops: ["CREATE", "UPDATE"], scope: "Namespaced" },
      { group: ["apps"], version: ["v1"], resources: ["deployments/scale"], ops: ["UPDATE"], scope: "Namespaced" },
      { group: ["serving.knative.dev"], version: ["v1"], resources: ["services"], ops: ["CREATE", "UPDATE"], scope: "Namespaced" },
      { group: ["infergate.dev"], version: ["v1alpha1"], resources: ["projects", "inferencepolicies"], ops: ["CREATE", "UPDATE"], scope: "Cluster" },
    ]);
  });

  it("never intercepts projects/status (the quota ledger writes it), DELETE, or anything by wildcard", () => {
    const all = [...installed.mutating.webhooks, ...installed.validating.webhooks].flatMap((h: any) => h.rules);
    const resources = all.flatMap((r: any) => r.resources);
    expect(resources).not.toContain("projects/status");
    expect(resources.some((r: string) => r.includes("*"))).toBe(false);
    for (const r of all) {
      expect(r.operations).not.toContain("DELETE");
      expect(r.operations).not.toContain("*");
      expect(r.apiGroups).not.toContain("*");
      expect(r.apiVersions).not.toContain("*");
    }
  });

  it("skips kube-system, infergate's namespace and namespaces that opt out, in every webhook", () => {
    for (const hook of [...installed.mutating.webhooks, ...installed.validating.webhooks]) {
      expect(hook.namespaceSelector.matchExpressions).toEqual([
        { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", "infergate-system"] },
        { key: IGNORE_NAMESPACE_LABEL, operator: "DoesNotExist" },
      ]);
    }
  });

  it("honours a custom system namespace and extra namespace requirements (tests scope themselves with them)", () => {
    const scoped = webhookConfigurations({
      baseUrl: "https://127.0.0.1:1",
      systemNamespace: "ops",
      namespaceRequirements: [{ key: "test", operator: "In", values: ["abc"] }],
    });
    expect(scoped.validating.webhooks[0].namespaceSelector.matchExpressions).toEqual([
      { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", "ops"] },
      { key: IGNORE_NAMESPACE_LABEL, operator: "DoesNotExist" },
      { key: "test", operator: "In", values: ["abc"] },
    ]);
  });
});

describe("matchConditions: only GPU workloads reach the webhooks", () => {
  it("the fail-closed webhook and mutation filter Deployments; bare-pod validation and mutation filter Pods", () => {
    const names = (hook: any) => hook.matchConditions.map((c: any) => c.name);
    expect(names(byName(installed.mutating, MUTATING_WEBHOOK_NAME))).toEqual(["gpu-deployments-only", "gpu-pods-only"]);
    expect(names(byName(installed.validating, VALIDATING_WEBHOOK_NAME))).toEqual(["gpu-deployments-only"]);
    expect(names(byName(installed.validating, VALIDATING_PODS_WEBHOOK_NAME))).toEqual(["gpu-pods-only"]);
  });

  it("the Deployment condition passes every other kind through (Knative Services, deployments/scale, own kinds)", () => {
    expect(GPU_DEPLOYMENTS_ONLY.expression).toMatch(/^\(\s*!\(request\.kind\.group == 'apps' && request\.kind\.kind == 'Deployment'\)\s*\|\|/);
    // subResource is omitted from the request when empty; reading it would be an evaluation error.
    expect(GPU_DEPLOYMENTS_ONLY.expression).not.toContain("subResource");
  });

  it("recognizes every form of GPU request the webhook does, on the new and on the old object", () => {
    for (const root of ["object", "oldObject"]) {
      const e = GPU_DEPLOYMENTS_ONLY.expression;
      expect(e).toContain(`${root} != null`);
      expect(e).toContain(`'nvidia.com/gpu' in c.resources.limits`);
      expect(e).toContain(`'nvidia.com/gpu' in c.resources.requests`);
      // A GPU only in an init container (a native sidecar serving the model) is charged by quota too.
      expect(e).toContain(`${root}.spec.template.spec.initContainers.exists(c, `);
      for (const meta of [`${root}.metadata`, `${root}.spec.template.metadata`]) {
        expect(e).toContain(`'gpu-fraction' in ${meta}.annotations`);
        expect(e).toContain(`'gpu-memory' in ${meta}.annotations`);
        expect(e).toContain(`${meta}.labels['infergate.dev/inference'] == 'true'`);
      }
      expect(e).toContain(`${root}.metadata.ownerReferences.exists(o, has(o.kind) && o.kind == 'Revision'`);
    }
  });

  it("pods: GPU, marked, or a Knative revision's", () => {
    const e = GPU_PODS_ONLY.expression;
    expect(e).toMatch(/^\(\s*!\(request\.kind\.group == '' && request\.kind\.kind == 'Pod'\)/);
    expect(e).toContain("object != null");
    expect(e).toContain("'serving.knative.dev/revision' in object.metadata.labels");
    expect(e).toContain("'nvidia.com/gpu' in c.resources.limits");
    expect(e).toContain("object.spec.initContainers.exists(c, ");
    expect(e).not.toContain("oldObject");
  });

  it("guards every field it reads: each path is preceded by has() of its parents", () => {
    expect(presentPath("object", ["spec", "template", "spec"])).toBe("(has(object.spec) && has(object.spec.template) && has(object.spec.template.spec))");
    for (const { expression } of [GPU_DEPLOYMENTS_ONLY, GPU_PODS_ONLY]) {
      for (const read of expression.matchAll(/\b(object|oldObject)((?:\.[A-Za-z]+)+)/g)) {
        const fields = read[2]!.slice(1).split(".");
        // Reading root.a.b.c needs has(root.a), has(root.a.b) before it (metadata is checked on its own).
        for (let i = 1; i < fields.length; i++) {
          const parent = `${read[1]}.${fields.slice(0, i).join(".")}`;
          expect(expression.slice(0, read.index), `${read[0]} without has(${parent}) first`).toContain(`has(${parent})`);
        }
      }
    }
  });

  it("is syntactically balanced (parentheses and quotes), so the API server can compile it", () => {
    for (const { expression } of [GPU_DEPLOYMENTS_ONLY, GPU_PODS_ONLY]) {
      let depth = 0;
      for (const ch of expression.replace(/'[^']*'/g, "''")) {
        if (ch === "(") depth++;
        if (ch === ")") depth--;
        expect(depth).toBeGreaterThanOrEqual(0);
      }
      expect(depth).toBe(0);
      expect((expression.match(/'/g) ?? []).length % 2).toBe(0);
    }
  });
});
