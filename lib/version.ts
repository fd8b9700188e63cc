// Version facts shown by /health and the CLI.

import { readFileSync } from 'node:fs';

const GIT_TIMEOUT_MS = 1_000;
const ROOT = new URL('../', import.meta.url).pathname;

// From the sources lib/ sits next to package.json; compiled, it sits in dist/lib/.
const PACKAGE_JSON = new URL(import.meta.url.endsWith('.js') ? '../../package.json' : '../package.json', import.meta.url);

export const VERSION: string = (JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { version: string }).version;

/** GIT_SHA from the environment (Docker build arg), else `git rev-parse`, else "unknown". */
export function resolveGitSha(configured: string | undefined): string {
  if (configured !== undefined) return configured;
  try {
    // node:child_process only here: every CLI command reads VERSION, none needs git.
    const { execFileSync } = process.getBuiltinModule('node:child_process');
    const out = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, timeout: GIT_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'ignore'] });
    const sha = out.toString().trim();
    return /^[0-9a-f]{40}$/.test(sha) ? sha : 'unknown';
  } catch {
    return 'unknown';
  }
}
