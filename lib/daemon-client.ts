// Talking to the local daemon: JSON over HTTP on its unix socket. Used by the CLI verbs, by
// the daemon's own single-instance check, and by the auto-start helper. A socket that does
// not exist or refuses is CM_ERR_DAEMON_NOT_RUNNING; an error answer comes back as the error
// the daemon raised (same code, message and hint), so the CLI reports it like its own.
// A failure after the request was written out carries `details.requestSent: true`: the
// daemon may have acted on it (a send may be queued), which the caller must not deny.

import { readFile } from 'node:fs/promises';
import { BrokerRefusal, cmError, ERROR_CODES } from './errors.ts';
import type { ErrorCode } from './errors.ts';

// Not `import { request } from 'node:http'`: node:http's ESM view loads undici (fetch,
// WebSocket) with it, ~40 ms on every CLI command that asks the daemon; the module alone does not.
const { request } = process.getBuiltinModule('node:http');
const { connect } = process.getBuiltinModule('node:net');

export const PROBE_TIMEOUT_MS = 2_500;
const IPC_TIMEOUT_MS = 20_000;

export interface IpcAnswer {
  status: number;
  body: Record<string, any>;
}

/** What GET /v1/version answers; also what a second `daemon up` shows about the first. */
export interface DaemonVersion {
  version: string;
  ipcApi: string;
  pid: number;
  startedAt: string;
  uptimeMs: number;
  meshes: string[];
  socket: string;
}

function notRunning(socketPath: string, why: string, requestSent = false) {
  return cmError('CM_ERR_DAEMON_NOT_RUNNING', `the daemon does not answer on ${socketPath} (${why})`, { details: { socket: socketPath, requestSent } });
}

// Inside a registered Claude session the environment names a file holding the session token
// (the path, not the value, so it never shows in `ps eww`).
export const SESSION_TOKEN_FILE_ENV = 'CLAUDEMESH_SESSION_TOKEN_FILE';
const TOKEN_HEX = /^[0-9a-f]{64}$/;

/** The token in the file CLAUDEMESH_SESSION_TOKEN_FILE names: undefined when unset, '' when it holds none. */
export async function sessionTokenFrom(env: Readonly<Record<string, string | undefined>>): Promise<string | undefined> {
  const file = env[SESSION_TOKEN_FILE_ENV];
  if (file === undefined || file === '') return undefined;
  const token = (await readFile(file, 'utf8').catch(() => '')).trim();
  return TOKEN_HEX.test(token) ? token : '';
}

/** The header that makes a request a session's. */
export function sessionHeader(token: string): Record<string, string> {
  return { authorization: `ClaudeMesh-Session ${token}` };
}

/** One request; rejects only when no HTTP answer arrived (no socket, refused, timeout). */
export function ipcRequest(socketPath: string, method: string, path: string, body?: unknown, timeoutMs = IPC_TIMEOUT_MS, extraHeaders: Record<string, string> = {}): Promise<IpcAnswer> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    let sent = false;
    const headers: Record<string, string | number> = { ...extraHeaders, ...(text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }) };
    // Its own connection, not one from http's Agent: the Agent first asks whether the host
    // name is an IP address, and the first use of that IPv6 pattern costs a short-lived CLI
    // command several ms. Opening a unix socket costs next to nothing.
    const req = request({ method, path, headers, createConnection: () => connect(socketPath) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          reject(notRunning(socketPath, `answered HTTP ${res.statusCode ?? 0} without JSON: is this a claudemesh daemon?`, true));
          return;
        }
        const record = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, any>) : {};
        resolve({ status: res.statusCode ?? 0, body: record });
      });
      res.on('error', (error) => reject(notRunning(socketPath, error.message, true)));
    });
    req.on('finish', () => void (sent = true));
    // The `timeout` option is applied to the socket by http's Agent only; with a connection
    // of our own it must be set on the request, or a hung daemon is waited on forever.
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (error: NodeJS.ErrnoException) => reject(notRunning(socketPath, error.code ?? error.message, sent)));
    req.end(text);
  });
}

/** The daemon's version facts when it answers within the probe timeout; undefined otherwise. */
export async function probeDaemon(socketPath: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<DaemonVersion | undefined> {
  try {
    const answer = await ipcRequest(socketPath, 'GET', '/v1/version', undefined, timeoutMs);
    return answer.status === 200 && typeof answer.body.pid === 'number' ? (answer.body as DaemonVersion) : undefined;
  } catch {
    return undefined;
  }
}

/** A request whose error answer is thrown as the daemon's own error. */
export async function callDaemon(socketPath: string, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs?: number, headers?: Record<string, string>): Promise<IpcAnswer> {
  const answer = await ipcRequest(socketPath, method, path, body, timeoutMs, headers);
  if (answer.status < 400) return answer;
  const error = answer.body.error as { code?: unknown; message?: unknown; hint?: unknown; details?: unknown } | undefined;
  const code = typeof error?.code === 'string' ? error.code : 'CM_ERR_INTERNAL';
  const message = typeof error?.message === 'string' ? error.message : `the daemon answered HTTP ${answer.status}`;
  const hint = typeof error?.hint === 'string' ? error.hint : undefined;
  const details = error?.details !== null && typeof error?.details === 'object' ? (error.details as Record<string, unknown>) : undefined;
  if (Object.hasOwn(ERROR_CODES, code)) {
    throw cmError(code as ErrorCode, message, { ...(hint === undefined ? {} : { hint }), ...(details === undefined ? {} : { details }) });
  }
  // A code this CLI does not know (a newer daemon or a broker code passed through).
  throw new BrokerRefusal({ code, message, hint: hint ?? '', ...(details === undefined ? {} : { details }) }, answer.status);
}
