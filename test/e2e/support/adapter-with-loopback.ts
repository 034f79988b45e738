// `infergate adapter` for the end-to-end test, as a process of its own: the real command (flags, pod
// watch, scraper, aggregator authentication, SubjectAccessReview), with one test-only change. kwok's
// pods have no servers behind their IPs (and those addresses must never be dialled), so the pods of one
// namespace are scraped at the model-server stand-in on 127.0.0.1 instead, on the path their own
// annotations declare. Every other pod resolves to nothing and is not scraped at all.
//
// usage: node adapter-with-loopback.ts --namespace NS --loopback-port PORT -- <infergate adapter flags>
import { parseArgs } from "node:util";
import { endpointFromAnnotations, type TargetResolver } from "../../../src/adapter/scraper.ts";
import { runAdapter } from "../../../src/cli/adapter.ts";

const separator = process.argv.indexOf("--");
const own = separator < 0 ? process.argv.slice(2) : process.argv.slice(2, separator);
const adapterArgs = separator < 0 ? [] : process.argv.slice(separator + 1);
const { values } = parseArgs({ args: own, options: { namespace: { type: "string" }, "loopback-port": { type: "string" } } });
const port = Number(values["loopback-port"]);
if (!values.namespace || !Number.isInteger(port) || port < 1 || port > 65535) {
  console.error("usage: adapter-with-loopback.ts --namespace NS --loopback-port PORT -- <infergate adapter flags>");
  process.exit(2);
}
const namespace = values.namespace;

const resolveTarget: TargetResolver = (pod) => {
  if (pod.metadata?.namespace !== namespace) return undefined;
  const declared = endpointFromAnnotations(pod);
  if (!declared.ok) return undefined;
  return new URL(`http://127.0.0.1:${port}${declared.endpoint.path}`);
};

const code = await runAdapter(adapterArgs, { resolveTarget });
if (code !== -1) process.exit(code);
