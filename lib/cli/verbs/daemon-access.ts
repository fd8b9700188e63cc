// How daemon-facing verbs reach the daemon: probe its socket, and only when nothing answers
// ensureDaemonReady (start it when needed, daemon/autostart.ts); then JSON over the socket. A daemon that cannot be reached is CM_ERR_DAEMON_NOT_RUNNING (exit
// 3) with the auto-start outcome in the details. Started automatically → one stderr line.

import { readFile } from 'node:fs/promises';
import { daemonPaths } from '../../../daemon/paths.ts';
import { callDaemon, probeDaemon, sessionHeader } from '../../daemon-client.ts';
import type { IpcAnswer } from '../../daemon-client.ts';
import { cmError } from '../../errors.ts';
import { VERSION } from '../../version.ts';
import type { CliContext } from '../verb.ts';

async function daemonSocket(context: CliContext): Promise<string> {
  const started = Date.now();
  const socket = daemonPaths(context.home).socket;
  const running = await probeDaemon(socket);
  if (running !== undefined) {
    // A long-running daemon keeps its old code after an upgrade of the CLI: say so.
    if (running.version !== VERSION) {
      context.stderr(`[claudemesh] the daemon runs version ${running.version}, this command is ${VERSION}: restart it (claudemesh daemon down, then any command)\n`);
    }
    return socket;
  }
  // Nothing answers: only now load what starting the daemon takes (spawn, service units, the config).
  const { ensureDaemonReady } = await import('../../../daemon/autostart.ts');
  const ready = await ensureDaemonReady({ home: context.home, env: context.env, probed: true });
  if (ready.outcome === 'up') return ready.socket;
  if (ready.outcome === 'started') {
    context.stderr(`[claudemesh] started the daemon (${Date.now() - started} ms)\n`);
    return ready.socket;
  }
  throw cmError('CM_ERR_DAEMON_NOT_RUNNING', `the daemon is not running and was not started: ${ready.outcome}${ready.reason === undefined ? '' : ` (${ready.reason})`}`, {
    details: { outcome: ready.outcome, socket: ready.socket },
  });
}

// Inside a registered Claude session the environment names a file holding the session token
// (the path, not the value, so it never shows in `ps eww`); every call is then the session's.
const SESSION_TOKEN_FILE_ENV = 'CLAUDEMESH_SESSION_TOKEN_FILE';
const TOKEN_HEX = /^[0-9a-f]{64}$/;

/** Whether this command runs inside a registered Claude session (its token file is named). */
export function inSession(context: CliContext): boolean {
  const file = context.env[SESSION_TOKEN_FILE_ENV];
  return file !== undefined && file !== '';
}

async function sessionHeaders(context: CliContext): Promise<Record<string, string>> {
  const file = context.env[SESSION_TOKEN_FILE_ENV];
  if (file === undefined || file === '') return {};
  const token = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (!TOKEN_HEX.test(token)) {
    throw cmError('CM_ERR_UNAUTHORIZED', `${SESSION_TOKEN_FILE_ENV} names ${file}, which holds no session token`, {
      hint: `unset ${SESSION_TOKEN_FILE_ENV} to act as the member, or register the session again`,
    });
  }
  return sessionHeader(token);
}

/** Reach the daemon (starting it if needed) and make one request, as the session if there is one. */
export async function askDaemon(context: CliContext, method: 'GET' | 'POST', path: string, body?: unknown): Promise<IpcAnswer> {
  const headers = await sessionHeaders(context);
  return callDaemon(await daemonSocket(context), method, path, body, undefined, headers);
}

/** A query string from the options that are set. */
export function queryOf(values: Record<string, string | number | boolean | undefined>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined && value !== false) params.set(key, value === true ? '1' : String(value));
  }
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}
