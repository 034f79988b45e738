// Knative Services against the real control plane. Knative itself does not run here, but its CRDs and
// its shipped `knative-serving/config-features` do: a Service infergate mutates must stay a Service
// that Knative's defaults accept (no tolerations, affinity, priorityClassName or schedulerName), the
// revision's pods (created here by hand, labelled as Knative labels them) receive those fields instead,
// and flipping a feature flag moves the field onto the Service within seconds.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { poll } from "../../src/local-cluster/api.ts";
import { REPO_ROOT } from "../../src/local-cluster/cluster.ts";
import { childEnv } from "../../src/local-cluster/processes.ts";
import { IGNORE_NAMESPACE_LABEL } from "../../src/local-cluster/webhook-config.ts";
import { cliEntry, nodeBinary } from "../../src/local-cluster/webhook-server.ts";
import { DEFAULT_NODE_POOL_LABEL } from "../../src/policy/types.ts";
import { getJson, kubectlOk, requireWebhook, uniqueName, useCluster } from "./harness.ts";

const cluster = useCluster();
const GPU_TOLERATION = { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" };
const TOLERATIONS_FLAG = "kubernetes.podspec-tolerations";
const REFUSED_BY_DEFAULT = ["tolerations", "affinity", "priorityClassName", "schedulerName", "nodeSelector"];

const name = uniqueName("kn");
const namespace = name;
const ignoredNamespace = uniqueName("kn-ignored");
const project = { apiVersion: "infergate.dev/v1alpha1", kind: "Project", metadata: { name }, spec: { namespaces: [namespace], nodePools: ["pool-a", "pool-b"] } };
const policy = {
  apiVersion: "infergate.dev/v1alpha1",
  kind: "InferencePolicy",
  metadata: { name },
  spec: {
    projects: [name],
    scheduler: { profile: "kai" },
    defaults: {
      priorityClassName: "inference",
      tolerations: [GPU_TOLERATION],
      autoscaling: { metric: "concurrency", target: 10, minReplicas: 1, maxReplicas: 4, scaleToZeroRetention: "10m" },
      requestTimeoutSeconds: 300,
      initializationTimeoutSeconds: 600,
    },
  },
};
const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "infergate-knative-e2e-"));
let flagFlipped = false;

const asList = (items: unknown[]) => JSON.stringify({ apiVersion: "v1", kind: "List", items });

function knativeService(svc: string, ns = namespace): Record<string, any> {
  return {
    apiVersion: "serving.knative.dev/v1",
    kind: "Service",
    metadata: { name: svc, namespace: ns },
    spec: {
      template: {
        metadata: { annotations: { "gpu-fraction": "0.5" } },
        spec: { containers: [{ name: "vllm", image: "registry.example.com/vllm:0.11", ports: [{ containerPort: 8080 }] }] },
      },
    },
  };
}

/** A pod of the Service's first revision, labelled and annotated as Knative's revision Deployment makes it. */
function revisionPod(svc: string, template: any): Record<string, any> {
  const revision = `${svc}-00001`;
  // The revision's own fields are Knative's, not the pod's.
  const { timeoutSeconds: _timeout, containerConcurrency: _concurrency, ...podSpec } = template.spec;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: `${revision}-deployment-0`,
      namespace,
      labels: {
        ...template.metadata.labels,
        "serving.knative.dev/service": svc,
        "serving.knative.dev/configuration": svc,
        "serving.knative.dev/revision": revision,
      },
      annotations: template.metadata.annotations,
    },
    spec: { ...podSpec, automountServiceAccountToken: false },
  };
}

function infergateWarnings(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.startsWith("Warning: infergate: "));
}

async function dryRunService(svc: string): Promise<any | undefined> {
  const res = await cluster.kubectl(["create", "--dry-run=server", "-o", "json", "-f", "-"], { input: JSON.stringify(knativeService(svc)) });
  return res.code === 0 ? JSON.parse(res.stdout) : undefined;
}

