// Finding and running the `claude` command. CLAUDEMESH_CLAUDE_BIN names it explicitly (an
// empty value means "there is none", which tests use to take the no-claude path); otherwise
// the first executable `claude` on PATH. Claude Code owns ~/.claude.json and writes it
// without locking, so where `claude` exists claudemesh lets it make its own changes
// (`claude mcp add-json`, `claude plugin install`) rather than editing the file beside it.

import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { cmError } from '../errors.ts';

type Env = Readonly<Record<string, string | undefined>>;

const BIN_ENV = 'CLAUDEMESH_CLAUDE_BIN';
const CLAUDE_TIMEOUT_MS = 60_000;
export const INSTALL_CLAUDE_HINT = 'install Claude Code first (npm install -g @anthropic-ai/claude-code, or see https://docs.anthropic.com/en/docs/claude-code), or set CLAUDEMESH_CLAUDE_BIN to its path';

/** The claude executable, or undefined when there is none. */
export function findClaude(env: Env): string | undefined {
  const named = env[BIN_ENV];
  if (named !== undefined) return named === '' ? undefined : named;
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, 'claude');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Run `claude …`; its output, or CM_ERR_CLAUDE_FAILED with what it said. */
export function runClaude(bin: string, args: readonly string[], env: Env, options: { allowFailure?: boolean } = {}): { ok: boolean; output: string } {
  const result = spawnSync(bin, args, { encoding: 'utf8', env: { ...env, DISABLE_AUTOUPDATER: '1' } as NodeJS.ProcessEnv, timeout: CLAUDE_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim();
  const ok = result.status === 0;
  if (!ok && options.allowFailure !== true) {
    throw cmError('CM_ERR_CLAUDE_FAILED', `claude ${args.slice(0, 3).join(' ')} failed (${result.error?.message ?? `exit ${String(result.status)}`}): ${output.slice(0, 400)}`, {
      details: { args: [...args], status: result.status },
    });
  }
  return { ok, output };
}
