#!/usr/bin/env node
// The `claudemesh` command (docs/cli.md). Run: `node cli.ts <verb> …` (Node ≥ 22.18), or the
// `claudemesh` bin. Everything but the process wiring lives in lib/cli/.

import { claudemeshHome } from './lib/client-config.ts';
import { main } from './lib/cli/main.ts';

process.exitCode = await main(process.argv.slice(2), {
  env: process.env,
  home: claudemeshHome(process.env),
  now: Date.now,
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
