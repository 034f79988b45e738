#!/usr/bin/env node
// The package's bin. Sources are TypeScript run by Node 24's type stripping (see docs/decisions/001).
import "../src/cli/main.ts";
