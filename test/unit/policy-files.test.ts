import { afterAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadPolicyFiles, parseManifests } from "../../src/policy/files.ts";

const dir = mkdtempSync(join(tmpdir(), "infergate-policy-files-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const PROJECT_A = `apiVersion: infergate.dev/v1alpha1
kind: Project
metadata: {name: team-a}
spec:
  namespaces: [team-a, team-a-staging]
  gpuQuota: "8"
`;

const CLUSTER_POLICY = `apiVersion: infergate.dev/v1alpha1
kind: InferencePolicy
metadata: {name: cluster-default}
spec:
  scheduler: {profile: kai}
  rules:
    gpuFraction: {min: "0.1", max: "1"}
`;

const FEATURES = `apiVersion: v1
kind: ConfigMap
metadata: {name: config-features, namespace: knative-serving}
data: {kubernetes.podspec-tolerations: enabled}
`;

const DEPLOYMENT = `apiVersion: apps/v1
kind: Deployment
metadata: {name: llm, namespace: team-a}
spec: {replicas: 1}
`;

describe("parseManifests", () => {
  it("reads a YAML stream, skipping empty and comment-only documents", () => {
    const text = `---\n${PROJECT_A}---\n# nothing here\n---\n---\n${CLUSTER_POLICY}...\n---\n${DEPLOYMENT}`;
    const { objects, errors } = parseManifests(text, "stream.yaml");
    expect(errors).toEqual([]);
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(["Project/team-a", "InferencePolicy/cluster-default", "Deployment/llm"]);
  });

  it("expands kind: List as kubectl get -o yaml prints it, and typed lists", () => {
    const list = `apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: infergate.dev/v1alpha1
  kind: Project
  metadata: {name: team-a}
  spec: {}
- apiVersion: infergate.dev/v1alpha1
  kind: Project
  metadata: {name: team-b}
  spec: {}
---
apiVersion: infergate.dev/v1alpha1
kind: InferencePolicyList
items:
- apiVersion: infergate.dev/v1alpha1
  kind: InferencePolicy
  metadata: {name: p}
  spec: {}
`;
    const { objects, errors } = parseManifests(list, "list.yaml");
    expect(errors).toEqual([]);
    expect(objects.map((o) => o.metadata.name)).toEqual(["team-a", "team-b", "p"]);
  });

  it("names the file, document and line of garbage, and keeps the good documents", () => {
    const text = `${PROJECT_A}---\nkind: [unclosed\n  apiVersion: : :\n---\n${DEPLOYMENT}`;
    const { objects, errors } = parseManifests(text, "bad.yaml");
    expect(objects.map((o) => o.kind)).toEqual(["Project", "Deployment"]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^bad\.yaml, document 2 \(line 8\): /);
  });

  it("reports documents that are not Kubernetes objects", () => {
    const text = `just a string\n---\n- a\n- list\n---\nmetadata: {name: x}\n---\napiVersion: v1\nkind: List\nitems: [42, {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}]\n`;
    const { objects, errors } = parseManifests(text, "odd.yaml");
    expect(objects.map((o) => o.metadata.name)).toEqual(["c"]);
    expect(errors).toEqual([
      "odd.yaml, document 1 (line 1): expected a Kubernetes object (a mapping), found a string",
      "odd.yaml, document 2 (line 3): expected a Kubernetes object (a mapping), found a sequence",
      "odd.yaml, document 3 (line 6): not a Kubernetes object: apiVersion and kind are required",
      "odd.yaml, document 4 (line 8), items[0]: expected a Kubernetes object (a mapping), found a number",
    ]);
  });

  it("reports duplicate keys instead of silently keeping one", () => {
    const { errors } = parseManifests(`apiVersion: v1\nkind: ConfigMap\nkind: Secret\n`, "dup.yaml");
    expect(errors).toEqual([expect.stringMatching(/^dup\.yaml, document 1 \(line 1\): .*[Mm]ap keys must be unique/)]);
  });

  it("refuses an alias bomb without exhausting memory", () => {
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const cur = String.fromCharCode(97 + i);
      levels.push(`${cur}: &${cur} [${Array(10).fill(`*${prev}`).join(", ")}]`);
    }
    const bomb = `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n${levels.map((l) => `  ${l}`).join("\n")}\n`;
    const { objects, errors } = parseManifests(`${bomb}---\n${DEPLOYMENT}`, "bomb.yaml");
    expect(objects.map((o) => o.kind)).toEqual(["Deployment"]);
    expect(errors).toEqual([expect.stringMatching(/^bomb\.yaml, document 1 \(line 1\): .*alias/i)]);
  });

  it("handles an empty input", () => {
    expect(parseManifests("", "empty.yaml")).toEqual({ objects: [], errors: [] });
    expect(parseManifests("# only a comment\n", "empty.yaml")).toEqual({ objects: [], errors: [] });
  });
});

