#!/usr/bin/env node
// The `claudemesh` bin. In the package (npm pack) it runs the compiled dist/cli.js, which any
// Node ≥ 22.18 runs. In a clone (`npm link`) it runs cli.ts itself, so what runs is always
// what is checked out: directly where this Node strips types, else with the Node 24 that
// `npm install` put in node_modules (the `node` dev dependency), so an older system Node
// still works. Plain JavaScript: this file must run before anything can strip types.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const MIN_NODE = '22.18';
const source = fileURLToPath(new URL('../cli.ts', import.meta.url));
const compiled = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const bundledNode = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
const stripsTypes = Boolean(process.features.typescript);

if (existsSync(source) && stripsTypes) {
  await import(source);
} else if (existsSync(compiled)) {
  await import(compiled);
} else if (existsSync(source) && existsSync(bundledNode)) {
  const run = spawnSync(bundledNode, [source, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exitCode = run.status ?? 1;
} else {
  process.stderr.write(`error CM_ERR_USAGE: claudemesh needs Node ${MIN_NODE} or newer, this is ${process.version}\nhint: install a newer Node, or run npm install in the claudemesh directory (it brings Node 24)\n`);
  process.exitCode = 2;
}
