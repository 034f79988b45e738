import { describe, expect, it } from "vitest";
import { buildHeartbeat, INITIAL_PROGRESS, onBuildLine } from "./binaries.ts";
import type { BuildProgress } from "./binaries.ts";

function feed(lines: Array<[string, number]>): { state: BuildProgress; printed: string[] } {
  let state = INITIAL_PROGRESS;
  const printed: string[] = [];
  for (const [line, now] of lines) {
    const step = onBuildLine(state, line, now);
    state = step.state;
    printed.push(...step.print);
  }
  return { state, printed };
}

describe("build progress", () => {
  it("shows the script's own lines, which name the binary being built", () => {
    const { state, printed } = feed([["[build 12:12:49] building kube-apiserver ...", 1000]]);
    expect(printed).toEqual(["[build 12:12:49] building kube-apiserver ..."]);
    expect(state.building).toEqual({ name: "kube-apiserver", since: 1000 });
  });

  it("folds module downloads into an occasional count", () => {
    const { printed, state } = feed([
      ["go: downloading k8s.io/api v0.37.2", 20_000],
      ["go: downloading k8s.io/apimachinery v0.37.2", 21_000],
      ["go: downloading k8s.io/client-go v0.37.2", 22_000],
      ["go: downloading k8s.io/utils v0.0.0", 31_000],
    ]);
    expect(printed).toEqual(["[build] downloading Go modules (1 so far)", "[build] downloading Go modules (4 so far)"]);
    expect(state.downloads).toBe(4);
  });

  it("passes compiler errors through and ignores blank lines", () => {
    expect(feed([["", 0], ["cmd/x/main.go:3:2: undefined: y", 0]]).printed).toEqual(["cmd/x/main.go:3:2: undefined: y"]);
  });

  it("reminds the user what is still building, and stops once it is built", () => {
    const building = feed([["[build 12:12:49] building kube-apiserver ...", 0]]).state;
    expect(buildHeartbeat(building, 272_000)).toMatch(/^\[build\] still building kube-apiserver \(4m32s;/);
    expect(buildHeartbeat(building, 45_000)).toMatch(/still building kube-apiserver \(45s;/);
    const done = onBuildLine(building, "[build 12:17:12] built kube-apiserver in 263s", 263_000).state;
    expect(buildHeartbeat(done, 300_000)).toBeUndefined();
  });
});
