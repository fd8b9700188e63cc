#!/usr/bin/env node
// The `claudemesh` command (docs/cli.md). Run: `node cli.ts <verb> …` (Node ≥ 22.18), or the
// `claudemesh` bin. Everything but the process wiring lives in lib/cli/.
//
// `hook` is run by Claude Code on every prompt and must be done within a second, so it loads
// only its own module and exits as soon as it is done (lib/cli/verbs/hook.ts).

import { mkdirSync } from 'node:fs';
import { enableCompileCache } from 'node:module';
import { join } from 'node:path';
import { claudemeshHome } from './lib/home.ts';

const COMPILE_CACHE_DIR = 'cache';
const OWNER_ONLY_DIR = 0o700;

// Node keeps the compiled (and type-stripped) modules on disk between runs: a command that
// starts, asks the daemon and exits spends most of its time loading code. The cache lives in
// the user's own claudemesh home (never a shared /tmp directory another user could fill);
// where it cannot be written, Node simply runs without it. Set before the rest of the CLI
// is loaded, hence the dynamic imports below. bin/claudemesh.js turns the same cache on
// before it loads this file, so a warm `claudemesh` does not type-strip even this one.
const home = claudemeshHome(process.env);
try {
  mkdirSync(join(home, COMPILE_CACHE_DIR), { recursive: true, mode: OWNER_ONLY_DIR });
  enableCompileCache(join(home, COMPILE_CACHE_DIR));
} catch {
  // an unwritable home: no cache, same behaviour
}

const argv = process.argv.slice(2);
if (argv[0] === 'hook') {
  const { runHook } = await import('./lib/cli/verbs/hook.ts');
  process.exit(await runHook(argv.slice(1), { env: process.env, stdin: process.stdin, stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) }));
}

// A reader that went away (`claudemesh inbox | head -1`) ends the command quietly: what it
// did not read, it did not want. Exit 0, as the pipeline's consumer decided the length.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

const { main } = await import('./lib/cli/main.ts');
process.exitCode = await main(argv, {
  env: process.env,
  home,
  now: Date.now,
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
