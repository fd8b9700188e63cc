#!/usr/bin/env node
// The `claudemesh` bin. In the package (npm pack) it runs the compiled dist/cli.js, which any
// Node ≥ 22.18 runs. In a clone (`npm link`) it runs cli.ts itself, so what runs is always
// what is checked out: directly where this Node strips types, else with the Node 24 that
// `npm install` put in node_modules (the `node` dev dependency), so an older system Node
// still works. Plain JavaScript: this file must run before anything can strip types.

import { existsSync, mkdirSync } from 'node:fs';
import nodeModule from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIN_NODE = '22.18';
const source = fileURLToPath(new URL('../cli.ts', import.meta.url));
const compiled = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const bundledNode = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
const stripsTypes = Boolean(process.features.typescript);

// Node's compile cache, turned on before any TypeScript is loaded: a warm command then takes
// cli.ts and everything it loads type-stripped and compiled from the cache, and never loads
// the type stripper itself (~50 ms a command). The same directory cli.ts turns on for
// `node cli.ts` (the claudemesh home's cache/, owner-only); unwritable, no cache.
try {
  const cache = join(process.env.CLAUDEMESH_HOME || join(homedir(), '.claudemesh'), 'cache');
  mkdirSync(cache, { recursive: true, mode: 0o700 });
  nodeModule.enableCompileCache?.(cache); // absent before Node 22.1, which gets the message below
} catch {
  // runs as before, only slower
}

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
const [minMajor = 0, minMinor = 0] = MIN_NODE.split('.').map(Number);
const recentEnough = major > minMajor || (major === minMajor && minor >= minMinor);

if (existsSync(source) && stripsTypes) {
  await import(source);
} else if (existsSync(compiled) && recentEnough) {
  await import(compiled);
} else if (existsSync(source) && existsSync(bundledNode)) {
  const { spawnSync } = await import('node:child_process');
  const run = spawnSync(bundledNode, [source, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exitCode = run.status ?? 1;
} else {
  process.stderr.write(`error CM_ERR_USAGE: claudemesh needs Node ${MIN_NODE} or newer, this is ${process.version}\nhint: install a newer Node, or run npm install in the claudemesh directory (it brings Node 24)\n`);
  process.exitCode = 2;
}
