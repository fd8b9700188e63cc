// Live connections after hello, keyed by (mesh, routing key). The map is the truth of who
// is connected: capacity is counted from it, never from a counter that could drift. A
// closed socket keeps its entry for the lease (LEASE_MS) so a proven reconnect reattaches
// silently; only when the lease runs out do the others hear `peer_left`.

import type { WebSocket } from 'ws';
import type { Logger } from '../log.ts';

export const LEASE_MS = 90_000;
export const PING_INTERVAL_MS = 30_000;
export const PONG_TIMEOUT_MS = 75_000;
// Per-socket send buffer above which pushes wait for the redelivery tick (backpressure).
export const MAX_BUFFERED_BYTES = 1024 * 1024;
export const CLOSE_SESSION_REPLACED = 1000;
// A hello checks membership in the database, then registers. A kick or ban that commits in
// between would miss that socket, so removals are remembered this long and refused here.
export const REMOVAL_MEMORY_MS = 10_000;
const MAX_REMEMBERED_REMOVALS = 10_000;

export interface PeerIdentity {
  meshId: string;
  meshName: string;
  memberId: string;
  memberKey: string;
  memberRole: 'owner' | 'admin' | 'member';
  /** the routing key: the session key for sessions, the member key for member connections */
  key: string;
  role: 'control' | 'session';
  name: string;
}

export interface Peer extends PeerIdentity {
  socket: WebSocket | null;
  lastActivity: number;
  leaseTimer: NodeJS.Timeout | undefined;
  draining: boolean;
  drainAgain: boolean;
}

export interface HubEvents {
  /** a socket closed: its lease starts */
  onDetached(peer: Peer): void;
  /** the peer is gone for good (lease over, kicked, banned, left) */
  onGone(peer: Peer, reason: string): void;
}

export interface HubOptions {
  log: Logger;
  maxPerMesh: number;
  events: HubEvents;
  now?: () => number;
  leaseMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
}

export type AttachResult = { ok: true; peer: Peer; reattached: boolean } | { ok: false; reason: 'capacity' | 'removed' };

const entryKey = (meshId: string, key: string): string => `${meshId}\n${key}`;

export class Hub {
  readonly #peers = new Map<string, Peer>();
  readonly #byMesh = new Map<string, Set<Peer>>();
  readonly #removed = new Map<string, number>();
  readonly #options: HubOptions;
  readonly #now: () => number;
  readonly #pinger: NodeJS.Timeout;

  constructor(options: HubOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#pinger = setInterval(() => this.#heartbeat(), options.pingIntervalMs ?? PING_INTERVAL_MS);
    this.#pinger.unref();
  }

