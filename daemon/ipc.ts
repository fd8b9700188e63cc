// The daemon's IPC: JSON over HTTP on a unix socket (0600, in the 0700 daemon directory; the
// file permissions are the access control). Guards run before routing: a request with an
// `Origin` header is refused (no browser reaches this), bodies are capped, JSON bodies are
// parsed into null-prototype objects. Errors answer `{error: {code, message, hint, details}}`
// with the code's HTTP status, the same shape the CLI prints.
//
// Routes (v1, listed in docs/daemon.md): GET version, health, peers, inbox, outbox, events,
// message-status, sessions, sessions/me, stream (SSE); POST send, inbox/surfaced,
// inbox/read, inbox/delete, outbox/requeue, status, summary, groups, reload, sessions/register,
// sessions/unregister, hook (daemon/hook.ts). Nothing returns a secret key. `surfaced` was
// once called `seen`: the old route (POST inbox/seen) and query (unseen=1) still answer as before.
//
// Sessions: `Authorization: ClaudeMesh-Session <token>` makes a request the session's — it
// sends as the session, and reads only the session's messages. A header with an unknown
// token is refused (401), never silently treated as the member.

import { chmod, unlink } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { readConfig } from '../lib/client-config.ts';
import { cmError, isCmError } from '../lib/errors.ts';
import { isMemberName, MAX_GROUP, MAX_GROUPS, STATUSES } from '../lib/protocol.ts';
import type { Status } from '../lib/protocol.ts';
import { VERSION } from '../lib/version.ts';
import type { Daemon } from './daemon.ts';
import type { SessionRecord } from './sessions.ts';
import { publicSession } from './sessions.ts';
import { openStream } from './sse.ts';
import { handleHook, hookInput } from './hook.ts';
import { encodeReply, REPLY_ID } from '../lib/reply.ts';
import { OUTBOX_STATUSES } from './outbox.ts';
import type { OutboxStatus } from './outbox.ts';
import { DAEMON_FILE_MODE } from './paths.ts';
import { storageFailure } from './storage.ts';
import { caughtUp } from './inbox-access.ts';

const MAX_IPC_BODY_BYTES = 256 * 1024;
const IPC_API = 'v1';
const MAX_IDS = 1_000;
const SESSION_SCHEME = /^ClaudeMesh-Session ([0-9a-f]{64})$/;
const SESSION_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const GROUP_NAME = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

type Query = URLSearchParams;
type Body = Record<string, unknown>;
type Handler = (daemon: Daemon, query: Query, body: Body, session: SessionRecord | undefined) => Promise<{ status?: number; body: unknown }> | { status?: number; body: unknown };

