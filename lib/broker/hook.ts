// POST /hook/set-status: Claude Code's UserPromptSubmit/Stop hooks report working/idle
// through the daemon. The request is signed by the session key (lib/signed-request.ts) and
// changes that session's presence in that mesh only — never a row found by cwd or pid.
// The rate limit keys on the (pid, cwd) the hook reports, so one runaway hook loop cannot
// starve the others.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { cmError } from '../errors.ts';
import { KeyedTokenBuckets } from '../token-bucket.ts';
import type { ReplayGuard } from '../replay-guard.ts';
import { verifySignedRequest } from '../signed-request.ts';
import { parseJsonObject, readBody } from './body.ts';
import { sendJson } from './http.ts';
import type { RouteEntry } from './http.ts';
import type { BrokerMetrics } from './metrics.ts';
import type { Presence } from './presence.ts';
import type { RosterCache } from './roster.ts';

export const HOOK_PATH = '/hook/set-status';
const MAX_CWD_LENGTH = 4_096;
const SECONDS_PER_MINUTE = 60;
const HOOK_STATUSES = ['working', 'idle'] as const;

export interface HookOptions {
  metrics: BrokerMetrics;
  presence: Presence;
  roster: RosterCache;
  replay: ReplayGuard;
  maxBodyBytes: number;
  rateLimitPerMin: number;
  now: () => number;
}

export function createHookRoute(options: HookOptions): RouteEntry {
  const { metrics } = options;
  const buckets = new KeyedTokenBuckets({
    capacity: options.rateLimitPerMin,
    refillPerSecond: options.rateLimitPerMin / SECONDS_PER_MINUTE,
    now: options.now,
  });

  async function handler(request: IncomingMessage, response: ServerResponse): Promise<void> {
    metrics.hookRequests.inc();
    const raw = await readBody(request, options.maxBodyBytes);
    const body = parseJsonObject(raw);
    const { pid, cwd, status } = body;
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) {
      throw cmError('CM_ERR_BAD_REQUEST', `field "pid" must be a positive integer, received ${JSON.stringify(pid) ?? 'nothing'}`);
    }
    if (typeof cwd !== 'string' || cwd.length === 0 || cwd.length > MAX_CWD_LENGTH) {
      throw cmError('CM_ERR_BAD_REQUEST', `field "cwd" must be a non-empty path of at most ${MAX_CWD_LENGTH} characters`);
    }
    if (!(HOOK_STATUSES as readonly unknown[]).includes(status)) {
      throw cmError('CM_ERR_BAD_REQUEST', `field "status" must be working or idle (dnd is set by hand only), received ${JSON.stringify(status) ?? 'nothing'}`);
    }
    const signed = verifySignedRequest({ method: 'POST', path: HOOK_PATH, headers: request.headers, body: raw, now: options.now(), replay: options.replay });
    const key = `${pid}\u0000${cwd}`;
    if (!buckets.take(key)) {
      metrics.hookRateLimited.inc();
      const retryAfterSeconds = Math.max(1, Math.ceil(buckets.retryAfterMs(key) / 1000));
      throw cmError('CM_ERR_RATE_LIMITED', `more than ${options.rateLimitPerMin} hook requests per minute from pid ${pid} in ${cwd}`, { details: { retryAfterSeconds } });
    }
    const presence = signed.meshId === '' ? undefined : (await options.roster.get(signed.meshId)).presences.get(signed.publicKey);
    if (presence === undefined || presence.role !== 'session') {
      throw cmError('CM_ERR_UNAUTHORIZED', `key ${signed.publicKey.slice(0, 12)}… is not a session of mesh ${signed.meshId || '(none given)'}`, {
        hint: 'hooks are sent by the daemon for a registered Claude session; check that the session is connected',
      });
    }
    const result = await options.presence.setStatus(signed.meshId, signed.publicKey, status as 'working' | 'idle', 'hook');
    sendJson(response, 200, { ok: true, ...result });
  }

  return { path: HOOK_PATH, method: 'POST', route: 'hook', handler };
}
