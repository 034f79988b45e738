// Serving certificates change under a running process: `infergate certs` rewrites them, cert-manager
// renews them, and a Kubernetes Secret volume swaps a `..data` symlink to publish new ones. These
// functions read a pair only when it is complete and consistent, so a server never switches to a
// certificate without its key.
import { X509Certificate, createPrivateKey } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { readFileSync, statSync, watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import { dirname } from "node:path";

export interface KeyPair {
  cert: string;
  key: string;
}

export interface WatchKeyPairOptions {
  /** Quiet time after the last file event before the pair is read again. Default 100 ms. */
  debounceMs?: number;
  /** How often file metadata is compared, for changes fs.watch misses. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Told why a changed pair was not taken (half-written, mismatched); each distinct reason once. */
  onError?: (error: Error) => void;
}

/** Reads a certificate and its key; throws an error naming the file when either is unusable. */
export function loadKeyPair(certFile: string, keyFile: string): KeyPair {
  const cert = readText(certFile, "certificate");
  const key = readText(keyFile, "private key");
  let certificate: X509Certificate;
  let privateKey: KeyObject;
  try {
    if (!cert.includes("-----BEGIN CERTIFICATE-----")) throw new Error("no PEM CERTIFICATE block");
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new Error(`TLS certificate ${certFile} does not parse: ${messageOf(error)}`);
  }
  try {
    if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) throw new Error("no PEM PRIVATE KEY block");
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new Error(`TLS private key ${keyFile} does not parse: ${messageOf(error)}`);
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new Error(`TLS private key ${keyFile} does not belong to certificate ${certFile}`);
  }
  return { cert, key };
}

/**
 * Calls `onChange` each time the files hold a new, valid pair. Events from fs.watch on the parent
 * directories (the `..data` swap is an event there, not on the file) are debounced; a metadata poll
 * covers file systems and symlink layouts fs.watch does not report. Returns a function that stops it.
 */
export function watchKeyPair(
  certFile: string,
  keyFile: string,
  onChange: (pair: KeyPair) => void,
  options: WatchKeyPairOptions = {},
): () => void {
  const { debounceMs = 100, pollIntervalMs = 1000, onError } = options;
  let closed = false;
  let lastPair: string | undefined;
  let lastProblem: string | undefined;
  // A rejected pair may become whole without its metadata changing again (same size, coarse
  // mtime), so after a rejection every poll reads it once more.
  let retry = false;
  let debounceTimer: NodeJS.Timeout | undefined;

  const check = () => {
    if (closed) return;
    let pair: KeyPair;
    try {
      pair = loadKeyPair(certFile, keyFile);
    } catch (error) {
      retry = true;
      const problem = messageOf(error);
      if (problem !== lastProblem) {
        lastProblem = problem;
        onError?.(error instanceof Error ? error : new Error(problem));
      }
      return;
    }
    retry = false;
    lastProblem = undefined;
    const identity = `${pair.cert}\u0000${pair.key}`;
    if (identity === lastPair) return;
    lastPair = identity;
    try {
      onChange(pair);
    } catch (error) {
      onError?.(error instanceof Error ? error : new Error(messageOf(error)));
    }
  };

  const schedule = () => {
    if (closed) return;
    clearTimeout(debounceTimer);
    debounceTimer = setTimeout(check, debounceMs);
    debounceTimer.unref();
  };

  try {
    const initial = loadKeyPair(certFile, keyFile);
    lastPair = `${initial.cert}\u0000${initial.key}`;
  } catch {
    // Not there yet: the first complete pair that appears is a change.
    retry = true;
  }

  const watchers: FSWatcher[] = [];
  for (const directory of new Set([dirname(certFile), dirname(keyFile)])) {
    try {
      const watcher = watch(directory, { persistent: false }, schedule);
      watcher.on("error", () => watcher.close()); // the poll still covers this directory
      watchers.push(watcher);
    } catch {
      // Directory missing or not watchable: the poll covers it.
    }
  }

  let lastMetadata = metadataOf(certFile, keyFile);
  const poll = setInterval(() => {
    const metadata = metadataOf(certFile, keyFile);
    if (metadata !== lastMetadata || retry) {
      lastMetadata = metadata;
      schedule();
    }
  }, pollIntervalMs);
  poll.unref();

  return () => {
    closed = true;
    clearInterval(poll);
    clearTimeout(debounceTimer);
    for (const watcher of watchers) watcher.close();
  };
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? messageOf(error)})`;
    throw new Error(`TLS ${what} ${file} ${reason}`);
  }
}

// stat follows symlinks, so a swapped `..data` link shows up as a new inode even when the size and
// mtime of the new files happen to match the old ones.
function metadataOf(...files: string[]): string {
  return files
    .map((file) => {
      try {
        const stat = statSync(file);
        return `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
      } catch {
        return "missing";
      }
    })
    .join("|");
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
