// Child processes of the local cluster: each writes to its own log file and leaves a PID file, and is
// stopped by its PID only. Children stay in our process group so a terminal Ctrl-C reaches them too,
// and an exit hook kills whatever is still alive if this process ends without a clean stop.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export interface LaunchOptions {
  name: string;
  command: string;
  args: string[];
  /** Directory for `<name>.log` and `<name>.pid`. */
  stateDir: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcess {
  name: string;
  pid: number;
  logFile: string;
  pidFile: string;
  /** Undefined while running. */
  exit(): ExitStatus | undefined;
  exited: Promise<ExitStatus>;
}

const running = new Map<number, ManagedProcess>();
let exitHookInstalled = false;

/** Environment for every child: loopback never goes through a proxy. */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const noProxy = ["127.0.0.1", "localhost", process.env.NO_PROXY ?? process.env.no_proxy ?? ""].filter(Boolean).join(",");
  return { ...process.env, NO_PROXY: noProxy, no_proxy: noProxy, ...extra };
}

export function logDir(stateDir: string): string {
  return path.join(stateDir, "logs");
}

export function pidDir(stateDir: string): string {
  return path.join(stateDir, "pids");
}

export async function launch(options: LaunchOptions): Promise<ManagedProcess> {
  installExitHook();
  fs.mkdirSync(logDir(options.stateDir), { recursive: true });
  fs.mkdirSync(pidDir(options.stateDir), { recursive: true });
  const logFile = path.join(logDir(options.stateDir), `${options.name}.log`);
  const pidFile = path.join(pidDir(options.stateDir), `${options.name}.pid`);
  const fd = fs.openSync(logFile, "a");
  fs.writeSync(fd, `# ${new Date().toISOString()} ${options.command} ${options.args.join(" ")}\n`);
  const child = spawn(options.command, options.args, {
    stdio: ["ignore", fd, fd],
    env: options.env ?? childEnv(),
    cwd: options.cwd,
  });
  fs.closeSync(fd);
  await new Promise<void>((resolve, reject) => {
    child.once("spawn", () => resolve());
    child.once("error", (err) => reject(new Error(`cannot start ${options.name} (${options.command}): ${err.message}`)));
  });
  const pid = child.pid!;
  fs.writeFileSync(pidFile, `${pid}\n`);
  let status: ExitStatus | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code, signal) => {
      status = { code, signal };
      running.delete(pid);
      fs.rmSync(pidFile, { force: true });
      resolve(status);
    });
  });
  const proc: ManagedProcess = { name: options.name, pid, logFile, pidFile, exit: () => status, exited };
  running.set(pid, proc);
  return proc;
}

/** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process has exited. */
export async function terminate(proc: ManagedProcess, graceMs = 10_000): Promise<ExitStatus> {
  if (proc.exit()) return proc.exit()!;
  // A stopped (SIGSTOP) process would hold SIGTERM pending forever.
  signal(proc.pid, "SIGCONT");
  signal(proc.pid, "SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      signal(proc.pid, "SIGKILL");
      resolve();
    }, graceMs);
  });
  await Promise.race([proc.exited, killed]);
  clearTimeout(timer);
  return proc.exited;
}

/** Stops every process this module started and that still runs, newest first. */
export async function stopAll(graceMs?: number): Promise<void> {
  for (const proc of [...running.values()].reverse()) await terminate(proc, graceMs);
}

/** SIGKILL for everything still running: the second Ctrl-C. */
export function killAll(): void {
  for (const proc of running.values()) {
    signal(proc.pid, "SIGCONT");
    signal(proc.pid, "SIGKILL");
  }
}

/**
 * Kills processes left behind by an earlier run that died without cleaning up, using the PID files in
 * `stateDir`. A PID counts as ours only if its command line mentions `stateDir`, so a recycled PID of
 * an unrelated process is never touched.
 */
export async function killStaleProcesses(stateDir: string): Promise<string[]> {
  const dir = pidDir(stateDir);
  if (!fs.existsSync(dir)) return [];
  const killed: string[] = [];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".pid"))) {
    const pid = Number(fs.readFileSync(path.join(dir, file), "utf8").trim());
    if (Number.isInteger(pid) && pid > 0 && commandLine(pid)?.includes(stateDir)) {
      signal(pid, "SIGCONT");
      signal(pid, "SIGKILL");
      await waitUntilGone(pid);
      killed.push(`${file.replace(/\.pid$/, "")} (pid ${pid})`);
    }
    fs.rmSync(path.join(dir, file), { force: true });
  }
  return killed;
}

/** The last `lines` lines of a log file ("" when it does not exist). */
export function tail(file: string, lines: number): string {
  if (!fs.existsSync(file)) return "";
  const text = fs.readFileSync(file, "utf8");
  return text.split("\n").slice(-lines - 1).join("\n");
}

/** Tails of every log under `<stateDir>/logs`, each under a header, for printing on failure. */
export function logTails(stateDir: string, lines = 40): string {
  const dir = logDir(stateDir);
  if (!fs.existsSync(dir)) return `(no logs in ${dir})`;
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith(".log"))
    .sort()
    .map((f) => `===== ${path.join(dir, f)} (last ${lines} lines) =====\n${tail(path.join(dir, f), lines)}`)
    .join("\n");
}

function commandLine(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return undefined;
  }
}

async function waitUntilGone(pid: number): Promise<void> {
  for (let i = 0; i < 100 && commandLine(pid) !== undefined; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous by necessity: nothing asynchronous runs in an 'exit' handler.
  process.on("exit", () => {
    for (const proc of running.values()) fs.rmSync(proc.pidFile, { force: true });
    killAll();
  });
}
