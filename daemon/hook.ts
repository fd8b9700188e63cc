// POST /v1/hook: what `claudemesh hook working|idle|start|end` asks the daemon, once per
// Claude Code hook. The daemon finds the session (the token header, else the Claude session
// id, else the Claude process id), signs POST /hook/set-status with the session's own key
// (the broker applies it to that session's presence only) and answers what the hook needs to
// decide whether to print the unread notice: the messages not surfaced yet, who sent them,
// and how many channel streams (MCP servers) read this session right now.
//
// `start` registers a session that nobody registered yet (a plain `claude` with the hooks
// installed); `end` unregisters it unless the session goes on under a new id (`/clear`),
// so its presence leaves at once instead of when the reaper notices the process is gone.
// The broker call waits at most HOOK_BROKER_WAIT_MS: a hook must answer within a second, and
// a status that lands a little later is still right.

import { setTimeout as sleep } from 'node:timers/promises';
import { callBroker } from '../lib/broker-client.ts';
import { cmError, isCmError } from '../lib/errors.ts';
import type { Daemon } from './daemon.ts';
import type { SessionRecord } from './sessions.ts';
import { openStreams } from './sse.ts';

const HOOK_STATUS_PATH = '/hook/set-status';
const HOOK_BROKER_WAIT_MS = 500;
const HOOK_BROKER_TIMEOUT_MS = 3_000;
const MAX_UNREAD_LISTED = 1_000;
const MAX_SENDERS_NAMED = 3;
const HOOK_EVENTS = ['working', 'idle', 'start', 'end'] as const;
// SessionEnd reasons after which the same Claude process goes on (under a new session id).
const ENDS_THAT_CONTINUE: ReadonlySet<string> = new Set(['clear']);

type HookEvent = (typeof HOOK_EVENTS)[number];

interface HookInput {
  event: HookEvent;
  sessionId?: string;
  pid?: number;
  cwd?: string;
  name?: string;
  mesh?: string;
  reason?: string;
}

function field(body: Record<string, unknown>, name: string, max: number): string | undefined {
  const value = body[name];
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string' || value.length > max) throw cmError('CM_ERR_BAD_REQUEST', `"${name}" must be a string of at most ${max} characters`);
  return value;
}

/** The hook request's fields, checked. */
export function hookInput(body: Record<string, unknown>): HookInput {
  const event = body.event;
  if (!(HOOK_EVENTS as readonly unknown[]).includes(event)) {
    throw cmError('CM_ERR_BAD_REQUEST', `"event" must be one of ${HOOK_EVENTS.join(', ')}, received ${JSON.stringify(event) ?? 'nothing'}`);
  }
  const pid = body.pid;
  if (pid !== undefined && (!Number.isSafeInteger(pid) || (pid as number) <= 0)) throw cmError('CM_ERR_BAD_REQUEST', '"pid" must be a positive integer');
  const optional = { sessionId: field(body, 'sessionId', 128), cwd: field(body, 'cwd', 4096), name: field(body, 'name', 64), mesh: field(body, 'mesh', 128), reason: field(body, 'reason', 64) };
  const input: HookInput = { event: event as HookEvent, ...(pid === undefined ? {} : { pid: pid as number }) };
  for (const [key, value] of Object.entries(optional)) if (value !== undefined) Object.assign(input, { [key]: value });
  return input;
}

function findSession(daemon: Daemon, input: HookInput, session: SessionRecord | undefined): SessionRecord | undefined {
  if (session !== undefined) return session;
  const all = daemon.sessions.list();
  return (input.sessionId === undefined ? undefined : all.find((record) => record.sessionId === input.sessionId))
    ?? (input.pid === undefined ? undefined : all.find((record) => record.pid === input.pid));
}

/** Sign the status with the session key and send it; the outcome as a word (or the broker's code). */
async function setStatus(daemon: Daemon, record: SessionRecord, status: 'working' | 'idle', input: HookInput): Promise<string> {
  const mesh = daemon.mesh(record.meshId);
  const pair = daemon.sessions.keyPair(record.meshId, record.sessionId);
  const call = callBroker({
    brokerUrl: mesh.brokerUrl, method: 'POST', path: HOOK_STATUS_PATH, meshId: record.meshId, timeoutMs: HOOK_BROKER_TIMEOUT_MS,
    identity: { publicKey: pair.publicKey, secretKey: pair.secretKey },
    body: { pid: input.pid ?? record.pid ?? process.pid, cwd: input.cwd ?? record.cwd ?? '/', status },
  }).then(
    () => 'applied',
    (error: unknown) => (error instanceof Error && 'code' in error ? String((error as { code: unknown }).code) : 'failed'),
  );
  void call.then((outcome) => daemon.events.push('hook_status', { session: record.name, status, outcome }));
  return Promise.race([call, sleep(HOOK_BROKER_WAIT_MS, 'pending')]);
}

function register(daemon: Daemon, input: HookInput): SessionRecord | undefined {
  if (input.sessionId === undefined) return undefined;
  try {
    const { body } = daemon.registerSession({
      sessionId: input.sessionId, ...(input.mesh === undefined ? {} : { mesh: input.mesh }), ...(input.name === undefined ? {} : { name: input.name }),
      ...(input.pid === undefined ? {} : { pid: input.pid }), ...(input.cwd === undefined ? {} : { cwd: input.cwd }),
    });
    return daemon.session(String(body.token));
  } catch (error) {
    daemon.events.push('hook_register_failed', { code: isCmError(error) ? error.code : 'CM_ERR_INTERNAL', message: error instanceof Error ? error.message : String(error) });
    return undefined;
  }
}

/** Handle one hook; never throws for a session that cannot be found (the answer says so). */
export async function handleHook(daemon: Daemon, input: HookInput, session: SessionRecord | undefined): Promise<Record<string, unknown>> {
  let record = findSession(daemon, input, session);
  if (record === undefined && input.event === 'start') record = register(daemon, input);
  if (record === undefined) return { session: null, status: null, unread: { count: 0, from: [] }, streams: 0 };
  const status = input.event === 'working' ? 'working' : 'idle';
  const outcome = await setStatus(daemon, record, status, input);
  const unread = daemon.listInbox({ unsurfacedOnly: true, limit: MAX_UNREAD_LISTED }, record).filter((row) => row.readAt === null);
  const from = [...new Set(unread.map((row) => row.senderName ?? row.senderKey.slice(0, 12)))];
  const answer = {
    session: { name: record.name, meshId: record.meshId, sessionKey: record.sessionKey },
    status: { value: status, outcome },
    unread: { count: unread.length, from: from.slice(0, MAX_SENDERS_NAMED), more: Math.max(0, from.length - MAX_SENDERS_NAMED) },
    streams: openStreams(record.token),
  };
  if (input.event === 'end' && !ENDS_THAT_CONTINUE.has(input.reason ?? '')) {
    void daemon.unregisterSession(record.token).catch(() => {});
  }
  return answer;
}
