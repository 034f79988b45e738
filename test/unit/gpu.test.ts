import { describe, expect, it } from "vitest";
import type { AdmissionRequest } from "../../src/admission/types.ts";
import {
  describeShare,
  gpusPerPod,
  memoryPerDeviceMiB,
  parseDecimal,
  parseGpuShare,
  parsePositiveInteger,
  readGpuRequest,
  removeContainerResource,
  setContainerLimit,
  shareTargetIndex,
  type GpuRequest,
} from "../../src/workload/gpu.ts";
import { toWorkload, type Workload } from "../../src/workload/workload.ts";

function deploymentWorkload(object: any): Workload {
  const request: AdmissionRequest = {
    uid: "u",
    kind: { group: "apps", version: "v1", kind: "Deployment" },
    resource: { group: "apps", version: "v1", resource: "deployments" },
    namespace: "team-a",
    operation: "CREATE",
    userInfo: {},
    object,
  };
  return toWorkload(request, object)!;
}

function deployment(opts: { annotations?: Record<string, string>; templateAnnotations?: Record<string, string>; containers: any[] }) {
  return {
    metadata: { name: "m", annotations: opts.annotations },
    spec: { template: { metadata: { annotations: opts.templateAnnotations }, spec: { containers: opts.containers } } },
  };
}

describe("parseDecimal", () => {
  it("reads plain decimals", () => {
    expect(parseDecimal("0.5")).toBe(0.5);
    expect(parseDecimal("1")).toBe(1);
    expect(parseDecimal(".25")).toBe(0.25);
    expect(parseDecimal("2.50")).toBe(2.5);
  });
  it("refuses signs, exponents, units, blanks and NaN", () => {
    for (const bad of ["", " 0.5", "0.5 ", "-0.5", "+1", "1e-1", "500m", "0.5.1", "NaN", "Infinity", "1.", "abc"]) {
      expect(parseDecimal(bad), bad).toBeUndefined();
    }
    expect(parseDecimal(undefined)).toBeUndefined();
    expect(parseDecimal(Number.NaN)).toBeUndefined();
  });
});

describe("parsePositiveInteger", () => {
  it("reads positive whole numbers only", () => {
    expect(parsePositiveInteger("20480")).toBe(20480);
    expect(parsePositiveInteger(2)).toBe(2);
    for (const bad of ["0", "-1", "1.5", "20Gi", "020", "", "1e3"]) expect(parsePositiveInteger(bad), bad).toBeUndefined();
    expect(parsePositiveInteger("99999999999999999999")).toBeUndefined();
  });
});

describe("parseGpuShare", () => {
  it("returns nothing for a request without share annotations", () => {
    expect(parseGpuShare({ wholeGpus: 2 })).toEqual({ problems: [] });
  });
  it("parses a fraction, a memory size and a device count", () => {
    expect(parseGpuShare({ wholeGpus: 0, fraction: "0.5" }).share).toEqual({ fraction: 0.5, devices: 1 });
    expect(parseGpuShare({ wholeGpus: 0, memoryMiB: "20480", devices: "2" }).share).toEqual({ memoryMiB: 20480, devices: 2 });
    expect(parseGpuShare({ wholeGpus: 0, fraction: "1" }).share).toEqual({ fraction: 1, devices: 1 });
  });
  it("reports every problem at its annotation", () => {
    const { share, problems } = parseGpuShare({ wholeGpus: 0, fraction: "1.5", memoryMiB: "20Gi", devices: "0" });
    expect(share).toBeUndefined();
    expect(problems.map((p) => [p.annotation, p.value])).toEqual([
      ["gpu-fraction", "1.5"],
      ["gpu-memory", "20Gi"],
      ["gpu-memory", "20Gi"],
      ["gpu-fraction-num-devices", "0"],
    ]);
    expect(problems[2]!.allowed).toContain("not both");
  });
  it("refuses zero and a device count on its own", () => {
    expect(parseGpuShare({ wholeGpus: 0, fraction: "0" }).problems[0]!.allowed).toBe('a decimal number greater than 0 and at most 1, e.g. "0.5"');
    expect(parseGpuShare({ wholeGpus: 0, devices: "2" }).problems).toEqual([
      { annotation: "gpu-fraction-num-devices", value: "2", allowed: "only together with gpu-fraction or gpu-memory" },
    ]);
  });
});

describe("gpusPerPod", () => {
  const r = (x: Partial<GpuRequest>): GpuRequest => ({ wholeGpus: 0, ...x });
  it("adds whole GPUs and fraction × devices", () => {
    expect(gpusPerPod(r({ wholeGpus: 2 }))).toBe(2);
    expect(gpusPerPod(r({ fraction: "0.5" }))).toBe(0.5);
    expect(gpusPerPod(r({ fraction: "0.25", devices: "3" }))).toBe(0.75);
    expect(gpusPerPod(r({ wholeGpus: 1, fraction: "0.5" }))).toBe(1.5);
  });
  it("converts gpu-memory with the memory per device, 80 GiB by default", () => {
    expect(gpusPerPod(r({ memoryMiB: "20480" }))).toBe(0.25);
    expect(gpusPerPod(r({ memoryMiB: "20480", devices: "2" }), 40960)).toBe(1);
  });
  it("has no float noise", () => {
    expect(gpusPerPod(r({ fraction: "0.1", devices: "3" }))).toBe(0.3);
  });
  it("counts an unparseable share as nothing and no request as zero", () => {
    expect(gpusPerPod(r({ wholeGpus: 1, fraction: "lots" }))).toBe(1);
    expect(gpusPerPod(undefined)).toBe(0);
  });
});

