// `claudemesh hook working|idle|start|end`: what Claude Code's hooks run (UserPromptSubmit,
// Stop, SessionStart, SessionEnd). A hook's exit code and output are part of the session:
// stdout of UserPromptSubmit and SessionStart becomes the model's context, exit 2 erases the
// prompt or keeps Claude going, any other non-zero exit shows a "hook error". So this verb
// always exits 0, gives up after HOOK_DEADLINE_MS of the process's life, never starts the
// daemon (that can take seconds), and prints nothing — except, on UserPromptSubmit, one
// factual line when messages wait that no live channel will show (never their bodies).
//
// cli.ts runs this before loading the rest of the CLI, so a hook pays only for what it uses.

import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { channelBlockers } from '../../claude/channels.ts';
import { claudemeshHome } from '../../home.ts';
import { ipcRequest, sessionHeader, sessionTokenFrom } from '../../daemon-client.ts';
import { daemonPaths } from '../../../daemon/paths.ts';
import type { Verb } from '../verb.ts';

// Claude Code gives UserPromptSubmit 30 s and SessionEnd 1.5 s, but a prompt waits for this:
// 800 ms from the process's start, Node's own start-up included — and, on a machine so busy
// that start-up alone took most of that, still MIN_WORK_MS for the work itself.
const HOOK_DEADLINE_MS = 800;
const MIN_WORK_MS = 400;
const STDIN_WAIT_MS = 300;
const MAX_STDIN_BYTES = 256 * 1024;
const ACTIONS = ['working', 'idle', 'start', 'end'] as const;

type Env = Readonly<Record<string, string | undefined>>;

interface HookIo {
  env: Env;
  stdin: Readable;
  stdout(text: string): void;
  stderr(text: string): void;
}

const HELP = `usage: claudemesh hook working|idle|start|end

Run by Claude Code's hooks (claudemesh install adds them): UserPromptSubmit → working,
Stop → idle, SessionStart → start (registers the session if nothing did), SessionEnd → end.
Reads the hook's JSON on stdin, finds the session (CLAUDEMESH_SESSION_TOKEN_FILE, else the
Claude session id, else the Claude process id) and sets its status through the daemon, which
signs it with the session's key. Always exits 0 within a second and prints nothing, except on
UserPromptSubmit when messages wait and no channel shows them: one line with their count and
senders. CLAUDEMESH_HOOK_DEBUG=1 explains on stderr what it did.
`;

/** The hook's JSON from stdin: an object, or {} when there is none in time. */
async function readHookJson(stdin: Readable, waitMs: number): Promise<Record<string, unknown>> {
  if ((stdin as { isTTY?: boolean }).isTTY === true) return {};
  const chunks: Buffer[] = [];
  let size = 0;
  const done = new Promise<void>((resolve) => {
    stdin.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_STDIN_BYTES) chunks.push(chunk);
    });
    stdin.once('end', () => resolve());
    stdin.once('error', () => resolve());
  });
  await Promise.race([done, sleep(waitMs)]);
  stdin.pause();
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The one line a prompt gets about messages that no channel will show. */
export function unreadNotice(count: number, from: readonly string[], more: number): string {
  const names = from.length === 0 ? '' : ` (${from.join(', ')}${more > 0 ? ` and ${more} more` : ''})`;
  return `${count} unread claudemesh message${count === 1 ? '' : 's'}${names}: run \`claudemesh inbox\` to read ${count === 1 ? 'it' : 'them'}`;
}

async function hookOnce(action: (typeof ACTIONS)[number], io: HookIo, debug: (line: string) => void): Promise<void> {
  const input = await readHookJson(io.stdin, STDIN_WAIT_MS);
  const claudePid = Number(io.env.CLAUDE_PID) > 0 ? Number(io.env.CLAUDE_PID) : process.ppid;
  const sessionId = text(input.session_id) ?? text(io.env.CLAUDE_CODE_SESSION_ID);
  const body = {
    event: action, pid: claudePid, cwd: text(input.cwd) ?? process.cwd(),
    ...(sessionId === undefined ? {} : { sessionId }),
    ...(text(io.env.CLAUDEMESH_SESSION_NAME) === undefined ? {} : { name: io.env.CLAUDEMESH_SESSION_NAME }),
    ...(text(io.env.CLAUDEMESH_MESH) === undefined ? {} : { mesh: io.env.CLAUDEMESH_MESH }),
    ...(text(input.reason) === undefined ? {} : { reason: input.reason }),
  };
  // A token file without a token: the hook looks the session up by its ids instead.
  const token = (await sessionTokenFrom(io.env)) || undefined;
  const socket = daemonPaths(claudemeshHome(io.env)).socket;
  const waitMs = Math.max(MIN_WORK_MS / 2, HOOK_DEADLINE_MS - process.uptime() * 1000);
  const answer = await ipcRequest(socket, 'POST', '/v1/hook', body, waitMs, token === undefined ? {} : sessionHeader(token));
  debug(`daemon answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  const unread = answer.body.unread as { count?: number; from?: string[]; more?: number } | undefined;
  const event = text(input.hook_event_name);
  if (action !== 'working' || (event !== undefined && event !== 'UserPromptSubmit') || (unread?.count ?? 0) === 0) return;
  const blockers = answer.body.streams === 0 ? ['no claudemesh MCP server reads this session'] : channelBlockers(io.env, claudePid);
  debug(`channel blockers: ${blockers.join('; ') || 'none'}`);
  if (blockers.length > 0) io.stdout(`${unreadNotice(unread?.count ?? 0, unread?.from ?? [], unread?.more ?? 0)}\n`);
}

/** Run one hook; always resolves 0, within the deadline. */
export async function runHook(argv: readonly string[], io: HookIo): Promise<number> {
  const debug = (line: string) => {
    if (io.env.CLAUDEMESH_HOOK_DEBUG === '1') io.stderr(`[claudemesh hook] ${line}\n`);
  };
  const action = argv[0];
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout(HELP);
    return 0;
  }
  if (!(ACTIONS as readonly (string | undefined)[]).includes(action)) {
    io.stderr(`error CM_ERR_USAGE: claudemesh hook needs one of ${ACTIONS.join(', ')}, received ${JSON.stringify(action ?? '')}\nhint: see claudemesh hook --help (a hook exits 0 even so)\n`);
    return 0;
  }
  const deadline = Math.max(MIN_WORK_MS, HOOK_DEADLINE_MS - process.uptime() * 1000);
  try {
    await Promise.race([hookOnce(action as (typeof ACTIONS)[number], io, debug), sleep(deadline).then(() => debug(`gave up after ${deadline} ms`))]);
  } catch (error) {
    debug(`skipped: ${error instanceof Error ? error.message : String(error)}`);
  }
  return 0;
}

export const hookVerb: Verb = {
  name: 'hook',
  argument: 'working|idle|start|end',
  summary: 'what Claude Code hooks run: session status, and the unread line (always exits 0)',
  help: HELP,
  options: {},
  positionals: { min: 0, max: 1 },
  async run(context, args) {
    await runHook(args.positionals, { env: context.env, stdin: process.stdin, stdout: context.stdout, stderr: context.stderr });
  },
};
