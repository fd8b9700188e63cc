// The connections this instance holds after their hello, keyed by (mesh, key). This map is
// the truth of who is connected here: capacity is counted from it, never from a counter that
// could drift. A closed connection keeps its entry for the lease so that a proven reconnect
// reattaches silently; only when the lease runs out do the others hear `peer_left`.

import pg from 'pg';
import type { WebSocket } from 'ws';
import type { Context } from '../../broker.ts';
import { sendFrame } from '../ws-writes.ts';
import { query } from './db.ts';
import { CLOSES } from '../protocol.ts';
import type { Kind, Role } from '../protocol.ts';

export const LEASE_MS = 90_000;
export const PING_INTERVAL_MS = 30_000;
export const PONG_TIMEOUT_MS = 75_000;
// Liveness is checked this many times per ping interval, so a silent socket is terminated
// within a few seconds after PONG_TIMEOUT_MS, not up to a whole interval later.
const LIVENESS_CHECKS_PER_PING = 6;
// sockets checked (and pinged) at a time, with a pause between: their pongs then come back
// spread out too (10,000 pongs at once kept the loop busy for tens of milliseconds)
const HEARTBEAT_SLICE = 200;
const HEARTBEAT_PAUSE_MS = 20;
// Above this many unsent bytes a connection takes no more pushes until the redelivery tick
// (and connection.ts reads none of its frames): a slow consumer.
export const MAX_BUFFERED_BYTES = 1024 * 1024;
// A hello checks membership in the database, then attaches. A kick or ban that commits in
// between would miss that connection, so removals are remembered this long and refused here.
const REMOVAL_MEMORY_MS = 10_000;
const MAX_REMEMBERED_REMOVALS = 10_000;
// Several instances on one database tell each other through Postgres LISTEN/NOTIFY: new
// deliveries for connections another instance holds, members removed (kick, ban, leave),
// roster changes and mesh events.
export const SIGNAL_DELIVERIES = 'cm_deliveries';
export const SIGNAL_REMOVALS = 'cm_removals';
export const SIGNAL_ROSTERS = 'cm_rosters';
// a key that connected here while another instance still held a socket for it
export const SIGNAL_TAKEOVERS = 'cm_takeovers';
// peer_joined / peer_left told on one instance reach the sockets every other instance holds
const SIGNAL_EVENTS = 'cm_events';
// pg_notify refuses payloads of 8000 bytes or more; an event that large is told locally only
// (the others still see the change in their next roster)
const MAX_SIGNAL_BYTES = 7_900;
// Fresh peers announced within JOIN_GATHER_MS share frames (peers_joined), each frame up to
// MAX_JOINED_BYTES of views so that it also fits a notification to the other instances.
const JOIN_GATHER_MS = 50;
const MAX_JOINED_BYTES = 6_000;
const LISTEN_RETRY_MS = 1_000;

/** Who a proven hello says is on a connection. */
export interface PeerIdentity {
  meshId: string;
  meshName: string;
  memberId: string;
  memberKey: string;
  role: Role;
  /** the key messages are routed to: the session key for a session, else the member key */
  key: string;
  kind: Kind;
  name: string;
}

export interface Peer extends PeerIdentity {
  socket: WebSocket | null;
  lastActivity: number;
  lastPing: number;
  leaseTimer: NodeJS.Timeout | undefined;
}

type AttachResult = { ok: true; peer: Peer; reattached: boolean } | { ok: false; reason: 'capacity' | 'member_capacity' | 'removed' };

/** A fresh peer to announce: its view, and the peers of its hello batch (they know of it). */
interface Joined { key: string; json: string; mates: ReadonlySet<string> }

/** One key for a (mesh, key) pair, wherever a map is keyed by both. */
export const entryKey = (meshId: string, key: string): string => `${meshId}\n${key}`;

