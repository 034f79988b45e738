// Writes the generated install manifests (today: manifests/base/webhooks.yaml) from src/install.
//   node scripts/generate-manifests.ts          write them
//   node scripts/generate-manifests.ts --check  exit 1 if a committed file differs from the generator
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { WEBHOOK_MANIFEST_PATH, webhookManifest } from "../src/install/webhook-manifest.ts";

const root = join(fileURLToPath(import.meta.url), "../..");
const generated: Record<string, string> = { [WEBHOOK_MANIFEST_PATH]: webhookManifest() };
const check = process.argv.includes("--check");
let stale = 0;
for (const [file, text] of Object.entries(generated)) {
  const target = join(root, file);
  if (check) {
    let current = "";
    try {
      current = readFileSync(target, "utf8");
    } catch {
      // A missing file is stale like a different one.
    }
    if (current !== text) {
      console.error(`${file} is out of date; run: node scripts/generate-manifests.ts`);
      stale++;
    }
  } else {
    writeFileSync(target, text);
    console.log(`wrote ${file}`);
  }
}
process.exitCode = stale ? 1 : 0;
