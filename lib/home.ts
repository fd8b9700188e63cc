// Where claudemesh keeps a user's files. A module of its own, with no dependencies, so the
// CLI's entry can find the home before it loads anything else (cli.ts).

import { homedir } from 'node:os';
import { join } from 'node:path';

/** The claudemesh home directory: CLAUDEMESH_HOME, else ~/.claudemesh. */
export function claudemeshHome(env: Readonly<Record<string, string | undefined>> = process.env): string {
  const override = env.CLAUDEMESH_HOME;
  return override !== undefined && override !== '' ? override : join(homedir(), '.claudemesh');
}
