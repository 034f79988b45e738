// Kubernetes objects from YAML files, for `infergate serve --policy` and `infergate apply`: YAML streams
// (documents separated by ---) and `kind: List` (what `kubectl get -o yaml` prints). Bad input never
// throws: every problem comes back as a message naming the file and the document.
import { readFileSync } from "node:fs";
import { LineCounter, parseAllDocuments } from "yaml";
import { formatViolation } from "../admission/responses.ts";
import { API_VERSION, GROUP, type InferencePolicy, type Project } from "./types.ts";
import { validatePolicyObject } from "./validation.ts";

/**
 * The `yaml` library's guard against alias bombs ("billion laughs"): a document that expands aliases
 * more often than this is reported as an error instead of exhausting memory.
 */
export const MAX_ALIAS_COUNT = 100;

export interface ParsedManifests {
  objects: any[];
  errors: string[];
}

interface Located {
  object: any;
  /** `file.yaml, document 2 (line 14)`, or with `, items[3]` for an entry of a List. */
  where: string;
}

const isRecord = (x: unknown): x is Record<string, any> => x !== null && typeof x === "object" && !Array.isArray(x);

function describeType(x: unknown): string {
  if (Array.isArray(x)) return "a sequence";
  if (x === null) return "null";
  return `a ${typeof x}`;
}

function notAnObject(object: unknown): string | undefined {
  if (!isRecord(object)) return `expected a Kubernetes object (a mapping), found ${describeType(object)}`;
  if (typeof object.apiVersion !== "string" || typeof object.kind !== "string") return "not a Kubernetes object: apiVersion and kind are required";
  return undefined;
}

// A *List (kubectl's `kind: List`, or e.g. `ProjectList` from the API) stands for its items.
const isList = (o: Record<string, any>) => typeof o.kind === "string" && o.kind.endsWith("List") && Array.isArray(o.items);

function parseLocated(text: string, source: string): { located: Located[]; errors: string[] } {
  const located: Located[] = [];
  const errors: string[] = [];
  const lineCounter = new LineCounter();
  // `merge`: kubectl resolves `<<: *anchor` merge keys (a YAML 1.1 feature its parser keeps); YAML 1.2
  // alone would read `<<` as a literal key.
  const parsed = parseAllDocuments(text, { lineCounter, prettyErrors: true, merge: true });
  const documents = Array.isArray(parsed) ? parsed : [];
  documents.forEach((doc, i) => {
    const start = doc.contents?.range?.[0] ?? doc.range[0];
    const where = `${source}, document ${i + 1} (line ${lineCounter.linePos(start).line})`;
    if (doc.errors.length > 0) {
      errors.push(`${where}: ${doc.errors.map((e) => e.message.split("\n")[0]).join("; ")}`);
      return;
    }
    let value: unknown;
    try {
      // kubectl sends JSON, where an alias (`*gpu`) is a copy of its anchor; as shared objects, an edit of
      // one would silently change the other. Non-finite numbers (.inf, .nan) become null, as in JSON.
      value = JSON.parse(JSON.stringify(doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT })) ?? "null");
    } catch (e) {
      errors.push(`${where}: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (value === null || value === undefined) return;
    if (isRecord(value) && isList(value)) {
      value.items.forEach((item: unknown, j: number) => {
        const problem = notAnObject(item);
        if (problem) errors.push(`${where}, items[${j}]: ${problem}`);
        else located.push({ object: item, where: `${where}, items[${j}]` });
      });
      return;
    }
    const problem = notAnObject(value);
    if (problem) errors.push(`${where}: ${problem}`);
    else located.push({ object: value, where });
  });
  return { located, errors };
}

/** Objects in a YAML stream; empty documents are skipped, each `*List` is replaced by its items. */
export function parseManifests(text: string, source: string): ParsedManifests {
  const { located, errors } = parseLocated(text, source);
  return { objects: located.map((l) => l.object), errors };
}

export interface PolicyFiles {
  projects: Project[];
  policies: InferencePolicy[];
  /** ConfigMaps, e.g. knative-serving/config-features. */
  configMaps: any[];
  /** Everything else (Deployments, Knative Services, …). */
  others: any[];
  errors: string[];
}

function readText(path: string): { text?: string; error?: string } {
  try {
    return { text: readFileSync(path, "utf8") };
  } catch (e) {
    return { error: `${path}: cannot read: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/**
 * Reads and sorts the objects of several files. Projects and InferencePolicies are validated as the
 * webhook would admit them, in file order: each against those before it, so of two conflicting objects
 * the later one is reported and left out, as it would be refused at admission.
 */
export function loadPolicyFiles(paths: readonly string[]): PolicyFiles {
  const result: PolicyFiles = { projects: [], policies: [], configMaps: [], others: [], errors: [] };
  const seen = new Map<string, string>();
  for (const path of paths) {
    const { text, error } = readText(path);
    if (error !== undefined || text === undefined) {
      result.errors.push(error ?? `${path}: cannot read`);
      continue;
    }
    const { located, errors } = parseLocated(text, path);
    result.errors.push(...errors);
    for (const { object, where } of located) {
      const group = String(object.apiVersion).split("/")[0];
      if (group !== GROUP) {
        if (object.apiVersion === "v1" && object.kind === "ConfigMap") result.configMaps.push(object);
        else result.others.push(object);
        continue;
      }
      const what = `${object.kind} "${object.metadata?.name ?? ""}"`;
      if (object.apiVersion !== API_VERSION || (object.kind !== "Project" && object.kind !== "InferencePolicy")) {
        result.errors.push(`${where}: ${what}: infergate knows Project and InferencePolicy in ${API_VERSION} only`);
        continue;
      }
      const key = `${object.kind}/${object.metadata?.name}`;
      const earlier = seen.get(key);
      if (earlier !== undefined) {
        result.errors.push(`${where}: ${what} is defined twice; first at ${earlier}`);
        continue;
      }
      const violations = validatePolicyObject(object, { projects: result.projects, policies: result.policies });
      if (violations.length > 0) {
        result.errors.push(...violations.map((v) => `${where}: ${what}: ${formatViolation(v)}`));
        continue;
      }
      seen.set(key, where);
      if (object.kind === "Project") result.projects.push(object as Project);
      else result.policies.push(object as InferencePolicy);
    }
  }
  return result;
}
