// The install manifests, read as files: what the API server cannot tell us (that a grant is justified,
// that the generated file is current, that the pods match the commands they run). The API server's own
// verdict on them is in test/e2e/manifests.test.ts.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { priorityClasses } from "../local-cluster/priority-classes.ts";
import { WEBHOOK_SERVICE } from "./webhook-config.ts";
import { WEBHOOK_MANIFEST_PATH, webhookManifest } from "./webhook-manifest.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
const MANIFESTS = join(ROOT, "manifests");
const read = (file: string) => readFileSync(join(MANIFESTS, file), "utf8");
const objectsOf = (file: string) => parseAllDocuments(read(file)).map((d) => d.toJS()).filter((o) => o);
const base = ["namespace.yaml", "priority-classes.yaml", "rbac.yaml", "webhook.yaml", "adapter.yaml", "network-policy.yaml", "webhooks.yaml"];
const all = base.flatMap((f) => objectsOf(`base/${f}`));
const find = (kind: string, name: string) => {
  const found = all.find((o) => o.kind === kind && o.metadata?.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in manifests/base`);
  return found;
};

describe("kustomizations", () => {
  const kustomizations = ["kustomization.yaml", "crds/kustomization.yaml", "base/kustomization.yaml", "overlays/plain/kustomization.yaml", "overlays/kind/kustomization.yaml"];

  it.each(kustomizations)("%s lists only resources that exist", (file) => {
    const resources: string[] = parse(read(file)).resources;
    expect(resources.length).toBeGreaterThan(0);
    for (const resource of resources) expect(existsSync(join(MANIFESTS, dirname(file), resource)), resource).toBe(true);
  });

  it("base lists every manifest file in base/, so nothing written is left out of the install", () => {
    expect([...parse(read("base/kustomization.yaml")).resources].sort()).toEqual([...base].sort());
  });

  it("manifests/ and each overlay include the CRDs and the base", () => {
    expect(parse(read("kustomization.yaml")).resources).toEqual(["crds", "base"]);
    for (const overlay of ["plain", "kind"]) expect(parse(read(`overlays/${overlay}/kustomization.yaml`)).resources).toEqual(["../../crds", "../../base"]);
  });
});

describe("generated webhook configurations", () => {
  it(`${WEBHOOK_MANIFEST_PATH} is what scripts/generate-manifests.ts writes (run it after changing src/install)`, () => {
    expect(readFileSync(join(ROOT, WEBHOOK_MANIFEST_PATH), "utf8")).toBe(webhookManifest());
  });
});

describe("RBAC", () => {
  const docs = parseAllDocuments(read("base/rbac.yaml"));
  const roles = docs.filter((d) => ["ClusterRole", "Role"].includes(d.get("kind") as string));

  it("uses no wildcard and no escalation verb anywhere", () => {
    expect(roles.length).toBeGreaterThan(0);
    for (const role of roles) {
      for (const rule of role.toJS().rules) {
        for (const field of ["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"]) {
          for (const value of rule[field] ?? []) expect(value, `${role.get("kind")} ${role.getIn(["metadata", "name"])} ${field}`).not.toContain("*");
        }
        for (const verb of ["escalate", "bind", "impersonate", "deletecollection"]) expect(rule.verbs).not.toContain(verb);
      }
    }
  });

  it("justifies every rule in a comment right above it", () => {
    for (const role of roles) {
      const rules = role.get("rules", true) as any;
      rules.items.forEach((item: any, i: number) => {
        // yaml attaches the comment above a sequence's first item to the sequence.
        const comment: string | undefined = item.commentBefore ?? (i === 0 ? rules.commentBefore : undefined);
        expect(comment?.trim().length ?? 0, `${role.getIn(["metadata", "name"])} rule ${i} has no comment`).toBeGreaterThan(20);
      });
    }
  });

  it("reads Secrets only by name, and never cluster-wide", () => {
    for (const role of roles.map((d) => d.toJS())) {
      for (const rule of role.rules.filter((r: any) => r.resources.includes("secrets"))) {
        expect(role.kind).toBe("Role");
        expect(role.metadata.namespace).toBe("infergate-system");
        const reads = rule.verbs.filter((v: string) => v !== "create");
        if (reads.length) expect(rule.resourceNames).toEqual(["infergate-webhook-tls"]);
      }
    }
  });

  it("writes only infergate's own webhook configurations and APIServices", () => {
    const webhook = find("ClusterRole", "infergate-webhook");
    const writesConfig = webhook.rules.find((r: any) => r.apiGroups.includes("admissionregistration.k8s.io"));
    expect(writesConfig.resourceNames).toEqual(["infergate"]);
    const writesApiServices = webhook.rules.find((r: any) => r.apiGroups.includes("apiregistration.k8s.io"));
    expect(writesApiServices.resourceNames).toEqual(["v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"]);
  });

  it("binds each role to its own ServiceAccount", () => {
    for (const binding of all.filter((o) => ["ClusterRoleBinding", "RoleBinding"].includes(o.kind))) {
      expect(binding.subjects).toHaveLength(1);
      expect(binding.subjects[0]).toMatchObject({ kind: "ServiceAccount", namespace: "infergate-system" });
      expect(["infergate-webhook", "infergate-adapter"]).toContain(binding.subjects[0].name);
    }
  });
});

describe("pods", () => {
  const webhook = find("Deployment", "infergate-webhook");
  const adapter = find("Deployment", "infergate-adapter");

  it.each([
    ["webhook", webhook],
    ["adapter", adapter],
  ])("%s: non-root, read-only root filesystem, no privilege escalation, every capability dropped, RuntimeDefault seccomp", (_, d) => {
    const pod = d.spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    for (const c of pod.containers) {
      expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ["ALL"] } });
      expect(c.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
      expect(c.resources.limits).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
      for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) expect(c[probe]?.httpGet, probe).toMatchObject({ port: "https", scheme: "HTTPS" });
      expect(c.readinessProbe.httpGet.path).toBe("/readyz");
    }
  });

  it("webhook: 3 replicas spread over nodes, never fewer than 2 through a voluntary disruption", () => {
    expect(webhook.spec.replicas).toBe(3);
    expect(webhook.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    const antiAffinity = webhook.spec.template.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm;
    expect(antiAffinity.topologyKey).toBe("kubernetes.io/hostname");
    expect(antiAffinity.labelSelector.matchLabels).toEqual(webhook.spec.selector.matchLabels);
    const pdb = find("PodDisruptionBudget", "infergate-webhook");
    expect(pdb.spec.selector.matchLabels).toEqual(webhook.spec.selector.matchLabels);
    expect(webhook.spec.replicas - pdb.spec.maxUnavailable).toBeGreaterThanOrEqual(2);
  });

  it("certificates: the webhook keeps them in a Secret for both Services; the adapter mounts its serving pair, never the CA key", () => {
    const args: string[] = webhook.spec.template.spec.containers[0].args;
    const values = (flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]] : []));
    expect(values("--tls-secret")).toEqual(["infergate-webhook-tls"]);
    expect(values("--service-host")).toEqual([`${WEBHOOK_SERVICE.name}.${WEBHOOK_SERVICE.namespace}.svc`, "infergate-adapter.infergate-system.svc"]);
    expect(webhook.spec.template.spec.volumes.some((v: any) => v.secret)).toBe(false);
    const certs = adapter.spec.template.spec.volumes.find((v: any) => v.name === "certs");
    expect(certs.secret.secretName).toBe("infergate-webhook-tls");
    expect(certs.secret.items.map((i: any) => i.key).sort()).toEqual(["tls.crt", "tls.key"]);
    const mount = adapter.spec.template.spec.containers[0].volumeMounts.find((m: any) => m.name === "certs").mountPath;
    expect(adapter.spec.template.spec.containers[0].args).toEqual(expect.arrayContaining(["--cert", `${mount}/tls.crt`, "--key", `${mount}/tls.key`]));
  });

  it("the webhook Service, its container port and the NetworkPolicy agree with the webhook configurations", () => {
    const service = find("Service", WEBHOOK_SERVICE.name);
    expect(service.metadata.namespace).toBe(WEBHOOK_SERVICE.namespace);
    expect(service.spec.ports).toEqual([{ name: "https", port: WEBHOOK_SERVICE.port, targetPort: "https", protocol: "TCP" }]);
    expect(service.spec.selector).toEqual(webhook.spec.selector.matchLabels);
    const container = webhook.spec.template.spec.containers[0];
    const port = container.ports.find((p: any) => p.name === "https").containerPort;
    expect(container.args.slice(0, 5)).toEqual(["serve", "--address", "0.0.0.0", "--port", String(port)]);
    expect(find("NetworkPolicy", "infergate-webhook").spec.ingress[0].ports).toEqual([{ port, protocol: "TCP" }]);
  });

  it("the APIServices send custom.metrics.k8s.io to the adapter's Service, verifying TLS", () => {
    const service = find("Service", "infergate-adapter");
    expect(service.spec.selector).toEqual(adapter.spec.selector.matchLabels);
    for (const version of ["v1beta1", "v1beta2"]) {
      const apiService = find("APIService", `${version}.custom.metrics.k8s.io`);
      expect(apiService.spec.service).toEqual({ name: "infergate-adapter", namespace: "infergate-system", port: 443 });
      expect(apiService.spec.insecureSkipTLSVerify).toBeUndefined();
      expect(apiService.spec.caBundle).toBeUndefined();
    }
    const port = adapter.spec.template.spec.containers[0].ports[0].containerPort;
    expect(find("NetworkPolicy", "infergate-adapter").spec.ingress[0].ports).toEqual([{ port, protocol: "TCP" }]);
  });
});

describe("commands in the pods", () => {
  afterEach(() => vi.restoreAllMocks());

  async function helpOf(command: "serve" | "adapter"): Promise<string> {
    const printed: string[] = [];
    vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => void printed.push(args.join(" ")));
    const { main } = await import("../cli/main.ts");
    expect(await main([command, "--help"])).toBe(0);
    return printed.join("\n");
  }

  it.each([
    ["serve", "infergate-webhook"],
    ["adapter", "infergate-adapter"],
  ] as const)("infergate %s accepts every flag its Deployment passes", async (command, deployment) => {
    const container = find("Deployment", deployment).spec.template.spec.containers[0];
    expect(container.command).toEqual(["node", "src/cli/main.ts"]);
    expect(container.args[0]).toBe(command);
    const help = await helpOf(command);
    for (const flag of container.args.filter((a: string) => a.startsWith("--"))) expect(help).toContain(flag);
  });
});

describe("namespace and PriorityClasses", () => {
  it("infergate-system enforces the restricted Pod Security level", () => {
    expect(find("Namespace", "infergate-system").metadata.labels).toMatchObject({ "pod-security.kubernetes.io/enforce": "restricted" });
  });

  it("installs the same PriorityClasses as the local test cluster (value is immutable: they must agree)", () => {
    const installed = all.filter((o) => o.kind === "PriorityClass").map(({ metadata, value, globalDefault }) => ({ name: metadata.name, value, globalDefault }));
    const local = priorityClasses().map(({ metadata, value, globalDefault }) => ({ name: metadata.name, value, globalDefault }));
    expect(installed).toEqual(local);
  });
});
