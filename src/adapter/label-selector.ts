// Kubernetes label selectors in their string form, as the HPA sends them
// (`app=llama,pod-template-hash in (5d8f)`, `tier!=canary`, `gpu`, `!legacy`).

export type Requirement =
  | { key: string; operator: "=" | "!="; value: string }
  | { key: string; operator: "in" | "notin"; values: string[] }
  | { key: string; operator: "exists" | "!exists" };

export type ParsedSelector = { ok: true; requirements: Requirement[] } | { ok: false; message: string };

const KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?\/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export function parseLabelSelector(text: string): ParsedSelector {
  const requirements: Requirement[] = [];
  const problems: string[] = [];
  for (const part of splitTopLevel(text)) {
    const term = part.trim();
    if (term === "") continue;
    const result = parseTerm(term);
    if (typeof result === "string") problems.push(result);
    else requirements.push(result);
  }
  if (problems.length > 0) return { ok: false, message: `invalid labelSelector "${text}": ${problems.join("; ")}` };
  return { ok: true, requirements };
}

export function matchesSelector(requirements: readonly Requirement[], labels: Readonly<Record<string, string>> | undefined): boolean {
  const has = (key: string) => labels !== undefined && Object.hasOwn(labels, key);
  return requirements.every((requirement) => {
    const value = labels?.[requirement.key];
    switch (requirement.operator) {
      case "=":
        return has(requirement.key) && value === requirement.value;
      case "!=":
        return !has(requirement.key) || value !== requirement.value;
      case "in":
        return has(requirement.key) && requirement.values.includes(value!);
      case "notin":
        return !has(requirement.key) || !requirement.values.includes(value!);
      case "exists":
        return has(requirement.key);
      case "!exists":
        return !has(requirement.key);
    }
  });
}

function parseTerm(term: string): Requirement | string {
  const set = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(term);
  if (set) {
    const values = set[3]!.split(",").map((value) => value.trim());
    const bad = values.filter((value) => !VALUE.test(value));
    if (!KEY.test(set[1]!)) return `"${set[1]}" is not a label key`;
    if (bad.length > 0) return `${bad.map((value) => `"${value}"`).join(", ")} not a label value`;
    return { key: set[1]!, operator: set[2] as "in" | "notin", values };
  }
  const equality = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
  if (equality) {
    const [, key, operator, value] = equality as unknown as [string, string, string, string];
    if (!KEY.test(key)) return `"${key}" is not a label key`;
    if (!VALUE.test(value)) return `"${value}" is not a label value`;
    return { key, operator: operator === "!=" ? "!=" : "=", value };
  }
  if (term.startsWith("!")) {
    const key = term.slice(1).trim();
    return KEY.test(key) ? { key, operator: "!exists" } : `"${key}" is not a label key`;
  }
  return KEY.test(term) ? { key: term, operator: "exists" } : `"${term}" is neither a label key nor a requirement (key=value, key!=value, key in (a,b), key notin (a,b), key, !key)`;
}

/** Splits on commas outside parentheses: `a in (x,y),b=c` has two terms. */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const char of text) {
    if (char === "(") depth++;
    if (char === ")") depth = Math.max(0, depth - 1);
    if (char === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += char;
  }
  parts.push(current);
  return parts;
}
