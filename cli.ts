#!/usr/bin/env node
// The `claudemesh` command (docs/cli.md). Run: `node cli.ts <verb> …` (Node ≥ 22.18), or the
// `claudemesh` bin. Everything but the process wiring lives in lib/cli/.

import { claudemeshHome } from './lib/client-config.ts';
import { main } from './lib/cli/main.ts';

// A reader that went away (`claudemesh inbox | head -1`) ends the command quietly: what it
// did not read, it did not want. Exit 0, as the pipeline's consumer decided the length.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

process.exitCode = await main(process.argv.slice(2), {
  env: process.env,
  home: claudemeshHome(process.env),
  now: Date.now,
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
