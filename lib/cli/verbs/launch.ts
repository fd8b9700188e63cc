// `claudemesh launch`: start Claude Code as a registered claudemesh session. The session key
// is stable per Claude session id, so `-- --resume <id>` comes back as the same peer with the
// messages that waited for it; a fresh launch picks the id itself (--session-id). Claude is
// started with the development-channels flag naming claudemesh (interactive only: Claude Code
// asks once per launch whether to load it) and with CLAUDEMESH_SESSION_TOKEN_FILE in its
// environment, which its hooks, its MCP server and the Bash tool inherit, so all of them act
// as this session. The wrapper stays while Claude runs (the daemon keeps the session while
// this process lives), then unregisters the session and exits with Claude's exit code.

import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { findClaude, INSTALL_CLAUDE_HINT } from '../../claude/claude-bin.ts';
import { SESSION_TOKEN_FILE_ENV } from '../../daemon-client.ts';
import { cmError } from '../../errors.ts';
import { stringOption } from '../args.ts';
import type { Verb } from '../verb.ts';
import { askDaemon } from './daemon-access.ts';

const DEV_CHANNELS_FLAG = '--dangerously-load-development-channels';
const CHANNEL_ENTRY = 'server:claudemesh';
const PROVIDERS_WITHOUT_CHANNELS = ['CLAUDE_CODE_USE_BEDROCK', 'CLAUDE_CODE_USE_VERTEX', 'CLAUDE_CODE_USE_FOUNDRY'];
const TOKEN_DIR_MODE = 0o700;
const TOKEN_FILE_MODE = 0o600;
// A claude killed by a signal: the shell's convention, 128 + the signal's number.
const SIGNAL_EXIT_BASE = 128;

/** The Claude session id to use: the one --resume names, else a new one. */
function sessionIdFrom(passthrough: readonly string[]): { sessionId: string; fresh: boolean } {
  const at = passthrough.findIndex((word) => word === '--resume' || word === '-r');
  const named = at === -1 ? undefined : passthrough[at + 1];
  if (named !== undefined && !named.startsWith('-')) return { sessionId: named, fresh: false };
  return { sessionId: randomUUID(), fresh: true };
}

/** Claude's arguments: the channel flag (unless the provider has no channels), the id, the rest. */
function claudeArgs(sessionId: string, fresh: boolean, passthrough: readonly string[], channels: boolean): string[] {
  // The channel flag takes every word up to the next option: what follows its entry is always
  // an option here (--session-id, or the --resume / -r that named the id).
  return [...(channels ? [DEV_CHANNELS_FLAG, CHANNEL_ENTRY] : []), ...(fresh ? ['--session-id', sessionId] : []), ...passthrough];
}

function runClaudeProcess(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: 'inherit', env });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal === null ? 1 : SIGNAL_EXIT_BASE + (constants.signals[signal] ?? 0))));
  });
}

export const launchVerb: Verb = {
  name: 'launch',
  summary: 'start Claude Code as a claudemesh session (channel messages, stable identity)',
  help: `usage: claudemesh launch [--mesh M] [--name N] [-- <claude arguments>]

Registers a Claude session with the daemon (started when needed) and runs claude with the
development-channels flag for claudemesh, so peer messages arrive in the conversation. Claude
Code asks once per launch whether to load that channel: accept it. The session keeps its key
per Claude session id: claudemesh launch -- -r <id> (resume) comes back as the same peer.
Run claudemesh install once first (the MCP server and the hooks). Exits with Claude's code.

options:
  --mesh M   the mesh (name or id); needed when you are in several
  --name N   the session's name as peers see it (default: your member name)
Environment: CLAUDEMESH_CLAUDE_BIN (the claude command, default: claude on PATH).
`,
  options: { mesh: { type: 'string' }, name: { type: 'string' } },
  positionals: { min: 0, max: 1_000 },
  async run(context, args) {
    const bin = findClaude(context.env);
    if (bin === undefined) throw cmError('CM_ERR_CLAUDE_MISSING', 'claudemesh launch needs Claude Code: no claude command was found', { hint: INSTALL_CLAUDE_HINT });
    const { sessionId, fresh } = sessionIdFrom(args.positionals);
    const mesh = stringOption(args.values, 'mesh');
    const name = stringOption(args.values, 'name');
    const registered = await askDaemon(context, 'POST', '/v1/sessions/register', {
      sessionId, pid: process.pid, cwd: process.cwd(), ...(mesh === undefined ? {} : { mesh }), ...(name === undefined ? {} : { name }),
    });
    const token = String(registered.body.token);
    const dir = join(context.home, 'launch');
    await mkdir(dir, { recursive: true, mode: TOKEN_DIR_MODE });
    const tokenFile = join(dir, `${createHash('sha256').update(sessionId).digest('hex').slice(0, 32)}.token`);
    await writeFile(tokenFile, `${token}\n`, { mode: TOKEN_FILE_MODE });
    const provider = PROVIDERS_WITHOUT_CHANNELS.find((variable) => context.env[variable] !== undefined && context.env[variable] !== '' && context.env[variable] !== '0');
    context.stderr(`claudemesh: session ${String(registered.body.name)} (key ${String(registered.body.sessionKey).slice(0, 12)}), Claude session ${sessionId}\n`);
    context.stderr(provider === undefined
      ? 'claudemesh: Claude Code will ask whether to load the development channel server:claudemesh; accept it to receive messages\n'
      : `claudemesh: ${provider} is set, and channels exist only with Anthropic's own API: messages show through the hooks and the inbox tool\n`);
    const env = { ...context.env, [SESSION_TOKEN_FILE_ENV]: tokenFile, CLAUDEMESH_MESH: String(registered.body.meshId), CLAUDEMESH_SESSION_NAME: String(registered.body.name) } as NodeJS.ProcessEnv;
    let code = 1;
    try {
      code = await runClaudeProcess(bin, claudeArgs(sessionId, fresh, args.positionals, provider === undefined), env);
    } finally {
      await askDaemon({ ...context, env: { ...context.env, [SESSION_TOKEN_FILE_ENV]: tokenFile } }, 'POST', '/v1/sessions/unregister', {}).catch(() => {});
      await unlink(tokenFile).catch(() => {});
    }
    process.exit(code);
  },
};
