import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runApply } from "../../src/cli/apply.ts";

const dir = mkdtempSync(join(tmpdir(), "infergate-apply-"));
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};
const policy = file(
  "policy.yaml",
  `apiVersion: infergate.dev/v1alpha1
kind: Project
metadata: {name: team-a}
spec: {namespaces: [team-a], gpuQuota: "2"}
---
apiVersion: infergate.dev/v1alpha1
kind: InferencePolicy
metadata: {name: cluster-default}
spec: {defaults: {priorityClassName: inference}}
`,
);

function capture() {
  let text = "";
  return { stream: { write: (s: string) => ((text += s), true) } as any, text: () => text };
}

async function apply(resource: string) {
  const out = capture();
  const err = capture();
  const code = await runApply(["--policy", policy, "--resource", file(`r${Math.random()}.yaml`, resource)], out.stream, err.stream);
  return { code, stdout: out.text(), stderr: err.text() };
}

const deployment = (gpus: number, annotations = "{}") => `apiVersion: apps/v1
kind: Deployment
metadata: {name: vllm, namespace: team-a}
spec:
  replicas: 1
  selector: {matchLabels: {app: vllm}}
  template:
    metadata: {labels: {app: vllm}, annotations: ${annotations}}
    spec:
      containers: [{name: vllm, image: vllm/vllm-openai, resources: {limits: {nvidia.com/gpu: ${gpus}}}}]
`;

describe("infergate apply", () => {
  it("prints the admitted object and the injected defaults as warnings (exit 0)", async () => {
    const r = await apply(deployment(1));
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("priorityClassName: inference");
    expect(r.stderr).toContain("Warning: infergate: set priorityClassName=inference (policy default)");
  });

  it("prints the quota denial (exit 1)", async () => {
    const r = await apply(deployment(3));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("GPU quota exceeded");
    expect(r.stdout).toBe("");
  });

  it("names a non-string annotation precisely instead of failing inside a plugin (exit 2)", async () => {
    const r = await apply(deployment(1, "{gpu-fraction: 0.5}"));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("spec.template.metadata.annotations[gpu-fraction]: Invalid value: 0.5: must be a string");
  });

  it("reports a missing resource file as bad input (exit 2)", async () => {
    const err = capture();
    const code = await runApply(["--policy", policy, "--resource", join(dir, "missing.yaml")], capture().stream, err.stream);
    expect(code).toBe(2);
    expect(err.text()).toContain("missing.yaml");
  });
});
