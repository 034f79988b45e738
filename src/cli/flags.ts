// Flag parsing shared by the commands: node:util parseArgs with errors a person can act on.
import { parseArgs, type ParseArgsConfig } from "node:util";

export class UsageError extends Error {}

/** Where the servers listen by default: inside a pod, the API server and Services reach the pod IP. */
export const IN_CLUSTER_ADDRESS = "0.0.0.0";

export function parseFlags<T extends NonNullable<ParseArgsConfig["options"]>>(argv: string[], options: T, command: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: false, strict: true });
  } catch (err) {
    const allowed = Object.keys(options).map((k) => `--${k}`).join(", ");
    throw new UsageError(`infergate ${command}: ${(err as Error).message.replace(/\. To specify.*$/s, "")}; allowed flags: ${allowed}`);
  }
}

export function intFlag(value: string | undefined, name: string, fallback: number, min = 0, max = 65535): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name}: must be an integer from ${min} to ${max}, got "${value}"`);
  return n;
}