  /** Sockets open right now (not leases). */
  get openSockets(): number {
    let count = 0;
    for (const peer of this.#peers.values()) if (peer.socket !== null) count += 1;
    return count;
  }

  /**
   * Bind a proven identity to a socket. An existing entry for the same key (open, or in its
   * lease) is taken over silently: the older socket closes 1000 `session_replaced`, and the
   * capacity check is skipped — a reattaching peer is never refused for capacity.
   */
  attach(identity: PeerIdentity, socket: WebSocket): AttachResult {
    const removedAt = this.#removed.get(entryKey(identity.meshId, identity.memberKey));
    if (removedAt !== undefined && this.#now() - removedAt < REMOVAL_MEMORY_MS) return { ok: false, reason: 'removed' };
    const existing = this.#peers.get(entryKey(identity.meshId, identity.key));
    if (existing !== undefined) {
      clearTimeout(existing.leaseTimer);
      existing.leaseTimer = undefined;
      const old = existing.socket;
      Object.assign(existing, identity);
      existing.socket = socket;
      existing.lastActivity = this.#now();
      if (old !== null && old !== socket) old.close(CLOSE_SESSION_REPLACED, 'session_replaced');
      return { ok: true, peer: existing, reattached: true };
    }
    const mesh = this.#byMesh.get(identity.meshId);
    if ((mesh?.size ?? 0) >= this.#options.maxPerMesh) return { ok: false, reason: 'capacity' };
    const peer: Peer = { ...identity, socket, lastActivity: this.#now(), leaseTimer: undefined, draining: false, drainAgain: false };
    this.#peers.set(entryKey(identity.meshId, identity.key), peer);
    if (mesh === undefined) this.#byMesh.set(identity.meshId, new Set([peer]));
    else mesh.add(peer);
    return { ok: true, peer, reattached: false };
  }

  /** The socket of `peer` closed. Ignored when a newer socket already replaced it. */
  detach(peer: Peer, socket: WebSocket): void {
    if (peer.socket !== socket) return;
    peer.socket = null;
    this.#options.events.onDetached(peer);
    peer.leaseTimer = setTimeout(() => this.#drop(peer, 'lease_expired'), this.#options.leaseMs ?? LEASE_MS);
    peer.leaseTimer.unref();
  }

  /** Close every connection of a member now (kick 4001, ban 4002, leave 1000); no lease. */
  removeMember(meshId: string, memberKey: string, closeCode: number, reason: string): Peer[] {
    if (this.#removed.size >= MAX_REMEMBERED_REMOVALS) this.#removed.clear();
    this.#removed.set(entryKey(meshId, memberKey), this.#now());
    const removed: Peer[] = [];
    for (const peer of [...(this.#byMesh.get(meshId) ?? [])]) {
      if (peer.memberKey !== memberKey) continue;
      const socket = peer.socket;
      peer.socket = null;
      socket?.close(closeCode, reason);
      this.#drop(peer, reason);
      removed.push(peer);
    }
    return removed;
  }

  get(meshId: string, key: string): Peer | undefined {
    return this.#peers.get(entryKey(meshId, key));
  }

  /** The peer for (mesh, key) if its socket is open and not over its send buffer. */
  writable(meshId: string, key: string): Peer | undefined {
    const peer = this.#peers.get(entryKey(meshId, key));
    if (peer?.socket === null || peer?.socket === undefined) return undefined;
    if (peer.socket.readyState !== peer.socket.OPEN || peer.socket.bufferedAmount > MAX_BUFFERED_BYTES) return undefined;
    return peer;
  }

  /** Every peer with an open socket in a mesh (or in all meshes). */
  *online(meshId?: string): Iterable<Peer> {
    const source = meshId === undefined ? this.#peers.values() : (this.#byMesh.get(meshId) ?? new Set<Peer>()).values();
    for (const peer of source) if (peer.socket !== null) yield peer;
  }

  /** Send a frame to every open socket of a mesh except `exceptKey`. */
  broadcast(meshId: string, frame: unknown, exceptKey?: string): void {
    const text = JSON.stringify(frame);
    for (const peer of this.online(meshId)) {
      if (peer.key !== exceptKey && peer.socket?.readyState === peer.socket?.OPEN) peer.socket?.send(text);
    }
  }

  touch(peer: Peer): void {
    peer.lastActivity = this.#now();
  }

  close(): void {
    clearInterval(this.#pinger);
    for (const peer of this.#peers.values()) clearTimeout(peer.leaseTimer);
  }

  #drop(peer: Peer, reason: string): void {
    clearTimeout(peer.leaseTimer);
    peer.leaseTimer = undefined;
    const key = entryKey(peer.meshId, peer.key);
    if (this.#peers.get(key) !== peer) return;
    this.#peers.delete(key);
    const mesh = this.#byMesh.get(peer.meshId);
    mesh?.delete(peer);
    if (mesh?.size === 0) this.#byMesh.delete(peer.meshId);
    this.#options.events.onGone(peer, reason);
  }

  // Half-open sockets (NAT, sleeping laptops) never close by themselves: ping every
  // interval, and terminate a socket that has shown no activity for the pong timeout.
  #heartbeat(): void {
    const now = this.#now();
    const timeout = this.#options.pongTimeoutMs ?? PONG_TIMEOUT_MS;
    for (const peer of this.online()) {
      const socket = peer.socket;
      if (socket === null) continue;
      if (now - peer.lastActivity > timeout) {
        this.#options.log.info('peer unresponsive, terminating', { meshId: peer.meshId, key: peer.key.slice(0, 12) });
        socket.terminate();
      } else if (socket.readyState === socket.OPEN) socket.ping();
    }
  }
}
