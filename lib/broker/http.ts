// The broker's HTTP surface: the route table (/health, /metrics and the Claude Code hook
// here; the membership routes in membership.ts), bounded request bodies, and JSON
// answers. Every failure answers JSON {code, message, hint}; nothing a client sends throws
// past the handler.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Context } from '../../broker.ts';
import { cmError, isCmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { CLOCK_SKEW_MS, verifySignedRequest } from '../signed-request.ts';
import type { VerifiedRequest } from '../signed-request.ts';
import type { Status } from '../protocol.ts';
import { KeyedTokenBuckets } from '../token-bucket.ts';
import { failureOf, query } from './db.ts';
import type pg from 'pg';
import { formatPrometheus, PROMETHEUS_CONTENT_TYPE } from './metrics.ts';
import type { BrokerMetrics, HTTP_ROUTES } from './metrics.ts';
import { entryKey } from './hub.ts';

export const HOOK_PATH = '/hook/set-status';
const MAX_CWD_LENGTH = 4_096;
const HOOK_STATUSES = ['working', 'idle'] as const;
// Failed authentications per source address: enough for a misconfigured daemon to be heard,
// too few for a stranger to make the broker verify signatures all day.
const UNAUTHENTICATED_BURST = 60;
const UNAUTHENTICATED_PER_SECOND = 1;

export interface HealthReport {
  status: 'ok' | 'degraded' | 'draining';
  db: 'up' | 'down';
  version: string;
  gitSha: string;
  uptime: number;
}

type Handler = (request: IncomingMessage, response: ServerResponse) => Promise<void>;
export interface RouteEntry {
  path: string;
  method: 'GET' | 'POST';
  /** metrics label */
  route: (typeof HTTP_ROUTES)[number];
  handler: Handler;
}

export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  response.end(text);
}

function sendError(response: ServerResponse, error: CmError): void {
  const headers: Record<string, string> = {};
  // After an oversized body the connection holds unread bytes: do not reuse it.
  if (error.status === 413) headers.connection = 'close';
  const retry = error.details?.retryAfterSeconds;
  if (typeof retry === 'number') headers['retry-after'] = String(retry);
  sendJson(response, error.status, error.toJSON(), headers);
}

