// `infergate <command>`: dispatch only; each command lives in its own file.
import { pathToFileURL } from "node:url";

const USAGE = `usage: infergate <command> [flags]

commands:
  serve     run the admission webhook server (HTTPS)
  apply     evaluate a resource against policies offline, as the webhook would
  certs     create a CA and serving certificates, print the caBundle
  adapter   run the custom-metrics adapter
  status    show each Project's GPU quota use and recent admission verdicts

Run 'infergate <command> --help' for the flags of one command.`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return (await import("./serve.ts")).runServe(rest);
    case "apply":
      return (await import("./apply.ts")).runApply(rest);
    case "certs":
      return (await import("./certs.ts")).runCerts(rest);
    case "adapter":
      return (await import("./adapter.ts")).runAdapter(rest);
    case "status":
      return (await import("./status.ts")).runStatus(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      console.error(`infergate: unknown command "${command}"; allowed: serve, apply, certs, adapter, status\n\n${USAGE}`);
      return 2;
  }
}

const invokedDirectly = process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href;
const viaBin = process.argv[1]?.endsWith("infergate.js") || process.argv[1]?.endsWith("/infergate");
if (invokedDirectly || viaBin) {
  main(process.argv.slice(2)).then(
    (code) => {
      // serve keeps running; it exits from its own signal handler.
      if (code !== -1) process.exitCode = code;
    },
    (err) => {
      console.error(`infergate: ${err?.message ?? err}`);
      process.exitCode = 1;
    },
  );
}