beforeAll(async () => {
  requireWebhook();
  await kubectlOk(cluster, ["apply", "-f", "-"], asList([{ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } }, project, policy]));
  await kubectlOk(cluster, ["create", "namespace", ignoredNamespace]);
  await kubectlOk(cluster, ["label", "namespace", ignoredNamespace, `${IGNORE_NAMESPACE_LABEL}=true`]);
  await poll(
    `the webhook to apply project ${name}'s policy to Knative Services`,
    async () => ((await dryRunService("probe"))?.spec.template.spec.timeoutSeconds === 300 ? true : undefined),
    { timeoutMs: 60_000, intervalMs: 300 },
  );
});

afterAll(async () => {
  // Other files expect Knative's shipped config-features (every flag at its default).
  if (flagFlipped) {
    await cluster.kubectl(["patch", "configmap", "config-features", "-n", "knative-serving", "--type=merge", "-p", JSON.stringify({ data: { [TOLERATIONS_FLAG]: null } })]);
  }
  await cluster.kubectl(["delete", "inferencepolicies.infergate.dev", name, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "projects.infergate.dev", name, "--ignore-not-found"]);
  await cluster.kubectl(["delete", "namespace", namespace, ignoredNamespace, "--ignore-not-found", "--wait=false"]);
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

describe("a Knative Service under Knative's default config-features", () => {
  const svc = uniqueName("qwen");
  let stored: any;

  it("gets labels, autoscaling annotations, timeoutSeconds and progress-deadline, with warnings", async () => {
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(knativeService(svc)));
    const warnings = infergateWarnings(res.stderr);
    expect(warnings).toContain("Warning: infergate: set autoscaling.knative.dev/metric=concurrency (policy default)");
    expect(warnings).toContain("Warning: infergate: set spec.template.spec.timeoutSeconds=300 (policy default)");
    expect(warnings).toContain("Warning: infergate: set serving.knative.dev/progress-deadline=600s (policy default)");
    stored = await getJson(cluster, ["ksvc", svc, "-n", namespace]);
    const template = stored.spec.template;
    expect(template.metadata.labels).toEqual({ "infergate.dev/project": name, "infergate.dev/queue": name, "kai.scheduler/queue": name });
    expect(template.metadata.annotations).toEqual({
      "gpu-fraction": "0.5",
      "autoscaling.knative.dev/metric": "concurrency",
      "autoscaling.knative.dev/target": "10",
      "autoscaling.knative.dev/min-scale": "1",
      "autoscaling.knative.dev/max-scale": "4",
      "autoscaling.knative.dev/scale-to-zero-pod-retention-period": "10m",
      "serving.knative.dev/progress-deadline": "600s",
    });
    expect(template.spec.timeoutSeconds).toBe(300);
  });

  it("carries none of the pod-spec fields Knative refuses by default", () => {
    for (const field of REFUSED_BY_DEFAULT) expect(stored.spec.template.spec).not.toHaveProperty(field);
  });

  it("has its revision's pods receive those fields when they are created", async () => {
    const res = await kubectlOk(cluster, ["create", "-f", "-"], JSON.stringify(revisionPod(svc, stored.spec.template)));
    const warnings = infergateWarnings(res.stderr);
    expect(warnings).toContain("Warning: infergate: set schedulerName=kai-scheduler (scheduler profile kai)");
    expect(warnings).toContain("Warning: infergate: set priorityClassName=inference (policy default)");
    const pod = await getJson(cluster, ["pod", `${svc}-00001-deployment-0`, "-n", namespace]);
    expect(pod.spec.schedulerName).toBe("kai-scheduler");
    expect(pod.spec.priorityClassName).toBe("inference");
    // The API server's Priority plugin resolved the class infergate set.
    expect(pod.spec.priority).toBe(125);
    expect(pod.spec.tolerations).toContainEqual(GPU_TOLERATION);
    expect(pod.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: DEFAULT_NODE_POOL_LABEL, operator: "In", values: ["pool-a", "pool-b"] }] },
    ]);
    // KAI reads the share from the pod's annotations, which Knative copies from the template.
    expect(pod.metadata.annotations["gpu-fraction"]).toBe("0.5");
  });

  it("is what `infergate apply` prints offline", async () => {
    const manifest = knativeService(uniqueName("offline"));
    await kubectlOk(cluster, ["create", "-f", "-"], JSON.stringify(manifest));
    const fromWebhook = await getJson(cluster, ["ksvc", manifest.metadata.name, "-n", namespace]);
    expect(fromWebhook.spec.template.spec.timeoutSeconds).toBe(300);

    const policyFile = path.join(tmpDir, "policy.json");
    const resourceFile = path.join(tmpDir, "ksvc.json");
    fs.writeFileSync(policyFile, asList([project, policy]));
    fs.writeFileSync(resourceFile, JSON.stringify(manifest));
    const args = [cliEntry(REPO_ROOT), "apply", "--policy", policyFile, "--resource", resourceFile];
    const offline = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(nodeBinary(REPO_ROOT), args, { cwd: REPO_ROOT, env: childEnv(), timeout: 60_000 }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === "number" ? error.code : null) : 0, stdout, stderr });
      });
    });
    expect(offline.code, offline.stderr).toBe(0);
    // Defaulted by the API server where no webhook runs, so both sides went through the same schema.
    const object = parse(offline.stdout);
    object.metadata.namespace = ignoredNamespace;
    const defaulted = JSON.parse((await kubectlOk(cluster, ["create", "--dry-run=server", "-o", "json", "-f", "-"], JSON.stringify(object))).stdout);
    expect(defaulted.spec).toEqual(fromWebhook.spec);
  });
});

