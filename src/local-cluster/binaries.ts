// Where the control-plane binaries come from: $INFERGATE_BIN, or scripts/build-binaries.sh, which
// builds them from Go modules once (a long first build) and afterwards only prints the cached dir.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export const REQUIRED_BINARIES = [
  "etcd",
  "kube-apiserver",
  "kube-controller-manager",
  "kube-scheduler",
  "kubectl",
  "kwok",
  "kwok-stages.yaml",
] as const;

export function missingBinaries(binDir: string): string[] {
  return REQUIRED_BINARIES.filter((f) => !fs.existsSync(path.join(binDir, f)));
}

/** What the user has been told about the build so far. */
export interface BuildProgress {
  building?: { name: string; since: number };
  downloads: number;
  reportedDownloads: number;
  lastDownloadReport: number;
}

export const INITIAL_PROGRESS: BuildProgress = { downloads: 0, reportedDownloads: 0, lastDownloadReport: 0 };

const DOWNLOAD_REPORT_EVERY_MS = 10_000;

/**
 * Turns one stderr line of build-binaries.sh into what the user sees: its own `[build …]` lines
 * verbatim (they name the binary being built), hundreds of `go: downloading …` lines folded into an
 * occasional count, anything else (compiler errors) verbatim.
 */
export function onBuildLine(state: BuildProgress, line: string, now: number): { state: BuildProgress; print: string[] } {
  if (/^go: downloading /.test(line)) {
    const next = { ...state, downloads: state.downloads + 1 };
    if (now - state.lastDownloadReport < DOWNLOAD_REPORT_EVERY_MS) return { state: next, print: [] };
    return {
      state: { ...next, reportedDownloads: next.downloads, lastDownloadReport: now },
      print: [`[build] downloading Go modules (${next.downloads} so far)`],
    };
  }
  if (line.trim() === "") return { state, print: [] };
  const building = /^\[build [^\]]*\] building (\S+) \.\.\./.exec(line);
  if (building) return { state: { ...state, building: { name: building[1]!, since: now } }, print: [line] };
  if (/^\[build [^\]]*\] built /.test(line)) return { state: { ...state, building: undefined }, print: [line] };
  return { state, print: [line] };
}

/** A reminder, for the silent minutes of a long compile, of what is still building. */
export function buildHeartbeat(state: BuildProgress, now: number): string | undefined {
  if (!state.building) return undefined;
  const seconds = Math.round((now - state.building.since) / 1000);
  const elapsed = seconds >= 60 ? `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, "0")}s` : `${seconds}s`;
  return `[build] still building ${state.building.name} (${elapsed}; the first build of kube-apiserver takes 10-20 min on 2 cores)`;
}

export interface ResolveOptions {
  repoRoot: string;
  env?: NodeJS.ProcessEnv;
  /** Where progress goes; stderr by default. */
  write?: (text: string) => void;
  heartbeatMs?: number;
}

export async function resolveBinDir(options: ResolveOptions): Promise<string> {
  const env = options.env ?? process.env;
  const write = options.write ?? ((t: string) => process.stderr.write(t));
  if (env.INFERGATE_BIN) {
    const missing = missingBinaries(env.INFERGATE_BIN);
    if (missing.length) {
      throw new Error(
        `INFERGATE_BIN=${env.INFERGATE_BIN} lacks ${missing.join(", ")}; build them with \`npm run build:binaries\` ` +
          `(with INFERGATE_BIN set it builds into that directory) or unset INFERGATE_BIN`,
      );
    }
    return env.INFERGATE_BIN;
  }
  const script = path.join(options.repoRoot, "scripts", "build-binaries.sh");
  const child = spawn("bash", [script], { cwd: options.repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let state = INITIAL_PROGRESS;
  let pending = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => {
    pending += d.toString();
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) {
      const step = onBuildLine(state, line, Date.now());
      state = step.state;
      for (const p of step.print) write(`${p}\n`);
    }
  });
  const timer = setInterval(() => {
    const beat = buildHeartbeat(state, Date.now());
    if (beat) write(`${beat}\n`);
  }, options.heartbeatMs ?? 60_000);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c) => resolve(c));
  }).finally(() => clearInterval(timer));
  if (pending) write(`${pending}\n`);
  if (code !== 0) throw new Error(`${script} failed with exit code ${code}; see its output above`);
  const binDir = stdout.trim().split("\n").pop()?.trim() ?? "";
  const missing = binDir ? missingBinaries(binDir) : [...REQUIRED_BINARIES];
  if (missing.length) throw new Error(`${script} reported bin dir "${binDir}" but it lacks ${missing.join(", ")}`);
  return binDir;
}