describe("memoryPerDeviceMiB", () => {
  const project = (gpuMemoryPerDeviceMiB?: number) => ({ metadata: { name: "p" }, spec: { gpuMemoryPerDeviceMiB } });
  it("reads the project and defaults to 81920 MiB", () => {
    expect(memoryPerDeviceMiB(project(49152))).toBe(49152);
    expect(memoryPerDeviceMiB(project())).toBe(81920);
    expect(memoryPerDeviceMiB(project(0))).toBe(81920);
    expect(memoryPerDeviceMiB(undefined)).toBe(81920);
  });
});

describe("readGpuRequest", () => {
  it("sums whole GPU limits (or requests) over containers", () => {
    const w = deploymentWorkload(
      deployment({
        containers: [
          { name: "a", resources: { limits: { "nvidia.com/gpu": "2" } } },
          { name: "b", resources: { requests: { "nvidia.com/gpu": 1 } } },
          { name: "c" },
        ],
      }),
    );
    expect(readGpuRequest(w)).toEqual({ wholeGpus: 3 });
  });

  it("prefers the workload's share annotations over the template's, as one set", () => {
    const w = deploymentWorkload(
      deployment({
        annotations: { "gpu-memory": "10240" },
        templateAnnotations: { "gpu-fraction": "0.5", "gpu-fraction-num-devices": "2" },
        containers: [{ name: "a" }],
      }),
    );
    expect(readGpuRequest(w)).toEqual({ wholeGpus: 0, memoryMiB: "10240", annotationSource: "workload" });
  });

  it("reads the template when the workload carries no share", () => {
    const w = deploymentWorkload(
      deployment({ annotations: { other: "x" }, templateAnnotations: { "gpu-fraction": "0.5", "gpu-fraction-container-name": "b" }, containers: [{ name: "a" }] }),
    );
    expect(readGpuRequest(w)).toEqual({ wholeGpus: 0, fraction: "0.5", containerName: "b", annotationSource: "template" });
  });

  it("does not count HAMi's rendering of the share on the share's container", () => {
    const w = deploymentWorkload(
      deployment({
        templateAnnotations: { "gpu-fraction": "0.5" },
        containers: [{ name: "a", resources: { limits: { "nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50" } } }],
      }),
    );
    expect(readGpuRequest(w)!.wholeGpus).toBe(0);
  });

  it("counts HAMi used directly on another container as whole GPUs", () => {
    const w = deploymentWorkload(
      deployment({
        templateAnnotations: { "gpu-fraction": "0.5" },
        containers: [
          { name: "a", resources: { limits: { "nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000" } } },
          { name: "b", resources: { limits: { "nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000" } } },
        ],
      }),
    );
    expect(readGpuRequest(w)!.wholeGpus).toBe(1);
  });

  it("counts an nvidia.com/gpu limit as whole GPUs when there is no share annotation", () => {
    const w = deploymentWorkload(
      deployment({ containers: [{ name: "a", resources: { limits: { "nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000" } } }] }),
    );
    expect(readGpuRequest(w)!.wholeGpus).toBe(1);
  });
});

describe("shareTargetIndex", () => {
  it("is the named container, else the first", () => {
    const cs = [{ name: "a" }, { name: "b" }];
    expect(shareTargetIndex(cs, undefined)).toBe(0);
    expect(shareTargetIndex(cs, "b")).toBe(1);
    expect(shareTargetIndex(cs, "zzz")).toBe(-1);
    expect(shareTargetIndex([], undefined)).toBe(-1);
  });
});

describe("setContainerLimit / removeContainerResource", () => {
  it("sets a missing limit and reports the change", () => {
    const c: any = { name: "a" };
    expect(setContainerLimit(c, "volcano.sh/vgpu-number", "1")).toEqual({ changed: true, previous: undefined });
    expect(c.resources.limits).toEqual({ "volcano.sh/vgpu-number": "1" });
  });
  it("leaves an equal quantity alone, even written as a number", () => {
    const c: any = { resources: { limits: { "nvidia.com/gpu": 1 } } };
    expect(setContainerLimit(c, "nvidia.com/gpu", "1")).toEqual({ changed: false, previous: 1 });
    expect(c.resources.limits["nvidia.com/gpu"]).toBe(1);
  });
  it("keeps a present request equal to the limit", () => {
    const c: any = { resources: { limits: { "nvidia.com/gpumem": "100" }, requests: { "nvidia.com/gpumem": "100", cpu: "1" } } };
    expect(setContainerLimit(c, "nvidia.com/gpumem", "200")).toEqual({ changed: true, previous: "100" });
    expect(c.resources).toEqual({ limits: { "nvidia.com/gpumem": "200" }, requests: { "nvidia.com/gpumem": "200", cpu: "1" } });
  });
  it("removes a resource from limits and requests", () => {
    const c: any = { resources: { limits: { x: "1", y: "2" }, requests: { x: "1" } } };
    expect(removeContainerResource(c, "x")).toBe(true);
    expect(c.resources).toEqual({ limits: { y: "2" }, requests: {} });
    expect(removeContainerResource(c, "x")).toBe(false);
  });
});

describe("describeShare", () => {
  it("names the share and its devices", () => {
    expect(describeShare({ fraction: 0.5, devices: 1 })).toBe("gpu-fraction 0.5");
    expect(describeShare({ memoryMiB: 20480, devices: 2 })).toBe("gpu-memory 20480 MiB × 2 devices");
  });
});