describe(`with ${TOLERATIONS_FLAG}: enabled in knative-serving/config-features`, () => {
  const svc = uniqueName("mistral");

  beforeAll(async () => {
    flagFlipped = true;
    await kubectlOk(cluster, ["patch", "configmap", "config-features", "-n", "knative-serving", "--type=merge", "-p", JSON.stringify({ data: { [TOLERATIONS_FLAG]: "enabled" } })]);
  });

  it("the Service carries the tolerations within seconds; the other refused fields still stay off it", async () => {
    // The webhook watches the ConfigMap; the change should reach admission in well under this.
    await poll("tolerations on a dry-run Knative Service", async () => ((await dryRunService("probe"))?.spec.template.spec.tolerations ? true : undefined), {
      timeoutMs: 15_000,
      intervalMs: 300,
    });
    const res = await kubectlOk(cluster, ["apply", "-f", "-"], JSON.stringify(knativeService(svc)));
    expect(infergateWarnings(res.stderr)).toContain("Warning: infergate: added toleration nvidia.com/gpu:NoSchedule op=Exists (policy default)");
    const spec = (await getJson(cluster, ["ksvc", svc, "-n", namespace])).spec.template.spec;
    expect(spec.tolerations).toEqual([GPU_TOLERATION]);
    for (const field of REFUSED_BY_DEFAULT.filter((f) => f !== "tolerations")) expect(spec).not.toHaveProperty(field);
  });

  it("the revision's pods keep the Service's tolerations, without a second copy, and still get the other fields", async () => {
    const template = (await getJson(cluster, ["ksvc", svc, "-n", namespace])).spec.template;
    const res = await kubectlOk(cluster, ["create", "-f", "-"], JSON.stringify(revisionPod(svc, template)));
    expect(infergateWarnings(res.stderr).some((w) => w.includes("toleration"))).toBe(false);
    const pod = await getJson(cluster, ["pod", `${svc}-00001-deployment-0`, "-n", namespace]);
    expect(pod.spec.tolerations.filter((t: any) => t.key === GPU_TOLERATION.key)).toEqual([GPU_TOLERATION]);
    expect(pod.spec.priorityClassName).toBe("inference");
    expect(pod.spec.schedulerName).toBe("kai-scheduler");
    expect(pod.spec.affinity.nodeAffinity).toBeDefined();
  });
});
