// Where the `claudemesh` entry point is, for whatever spawns the daemon or writes a service
// unit: cli.ts when running from the sources, cli.js when running the compiled package
// (tsconfig.build.json), found next to this file's own copy.

import { fileURLToPath } from 'node:url';

const COMPILED = import.meta.url.endsWith('.js');

/** The absolute path of the CLI entry this code belongs to. */
export const CLI_ENTRY = fileURLToPath(new URL(COMPILED ? '../cli.js' : '../cli.ts', import.meta.url));
