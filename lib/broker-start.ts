// The broker process before it is ready. Its port is bound first, before any database work,
// so that a clash is told within a second (and by whom), and /health answers from the first
// second: 503 "starting", with the last database error's code and hint. Everything else is
// refused as retryable (503, Retry-After) until the broker takes the server over. Also here:
// what a database error means for an operator — transient (keep waiting) or not (exit 2) —
// and what to do about it, shared with `node broker.ts doctor`.

import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { cmError } from './errors.ts';
import type { CmError } from './errors.ts';
import type { Logger } from './log.ts';
import { describePid, listeningPid } from './processes.ts';
import { refuseUpgrade } from './broker/connection.ts';
import { sendJson } from './broker/http.ts';

const RETRY_AFTER_SECONDS = 2;
// Connections the kernel holds for us while the event loop is busy (a restart brings every
// daemon back at once). Node's default is 511; past it the kernel drops the handshake and
// the client retries after a second, then three, then seven. Linux caps it at
// net.core.somaxconn (4096 on current kernels); docs/scaling.md says how to read the drops.
export const LISTEN_BACKLOG = 4096;
const PROBE_TIMEOUT_MS = 1_000;
// Postgres refusing these will refuse them again: waiting cannot help, the operator must act.
const FATAL_SQLSTATES = new Set(['28P01', '3D000', '28000']);

interface DbProblem {
  /** SQLSTATE, or the system error code (ECONNREFUSED…) */
  code: string;
  message: string;
  hint: string;
  /** true: retrying cannot help */
  fatal: boolean;
}