/** A value received, as a message quotes it: JSON, cut short. */
function shown(value: unknown): string {
  if (Array.isArray(value) && value.length > 10) return `a list of ${value.length}`;
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

function idList(body: Body): number[] {
  const ids = body.ids;
  if (!Array.isArray(ids) || ids.length > MAX_IDS || !ids.every((id) => Number.isInteger(id))) {
    throw cmError('CM_ERR_BAD_REQUEST', `"ids" must be a list of at most ${MAX_IDS} inbox ids (integers), received ${shown(ids)}`);
  }
  return ids as number[];
}

function requireSession(session: SessionRecord | undefined): SessionRecord {
  if (session === undefined) throw cmError('CM_ERR_UNAUTHORIZED', 'this route needs a session: send Authorization: ClaudeMesh-Session <token>', { hint: 'register first (POST /v1/sessions/register) and use the token it returns' });
  return session;
}

function optionalGroups(body: Body): string[] | undefined {
  const groups = body.groups;
  if (groups === undefined) return undefined;
  if (!Array.isArray(groups) || groups.length > MAX_GROUPS || !groups.every((group) => typeof group === 'string' && GROUP_NAME.test(group) && group.length <= MAX_GROUP)) {
    throw cmError('CM_ERR_BAD_REQUEST', `"groups" must be a list of at most ${MAX_GROUPS} group names (letters, digits, _ . -, nested with /; at most ${MAX_GROUP} characters), received ${shown(groups)}`);
  }
  return groups as string[];
}

function optionalString(body: Body | Query, field: string): string | undefined {
  const value = body instanceof URLSearchParams ? body.get(field) ?? undefined : body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw cmError('CM_ERR_BAD_REQUEST', `"${field}" must be a string, received ${JSON.stringify(value)}`);
  return value;
}

function requiredString(body: Body, field: string): string {
  const value = optionalString(body, field);
  if (value === undefined) throw cmError('CM_ERR_BAD_REQUEST', `"${field}" is required`);
  return value;
}

function optionalInt(query: Query, field: string): number | undefined {
  const raw = query.get(field);
  if (raw === null || raw === '') return undefined;
  if (!/^\d{1,9}$/.test(raw)) throw cmError('CM_ERR_BAD_REQUEST', `"${field}" must be a whole number, received ${JSON.stringify(raw)}`);
  return Number(raw);
}

const ROUTES = new Map<string, Handler>([
  ['GET /v1/version', (daemon) => ({
    body: {
      version: VERSION, ipcApi: IPC_API, pid: process.pid, startedAt: new Date(daemon.startedAt).toISOString(),
      uptimeMs: Date.now() - daemon.startedAt, meshes: daemon.config.meshes.map((mesh) => mesh.name), socket: daemon.paths.socket,
    },
  })],
  ['GET /v1/health', (daemon) => ({ body: daemon.health() })],
  ['POST /v1/send', async (daemon, _query, body, session) => {
    const mesh = optionalString(body, 'mesh');
    const priority = optionalString(body, 'priority');
    const clientMessageId = optionalString(body, 'clientMessageId');
    const replyTo = optionalString(body, 'replyTo');
    if (replyTo !== undefined && !REPLY_ID.test(replyTo)) throw cmError('CM_ERR_BAD_REQUEST', `"replyTo" must be a message id (1–128 letters, digits or . _ : -), received ${shown(replyTo)}`);
    const outcome = await daemon.send({
      to: requiredString(body, 'to'), text: encodeReply(requiredString(body, 'text'), replyTo),
      ...(mesh === undefined ? {} : { mesh }), ...(priority === undefined ? {} : { priority }), ...(clientMessageId === undefined ? {} : { clientMessageId }),
    }, session);
    return { status: outcome.status, body: outcome.body };
  }],
  ['GET /v1/peers', async (daemon, query, _body, session) => ({ body: await daemon.peers(optionalString(query, 'mesh'), session) })],
  ['GET /v1/inbox', async (daemon, query, _body, session) => {
    const wanted = optionalString(query, 'mesh');
    // The links whose pushes this read shows: the session's and its member's, or the members'.
    const asked = wanted === undefined ? undefined : daemon.mesh(wanted).meshId;
    const meshId = asked ?? session?.meshId;
    const members = meshId === undefined ? [...daemon.links.values()] : [daemon.links.get(meshId)];
    await caughtUp([...members, session === undefined ? undefined : daemon.sessionLinks.get(session.token)].filter((link) => link !== undefined));
    const search = optionalString(query, 'search');
    const limit = optionalInt(query, 'limit');
    const afterId = optionalInt(query, 'after');
    const items = daemon.listInbox({
      ...(asked === undefined ? {} : { meshId: asked }),
      ...(search === undefined ? {} : { search }), ...(limit === undefined ? {} : { limit }), ...(afterId === undefined ? {} : { afterId }),
      unsurfacedOnly: query.get('unsurfaced') === '1' || query.get('unseen') === '1',
    }, session);
    return { body: { items } };
  }],
  ['POST /v1/inbox/surfaced', (daemon, _query, body, session) => ({ body: { markedSurfaced: daemon.mark(idList(body), 'surfaced', session) } })],
  ['POST /v1/inbox/seen', (daemon, _query, body, session) => ({ body: { markedSeen: daemon.mark(idList(body), 'surfaced', session) } })],
  ['POST /v1/inbox/read', (daemon, _query, body, session) => ({ body: { markedRead: daemon.mark(idList(body), 'read', session) } })],
  ['POST /v1/inbox/delete', (daemon, _query, body, session) => ({ body: { removed: daemon.deleteInbox(idList(body), session) } })],
  ['POST /v1/status', async (daemon, _query, body, session) => {
    const status = requiredString(body, 'status');
    if (!(STATUSES as readonly string[]).includes(status)) throw cmError('CM_ERR_BAD_REQUEST', `"status" must be idle, working or dnd, received ${JSON.stringify(status)}`);
    return { body: await daemon.setPresence({ type: 'set_status', status: status as Status }, optionalString(body, 'mesh'), session) };
  }],
  ['POST /v1/summary', async (daemon, _query, body, session) => ({
    body: await daemon.setPresence({ type: 'set_summary', summary: requiredString(body, 'summary') }, optionalString(body, 'mesh'), session),
  })],
  ['POST /v1/groups', async (daemon, _query, body, session) => {
    const action = requiredString(body, 'action');
    if (action !== 'join' && action !== 'leave') throw cmError('CM_ERR_BAD_REQUEST', `"action" must be join or leave, received ${shown(action)}`);
    const group = requiredString(body, 'group').replace(/^@/, '');
    if (!GROUP_NAME.test(group) || group.length > MAX_GROUP) throw cmError('CM_ERR_BAD_REQUEST', `"group" must be a group name (letters, digits, _ . -, nested with /; at most ${MAX_GROUP} characters), received ${shown(group)}`);
    return { body: await daemon.group(action, group, optionalString(body, 'mesh'), session) };
  }],
  // The config is read from the daemon's own home: the caller cannot point it anywhere else.
  ['POST /v1/reload', async (daemon) => ({ body: await daemon.reload(await readConfig(dirname(daemon.paths.dir))) })],
  ['POST /v1/sessions/register', (daemon, _query, body) => {
    const sessionId = requiredString(body, 'sessionId');
    if (!SESSION_ID.test(sessionId)) throw cmError('CM_ERR_BAD_REQUEST', `"sessionId" must be 1–128 letters, digits or . _ : -, received ${JSON.stringify(sessionId.slice(0, 80))}`);
    const mesh = optionalString(body, 'mesh');
    const name = optionalString(body, 'name');
    // The name goes into the session's hello, where the broker takes member-name characters only.
    if (name !== undefined && !isMemberName(name)) throw cmError('CM_ERR_BAD_REQUEST', `"name" must be 1–64 letters, digits or . _ @ - (starting with a letter or digit), received ${shown(name)}`);
    const cwd = optionalString(body, 'cwd');
    const groups = optionalGroups(body);
    const pid = body.pid;
    if (pid !== undefined && (!Number.isInteger(pid) || (pid as number) <= 0)) throw cmError('CM_ERR_BAD_REQUEST', `"pid" must be a positive integer, received ${shown(pid)}`);
    return daemon.registerSession({
      sessionId, ...(mesh === undefined ? {} : { mesh }), ...(name === undefined ? {} : { name }), ...(cwd === undefined ? {} : { cwd }),
      ...(groups === undefined ? {} : { groups }), ...(pid === undefined ? {} : { pid: pid as number }),
    });
  }],
  ['POST /v1/sessions/unregister', async (daemon, _query, _body, session) => ({ body: await daemon.unregisterSession(requireSession(session).token) })],
  ['GET /v1/sessions/me', (daemon, _query, _body, session) => {
    const record = requireSession(session);
    return { body: { session: publicSession(record), memberKey: daemon.scopeOf(record)[1] ?? null } };
  }],
  ['GET /v1/sessions', (daemon) => ({ body: { sessions: daemon.sessions.list().map(publicSession) } })],
  ['GET /v1/outbox', (daemon, query) => {
    const status = optionalString(query, 'status');
    if (status !== undefined && !(OUTBOX_STATUSES as readonly string[]).includes(status)) {
      throw cmError('CM_ERR_BAD_REQUEST', `"status" must be one of ${OUTBOX_STATUSES.join(', ')}, received ${JSON.stringify(status)}`);
    }
    return { body: daemon.listOutbox(status as OutboxStatus | undefined, optionalInt(query, 'limit')) };
  }],
  ['POST /v1/outbox/requeue', (daemon, _query, body) => ({ body: daemon.requeue(requiredString(body, 'clientMessageId')) })],
  ['GET /v1/events', (daemon, query) => {
    const after = optionalInt(query, 'after');
    const limit = optionalInt(query, 'limit');
    return { body: { events: daemon.events.list({ ...(after === undefined ? {} : { afterSeq: after }), ...(limit === undefined ? {} : { limit }) }) } };
  }],
  ['POST /v1/hook', async (daemon, _query, body, session) => ({ body: await handleHook(daemon, hookInput(body), session) })],
  ['GET /v1/message-status', async (daemon, query) => {
    const id = optionalString(query, 'id');
    if (id === undefined || id === '') throw cmError('CM_ERR_BAD_REQUEST', '"id" is required: a message id or a client message id');
    return { body: await daemon.messageStatus(id, optionalString(query, 'mesh')) };
  }],
]);

function readBody(req: IncomingMessage): Promise<Body> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_IPC_BODY_BYTES) {
        reject(cmError('CM_ERR_PAYLOAD_TOO_LARGE', `the request body is over ${MAX_IPC_BODY_BYTES} bytes (${size} received so far)`, { hint: 'send fewer ids or a shorter text per request' }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (size === 0) {
        resolve(Object.create(null) as Body);
        return;
      }
      try {
        const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new TypeError('not an object');
        resolve(Object.assign(Object.create(null) as Body, parsed));
      } catch {
        reject(cmError('CM_ERR_BAD_JSON', 'the request body is not one JSON object'));
      }
    });
    req.on('error', reject);
  });
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