describe("loadPolicyFiles", () => {
  it("sorts objects from several files by kind", () => {
    const a = file("a.yaml", `${PROJECT_A}---\n${FEATURES}`);
    const b = file("b.yaml", `${CLUSTER_POLICY}---\n${DEPLOYMENT}`);
    const loaded = loadPolicyFiles([a, b]);
    expect(loaded.errors).toEqual([]);
    expect(loaded.projects.map((p) => p.metadata.name)).toEqual(["team-a"]);
    expect(loaded.policies.map((p) => p.metadata.name)).toEqual(["cluster-default"]);
    expect(loaded.configMaps.map((c) => c.metadata.name)).toEqual(["config-features"]);
    expect(loaded.others.map((o) => o.kind)).toEqual(["Deployment"]);
  });

  it("validates Projects and policies as admission would, naming file, document and field", () => {
    const bad = file(
      "bad-project.yaml",
      `${PROJECT_A}---\napiVersion: infergate.dev/v1alpha1\nkind: Project\nmetadata: {name: team-b}\nspec: {namespaces: [team-b, team-a], gpuQuota: "-2"}\n`,
    );
    const loaded = loadPolicyFiles([bad]);
    expect(loaded.projects.map((p) => p.metadata.name)).toEqual(["team-a"]);
    expect(loaded.errors).toEqual([
      `${bad}, document 2 (line 8): Project "team-b": spec.gpuQuota: Invalid value: "-2": a non-negative decimal number as a string, e.g. "8" or "2.5"`,
      `${bad}, document 2 (line 8): Project "team-b": spec.namespaces[1]: Invalid value: "team-a": namespace already belongs to Project "team-a"; a namespace belongs to at most one Project`,
    ]);
  });

  it("refuses a second cluster-wide policy across files, and a second definition of one name", () => {
    const first = file("p1.yaml", CLUSTER_POLICY);
    const second = file("p2.yaml", `${CLUSTER_POLICY.replace("cluster-default", "also-cluster")}---\n${CLUSTER_POLICY}`);
    const loaded = loadPolicyFiles([first, second]);
    expect(loaded.policies.map((p) => p.metadata.name)).toEqual(["cluster-default"]);
    expect(loaded.errors).toEqual([
      expect.stringMatching(/p2\.yaml, document 1 \(line 1\): InferencePolicy "also-cluster": spec\.projects: .*"cluster-default" is already the cluster-wide policy/),
      `${second}, document 2 (line 9): InferencePolicy "cluster-default" is defined twice; first at ${first}, document 1 (line 1)`,
    ]);
  });

  it("reports unknown infergate.dev versions and kinds, unreadable files and garbage, without throwing", () => {
    const odd = file("odd.yaml", `apiVersion: infergate.dev/v1\nkind: Project\nmetadata: {name: x}\nspec: {}\n---\napiVersion: infergate.dev/v1alpha1\nkind: Queue\nmetadata: {name: q}\n`);
    const garbage = file("garbage.yaml", "\t- : ][\n");
    const missing = join(dir, "does-not-exist.yaml");
    const loaded = loadPolicyFiles([odd, garbage, missing]);
    expect(loaded.projects).toEqual([]);
    expect(loaded.errors).toEqual([
      `${odd}, document 1 (line 1): Project "x": infergate knows Project and InferencePolicy in infergate.dev/v1alpha1 only`,
      `${odd}, document 2 (line 6): Queue "q": infergate knows Project and InferencePolicy in infergate.dev/v1alpha1 only`,
      expect.stringMatching(new RegExp(`^${garbage.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}, document 1 \\(line 1\\): `)),
      expect.stringMatching(new RegExp(`^${missing.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: cannot read: .*ENOENT`)),
    ]);
  });
});