/** What a failed connection to `url` means and what to do, in the operator's terms. */
export function diagnoseDb(error: unknown, url: string): DbProblem {
  const parsed = URL.canParse(url) ? new URL(url) : undefined;
  const user = decodeURIComponent(parsed?.username ?? '') || 'postgres';
  const where = `${parsed?.hostname ?? 'localhost'}:${parsed?.port || '5432'}`;
  const database = decodeURIComponent(parsed?.pathname.slice(1) ?? '') || user;
  const message = error instanceof Error ? error.message : String(error ?? 'no answer');
  const raw = (error as { code?: unknown } | null)?.code;
  const code = typeof raw === 'string' && raw !== '' ? raw : /timeout|no answer/i.test(message) ? 'ETIMEDOUT' : 'UNKNOWN';
  const problem = (hint: string): DbProblem => ({ code, message, hint, fatal: FATAL_SQLSTATES.has(code) });
  switch (code) {
    case '28P01': return problem(`the password for user "${user}" in DATABASE_URL is wrong: fix it (postgres://${user}:PASSWORD@${where}/${database}), or set that password on the role (ALTER ROLE ${user} PASSWORD '…')`);
    case '3D000': return problem(`create the database (CREATE DATABASE ${database}, or createdb -h ${parsed?.hostname ?? 'localhost'} -U ${user} ${database}), or fix its name in DATABASE_URL`);
    case '28000': return problem(`Postgres at ${where} refuses user "${user}" from this machine: create the role, or allow it in pg_hba.conf and reload Postgres`);
    case 'ECONNREFUSED': return problem(`nothing listens at ${where}: start Postgres there, or fix the host and port in DATABASE_URL`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN': return problem(`the host in DATABASE_URL (${parsed?.hostname ?? '?'}) does not resolve: fix it, or wait for DNS`);
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH': return problem(`no answer from ${where}: check that Postgres runs there and that no firewall drops the connection`);
    case '57P03': return problem(`Postgres at ${where} is starting up or shutting down: the broker waits for it`);
    case '53300': return problem(`Postgres at ${where} has no free connection: raise max_connections, or stop other clients`);
    default:
      if (/SSL|TLS|certificate/i.test(message)) return problem('fix sslmode in DATABASE_URL (sslmode=disable for a server without TLS, or give it the server\'s CA)');
      return problem(`check that Postgres at ${where} answers with the URL the broker has (psql "$DATABASE_URL" -c 'select 1')`);
  }
}

/** What is on `host:port`: a claudemesh broker (its /health), a process we can name, or neither. */
export async function portHolder(host: string, port: number): Promise<{ broker?: { version: string; status: string }; process?: string }> {
  const target = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
  const found: { broker?: { version: string; status: string }; process?: string } = {};
  try {
    const response = await fetch(`http://${target}:${port}/health`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    const body = (await response.json()) as { version?: unknown; status?: unknown; gitSha?: unknown };
    if (typeof body.version === 'string' && typeof body.status === 'string' && typeof body.gitSha === 'string') found.broker = { version: body.version, status: body.status };
  } catch {
    // not HTTP, not JSON, or no answer: not a broker
  }
  const pid = listeningPid(port);
  if (pid !== undefined) found.process = describePid(pid);
  return found;
}

/** One sentence for a bind that failed, naming the variable to change and, for a clash, who holds the port. */
export async function listenFailure(error: NodeJS.ErrnoException, host: string, port: number): Promise<CmError> {
  if (error.code === 'EADDRINUSE') {
    const holder = await portHolder(host, port);
    const who = [holder.broker === undefined ? '' : `another claudemesh broker (version ${holder.broker.version}, status ${holder.broker.status})`, holder.process ?? '']
      .filter((part) => part !== '').join(', ') || 'another process';
    return cmError('CM_ERR_PORT_IN_USE', `BROKER_PORT ${port} on ${host} is already in use by ${who}`, {
      hint: holder.broker === undefined ? 'stop that process, or set BROKER_PORT to a free port (BROKER_PORT=0 picks any)' : 'a broker already serves this port: use it, or stop it before starting this one, or set BROKER_PORT to another port',
    });
  }
  const reasons: Record<string, string> = {
    EADDRNOTAVAIL: `BROKER_HOST ${host} is not an address of this machine`,
    ENOTFOUND: `BROKER_HOST ${host} does not resolve to an address`,
    EAI_AGAIN: `BROKER_HOST ${host} could not be resolved (DNS did not answer)`,
    EACCES: `this user may not bind port ${port} (ports below 1024 need root or CAP_NET_BIND_SERVICE)`,
  };
  return cmError('CM_ERR_LISTEN_FAILED', reasons[error.code ?? ''] ?? `cannot listen on ${host}:${port}: ${error.message}`, { cause: error });
}

export interface StartGate {
  /** what /health reports while the broker starts: the step, and the last database problem */
  waiting(step: string, problem?: DbProblem): void;
  /** the bound server; the gate steps aside the moment another 'request' handler is attached (the broker's, once it is ready) */
  readonly server: Server;
  close(): Promise<void>;
}

/** Bind `host:port` now and answer "starting" on it until the broker serves; a bind failure throws one CmError. */
export async function openGate(options: { host: string; port: number; version: string; gitSha: string; log: Logger }): Promise<StartGate> {
  let step = 'starting';
  let problem: DbProblem | undefined;
  const refusal = (): CmError => cmError('CM_ERR_DB_UNAVAILABLE', `the broker is starting (${step}): retry in a few seconds`, {
    hint: 'retry shortly; GET /health says what the broker waits for', details: { retryAfterSeconds: RETRY_AFTER_SECONDS },
  });
  const onRequest = (request: IncomingMessage, response: ServerResponse): void => {
    const path = (request.url ?? '/').split('?', 1)[0];
    const noStore = { 'cache-control': 'no-store', 'retry-after': String(RETRY_AFTER_SECONDS) };
    if (path === '/health' && (request.method === 'GET' || request.method === 'HEAD')) {
      sendJson(response, 503, {
        status: 'starting', db: 'down', step, version: options.version, gitSha: options.gitSha, uptime: Math.round(process.uptime()),
        ...(problem === undefined ? {} : { error: { code: problem.code, hint: problem.hint } }),
      }, noStore);
    } else {
      sendJson(response, 503, refusal().toJSON(), noStore);
    }
  };
  const onUpgrade = (_request: unknown, socket: Duplex): void => {
    socket.on('error', () => socket.destroy());
    refuseUpgrade(socket, 503, `broker is starting (${step}): reconnect shortly`, { 'Retry-After': String(RETRY_AFTER_SECONDS) });
  };
  const onClientError = (_error: Error, socket: Duplex): void => void (socket.writable ? socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n') : socket.destroy());
  const server = createServer(onRequest);
  server.on('upgrade', onUpgrade);
  server.on('clientError', onClientError);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => void listenFailure(error, options.host, options.port).then(reject));
    server.listen({ port: options.port, host: options.host, backlog: LISTEN_BACKLOG }, () => resolve());
  });
  server.removeAllListeners('error');
  server.on('error', (error) => options.log.error('http server error', { error }));
  // No request ever meets two handlers, nor none: ours go in the same tick the broker's come.
  const stepAside = (event: string | symbol): void => {
    if (event !== 'request') return;
    server.off('newListener', stepAside).off('request', onRequest).off('upgrade', onUpgrade).off('clientError', onClientError);
  };
  server.on('newListener', stepAside);
  return {
    server,
    waiting(next, nextProblem) {
      step = next;
      problem = nextProblem;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
