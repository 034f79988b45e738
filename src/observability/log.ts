// Structured JSON logs on stdout, one object per line.
import fs from "node:fs";

export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  level: Level;
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
  enabled(level: Level): boolean;
}

export function createLogger(level: Level = "info", write: (line: string) => void = batchedStdout()): Logger {
  return {
    level,
    enabled: (l) => ORDER[l] >= ORDER[level],
    log(l, msg, fields) {
      if (ORDER[l] < ORDER[level]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level: l, msg, ...fields })}\n`);
    },
  };
}

/**
 * Lines logged during one turn of the event loop leave in one write. Under load the webhook logs
 * several admissions per turn, and a write per line cost more CPU than deciding them (BENCHMARKS.md,
 * "End-to-end create latency"). What is pending when the process exits is written synchronously.
 */
function batchedStdout(): (line: string) => void {
  let pending: string[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.join("");
    pending = [];
    process.stdout.write(text);
  };
  process.once("exit", () => {
    if (pending.length === 0) return;
    try {
      fs.writeSync(1, pending.join(""));
    } catch {
      // stdout is gone: nothing left to tell.
    }
    pending = [];
  });
  return (line) => {
    pending.push(line);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}

export function isLevel(v: string): v is Level {
  return v in ORDER;
}