/** Read a body within `limit` bytes: refused early on a declared oversize, or as soon as it passes. */
export async function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = request.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    throw cmError('CM_ERR_PAYLOAD_TOO_LARGE', `request body of ${declared} bytes is over the limit of ${limit} bytes`, { details: { received: Number(declared), limit } });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw cmError('CM_ERR_PAYLOAD_TOO_LARGE', `request body passed the limit of ${limit} bytes`, { details: { received: size, limit } });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** Parse a JSON object body; arrays and primitives are refused, "__proto__" is a plain key. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw cmError('CM_ERR_BAD_JSON', `request body is not valid JSON: ${(error as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw cmError('CM_ERR_BAD_JSON', `request body must be a JSON object, received ${Array.isArray(value) ? 'an array' : typeof value}`);
  }
  return Object.assign(Object.create(null) as Record<string, unknown>, value);
}

/**
 * A signed request, verified and recorded: its signature is stored in Postgres until it
 * leaves the clock window, so the same request is refused after a restart and by any other
 * instance on the database (CM_ERR_REPLAYED).
 */
export async function verifySignedCall(pool: pg.Pool, request: IncomingMessage, path: string, body: Buffer, now: number): Promise<VerifiedRequest> {
  const verified = verifySignedRequest({ method: request.method === 'HEAD' ? 'GET' : (request.method ?? ''), path, headers: request.headers, body, now });
  const recorded = await query(pool, 'replay_first_use', [verified.signature, verified.timestamp + CLOCK_SKEW_MS]);
  if (recorded.rowCount !== 1) throw cmError('CM_ERR_REPLAYED', `this signed request (${request.method} ${path}) was already used`);
  return verified;
}

/** Where a request came from: the peer address, or the proxy's X-Forwarded-For when we trust it. */
function sourceOf(request: IncomingMessage, trustProxy: boolean): string {
  const forwarded = request.headers['x-forwarded-for'];
  if (trustProxy && typeof forwarded === 'string') return forwarded.split(',')[0]?.trim() || 'unknown';
  return request.socket.remoteAddress ?? 'unknown';
}

export function createHttpHandler(options: { log: Logger; metrics: BrokerMetrics; health: () => Promise<HealthReport>; routes: readonly RouteEntry[] }): Handler {
  const { log, metrics } = options;
  const routes = new Map<string, RouteEntry>();
  const all: RouteEntry[] = [
    {
      path: '/health', method: 'GET', route: 'health',
      async handler(_request, response) {
        const report = await options.health();
        sendJson(response, report.status === 'ok' ? 200 : 503, report, { 'cache-control': 'no-store' });
      },
    },
    {
      path: '/metrics', method: 'GET', route: 'metrics',
      async handler(_request, response) {
        const text = formatPrometheus(metrics.registry.snapshot());
        response.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
        response.end(text);
      },
    },
    ...options.routes,
  ];
  for (const entry of all) {
    if (routes.has(entry.path)) throw new TypeError(`route ${entry.path} is defined twice`);
    routes.set(entry.path, entry);
  }

  async function dispatch(request: IncomingMessage, response: ServerResponse, path: string, entry: RouteEntry | undefined): Promise<void> {
    if (entry === undefined) throw cmError('CM_ERR_NOT_FOUND', `no route for ${request.method} ${path}`);
    const head = request.method === 'HEAD' && entry.method === 'GET';
    if (request.method !== entry.method && !head) throw cmError('CM_ERR_METHOD_NOT_ALLOWED', `${path} takes ${entry.method}, received ${request.method}`);
    await entry.handler(request, response);
  }

  return async (request, response) => {
    const started = process.hrtime.bigint();
    const path = (request.url ?? '/').split('?', 1)[0] ?? '/';
    const entry = routes.get(path);
    response.on('finish', () => metrics.httpDuration.observe(Number(process.hrtime.bigint() - started) / 1e9, { route: entry?.route ?? 'other' }));
    try {
      await dispatch(request, response, path, entry);
    } catch (error) {
      if (response.headersSent) response.destroy();
      else if (isCmError(error)) sendError(response, error);
      else {
        // A database that did not answer is an outage to retry (503), not a bug (500).
        const failure = failureOf(error, `request to ${path}`);
        if (failure.code === 'CM_ERR_DB_UNAVAILABLE') log.warn('http request failed: database unavailable', { path, error });
        else log.error('http handler failed', { path, error });
        sendError(response, failure);
      }
    }
  };
}

/**
 * POST /hook/set-status: Claude Code's UserPromptSubmit/Stop hooks report working/idle
 * through the daemon, signed by the session key, for that session's presence in that mesh
 * only — never a row found by cwd or pid. Authentication comes first: the rate limit counts
 * per session, so nobody else's requests can spend a session's budget. Requests that fail
 * authentication are counted per source address and slowed with 429, never the valid ones.
 */
export function hookRoute(ctx: Context): RouteEntry {
  const limit = ctx.config.hookRateLimitPerMin;
  const sessions = new KeyedTokenBuckets({ capacity: limit, refillPerSecond: limit / 60, now: ctx.now });
  const strangers = new KeyedTokenBuckets({ capacity: UNAUTHENTICATED_BURST, refillPerSecond: UNAUTHENTICATED_PER_SECOND, now: ctx.now });
  const tooMany = (buckets: KeyedTokenBuckets, key: string, what: string) => cmError('CM_ERR_RATE_LIMITED', what, {
    details: { retryAfterSeconds: Math.max(1, Math.ceil(buckets.retryAfterMs(key) / 1000)) },
  });
  async function authenticate(request: IncomingMessage, raw: Buffer): Promise<{ meshId: string; key: string }> {
    const source = sourceOf(request, ctx.config.trustProxy);
    try {
      const signed = await verifySignedCall(ctx.pool, request, HOOK_PATH, raw, ctx.now());
      const peer = signed.meshId === '' ? undefined : (await ctx.presence.roster(signed.meshId)).peers.get(signed.publicKey);
      if (peer?.kind !== 'session') {
        throw cmError('CM_ERR_UNAUTHORIZED', `key ${signed.publicKey.slice(0, 12)}… is not a session of mesh ${signed.meshId || '(none given)'}`, {
          hint: 'hooks are sent by the daemon for a registered Claude session; check that the session is connected',
        });
      }
      return { meshId: signed.meshId, key: signed.publicKey };
    } catch (error) {
      if (!isCmError(error) || error.status >= 500) throw error;
      if (!strangers.take(source)) throw tooMany(strangers, source, `too many unauthenticated hook requests from ${source}`);
      throw error;
    }
  }
  return {
    path: HOOK_PATH, method: 'POST', route: 'hook',
    async handler(request, response) {
      ctx.metrics.hookRequests.inc();
      const raw = await readBody(request, ctx.config.maxMessageBytes);
      const { meshId, key } = await authenticate(request, raw);
      const { pid, cwd, status } = parseJsonObject(raw);
      if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) {
        throw cmError('CM_ERR_BAD_REQUEST', `field "pid" must be a positive integer, received ${JSON.stringify(pid)?.slice(0, 40) ?? 'nothing'}`);
      }
      if (typeof cwd !== 'string' || cwd.length === 0 || cwd.length > MAX_CWD_LENGTH) {
        throw cmError('CM_ERR_BAD_REQUEST', `field "cwd" must be a non-empty path of at most ${MAX_CWD_LENGTH} characters`);
      }
      if (!(HOOK_STATUSES as readonly unknown[]).includes(status)) {
        throw cmError('CM_ERR_BAD_REQUEST', `field "status" must be working or idle (dnd is set by hand only), received ${JSON.stringify(status)?.slice(0, 40) ?? 'nothing'}`);
      }
      const bucket = entryKey(meshId, key);
      if (!sessions.take(bucket)) {
        ctx.metrics.hookRateLimited.inc();
        throw tooMany(sessions, bucket, `more than ${limit} hook requests per minute from session ${key.slice(0, 12)}… (pid ${pid}, ${cwd.slice(0, 200)})`);
      }
      sendJson(response, 200, { ok: true, ...(await ctx.presence.setStatus(meshId, key, status as Status, 'hook')) });
    },
  };
}
