import { describe, expect, it } from "vitest";
import { matchesSelector, parseLabelSelector, type Requirement } from "../../src/adapter/label-selector.ts";

function parse(text: string): Requirement[] {
  const parsed = parseLabelSelector(text);
  if (!parsed.ok) throw new Error(parsed.message);
  return parsed.requirements;
}

describe("label selectors", () => {
  it("parses every operator of the string form", () => {
    expect(parse("app=llama,tier==gpu,track!=canary,zone in (a, b),env notin (dev),gpu,!legacy")).toEqual([
      { key: "app", operator: "=", value: "llama" },
      { key: "tier", operator: "=", value: "gpu" },
      { key: "track", operator: "!=", value: "canary" },
      { key: "zone", operator: "in", values: ["a", "b"] },
      { key: "env", operator: "notin", values: ["dev"] },
      { key: "gpu", operator: "exists" },
      { key: "legacy", operator: "!exists" },
    ]);
    expect(parse("")).toEqual([]);
    expect(parse("serving.knative.dev/revisionUID=0f6e3c1a-9b1d-4c57-8f3e-2a7d9c4b1e55")).toEqual([
      { key: "serving.knative.dev/revisionUID", operator: "=", value: "0f6e3c1a-9b1d-4c57-8f3e-2a7d9c4b1e55" },
    ]);
  });

  it("matches labels the way Kubernetes does (!= and notin match a missing key)", () => {
    const labels = { app: "llama", zone: "a" };
    expect(matchesSelector(parse("app=llama,zone in (a,b)"), labels)).toBe(true);
    expect(matchesSelector(parse("app=llama,zone in (b)"), labels)).toBe(false);
    expect(matchesSelector(parse("track!=canary,env notin (dev),!legacy"), labels)).toBe(true);
    expect(matchesSelector(parse("gpu"), labels)).toBe(false);
    expect(matchesSelector([], undefined)).toBe(true);
  });

  it("reports every malformed term", () => {
    const parsed = parseLabelSelector("==x,app=ll ama,zone in (a,$)");
    expect(parsed.ok).toBe(false);
    expect(!parsed.ok && parsed.message).toBe(
      'invalid labelSelector "==x,app=ll ama,zone in (a,$)": "==x" is neither a label key nor a requirement (key=value, key!=value, key in (a,b), key notin (a,b), key, !key); "ll ama" is not a label value; "$" not a label value',
    );
  });
});