export class Hub {
  readonly #ctx: Context;
  readonly #peers = new Map<string, Peer>();
  readonly #byMesh = new Map<string, Set<Peer>>();
  readonly #removed = new Map<string, number>();
  readonly #pinger: NodeJS.Timeout;
  #beating = false;
  #joins = new Map<string, Joined[]>();
  #listener: pg.Client | undefined;
  #listenRetry: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(ctx: Context) {
    this.#ctx = ctx;
    this.#pinger = setInterval(() => void this.#heartbeat(), Math.max(1, Math.floor(ctx.timings.pingIntervalMs / LIVENESS_CHECKS_PER_PING)));
    this.#pinger.unref();
  }

  /**
   * Bind a proven identity to a socket. An entry for the same key (open, or in its lease)
   * is taken over: the older socket closes `session_replaced`, and capacity is not checked —
   * a reattaching peer is never refused for capacity.
   */
  attach(identity: PeerIdentity, socket: WebSocket, elsewhere: { mesh: number; member: number } = { mesh: 0, member: 0 }): AttachResult {
    const now = this.#ctx.now();
    const removedAt = this.#removed.get(entryKey(identity.meshId, identity.memberKey));
    if (removedAt !== undefined && now - removedAt < REMOVAL_MEMORY_MS) return { ok: false, reason: 'removed' };
    const existing = this.#peers.get(entryKey(identity.meshId, identity.key));
    if (existing !== undefined) {
      clearTimeout(existing.leaseTimer);
      const old = existing.socket;
      Object.assign(existing, identity, { socket, lastActivity: now, lastPing: now, leaseTimer: undefined });
      if (old !== null && old !== socket) old.close(CLOSES.replaced.code, CLOSES.replaced.reason);
      return { ok: true, peer: existing, reattached: true };
    }
    // Capacity counts open sockets only: a lease reserves a reattach, not a slot, so closed
    // connections never lock a mesh. One member may not take more than its share. Those
    // other instances hold (`elsewhere`, from Postgres at the hello) count too.
    const mesh = this.#byMesh.get(identity.meshId);
    let live = elsewhere.mesh;
    let mine = elsewhere.member;
    for (const peer of mesh ?? []) {
      if (peer.socket === null) continue;
      live += 1;
      if (peer.memberKey === identity.memberKey) mine += 1;
    }
    if (live >= this.#ctx.config.maxConnectionsPerMesh) return { ok: false, reason: 'capacity' };
    if (mine >= this.#ctx.config.maxConnectionsPerMember) return { ok: false, reason: 'member_capacity' };
    const peer: Peer = { ...identity, socket, lastActivity: now, lastPing: now, leaseTimer: undefined };
    this.#peers.set(entryKey(identity.meshId, identity.key), peer);
    if (mesh === undefined) this.#byMesh.set(identity.meshId, new Set([peer]));
    else mesh.add(peer);
    return { ok: true, peer, reattached: false };
  }

  /** The socket of `peer` closed: its lease starts. Ignored when a newer socket replaced it. */
  detach(peer: Peer, socket: WebSocket): void {
    if (peer.socket !== socket) return;
    peer.socket = null;
    this.#ctx.presence.detached(peer);
    peer.leaseTimer = setTimeout(() => this.#drop(peer, 'lease_expired'), this.#ctx.timings.leaseMs);
    peer.leaseTimer.unref();
  }

  /** Close every connection of a member now (kicked, banned, left); no lease. */
  removeMember(meshId: string, memberKey: string, close: { code: number; reason: 'kicked' | 'banned' | 'left' }): void {
    if (this.#removed.size >= MAX_REMEMBERED_REMOVALS) this.#removed.clear();
    this.#removed.set(entryKey(meshId, memberKey), this.#ctx.now());
    for (const peer of [...(this.#byMesh.get(meshId) ?? [])]) {
      if (peer.memberKey !== memberKey) continue;
      const socket = peer.socket;
      peer.socket = null;
      socket?.close(close.code, close.reason);
      this.#drop(peer, close.reason);
    }
  }

  /** The member joined again (a new invite): its hellos are welcome at once. */
  forgetRemoval(meshId: string, memberKey: string): void {
    this.#removed.delete(entryKey(meshId, memberKey));
  }

  get(meshId: string, key: string): Peer | undefined {
    return this.#peers.get(entryKey(meshId, key));
  }

  /** The peer for (mesh, key) if its socket is open and not over its send buffer. */
  writable(meshId: string, key: string): Peer | undefined {
    const peer = this.#peers.get(entryKey(meshId, key));
    const socket = peer?.socket;
    if (socket === null || socket === undefined || socket.readyState !== socket.OPEN || socket.bufferedAmount > MAX_BUFFERED_BYTES) return undefined;
    return peer;
  }

  /** Every peer with an open socket in a mesh (or in all meshes). */
  *online(meshId?: string): Iterable<Peer> {
    const source = meshId === undefined ? this.#peers.values() : (this.#byMesh.get(meshId) ?? []).values();
    for (const peer of source) if (peer.socket !== null) yield peer;
  }

  /** Send an encoded frame to every open socket of a mesh except `exceptKey` (and those `skip` names). */
  broadcast(meshId: string, frame: string, exceptKey?: string, skip?: ReadonlySet<string>): void {
    for (const peer of this.online(meshId)) {
      const socket = peer.socket;
      if (socket !== null && peer.key !== exceptKey && skip?.has(peer.key) !== true && socket.readyState === socket.OPEN) sendFrame(socket, frame);
    }
  }

  /**
   * Tell a mesh an event: this instance's sockets now (but those `skip` names, which know it
   * already), the other instances' through Postgres.
   */
  announce(meshId: string, frame: string, exceptKey?: string, skip?: ReadonlySet<string>): void {
    if (this.#joins.has(meshId)) this.#tellJoins(meshId);
    this.#announceNow(meshId, frame, exceptKey, skip);
  }

  #announceNow(meshId: string, frame: string, exceptKey?: string, skip?: ReadonlySet<string>): void {
    this.broadcast(meshId, frame, exceptKey, skip);
    const payload = { from: this.#ctx.instanceId, meshId, frame, ...(exceptKey === undefined ? {} : { exceptKey }) };
    if (Buffer.byteLength(JSON.stringify(payload)) < MAX_SIGNAL_BYTES) this.tell(SIGNAL_EVENTS, payload, 'a mesh event');
    else this.#ctx.log.warn('mesh event too large to tell the other instances', { meshId });
  }

  /**
   * Tell the mesh a fresh peer joined, together with the others announced within
   * JOIN_GATHER_MS: a connect storm of n peers into one mesh then costs each listener a few
   * frames instead of one per joiner. Nobody hears of itself or of a peer from its own hello
   * batch (its `hello_ack` roster listed those).
   */
  announceJoined(meshId: string, key: string, view: object, batchMates: ReadonlySet<string>): void {
    if (this.#joins.size === 0) setTimeout(() => this.#tellJoins(), JOIN_GATHER_MS).unref();
    const list = this.#joins.get(meshId) ?? [];
    list.push({ key, json: JSON.stringify(view), mates: batchMates });
    this.#joins.set(meshId, list);
  }

  /** Tell the joins gathered so far: every mesh's, or one mesh's before another of its events (a peer_left must not overtake the join it ends). */
  #tellJoins(only?: string): void {
    const meshes = only === undefined ? [...this.#joins.keys()] : [only];
    const at = new Date(this.#ctx.now()).toISOString();
    for (const meshId of meshes) {
      const list = this.#joins.get(meshId);
      if (list === undefined) continue;
      this.#joins.delete(meshId);
      // Each view is encoded once, when announced, and spliced into whichever frames carry it.
      const frameOf = (chunk: readonly Joined[]): string => (chunk.length === 1
        ? `{"type":"system","event":"peer_joined","meshId":${JSON.stringify(meshId)},"at":"${at}","peer":${chunk[0]?.json}}`
        : `{"type":"system","event":"peers_joined","meshId":${JSON.stringify(meshId)},"at":"${at}","peers":[${chunk.map((each) => each.json).join(',')}]}`);
      for (const chunk of chunksOf(list)) {
        // Everyone else hears the whole chunk; those who know some of it hear the rest alone.
        const knowing = new Set<string>();
        for (const each of chunk) for (const mate of each.mates) knowing.add(mate);
        for (const each of chunk) knowing.add(each.key);
        this.#announceNow(meshId, frameOf(chunk), undefined, knowing);
        for (const key of knowing) {
          const socket = this.#peers.get(entryKey(meshId, key))?.socket;
          const untold = chunk.filter((each) => each.key !== key && !each.mates.has(key));
          if (untold.length > 0 && socket !== null && socket !== undefined && socket.readyState === socket.OPEN) sendFrame(socket, frameOf(untold));
        }
      }
    }
  }

  touch(peer: Peer): void {
    peer.lastActivity = this.#ctx.now();
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#pinger);
    clearTimeout(this.#listenRetry);
    for (const peer of this.#peers.values()) clearTimeout(peer.leaseTimer);
    void this.#listener?.end().catch(() => undefined);
  }

  /**
   * Hear the other instances: a dedicated connection LISTENs for deliveries committed for
   * connections held here, for removals, and for roster changes. While it is down (Postgres restarting) the
   * redelivery tick still finds every delivery; the connection comes back by itself.
   */
  async listen(): Promise<void> {
    if (this.#closed) return;
    const client = new pg.Client({ connectionString: this.#ctx.pool.options.connectionString });
    const retry = (error: unknown): void => {
      if (this.#listener !== client) return;
      this.#listener = undefined;
      void client.end().catch(() => undefined);
      if (this.#closed) return;
      this.#ctx.log.warn('instance signals lost; listening again shortly', { error });
      this.#listenRetry = setTimeout(() => void this.listen().catch(retry), LISTEN_RETRY_MS);
      this.#listenRetry.unref();
    };
    this.#listener = client;
    client.on('error', retry);
    client.on('end', () => retry(new Error('connection ended')));
    client.on('notification', (message) => this.#heard(message.channel, message.payload ?? ''));
    await client.connect();
    await client.query(`LISTEN ${SIGNAL_DELIVERIES}; LISTEN ${SIGNAL_REMOVALS}; LISTEN ${SIGNAL_ROSTERS}; LISTEN ${SIGNAL_EVENTS}; LISTEN ${SIGNAL_TAKEOVERS}`);
  }

  /** Tell every instance (this one too) something, fire and forget: a lost signal only logs. */
  tell(channel: string, payload: unknown, what: string): void {
    void query(this.#ctx.pool, 'notify', [channel, JSON.stringify(payload)])
      .catch((error: unknown) => this.#ctx.log.warn(`could not tell the other instances of ${what}`, { error }));
  }

  #heard(channel: string, payload: string): void {
    try {
      if (channel === SIGNAL_TAKEOVERS) {
        const { by, taken } = JSON.parse(payload) as { by: string; taken: Array<[string, string]> };
        if (by !== this.#ctx.instanceId) for (const [meshId, key] of taken) this.#release(meshId, key);
      } else if (channel === SIGNAL_EVENTS) {
        const { from, meshId, frame, exceptKey } = JSON.parse(payload) as { from: string; meshId: string; frame: string; exceptKey?: string };
        if (from !== this.#ctx.instanceId) this.broadcast(meshId, frame, exceptKey);
      } else if (channel === SIGNAL_ROSTERS) {
        for (const meshId of JSON.parse(payload) as string[]) this.#ctx.presence.forget(meshId);
      } else if (channel === SIGNAL_REMOVALS) {
        const { meshId, key, code, reason, rejoined } = JSON.parse(payload) as { meshId: string; key: string; code: number; reason: 'kicked' | 'banned' | 'left'; rejoined?: true };
        if (rejoined === true) this.forgetRemoval(meshId, key);
        else this.removeMember(meshId, key, { code, reason });
        this.#ctx.presence.forget(meshId);
      } else if (payload === '*') {
        void this.#ctx.delivery.redeliver();
      } else {
        for (const [meshId, key] of JSON.parse(payload) as Array<[string, string]>) {
          const peer = this.writable(meshId, key);
          if (peer !== undefined) void this.#ctx.delivery.catchUp(peer);
        }
      }
    } catch (error) {
      this.#ctx.log.warn('instance signal not understood', { channel, error });
    }
  }

  /**
   * Another instance took this key over: close the socket held here (`session_replaced`, as
   * a newer connection would here) and forget the entry without a word to the mesh — the
   * peer is still there. Its claims go back for the instance that holds it now.
   */
  #release(meshId: string, key: string): void {
    const peer = this.#peers.get(entryKey(meshId, key));
    if (peer === undefined || !this.#forget(peer)) return;
    const socket = peer.socket;
    peer.socket = null;
    socket?.close(CLOSES.replaced.code, CLOSES.replaced.reason);
    void this.#ctx.delivery.releaseClaims(peer);
  }

  #drop(peer: Peer, reason: 'lease_expired' | 'kicked' | 'banned' | 'left'): void {
    if (this.#forget(peer)) this.#ctx.presence.gone(peer, reason);
  }

  /** Take the entry out of the maps; false when a newer entry already replaced it. */
  #forget(peer: Peer): boolean {
    clearTimeout(peer.leaseTimer);
    peer.leaseTimer = undefined;
    const key = entryKey(peer.meshId, peer.key);
    if (this.#peers.get(key) !== peer) return false;
    this.#peers.delete(key);
    const mesh = this.#byMesh.get(peer.meshId);
    mesh?.delete(peer);
    if (mesh?.size === 0) this.#byMesh.delete(peer.meshId);
    return true;
  }

  // Half-open sockets (NAT, sleeping laptops) never close by themselves: a socket quiet for
  // a ping interval is pinged, and one silent for the pong timeout is terminated. Peers that
  // connected together fall due together (10,000 after a restart): the check goes through
  // them HEARTBEAT_SLICE at a time, HEARTBEAT_PAUSE_MS apart (10,000 take one second).
  async #heartbeat(): Promise<void> {
    if (this.#beating) return;
    this.#beating = true;
    try {
      const { pingIntervalMs, pongTimeoutMs } = this.#ctx.timings;
      let now = this.#ctx.now();
      let done = 0;
      for (const peer of [...this.online()]) {
        if (done > 0 && done % HEARTBEAT_SLICE === 0) {
          await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_PAUSE_MS));
          now = this.#ctx.now();
        }
        done += 1;
        const socket = peer.socket;
        if (socket === null) continue;
        const quiet = now - peer.lastActivity;
        if (quiet > pongTimeoutMs) {
          this.#ctx.log.info('peer unresponsive, terminating', { meshId: peer.meshId, key: peer.key.slice(0, 12), silentMs: quiet });
          socket.terminate();
        } else if (quiet >= pingIntervalMs && now - peer.lastPing >= pingIntervalMs && socket.readyState === socket.OPEN) {
          peer.lastPing = now;
          socket.ping();
        }
      }
    } finally {
      this.#beating = false;
    }
  }
}

/** Consecutive runs of views whose JSON together stays within MAX_JOINED_BYTES (at least one each). */
function chunksOf(list: readonly Joined[]): Joined[][] {
  const chunks: Joined[][] = [];
  let bytes = 0;
  for (const each of list) {
    const last = chunks.at(-1);
    if (last === undefined || bytes + each.json.length > MAX_JOINED_BYTES) {
      chunks.push([each]);
      bytes = each.json.length;
    } else {
      last.push(each);
      bytes += each.json.length;
    }
  }
  return chunks;
}
