import { describe, expect, it } from "vitest";
import { adapterSettings, parseDuration } from "../../src/cli/adapter.ts";
import { IN_CLUSTER_ADDRESS } from "../../src/cli/flags.ts";

describe("infergate adapter flags", () => {
  it("reads Go-style durations, and bare numbers as seconds", () => {
    expect(parseDuration("60s")).toBe(60_000);
    expect(parseDuration("1m30s")).toBe(90_000);
    expect(parseDuration("500ms")).toBe(500);
    expect(parseDuration("2")).toBe(2_000);
    expect(parseDuration("1.5s")).toBe(1_500);
    expect(parseDuration("soon")).toBeUndefined();
    expect(parseDuration("")).toBeUndefined();
  });

  it("has the documented defaults", () => {
    expect(adapterSettings([]).settings).toEqual({
      port: 6443,
      address: IN_CLUSTER_ADDRESS,
      certFile: "certs/tls.crt",
      keyFile: "certs/tls.key",
      windowMs: 60_000,
      scrapeIntervalMs: 15_000,
      scrapeConcurrency: 16,
      scrapeTimeoutMs: 10_000,
      level: "info",
    });
  });

  it("takes overrides, including an empty allowed-names list", () => {
    const { settings } = adapterSettings([
      "--port=0",
      "--address=127.0.0.1",
      "--kubeconfig=/tmp/kubeconfig",
      "--requestheader-client-ca-file=/tmp/front-proxy-ca.crt",
      "--requestheader-allowed-names=",
      "--window=10s",
      "--scrape-interval=1s",
      "--scrape-timeout=500ms",
      "--scrape-concurrency=4",
      "--prometheus-url=http://127.0.0.1:9090",
    ]);
    expect(settings).toMatchObject({
      port: 0,
      address: "127.0.0.1",
      kubeconfig: "/tmp/kubeconfig",
      clientCAFile: "/tmp/front-proxy-ca.crt",
      allowedNames: [],
      windowMs: 10_000,
      scrapeIntervalMs: 1_000,
      scrapeTimeoutMs: 500,
      scrapeConcurrency: 4,
      prometheusUrl: "http://127.0.0.1:9090",
    });
    expect(adapterSettings(["--requestheader-allowed-names=front-proxy-client, aggregator"]).settings?.allowedNames).toEqual(["front-proxy-client", "aggregator"]);
  });

  it("reports every bad flag at once", () => {
    const { settings, errors } = adapterSettings(["--port=70000", "--window=5s", "--scrape-interval=15s", "--scrape-timeout=20s", "--prometheus-url=prometheus:9090", "--log-level=loud"]);
    expect(settings).toBeUndefined();
    expect(errors).toEqual([
      '--log-level: must be one of debug, info, warn, error, got "loud"',
      "--scrape-timeout (20000 ms) must not exceed --scrape-interval (15000 ms)",
      "--window (5000 ms) must hold at least two scrapes: make it at least twice --scrape-interval (15000 ms)",
      '--prometheus-url: must be an http:// or https:// URL, got "prometheus:9090"',
      '--port: must be an integer from 0 to 65535, got "70000"',
    ]);
    expect(adapterSettings(["--unknown"]).errors[0]).toMatch(/^infergate adapter: Unknown option '--unknown'; allowed flags: --port/);
  });
});
