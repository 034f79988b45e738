// Prometheus text exposition (format 0.0.4, and the OpenMetrics text that some servers send anyway).
// The parser is tolerant: a bad line is reported and skipped, because one odd metric from a
// third-party library must not hide the inference metrics on the same page.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  timestampMs?: number;
}

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped" | "unknown" | "info" | "stateset" | "gaugehistogram";

export interface Exposition {
  samples: Sample[];
  /** From `# TYPE` lines, by family name. */
  types: Map<string, MetricType>;
  /** "line N: what is wrong", at most `maxProblems` of them. */
  problems: string[];
}

const TYPES = new Set<MetricType>(["counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"]);

export function parseExposition(text: string, maxProblems = 20): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, MetricType>();
  const problems: string[] = [];
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!.replace(/\r$/, "");
    if (line.trim() === "") continue;
    if (line.startsWith("#")) {
      const comment = line.slice(1).trim();
      if (comment === "EOF") break;
      const typed = /^TYPE\s+(\S+)\s+(\S+)\s*$/.exec(comment);
      if (typed) {
        const type = typed[2]!.toLowerCase() as MetricType;
        if (TYPES.has(type)) types.set(unquote(typed[1]!), type);
        else if (problems.length < maxProblems) problems.push(`line ${index + 1}: unknown metric type "${typed[2]}"`);
      }
      continue;
    }
    try {
      samples.push(parseSampleLine(line));
    } catch (error) {
      if (problems.length < maxProblems) problems.push(`line ${index + 1}: ${(error as Error).message}: ${truncate(line)}`);
    }
  }
  return { samples, types, problems };
}

/** Parses one sample line: `name{label="value",...} value [timestamp]`. Throws on malformed input. */
export function parseSampleLine(line: string): Sample {
  const scanner = new Scanner(line);
  scanner.skipSpaces();
  let name = scanner.peek() === "{" ? "" : scanner.readName("metric name");
  const labels: Record<string, string> = {};
  let spaced = scanner.skipSpaces();
  if (scanner.peek() === "{") {
    spaced = false;
    scanner.next();
    let first = true;
    for (;;) {
      scanner.skipSpaces();
      if (scanner.peek() === "}") {
        scanner.next();
        break;
      }
      if (!first) {
        scanner.expect(",");
        scanner.skipSpaces();
        if (scanner.peek() === "}") {
          scanner.next();
          break;
        }
      }
      first = false;
      // UTF-8 names (Prometheus 3): the metric name may be the first, quoted, entry in the braces.
      const key = scanner.peek() === '"' ? scanner.readQuoted() : scanner.readName("label name");
      scanner.skipSpaces();
      if (scanner.peek() !== "=" && name === "") {
        name = key;
        continue;
      }
      scanner.expect("=");
      scanner.skipSpaces();
      labels[key] = scanner.readQuoted();
    }
  }
  if (name === "") throw new Error("missing metric name");
  spaced = scanner.skipSpaces() || spaced;
  if (!spaced) throw new Error("expected whitespace before the value");
  const value = parseValue(scanner.readToken());
  let timestampMs: number | undefined;
  scanner.skipSpaces();
  // OpenMetrics exemplars follow " # "; they carry nothing we use.
  if (!scanner.done() && scanner.peek() !== "#") {
    const token = scanner.readToken();
    const parsed = Number(token);
    if (!Number.isFinite(parsed)) throw new Error(`bad timestamp "${token}"`);
    // OpenMetrics writes seconds with a fraction; the 0.0.4 format integer milliseconds.
    timestampMs = token.includes(".") ? parsed * 1000 : parsed;
    scanner.skipSpaces();
    if (!scanner.done() && scanner.peek() !== "#") throw new Error("unexpected text after the timestamp");
  }
  return timestampMs === undefined ? { name, labels, value } : { name, labels, value, timestampMs };
}

function parseValue(token: string): number {
  switch (token.toLowerCase()) {
    case "nan":
      return Number.NaN;
    case "+inf":
    case "inf":
      return Number.POSITIVE_INFINITY;
    case "-inf":
      return Number.NEGATIVE_INFINITY;
  }
  const value = Number(token);
  if (token === "" || Number.isNaN(value)) throw new Error(`bad value "${token}"`);
  return value;
}

class Scanner {
  private position = 0;
  private readonly text: string;

  constructor(text: string) {
    this.text = text;
  }

  done(): boolean {
    return this.position >= this.text.length;
  }

  peek(): string {
    return this.text[this.position] ?? "";
  }

  next(): string {
    return this.text[this.position++] ?? "";
  }

  /** Returns whether any whitespace was skipped. */
  skipSpaces(): boolean {
    const start = this.position;
    while (this.peek() === " " || this.peek() === "\t") this.position++;
    return this.position > start;
  }

  expect(char: string): void {
    if (this.peek() !== char) throw new Error(`expected "${char}" at column ${this.position + 1}`);
    this.position++;
  }

  readName(what: string): string {
    const match = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(this.text.slice(this.position));
    if (!match) throw new Error(`expected a ${what} at column ${this.position + 1}`);
    this.position += match[0].length;
    return match[0];
  }

  readQuoted(): string {
    this.expect('"');
    let out = "";
    for (;;) {
      if (this.done()) throw new Error("unterminated quoted string");
      const char = this.next();
      if (char === '"') return out;
      if (char !== "\\") {
        out += char;
        continue;
      }
      const escaped = this.next();
      out += escaped === "n" ? "\n" : escaped === "\\" || escaped === '"' ? escaped : `\\${escaped}`;
    }
  }

  readToken(): string {
    const start = this.position;
    while (!this.done() && this.peek() !== " " && this.peek() !== "\t") this.position++;
    return this.text.slice(start, this.position);
  }
}

function unquote(name: string): string {
  return name.startsWith('"') && name.endsWith('"') && name.length >= 2 ? name.slice(1, -1) : name;
}

function truncate(line: string): string {
  return line.length > 120 ? `${line.slice(0, 117)}...` : line;
}
