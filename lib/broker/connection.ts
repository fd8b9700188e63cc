// One WebSocket from the upgrade to its close. The upgrade is checked (draining, path,
// method) before `ws` allocates anything; then the connection must say hello within the
// hello timeout and only once, and every frame after it is parsed and answered — a result,
// an ack or an error frame, never silence.
//
// Proving who is on a connection: `hello` — the member key signs (mesh, member key, time);
// `session_hello` — the member key attests the session key (expiry ≤ 24 h) and the session
// key signs (mesh, member key, session key, time). So every key the broker routes to has
// proven its secret, and every session is vouched for by a current member.

import { randomBytes } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { RawData, WebSocket } from 'ws';
import type { Context } from '../../broker.ts';
import { verify } from '../crypto.ts';
import { cmError, isCmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import {
  attestationSigningString, CLOSES, encodeFrame, errorFrame, helloSigningString, MAX_REQUEST_ID, parseClientFrame, PROTOCOL_VERSION,
  sessionHelloSigningString,
} from '../protocol.ts';
import type { AckFrame, Close, ClientFrame, HelloFrame, SessionHelloFrame } from '../protocol.ts';
import { CLOCK_SKEW_MS } from '../signed-request.ts';
import { sendFrame } from '../ws-writes.ts';
import { failureOf } from './db.ts';
import { MAX_BUFFERED_BYTES } from './hub.ts';
import type { Peer, PeerIdentity } from './hub.ts';
import type { CONNECTION_REJECT_REASONS } from './metrics.ts';
import { encodeWithRoster } from './presence.ts';

export const WS_PATH = '/ws';
export const HELLO_TIMEOUT_MS = 10_000;
const MAX_ATTESTATION_MS = 24 * 3600 * 1000;
const CHALLENGE_BYTES = 32;
// Backpressure: at most this many frames of one socket are handled at once. Further frames
// wait as raw bytes and the socket is paused, so TCP pushes back on a client that sends
// faster than the broker commits: memory stays bounded under any burst.
const MAX_FRAMES_IN_FLIGHT = 32;
// A slow consumer: more than MAX_BUFFERED_BYTES written to it and not yet taken by the
// network. It gets no pushes (hub.ts), and none of its frames is read until it has read its
// answers (checked this often), so a client that sends without reading cannot grow our memory.
const DRAIN_POLL_MS = 50;

type Hello = HelloFrame | SessionHelloFrame;
type RejectReason = (typeof CONNECTION_REJECT_REASONS)[number];
/** A refused hello: the error to send, the close to make, the metrics label. */
interface Refusal { error: CmError; close: Close; reason: RejectReason }

/** Answer an upgrade request with a plain HTTP status (no WebSocket) and close the socket. */
export function refuseUpgrade(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  if (socket.writable) {
    const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n${extra}` +
      `Content-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`);
  }
  socket.destroy();
}

/** The upgrade handler for node:http, and the `ws` server it hands sockets to. */
export function createUpgrade(ctx: Context, isDraining: () => boolean, onSocket: (socket: WebSocket) => void) {
  // Payloads are ciphertext: compression gains nothing and costs memory per socket.
  const wss = new WebSocketServer({ noServer: true, maxPayload: ctx.config.maxMessageBytes, clientTracking: false, perMessageDeflate: false });
  const refuse = (socket: Duplex, reason: RejectReason, status: number, message: string): void => {
    ctx.metrics.connectionsRejected.inc({ reason });
    refuseUpgrade(socket, status, message);
  };
  const handle = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const path = (request.url ?? '/').split('?', 1)[0];
    if (isDraining()) refuse(socket, 'draining', 503, 'broker is shutting down: reconnect shortly');
    else if (path !== WS_PATH) refuse(socket, 'not_found', 404, `no WebSocket endpoint at ${path}: connect to ${WS_PATH}`);
    else if (request.method !== 'GET') refuse(socket, 'not_found', 405, 'a WebSocket upgrade must use GET');
    else {
      wss.handleUpgrade(request, socket, head, (ws) => {
        ctx.metrics.connectionsTotal.inc();
        onSocket(ws);
      });
    }
  };
  return { handle, wss };
}

/** Live connections other instances hold, in the hello's mesh and for its member. */
interface Elsewhere { mesh: number; member: number }

/** Check a hello in a fixed order, cheapest first; the database is asked last. */
async function verifyHello(ctx: Context, frame: Hello, nonce: string): Promise<{ identity: PeerIdentity; elsewhere: Elsewhere } | Refusal> {
  const now = ctx.now();
  const refusal = (reason: RejectReason, close: Close, error: CmError): Refusal => ({ error, close, reason });
  if (frame.challenge === undefined) {
    return refusal('protocol_version', CLOSES.oldProtocol, cmError('CM_ERR_PROTOCOL_VERSION', `this broker speaks protocol ${PROTOCOL_VERSION}: a hello must sign the challenge sent on connect, and this one carries none`));
  }
  if (Math.abs(now - frame.timestamp) > CLOCK_SKEW_MS) {
    return refusal('timestamp_skew', CLOSES.timestampSkew, cmError('CM_ERR_TIMESTAMP_SKEW', `hello timestamp ${frame.timestamp} is more than ${CLOCK_SKEW_MS / 1000} s from the broker's clock (${now})`));
  }
  const badSignature = (what: string) => refusal('bad_signature', CLOSES.badSignature, cmError('CM_ERR_BAD_SIGNATURE', what));
  // A hello signed for another connection's challenge is a replay: its signature cannot match.
  if (frame.challenge !== nonce) {
    return refusal('bad_signature', CLOSES.badSignature, cmError('CM_ERR_REPLAYED', 'the hello signs another challenge than the one this connection was sent: a replayed or stale hello', {
      hint: 'sign a fresh hello with the challenge of the connection it is sent on',
    }));
  }
  if (frame.type === 'hello') {
    if (!verify(frame.signature, helloSigningString(frame.meshId, frame.memberKey, frame.timestamp, nonce), frame.memberKey)) {
      return badSignature(`hello signature does not match member key ${frame.memberKey.slice(0, 12)}…`);
    }
  } else {
    const { expiresAt, signature } = frame.attestation;
    if (frame.sessionKey === frame.memberKey) return badSignature('a session needs a key of its own, not its member key');
    if (expiresAt <= now) return refusal('expired', CLOSES.expired, cmError('CM_ERR_EXPIRED', `session attestation expired at ${new Date(expiresAt).toISOString()}`));
    if (expiresAt > now + MAX_ATTESTATION_MS) {
      return refusal('expired', CLOSES.expired, cmError('CM_ERR_EXPIRED', `session attestation expires ${Math.round((expiresAt - now) / 3_600_000)} h ahead; at most 24 h is accepted`));
    }
    if (!verify(signature, attestationSigningString(frame.meshId, frame.memberKey, frame.sessionKey, expiresAt), frame.memberKey)) {
      return badSignature(`session attestation is not signed by member key ${frame.memberKey.slice(0, 12)}…`);
    }
    if (!verify(frame.signature, sessionHelloSigningString(frame.meshId, frame.memberKey, frame.sessionKey, frame.timestamp, nonce), frame.sessionKey)) {
      return badSignature(`session_hello signature does not match session key ${frame.sessionKey.slice(0, 12)}…`);
    }
  }
  const member = await ctx.presence.member(frame.meshId, frame.memberKey);
  // A ban outranks everything else about the row: it always closes 4002.
  if (member?.banned === true) return refusal('banned', CLOSES.banned, cmError('CM_ERR_BANNED', `member ${member.name} is banned from mesh ${frame.meshId}`));
  // Unknown mesh and unknown member answer alike: a stranger learns nothing about meshes.
  if (member === undefined || member.left) {
    return refusal('unauthorized', CLOSES.unauthorized, cmError('CM_ERR_UNAUTHORIZED', `key ${frame.memberKey.slice(0, 12)}… is not a member of mesh ${frame.meshId}`, {
      hint: 'join the mesh with an invite first (claudemesh join <token>)',
    }));
  }
  const session = frame.type === 'session_hello';
  const key = session ? frame.sessionKey : frame.memberKey;
  const name = frame.name ?? member.name;
  // A name is how people address a peer: nobody may take another member's, on the wire either.
  if (name !== member.name && (await ctx.presence.nameTaken(frame.meshId, name, frame.memberKey))) {
    return refusal('name_taken', CLOSES.nameTaken, cmError('CM_ERR_NAME_TAKEN', `another member of mesh ${frame.meshId} or one of its sessions is called ${JSON.stringify(name)}`, {
      hint: 'pick another session name (claudemesh launch --name …)',
    }));
  }
  return {
    identity: { meshId: frame.meshId, meshName: member.mesh_name, memberId: member.id, memberKey: frame.memberKey, role: member.role, key, kind: session ? 'session' : 'member', name },
    elsewhere: { mesh: member.elsewhere, member: member.member_elsewhere },
  };
}

/** Why the hub would not take a proven identity: just removed, or no room for it. */
function attachRefusal(ctx: Context, identity: PeerIdentity, reason: 'removed' | 'capacity' | 'member_capacity'): Refusal {
  if (reason === 'removed') {
    return { reason: 'unauthorized', close: CLOSES.unauthorized, error: cmError('CM_ERR_UNAUTHORIZED', `member ${identity.name} was just removed from mesh ${identity.meshId}`) };
  }
  const what = reason === 'capacity'
    ? `mesh ${identity.meshId} is at its limit of ${ctx.config.maxConnectionsPerMesh} live connections`
    : `member ${identity.name} already has ${ctx.config.maxConnectionsPerMember} live connections in mesh ${identity.meshId}`;
  return { reason: 'capacity', close: CLOSES.capacity, error: cmError('CM_ERR_CAPACITY', what) };
}

/** The request id of a frame that failed validation, so that even its error can be correlated. */
function requestIdOf(data: RawData, isBinary: boolean): string | undefined {
  if (isBinary) return undefined;
  try {
    const id: unknown = (JSON.parse(data.toString()) as { id?: unknown } | null)?.id;
    return typeof id === 'string' && id.length <= MAX_REQUEST_ID ? id : undefined;
  } catch {
    return undefined;
  }
}

/** Answer one frame of a connection that said hello. */
async function dispatch(ctx: Context, peer: Peer, frame: ClientFrame, reply: (text: string) => void): Promise<void> {
  const { presence, delivery } = ctx;
  const id = frame.id === undefined ? {} : { id: frame.id };
  switch (frame.type) {
    // Only the sends and acks that arrive while the hello is answered come here; the rest
    // take serveConnection's direct path.
    case 'send':
      return reply(JSON.stringify(await ctx.sender.send(peer, frame)));
    case 'client_ack':
      return delivery.ack(peer, frame.messageIds);
    case 'hello':
    case 'session_hello':
      ctx.metrics.connectionsRejected.inc({ reason: 'duplicate_hello' });
      throw cmError('CM_ERR_DUPLICATE_HELLO', `this connection already said hello as ${peer.key.slice(0, 12)}…`);
    case 'mark':
      return reply(encodeFrame('ok', { ...id, of: 'mark', updated: await delivery.mark(peer, frame.messageIds, frame.state) }));
    case 'set_status':
      return reply(encodeFrame('ok', { ...id, of: 'set_status', ...(await presence.setStatus(peer.meshId, peer.key, frame.status, 'manual')) }));
    case 'set_summary':
      await presence.setSummary(peer.meshId, peer.key, frame.summary);
      return reply(encodeFrame('ok', { ...id, of: 'set_summary' }));
    case 'join_group': {
      const groups = await presence.joinGroup(peer.meshId, peer.key, frame.group);
      if (groups === undefined) throw cmError('CM_ERR_BAD_FRAME', `already in the maximum number of groups; leave one before joining ${frame.group}`);
      return reply(encodeFrame('ok', { ...id, of: 'join_group', groups }));
    }
    case 'leave_group':
      return reply(encodeFrame('ok', { ...id, of: 'leave_group', groups: await presence.leaveGroup(peer.meshId, peer.key, frame.group) }));
    case 'list_peers':
      return reply(encodeWithRoster('peers', id, await presence.roster(peer.meshId), frame.rosterDigest));
    case 'message_status':
      return reply(JSON.stringify(await delivery.status(peer, frame.messageId, frame.id)));
  }
}

const ACK_MARK = Buffer.from('"client_ack"');
/** A cheap look at the raw bytes; the frame is parsed properly when it is handled. */
function isAck(data: RawData, isBinary: boolean): boolean {
  return !isBinary && Buffer.isBuffer(data) && data.includes(ACK_MARK);
}

/** Slow consumers and the bytes waiting in every socket's send buffer (read at scrape time). */
export function unsentBytes(sockets: Iterable<WebSocket>): { slow: number; bytes: number } {
  let slow = 0;
  let bytes = 0;
  for (const socket of sockets) {
    bytes += socket.bufferedAmount;
    if (socket.bufferedAmount > MAX_BUFFERED_BYTES) slow += 1;
  }
  return { slow, bytes };
}

/**
 * Run `handle` for each frame, at most MAX_FRAMES_IN_FLIGHT at once, and none while the
 * socket is a slow consumer. Frames beyond that wait as raw bytes and the socket is paused
 * until the backlog drains. The function returned is to be called once per frame, when it
 * has been answered: one function per socket rather than a promise per frame, which a send
 * would hold until its commit.
 */
function handleWithBackpressure(socket: WebSocket, handle: (data: RawData, isBinary: boolean) => void): () => void {
  let inFlight = 0;
  const backlog: Array<[RawData, boolean]> = [];
  let drainTimer: NodeJS.Timeout | undefined;
  const slow = (): boolean => socket.bufferedAmount > MAX_BUFFERED_BYTES;
  const done = (): void => {
    inFlight -= 1;
    pump();
  };
  const run = (data: RawData, isBinary: boolean): void => {
    inFlight += 1;
    handle(data, isBinary);
  };
  const pump = (): void => {
    clearTimeout(drainTimer);
    drainTimer = undefined;
    while (inFlight < MAX_FRAMES_IN_FLIGHT && !slow()) {
      const next = backlog.shift();
      if (next === undefined) break;
      run(next[0], next[1]);
    }
    if (!slow()) {
      // Otherwise the frames in flight call pump as they end.
      if (backlog.length === 0 && socket.isPaused) socket.resume();
    } else if ((backlog.length > 0 || socket.isPaused) && drainTimer === undefined && socket.readyState === socket.OPEN) {
      drainTimer = setTimeout(pump, DRAIN_POLL_MS);
    }
  };
  socket.on('message', (data, isBinary) => {
    // Acks overtake: they free the recipient's deliveries, and must not wait behind sends
    // (a broker killed with acks still queued would push those messages again).
    if (isAck(data, isBinary) || (backlog.length === 0 && inFlight < MAX_FRAMES_IN_FLIGHT && !slow())) return run(data, isBinary);
    backlog.push([data, isBinary]);
    if (!socket.isPaused) socket.pause();
    if (inFlight === 0) pump();
  });
  socket.on('close', () => clearTimeout(drainTimer));
  return done;
}

/** What answering a hello needs of its connection. */
interface HelloSide {
  socket: WebSocket;
  nonce: string;
  timer: NodeJS.Timeout;
  reply: (text: string) => void;
  refuse: (refusal: Refusal, id?: string) => void;
  /** called as soon as the hub holds the peer, before its presence is written */
  attached: (peer: Peer) => void;
}

/** Check a hello, attach its peer, record its presence, then answer with the roster. */
async function sayHello(ctx: Context, side: HelloSide, frame: Hello): Promise<void> {
  const { socket, reply, refuse } = side;
  const verified = await verifyHello(ctx, frame, side.nonce);
  if ('error' in verified) return refuse(verified, frame.id);
  const { identity, elsewhere } = verified;
  // The socket may have closed while we were checking: never attach a dead socket.
  if (socket.readyState !== socket.OPEN) return;
  const attached = ctx.hub.attach(identity, socket, elsewhere);
  if (!attached.ok) return refuse(attachRefusal(ctx, identity, attached.reason), frame.id);
  clearTimeout(side.timer);
  const peer = attached.peer;
  side.attached(peer);
  const { roster, fresh, batchMates } = await ctx.presence.connected(peer, attached.reattached, frame.type === 'session_hello' ? (frame.groups ?? null) : null);
  // Closed while its presence was written: the close's record may have gone first and been
  // overwritten, leaving the peer online for good. Record the close again, after the connect.
  if (peer.socket === null) return ctx.presence.detached(peer);
  const { meshId, meshName, key, memberKey, kind, role, name } = peer;
  reply(encodeWithRoster('hello_ack', {
    ...(frame.id === undefined ? {} : { id: frame.id }), protocolVersion: PROTOCOL_VERSION, meshId, meshName, key, memberKey, kind, role, name, reattached: !fresh,
  }, roster, frame.rosterDigest));
  if (fresh) ctx.presence.announceJoined(peer, roster, batchMates);
  void ctx.delivery.catchUpAfterHello(peer);
}

/** Serve one accepted socket until it closes. */
export function serveConnection(ctx: Context, socket: WebSocket): void {
  const { log, hub, metrics, delivery } = ctx;
  let peer: Peer | undefined;
  let hello: Promise<void> | undefined;
  let helloAnswered = false;
  const reply = (text: string): void => {
    if (socket.readyState === socket.OPEN) sendFrame(socket, text);
  };
  const refuse = (refusal: Refusal, id?: string): void => {
    metrics.connectionsRejected.inc({ reason: refusal.reason });
    reply(errorFrame(refusal.error, id));
    socket.close(refusal.close.code, refusal.close.reason);
  };
  const nonce = randomBytes(CHALLENGE_BYTES).toString('base64url');
  reply(encodeFrame('challenge', { protocolVersion: PROTOCOL_VERSION, nonce }));
  const timer = setTimeout(() => {
    if (peer !== undefined || hello !== undefined) return;
    refuse({ reason: 'hello_timeout', close: CLOSES.helloTimeout, error: cmError('CM_ERR_HELLO_TIMEOUT', `no hello within ${ctx.timings.helloTimeoutMs / 1000} s of connecting`) });
  }, ctx.timings.helloTimeoutMs);
  const side: HelloSide = { socket, nonce, timer, reply, refuse, attached: (attached) => { peer = attached; } };

  function onMessage(data: RawData, isBinary: boolean): void {
    let frame: ClientFrame;
    try {
      if (isBinary) throw cmError('CM_ERR_BAD_FRAME', 'binary frames are not part of the protocol: send JSON text');
      frame = parseClientFrame(data.toString());
    } catch (error) {
      reply(errorFrame(isCmError(error) ? error : cmError('CM_ERR_BAD_FRAME', 'frame could not be read'), requestIdOf(data, isBinary)));
      return done();
    }
    if (peer !== undefined) hub.touch(peer);
    // The two frames of every message, once the hello is answered: handled in this turn,
    // with no promise or async frame held per send until its commit.
    if (helloAnswered && peer !== undefined && (frame.type === 'send' || frame.type === 'client_ack')) {
      try {
        if (frame.type === 'send') return ctx.sender.submit(peer, frame, answerSend);
        delivery.ack(peer, frame.messageIds);
      } catch (error) {
        log.warn('frame failed', { type: frame.type, error });
        reply(errorFrame(failureOf(error, frame.type), frame.id));
      }
      return done();
    }
    void handleFrame(frame).finally(done);
  }

  async function handleFrame(frame: ClientFrame): Promise<void> {
    if (hello !== undefined) await hello;
    if (peer === undefined && (frame.type === 'hello' || frame.type === 'session_hello')) {
      hello = sayHello(ctx, side, frame).catch((error: unknown) => {
        log.warn('hello failed', { error });
        refuse({ reason: 'internal', close: CLOSES.internal, error: failureOf(error, 'the hello') }, frame.id);
      }).finally(() => {
        helloAnswered = true;
      });
      return hello;
    }
    if (peer === undefined) return reply(errorFrame(cmError('CM_ERR_NO_HELLO', `frame "${frame.type}" before hello`), frame.id));
    try {
      await dispatch(ctx, peer, frame, reply);
    } catch (error) {
      if (!isCmError(error)) log.warn('frame failed', { type: frame.type, error });
      reply(errorFrame(failureOf(error, frame.type), frame.id));
    }
  }

  const answerSend = (ack: AckFrame): void => {
    reply(JSON.stringify(ack));
    done();
  };
  const done = handleWithBackpressure(socket, onMessage);
  socket.on('pong', () => peer !== undefined && hub.touch(peer));
  socket.on('close', () => {
    clearTimeout(timer);
    if (peer !== undefined) hub.detach(peer, socket);
  });
}
