import { describe, expect, it } from "vitest";
import { parseExposition, parseSampleLine } from "../../src/adapter/exposition.ts";
import { ENGINES, detectEngine, extractObservation, seriesKey } from "../../src/adapter/mapping.ts";
import { QUEUE_PROXY_LEGACY_PAGE, QUEUE_PROXY_PAGE, TGI_PAGE, TRITON_PAGE, cumulative, vllmPage } from "./adapter-samples.ts";

describe("parseExposition", () => {
  it("reads names with colons, labels, types, and skips HELP and other comments", () => {
    const parsed = parseExposition(vllmPage({ running: 3, waiting: 1, stop: 120, length: 8, buckets: cumulative([2, 5, 9, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) }));
    expect(parsed.problems).toEqual([]);
    expect(parsed.types.get("vllm:e2e_request_latency_seconds")).toBe("histogram");
    expect(parsed.types.get("vllm:num_requests_running")).toBe("gauge");
    const running = parsed.samples.find((sample) => sample.name === "vllm:num_requests_running");
    expect(running).toEqual({ name: "vllm:num_requests_running", labels: { engine: "0", model_name: "meta-llama/Llama-3.1-8B-Instruct" }, value: 3 });
    const inf = parsed.samples.find((sample) => sample.name === "vllm:e2e_request_latency_seconds_bucket" && sample.labels.le === "+Inf");
    expect(inf?.value).toBe(20);
  });

  it("unescapes label values and reads special values and timestamps", () => {
    expect(parseSampleLine('msg_total{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb"} 7 1712345678901')).toEqual({
      name: "msg_total",
      labels: { path: "C:\\dir", quote: 'say "hi"', nl: "a\nb" },
      value: 7,
      timestampMs: 1712345678901,
    });
    expect(parseSampleLine("a NaN").value).toBeNaN();
    expect(parseSampleLine("a +Inf").value).toBe(Number.POSITIVE_INFINITY);
    expect(parseSampleLine("a -Inf").value).toBe(Number.NEGATIVE_INFINITY);
    expect(parseSampleLine("a 1.5e3").value).toBe(1500);
    expect(parseSampleLine('a{b="c",} 1')).toEqual({ name: "a", labels: { b: "c" }, value: 1 });
    expect(parseSampleLine("a{} 2")).toEqual({ name: "a", labels: {}, value: 2 });
  });

  it("reads Prometheus 3 quoted names and OpenMetrics timestamps and exemplars", () => {
    expect(parseSampleLine('{"kn.serving.queue.depth","k8s.pod.name"="p"} 3')).toEqual({ name: "kn.serving.queue.depth", labels: { "k8s.pod.name": "p" }, value: 3 });
    expect(parseSampleLine('req_bucket{le="0.5"} 4 # {trace_id="abc"} 0.3 1712345678.5')).toEqual({ name: "req_bucket", labels: { le: "0.5" }, value: 4 });
    expect(parseSampleLine("up 1 1712345678.25").timestampMs).toBe(1712345678250);
  });

  it("reports bad lines with their number and keeps every good one; stops at # EOF", () => {
    const text = ["good_one 1", "bad{label=unquoted} 2", 'also_bad{a="b"}3', "no_value", "good_two{x=\"y\"} 4\r", "# EOF", "after_eof 5"].join("\n");
    const parsed = parseExposition(text);
    expect(parsed.samples.map((sample) => [sample.name, sample.value])).toEqual([
      ["good_one", 1],
      ["good_two", 4],
    ]);
    expect(parsed.problems).toHaveLength(3);
    expect(parsed.problems[0]).toMatch(/^line 2: /);
    expect(parsed.problems[1]).toMatch(/^line 3: expected whitespace before the value/);
    expect(parsed.problems[2]).toMatch(/^line 4: /);
  });
});

describe("engine table", () => {
  it("reads vLLM as vLLM even though it also exports the generic HTTP histogram", () => {
    const page = vllmPage({ running: 3, waiting: 1, stop: 120, length: 8, buckets: cumulative([2, 5, 9, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) });
    const observation = extractObservation(parseExposition(page), 1000)!;
    expect(observation.engine).toBe("vllm");
    expect(observation.inFlight).toBe(4);
    expect([...observation.completed!.values()].reduce((a, b) => a + b, 0)).toBe(128);
    expect(observation.completed!.size).toBe(3);
    const [series] = [...observation.histogram!.values()];
    // Bounds are converted to milliseconds.
    expect([...series!.buckets.entries()].slice(0, 4)).toEqual([
      [300, 2],
      [500, 7],
      [800, 16],
      [1000, 20],
    ]);
    expect(series!.buckets.get(Number.POSITIVE_INFINITY)).toBe(20);
  });

  it("reads Triton: busy time for concurrency, success counter, summary quantiles in ms (slowest model, NaN skipped)", () => {
    const observation = extractObservation(parseExposition(TRITON_PAGE), 1000)!;
    expect(observation.engine).toBe("triton");
    expect(observation.inFlight).toBeUndefined();
    expect([...observation.busySeconds!.values()].sort()).toEqual([12, 52.5]);
    expect([...observation.completed!.values()].reduce((a, b) => a + b, 0)).toBe(5000);
    expect(Object.fromEntries(observation.quantilesMs!)).toEqual({ 0.5: 14, 0.9: 16.5, 0.95: 18.25, 0.99: 31 });
  });

  it("reads TGI: queue + batch in flight, success counter without _total, seconds histogram", () => {
    const observation = extractObservation(parseExposition(TGI_PAGE), 1000)!;
    expect(observation.engine).toBe("tgi");
    expect(observation.inFlight).toBe(16);
    expect([...observation.completed!.values()]).toEqual([931]);
    const [series] = [...observation.histogram!.values()];
    expect(Object.fromEntries(series!.buckets)).toEqual({ 100: 0, 250: 3, 500: 61, 1000: 402, 2500: 880, 5000: 925, Infinity: 931 });
  });

  it("reads the Knative queue-proxy, new (OpenTelemetry) and old (OpenCensus, ms) names", () => {
    const current = extractObservation(parseExposition(QUEUE_PROXY_PAGE), 1000)!;
    expect(current.engine).toBe("knative-queue-proxy");
    expect(current.inFlight).toBe(3);
    expect([...current.completed!.values()].reduce((a, b) => a + b, 0)).toBe(102);
    expect(current.histogram!.size).toBe(2);

    const legacy = extractObservation(parseExposition(QUEUE_PROXY_LEGACY_PAGE), 1000)!;
    expect(legacy.engine).toBe("knative-queue-proxy-legacy");
    expect(legacy.inFlight).toBe(5);
    expect([...legacy.completed!.values()].reduce((a, b) => a + b, 0)).toBe(324);
    const [series] = [...legacy.histogram!.values()];
    expect(Object.fromEntries(series!.buckets)).toEqual({ 5: 0, 50: 20, 500: 300, Infinity: 320 });
  });

  it("reads a generic server by http_request_duration_seconds, and dotted names as underscores", () => {
    const generic = extractObservation(
      parseExposition(
        [
          "# TYPE http_request_duration_seconds histogram",
          'http_request_duration_seconds_bucket{code="200",le="0.1"} 5',
          'http_request_duration_seconds_bucket{code="200",le="+Inf"} 8',
          'http_request_duration_seconds_count{code="200"} 8',
          "http_requests_in_flight 2",
        ].join("\n"),
      ),
      1000,
    )!;
    expect(generic.engine).toBe("http");
    expect(generic.inFlight).toBe(2);
    const dotted = extractObservation(parseExposition('{"kn.serving.queue.depth"} 6\n'), 1000)!;
    expect(dotted.engine).toBe("knative-queue-proxy");
    expect(dotted.inFlight).toBe(6);
  });

  it("finds no engine in a page without inference metrics", () => {
    expect(extractObservation(parseExposition("process_cpu_seconds_total 1\ngo_goroutines 12\n"), 1000)).toBeUndefined();
    expect(detectEngine(new Set(["go_goroutines"]), ENGINES)).toBeUndefined();
  });

  it("keys series by their labels without le and quantile, in a stable order", () => {
    expect(seriesKey({ le: "1", model: "m", a: "x" })).toBe(seriesKey({ a: "x", model: "m", le: "+Inf" }));
    expect(seriesKey({ model: "m" })).not.toBe(seriesKey({ model: "n" }));
  });
});