async function handle(daemon: Daemon, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    if (req.headers.origin !== undefined) throw cmError('CM_ERR_FORBIDDEN', 'requests from a browser (Origin header) are refused', { hint: 'use the claudemesh CLI' });
    const url = new URL(req.url ?? '/', 'http://daemon');
    const handler = ROUTES.get(`${req.method ?? 'GET'} ${url.pathname}`);
    if (handler === undefined && !(req.method === 'GET' && url.pathname === '/v1/stream')) {
      const known = [...ROUTES.keys()].some((route) => route.endsWith(` ${url.pathname}`));
      if (known) throw cmError('CM_ERR_METHOD_NOT_ALLOWED', `${req.method} is not served on ${url.pathname}`);
      throw cmError('CM_ERR_NOT_FOUND', `no daemon route ${req.method} ${url.pathname}`, { hint: 'see docs/daemon.md for the routes' });
    }
    const authorization = req.headers.authorization;
    let session: SessionRecord | undefined;
    if (authorization !== undefined) {
      const token = SESSION_SCHEME.exec(authorization)?.[1];
      session = daemon.session(token ?? '');
    }
    if (req.method === 'GET' && url.pathname === '/v1/stream') {
      openStream(daemon, requireSession(session), req, res);
      return;
    }
    const body = req.method === 'POST' ? await readBody(req) : (Object.create(null) as Body);
    const answer = await (handler as Handler)(daemon, url.searchParams, body, session);
    reply(res, answer.status ?? 200, answer.body);
  } catch (error) {
    if (isCmError(error)) {
      reply(res, error.status, { error: error.toJSON() });
      return;
    }
    const failure = storageFailure(error, daemon.paths.dir);
    if (failure !== undefined) {
      reply(res, failure.status, { error: failure.toJSON() });
      return;
    }
    const message = error instanceof Error ? error.message : String(error);
    daemon.events.push('ipc_error', { message });
    reply(res, 500, { error: { code: 'CM_ERR_INTERNAL', message, hint: 'this is a bug: report it with claudemesh events' } });
  }
}

/** Listen on the daemon's socket (the caller holds the lock, so a leftover file is removed). */
export async function listenIpc(daemon: Daemon): Promise<Server> {
  const server = createServer((req, res) => void handle(daemon, req, res));
  await unlink(daemon.paths.socket).catch(() => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(daemon.paths.socket, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(daemon.paths.socket, DAEMON_FILE_MODE);
  return server;
}

/** Stop accepting, end idle keep-alive connections, remove the socket file. */
export async function closeIpc(server: Server, socketPath: string): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  await unlink(socketPath).catch(() => {});
}
