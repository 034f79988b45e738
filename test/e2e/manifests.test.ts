// The install manifests against a real API server:
// - every object of `kubectl apply -k manifests/` and of each overlay is accepted (server-side dry run),
//   and the pods pass the restricted Pod Security level;
// - the RBAC grants what the code calls and nothing around it, as the real authorizer decides;
// - the webhook configurations' matchConditions, compiled and evaluated by the API server: with the
//   webhook down, only GPU workloads (and the kinds always intercepted) are refused.
// Nothing here sends traffic anywhere: Services and APIServices are only dry-run, and the "down"
// webhook is a configuration of this file's own, pointing at a closed port on 127.0.0.1 and scoped
// by a namespace label to this file's namespace.
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { poll } from "../../src/local-cluster/api.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { freePort, LOOPBACK } from "../../src/local-cluster/ports.ts";
import { IGNORE_NAMESPACE_LABEL, VALIDATING_WEBHOOK_NAME, webhookConfigurations } from "../../src/install/webhook-config.ts";
import { deployment, getJson, kubectlOk, uniqueName, useCluster } from "./harness.ts";

const cluster = useCluster();
const MANIFESTS = path.join(REPO_ROOT, "manifests");
const GPU = "nvidia.com/gpu";

async function kustomize(dir: string): Promise<Record<string, any>[]> {
  const res = await kubectlOk(cluster, ["kustomize", dir]);
  return parseAllDocuments(res.stdout).map((d) => d.toJS()).filter((o) => o);
}

const list = (items: Record<string, any>[]) => JSON.stringify({ apiVersion: "v1", kind: "List", items });

describe("kubectl apply -k, server-side dry run", () => {
  it("accepts every object of manifests/", async () => {
    const objects = await kustomize(MANIFESTS);
    const res = await kubectlOk(cluster, ["apply", "-k", MANIFESTS, "--dry-run=server"]);
    const applied = res.stdout.trim().split("\n").filter((line) => line.endsWith("(server dry run)"));
    expect(applied).toHaveLength(objects.length);
    for (const kind of ["CustomResourceDefinition", "Deployment", "PodDisruptionBudget", "Service", "APIService", "NetworkPolicy", "ClusterRole", "PriorityClass"]) {
      expect(objects.some((o) => o.kind === kind), kind).toBe(true);
    }
    expect(res.stdout).toContain("mutatingwebhookconfiguration.admissionregistration.k8s.io/infergate");
    expect(res.stdout).toContain("validatingwebhookconfiguration.admissionregistration.k8s.io/infergate");
  });

  it("splits by label as docs/operations.md says: install the webhook configurations last, keep CRDs and PriorityClasses on uninstall", async () => {
    const objects = await kustomize(MANIFESTS);
    const selected = async (selector: string) =>
      (await kubectlOk(cluster, ["apply", "-k", MANIFESTS, "-l", selector, "--dry-run=server", "-o", "name"])).stdout.trim().split("\n").sort();
    const configurations = await selected("app.kubernetes.io/component=webhook-configuration");
    expect(configurations).toEqual(["mutatingwebhookconfiguration.admissionregistration.k8s.io/infergate", "validatingwebhookconfiguration.admissionregistration.k8s.io/infergate"]);
    const first = await selected("app.kubernetes.io/component!=webhook-configuration");
    expect(first).toHaveLength(objects.length - 2);
    expect(first.filter((name) => name.includes("webhookconfiguration"))).toEqual([]);
    const removable = await selected("app.kubernetes.io/component notin (crd,priority-class)");
    const kept = objects.filter((o) => o.kind === "CustomResourceDefinition" || o.kind === "PriorityClass");
    expect(kept).toHaveLength(4);
    expect(removable).toHaveLength(objects.length - kept.length);
    expect(removable.filter((name) => name.startsWith("customresourcedefinition") || name.startsWith("priorityclass"))).toEqual([]);
  });

  it.each(["plain", "kind"])("accepts the output of `kubectl kustomize manifests/overlays/%s`", async (overlay) => {
    const objects = await kustomize(path.join(MANIFESTS, "overlays", overlay));
    const res = await kubectlOk(cluster, ["apply", "--dry-run=server", "-f", "-"], list(objects));
    expect(res.stdout.trim().split("\n").filter((line) => line.endsWith("(server dry run)"))).toHaveLength(objects.length);
  });

  describe("the pods under the restricted Pod Security level", () => {
    const namespace = uniqueName("psa");
    beforeAll(async () => {
      await kubectlOk(cluster, ["create", "namespace", namespace]);
      await kubectlOk(cluster, ["label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted"]);
      // Shows the level is enforced here before the real pods are judged by it.
      const privileged = { apiVersion: "v1", kind: "Pod", metadata: { name: "privileged", namespace }, spec: { containers: [{ name: "c", image: "registry.example.com/x:1", securityContext: { privileged: true } }] } };
      await poll(
        "Pod Security admission to enforce the restricted level",
        async () => ((await cluster.kubectl(["create", "--dry-run=server", "-f", "-"], { input: JSON.stringify(privileged) })).stderr.includes("violates PodSecurity") ? true : undefined),
        { timeoutMs: 30_000, intervalMs: 500 },
      );
    });
    afterAll(async () => {
      await cluster.kubectl(["delete", "namespace", namespace, "--wait=false"]);
    });

    it.each(["infergate-webhook", "infergate-adapter"])("%s: its pod is admitted, with no warning", async (name) => {
      const source = (await kustomize(MANIFESTS)).find((o) => o.kind === "Deployment" && o.metadata.name === name)!;
      // The namespace's default ServiceAccount stands in for infergate's, which lives elsewhere.
      const pod = { apiVersion: "v1", kind: "Pod", metadata: { name, namespace }, spec: { ...source.spec.template.spec, serviceAccountName: "default" } };
      const res = await poll(
        `a dry-run pod of ${name} in ${namespace}`,
        async () => {
          const attempt = await cluster.kubectl(["create", "--dry-run=server", "-f", "-"], { input: JSON.stringify(pod) });
          // Until the controller manager has made the namespace's default ServiceAccount.
          return attempt.code !== 0 && attempt.stderr.includes("serviceaccount") ? undefined : attempt;
        },
        { timeoutMs: 30_000, intervalMs: 500 },
      );
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
    });
  });
});

