// One WebSocket from accept to close: hello within HELLO_TIMEOUT_MS and only once, then
// every frame parsed and answered — a result, an ack or an error frame, never silence.
// Frames that arrive while the hello is being checked wait for it, so a client may
// pipeline; after the hello, frames run concurrently (acks carry the request id).

import type pg from 'pg';
import type { RawData, WebSocket } from 'ws';
import { cmError, isCmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { MAX_REQUEST_ID, parseClientFrame, PROTOCOL_VERSION } from '../protocol.ts';
import type { ClientFrame, HelloFrame, SessionHelloFrame } from '../protocol.ts';
import type { ReplayGuard } from '../replay-guard.ts';
import type { Delivery } from './delivery.ts';
import { CLOSE_POLICY, isRefusal, verifyHello } from './handshake.ts';
import type { Hub, Peer } from './hub.ts';
import type { BrokerMetrics } from './metrics.ts';
import { peerView } from './presence.ts';
import type { Presence } from './presence.ts';
import type { Roster, RosterCache } from './roster.ts';
import type { Sender } from './send.ts';
import { query } from './sql.ts';

export const HELLO_TIMEOUT_MS = 10_000;
// Backpressure: at most this many frames of one socket are being handled at once. Further
// frames wait as raw bytes (compact) and the socket is paused, so TCP pushes back on a
// client that sends faster than the broker commits: memory stays bounded under any burst.
export const MAX_FRAMES_IN_FLIGHT = 32;
const CLOSE_INTERNAL = 1011;

export interface SessionDeps {
  pool: pg.Pool;
  log: Logger;
  hub: Hub;
  roster: RosterCache;
  delivery: Delivery;
  sender: Sender;
  presence: Presence;
  metrics: BrokerMetrics;
  replay: ReplayGuard;
  instanceId: string;
  now: () => number;
  helloTimeoutMs?: number;
}

export function rosterView(roster: Roster): { peers: Record<string, unknown>[]; members: Record<string, unknown>[] } {
  return {
    peers: [...roster.presences.values()].map(peerView),
    members: [...roster.members.values()].map((member) => ({ key: member.key, name: member.name, role: member.role })),
  };
}

/** The request id of a frame that failed validation, so even its error can be correlated. */
function requestIdOf(data: RawData, isBinary: boolean): string | undefined {
  if (isBinary) return undefined;
  try {
    const value: unknown = JSON.parse(data.toString());
    const id = value !== null && typeof value === 'object' ? (value as { id?: unknown }).id : undefined;
    return typeof id === 'string' && id.length <= MAX_REQUEST_ID ? id : undefined;
  } catch {
    return undefined;
  }
}

export function handleConnection(socket: WebSocket, deps: SessionDeps): void {
  const { log, hub, metrics } = deps;
  let peer: Peer | undefined;
  let hello: Promise<void> | undefined;

  const send = (frame: Record<string, unknown>): void => {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(frame));
  };
  const sendError = (error: CmError, id?: string): void => send({ type: 'error', ...(id === undefined ? {} : { id }), ...error.toJSON() });

  const timer = setTimeout(() => {
    if (peer !== undefined || hello !== undefined) return;
    metrics.connectionsRejected.inc({ reason: 'hello_timeout' });
    sendError(cmError('CM_ERR_HELLO_TIMEOUT', `no hello within ${(deps.helloTimeoutMs ?? HELLO_TIMEOUT_MS) / 1000} s of connecting`));
    socket.close(CLOSE_POLICY, 'hello_timeout');
  }, deps.helloTimeoutMs ?? HELLO_TIMEOUT_MS);

  async function sayHello(frame: HelloFrame | SessionHelloFrame): Promise<void> {
    const identity = await verifyHello(frame, deps.pool, deps.now(), deps.replay);
    if (isRefusal(identity)) {
      metrics.connectionsRejected.inc({ reason: identity.reason });
      sendError(identity.error, frame.id);
      socket.close(identity.closeCode, identity.reason);
      return;
    }
    // The socket may have closed while we were checking: never register a dead socket.
    if (socket.readyState !== socket.OPEN) return;
    const attached = hub.attach(identity, socket);
    if (!attached.ok && attached.reason === 'removed') {
      metrics.connectionsRejected.inc({ reason: 'unauthorized' });
      sendError(cmError('CM_ERR_UNAUTHORIZED', `member ${identity.name} was just removed from mesh ${identity.meshId}`), frame.id);
      socket.close(CLOSE_POLICY, 'unauthorized');
      return;
    }
    if (!attached.ok) {
      metrics.connectionsRejected.inc({ reason: 'capacity' });
      sendError(cmError('CM_ERR_CAPACITY', `mesh ${identity.meshId} is at its limit of live connections`), frame.id);
      socket.close(CLOSE_POLICY, 'capacity');
      return;
    }
    clearTimeout(timer);
    peer = attached.peer;
    const groups = frame.type === 'session_hello' ? (frame.groups ?? null) : null;
    await deps.pool.query(query('presence_connect', [identity.meshId, identity.memberId, identity.key, identity.role, identity.name, deps.instanceId, groups, !attached.reattached]));
    // A reattach inside the lease does not change what the roster shows (it was online all
    // along): keep the cache, so a reconnect storm does not reload the roster per hello.
    if (!attached.reattached) deps.roster.invalidate(identity.meshId);
    const roster = await deps.roster.get(identity.meshId);
    send({
      type: 'hello_ack',
      ...(frame.id === undefined ? {} : { id: frame.id }),
      protocolVersion: PROTOCOL_VERSION,
      meshId: identity.meshId,
      meshName: identity.meshName,
      key: identity.key,
      memberKey: identity.memberKey,
      role: identity.role,
      memberRole: identity.memberRole,
      name: identity.name,
      reattached: attached.reattached,
      ...rosterView(roster),
    });
    const self = roster.presences.get(identity.key);
    if (!attached.reattached && self !== undefined) {
      hub.broadcast(identity.meshId, { type: 'system', event: 'peer_joined', meshId: identity.meshId, peer: peerView(self), at: new Date(deps.now()).toISOString() }, identity.key);
    }
    void deps.delivery.drain(attached.peer);
  }

  async function dispatch(frame: ClientFrame, current: Peer): Promise<void> {
    const id = frame.id === undefined ? {} : { id: frame.id };
    switch (frame.type) {
      case 'hello':
      case 'session_hello':
        metrics.connectionsRejected.inc({ reason: 'duplicate_hello' });
        sendError(cmError('CM_ERR_DUPLICATE_HELLO', `this connection already said hello as ${current.key.slice(0, 12)}…`), frame.id);
        return;
      case 'send':
        send(await deps.sender.send(current, frame));
        return;
      case 'client_ack':
        deps.delivery.ack(current, frame.messageIds);
        return;
      case 'mark':
        send({ type: 'ok', ...id, of: 'mark', updated: await deps.delivery.mark(current, frame.messageIds, frame.state) });
        return;
      case 'set_status':
        send({ type: 'ok', ...id, of: 'set_status', ...(await deps.presence.setStatus(current.meshId, current.key, frame.status, 'manual')) });
        return;
      case 'set_summary':
        await deps.presence.setSummary(current.meshId, current.key, frame.summary);
        send({ type: 'ok', ...id, of: 'set_summary' });
        return;
      case 'join_group': {
        const groups = await deps.presence.joinGroup(current.meshId, current.key, frame.group);
        if (groups === undefined) sendError(cmError('CM_ERR_BAD_FRAME', `already in the maximum number of groups; leave one before joining ${frame.group}`), frame.id);
        else send({ type: 'ok', ...id, of: 'join_group', groups });
        return;
      }
      case 'leave_group':
        send({ type: 'ok', ...id, of: 'leave_group', groups: await deps.presence.leaveGroup(current.meshId, current.key, frame.group) });
        return;
      case 'list_peers':
        send({ type: 'peers', ...id, ...rosterView(await deps.roster.get(current.meshId)) });
        return;
      case 'message_status': {
        const { rows } = await deps.pool.query(query('message_status', [frame.messageId, current.meshId, current.memberKey]));
        const first = rows[0];
        // Someone else's message and a missing one answer alike: status is for the sender only.
        if (first === undefined) {
          sendError(cmError('CM_ERR_NOT_FOUND', `no message ${frame.messageId} sent by you in this mesh`), frame.id);
          return;
        }
        const iso = (value: Date | null) => (value === null ? null : value.toISOString());
        send({
          type: 'message_status', ...id, messageId: first.id, target: first.target, priority: first.priority,
          clientMessageId: first.client_message_id, createdAt: iso(first.created_at), expiresAt: iso(first.expires_at),
          recipients: rows.map((row) => ({
            key: row.recipient_pubkey, state: row.state, queuedAt: iso(row.queued_at), deliveredAt: iso(row.delivered_at),
            surfacedAt: iso(row.surfaced_at), readAt: iso(row.read_at), expiredAt: iso(row.expired_at), pushes: row.pushes,
          })),
        });
        return;
      }
    }
  }

  async function onMessage(data: RawData, isBinary: boolean): Promise<void> {
    let frame: ClientFrame;
    try {
      if (isBinary) throw cmError('CM_ERR_BAD_FRAME', 'binary frames are not part of the protocol: send JSON text');
      frame = parseClientFrame(data.toString());
    } catch (error) {
      sendError(isCmError(error) ? error : cmError('CM_ERR_BAD_FRAME', 'frame could not be read'), requestIdOf(data, isBinary));
      return;
    }
    if (peer !== undefined) hub.touch(peer);
    if (hello !== undefined) await hello;
    if (peer === undefined && (frame.type === 'hello' || frame.type === 'session_hello')) {
      hello = sayHello(frame).catch((error: unknown) => {
        log.warn('hello failed', { error });
        sendError(cmError('CM_ERR_DB_UNAVAILABLE', 'the broker could not complete the hello; retry shortly'), frame.id);
        socket.close(CLOSE_INTERNAL, 'db_unavailable');
      });
      await hello;
      return;
    }
    if (peer === undefined) {
      sendError(cmError('CM_ERR_NO_HELLO', `frame "${frame.type}" before hello`), frame.id);
      return;
    }
    try {
      await dispatch(frame, peer);
    } catch (error) {
      log.warn('frame failed', { type: frame.type, error });
      sendError(isCmError(error) ? error : cmError('CM_ERR_DB_UNAVAILABLE', `${frame.type} could not be completed; retry it`), frame.id);
    }
  }

  let inFlight = 0;
  const backlog: Array<[RawData, boolean]> = [];
  function run(data: RawData, isBinary: boolean): void {
    inFlight += 1;
    void onMessage(data, isBinary).finally(() => {
      inFlight -= 1;
      const next = backlog.shift();
      if (next !== undefined) run(next[0], next[1]);
      else if (socket.isPaused) socket.resume();
    });
  }
  socket.on('message', (data, isBinary) => {
    if (inFlight < MAX_FRAMES_IN_FLIGHT) {
      run(data, isBinary);
      return;
    }
    backlog.push([data, isBinary]);
    if (!socket.isPaused) socket.pause();
  });
  socket.on('pong', () => {
    if (peer !== undefined) hub.touch(peer);
  });
  socket.on('close', () => {
    clearTimeout(timer);
    if (peer !== undefined) hub.detach(peer, socket);
  });
}