describe("RBAC, as the API server's authorizer sees it", () => {
  let rbacObjects: Record<string, any>[] = [];
  const subject = (account: string) => ({
    user: `system:serviceaccount:infergate-system:${account}`,
    groups: ["system:serviceaccounts", "system:serviceaccounts:infergate-system", "system:authenticated"],
  });

  async function allowed(account: string, attributes: Record<string, string>): Promise<boolean> {
    const res = await cluster.api("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
      apiVersion: "authorization.k8s.io/v1",
      kind: "SubjectAccessReview",
      spec: { ...subject(account), resourceAttributes: attributes },
    });
    if (res.status !== 201) throw new Error(`SubjectAccessReview failed: ${res.status} ${res.text}`);
    return res.json().status?.allowed === true;
  }

  beforeAll(async () => {
    // Only the RBAC objects are created for real: they are inert without pods that use them.
    rbacObjects = (await kustomize(MANIFESTS)).filter((o) => ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"].includes(o.kind));
    await kubectlOk(cluster, ["apply", "-f", "-"], list(rbacObjects));
    // The authorizer reads RBAC from an informer: wait until it knows the new bindings.
    await poll(
      "the RBAC authorizer to see infergate's roles",
      async () => ((await allowed("infergate-webhook", { verb: "update", group: "infergate.dev", resource: "projects", subresource: "status", name: "x" })) ? true : undefined),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    await poll(
      "the RBAC authorizer to see the adapter's roles",
      async () => ((await allowed("infergate-adapter", { verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews" })) ? true : undefined),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
  });

  afterAll(async () => {
    if (rbacObjects.length) await cluster.kubectl(["delete", "--ignore-not-found", "-f", "-"], { input: list(rbacObjects) });
  });

  const grants: [string, string, Record<string, string>][] = [
    // the webhook: policy store, quota, pod groups, Knative flags, leases and certificates
    ["infergate-webhook", "watches Projects", { verb: "watch", group: "infergate.dev", resource: "projects" }],
    ["infergate-webhook", "reads a Project uncached", { verb: "get", group: "infergate.dev", resource: "projects", name: "team-a" }],
    ["infergate-webhook", "lists InferencePolicies", { verb: "list", group: "infergate.dev", resource: "inferencepolicies" }],
    ["infergate-webhook", "replaces Project status", { verb: "update", group: "infergate.dev", resource: "projects", subresource: "status", name: "team-a" }],
    ["infergate-webhook", "watches Deployments everywhere", { verb: "watch", group: "apps", resource: "deployments" }],
    ["infergate-webhook", "lists ReplicaSets everywhere", { verb: "list", group: "apps", resource: "replicasets" }],
    ["infergate-webhook", "watches Pods everywhere", { verb: "watch", group: "", resource: "pods" }],
    ["infergate-webhook", "watches Knative Services", { verb: "watch", group: "serving.knative.dev", resource: "services" }],
    ["infergate-webhook", "lists Knative Revisions", { verb: "list", group: "serving.knative.dev", resource: "revisions" }],
    ["infergate-webhook", "watches config-features", { verb: "watch", group: "", resource: "configmaps", namespace: "knative-serving", name: "config-features" }],
    ["infergate-webhook", "creates PodGroups", { verb: "create", group: "scheduling.x-k8s.io", resource: "podgroups", namespace: "team-a" }],
    ["infergate-webhook", "deletes PodGroups", { verb: "delete", group: "scheduling.x-k8s.io", resource: "podgroups", namespace: "team-a", name: "g" }],
    ["infergate-webhook", "renews its Leases", { verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: "infergate-system", name: "infergate-quota" }],
    ["infergate-webhook", "lists report Leases", { verb: "list", group: "coordination.k8s.io", resource: "leases", namespace: "infergate-system" }],
    ["infergate-webhook", "creates the certificate Secret", { verb: "create", group: "", resource: "secrets", namespace: "infergate-system" }],
    ["infergate-webhook", "renews the certificate Secret", { verb: "update", group: "", resource: "secrets", namespace: "infergate-system", name: "infergate-webhook-tls" }],
    ["infergate-webhook", "injects the caBundle", { verb: "update", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", name: "infergate" }],
    ["infergate-webhook", "injects the APIService caBundle", { verb: "update", group: "apiregistration.k8s.io", resource: "apiservices", name: "v1beta2.custom.metrics.k8s.io" }],
    // the adapter: pods, authorization, the front-proxy CA
    ["infergate-adapter", "watches Pods everywhere", { verb: "watch", group: "", resource: "pods" }],
    ["infergate-adapter", "asks SubjectAccessReviews", { verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews" }],
    ["infergate-adapter", "reads extension-apiserver-authentication", { verb: "get", group: "", resource: "configmaps", namespace: "kube-system", name: "extension-apiserver-authentication" }],
    ["infergate-webhook", "creates HPAs (the HPA reconciler runs in serve)", { verb: "create", group: "autoscaling", resource: "horizontalpodautoscalers", namespace: "team-a" }],
  ];

  const refusals: [string, string, Record<string, string>][] = [
    ["infergate-webhook", "changing a Project's spec", { verb: "update", group: "infergate.dev", resource: "projects", name: "team-a" }],
    ["infergate-webhook", "writing Deployments", { verb: "update", group: "apps", resource: "deployments", namespace: "team-a", name: "d" }],
    ["infergate-webhook", "deleting Pods", { verb: "delete", group: "", resource: "pods", namespace: "team-a", name: "p" }],
    ["infergate-webhook", "listing every ConfigMap in knative-serving", { verb: "list", group: "", resource: "configmaps", namespace: "knative-serving" }],
    ["infergate-webhook", "reading another ConfigMap", { verb: "get", group: "", resource: "configmaps", namespace: "knative-serving", name: "config-network" }],
    ["infergate-webhook", "reading another Secret", { verb: "get", group: "", resource: "secrets", namespace: "infergate-system", name: "other" }],
    ["infergate-webhook", "listing Secrets", { verb: "list", group: "", resource: "secrets", namespace: "infergate-system" }],
    ["infergate-webhook", "Secrets outside its namespace", { verb: "get", group: "", resource: "secrets", namespace: "default", name: "infergate-webhook-tls" }],
    ["infergate-webhook", "Leases outside its namespace", { verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: "kube-system", name: "infergate-quota" }],
    ["infergate-webhook", "another webhook configuration", { verb: "update", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", name: "other" }],
    ["infergate-webhook", "creating webhook configurations", { verb: "create", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations" }],
    ["infergate-webhook", "another APIService", { verb: "update", group: "apiregistration.k8s.io", resource: "apiservices", name: "v1beta1.metrics.k8s.io" }],
    ["infergate-adapter", "reading Secrets", { verb: "get", group: "", resource: "secrets", namespace: "infergate-system", name: "infergate-webhook-tls" }],
    ["infergate-adapter", "TokenReviews", { verb: "create", group: "authentication.k8s.io", resource: "tokenreviews" }],
    ["infergate-adapter", "other ConfigMaps in kube-system", { verb: "get", group: "", resource: "configmaps", namespace: "kube-system", name: "kube-proxy" }],
    ["infergate-adapter", "HPAs (the reconciler runs in serve)", { verb: "create", group: "autoscaling", resource: "horizontalpodautoscalers", namespace: "team-a" }],
    ["infergate-adapter", "Project status", { verb: "update", group: "infergate.dev", resource: "projects", subresource: "status", name: "team-a" }],
  ];

  it.each(grants)("%s: allowed: %s", async (account, _, attributes) => {
    expect(await allowed(account, attributes)).toBe(true);
  });

  it.each(refusals)("%s: refused: %s", async (account, _, attributes) => {
    expect(await allowed(account, attributes)).toBe(false);
  });

  it("a real watch of config-features (fieldSelector on its name) is authorized; listing the namespace is not", async () => {
    const as = "--as=system:serviceaccount:infergate-system:infergate-webhook";
    const named = await cluster.kubectl(["get", "configmaps", "-n", "knative-serving", "--field-selector", "metadata.name=config-features", "-o", "name", as]);
    expect(named.stderr).toBe("");
    expect(named.stdout.trim()).toBe("configmap/config-features");
    const everything = await cluster.kubectl(["get", "configmaps", "-n", "knative-serving", "-o", "name", as]);
    expect(everything.code).not.toBe(0);
    expect(everything.stderr).toContain("Forbidden");
  });
});

describe("matchConditions, with the webhook down", () => {
  const id = uniqueName("mc");
  const scopeLabel = "infergate.dev/manifests-test";
  const namespace = id;
  const project = id;
  const configName = `infergate-${id}`;
  let deadUrl = "";

  const gpuDeployment = (name: string) => deployment(name, namespace, { resources: { limits: { [GPU]: "1" } } });
  const withTemplate = (d: Record<string, any>, edit: (template: Record<string, any>) => void) => (edit(d.spec.template), d);

  async function attempt(object: Record<string, any>, dryRun = true) {
    return cluster.kubectl(["create", ...(dryRun ? ["--dry-run=server"] : []), "-f", "-"], { input: JSON.stringify(object) });
  }
  function expectRefusedByDeadWebhook(res: { code: number | null; stderr: string }) {
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain(`failed calling webhook "${VALIDATING_WEBHOOK_NAME}"`);
    expect(res.stderr).toContain(deadUrl);
  }
  function expectAdmitted(res: { code: number | null; stderr: string; stdout: string }) {
    // Warnings on stderr (deprecations and the like) are fine; a webhook error is not.
    expect(res.stderr).not.toContain("failed calling webhook");
    expect(res.code, res.stderr).toBe(0);
  }

  beforeAll(async () => {
    deadUrl = `https://${LOOPBACK}:${await freePort()}`;
    // The namespace opts out of infergate for good, so that infergate's running webhook never answers
    // here (it would deny some of these for policy reasons first). The dead configuration is the
    // generated one, matchConditions and all, with only its namespace selector swapped for this
    // namespace's own label (the selector itself is unit-tested).
    await kubectlOk(cluster, ["create", "namespace", namespace]);
    await kubectlOk(cluster, ["label", "namespace", namespace, `${IGNORE_NAMESPACE_LABEL}=true`]);
    await kubectlOk(cluster, ["apply", "-f", "-"], list([
      { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name: project }, spec: { namespaces: [namespace] } },
      gpuDeployment("was-gpu"),
      deployment("plain-existing", namespace),
    ]));
    const { mutating, validating } = webhookConfigurations({ baseUrl: deadUrl, name: configName });
    for (const hook of [...mutating.webhooks, ...validating.webhooks]) {
      hook.namespaceSelector = { matchLabels: { [scopeLabel]: id } };
    }
    await kubectlOk(cluster, ["apply", "-f", "-"], list([mutating, validating]));
    await kubectlOk(cluster, ["label", "namespace", namespace, `${scopeLabel}=${id}`]);
    // The API server learns about webhook configurations through an informer.
    await poll(
      "the dead webhook configuration to take effect",
      async () => ((await attempt(gpuDeployment("probe"))).stderr.includes(deadUrl) ? true : undefined),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
  });

  afterAll(async () => {
    await cluster.kubectl(["delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", configName, "--ignore-not-found"]);
    await cluster.kubectl(["delete", "project", project, "--ignore-not-found", "--wait=false"]);
    await cluster.kubectl(["delete", "namespace", namespace, "--ignore-not-found", "--wait=false"]);
  });

  it("creates a Deployment without GPUs in a project namespace", async () => {
    expectAdmitted(await attempt(deployment("web", namespace), false));
    expect((await getJson(cluster, ["deployment", "web", "-n", namespace])).metadata.name).toBe("web");
  });

  it("creates one labelled infergate.dev/inference: \"false\"", async () => {
    const d = deployment("labelled-false", namespace);
    d.metadata.labels = { "infergate.dev/inference": "false" };
    expectAdmitted(await attempt(d));
  });

  it("updates a Deployment without GPUs", async () => {
    expectAdmitted(await cluster.kubectl(["label", "deployment", "plain-existing", "-n", namespace, "tier=web"]));
  });

  it("deletes a GPU Deployment (DELETE is not intercepted)", async () => {
    expectAdmitted(await cluster.kubectl(["delete", "deployment", "was-gpu", "-n", namespace, "--dry-run=server"]));
  });

  it("creates Pods: mutation and bare-pod validation fail open", async () => {
    expectAdmitted(await attempt({ apiVersion: "v1", kind: "Pod", metadata: { name: "tool", namespace }, spec: { containers: [{ name: "main", image: "registry.example.com/tool:1" }] } }));
    const gpuPod = { apiVersion: "v1", kind: "Pod", metadata: { name: "gpu-tool", namespace }, spec: { containers: [{ name: "main", image: "registry.example.com/tool:1", resources: { limits: { [GPU]: "1" } } }] } };
    expectAdmitted(await attempt(gpuPod));
  });

  it.each([
    ["an nvidia.com/gpu limit", () => gpuDeployment("gpu-limit")],
    ["a GPU in its second container", () => withTemplate(deployment("gpu-sidecar", namespace), (t) => t.spec.containers.push({ name: "gpu", image: "registry.example.com/x:1", resources: { limits: { [GPU]: "1" } } }))],
    ["a gpu-fraction pod-template annotation", () => withTemplate(deployment("fraction", namespace), (t) => (t.metadata.annotations = { "gpu-fraction": "0.5" }))],
    ["a gpu-memory pod-template annotation", () => withTemplate(deployment("memory", namespace), (t) => (t.metadata.annotations = { "gpu-memory": "20480" }))],
    ["a gpu-fraction annotation on the Deployment", () => ({ ...deployment("workload-fraction", namespace), metadata: { name: "workload-fraction", namespace, annotations: { "gpu-fraction": "0.5" } } })],
    ["the inference label on the Deployment", () => ({ ...deployment("labelled", namespace), metadata: { name: "labelled", namespace, labels: { "infergate.dev/inference": "true" } } })],
    ["the inference label on the pod template", () => withTemplate(deployment("template-labelled", namespace), (t) => (t.metadata.labels["infergate.dev/inference"] = "true"))],
    [
      "a Knative Revision as owner",
      () => ({
        ...deployment("revision-runtime", namespace),
        metadata: {
          name: "revision-runtime",
          namespace,
          ownerReferences: [{ apiVersion: "serving.knative.dev/v1", kind: "Revision", name: "r-00001", uid: "6f1c0b4e-2b1a-4d8e-9c1e-0a1b2c3d4e5f", controller: true }],
        },
      }),
    ],
  ])("refuses a Deployment with %s", async (_, make) => {
    expectRefusedByDeadWebhook(await attempt(make()));
  });

  it("refuses an update that removes the GPU from a GPU Deployment (the old object counts)", async () => {
    const current = await getJson(cluster, ["deployment", "was-gpu", "-n", namespace]);
    current.spec.template.spec.containers[0].resources = {};
    expectRefusedByDeadWebhook(await cluster.kubectl(["replace", "--dry-run=server", "-f", "-"], { input: JSON.stringify(current) }));
  });

  it("refuses kubectl scale even of a Deployment without GPUs (the Scale object has no template)", async () => {
    expectRefusedByDeadWebhook(await cluster.kubectl(["scale", "deployment", "plain-existing", "-n", namespace, "--replicas=2", "--dry-run=server"]));
  });

  it("refuses every Knative Service", async () => {
    const ksvc = {
      apiVersion: "serving.knative.dev/v1",
      kind: "Service",
      metadata: { name: "hello", namespace },
      spec: { template: { spec: { containers: [{ image: "registry.example.com/hello:1" }] } } },
    };
    expectRefusedByDeadWebhook(await attempt(ksvc));
  });

  it("refuses Project changes, but not the Project status the quota ledger writes", async () => {
    expectRefusedByDeadWebhook(await cluster.kubectl(["label", "project", project, "tier=gold", "--dry-run=server"]));
    const status = await cluster.kubectl(["patch", "project", project, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { workloads: 0 } }), "--dry-run=server"]);
    expectAdmitted(status);
  });
});
