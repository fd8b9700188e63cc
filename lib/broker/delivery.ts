// Getting stored deliveries to their recipients: pushes, the leased drain, batched acks,
// surfaced/read marks, and the periodic ticks (redelivery of expired leases and released
// holds, expiry, purge). A delivery is leased only to an open socket and re-pushed until
// the recipient's `client_ack`; a recipient that reconnects is drained at once.

import type pg from 'pg';
import type { Logger } from '../log.ts';
import type { BrokerMetrics } from './metrics.ts';
import type { Hub, Peer } from './hub.ts';
import { OFFLINE_PRESENCE_SECONDS } from './roster.ts';
import type { RosterCache } from './roster.ts';
import { query } from './sql.ts';

export const DELIVERY_LEASE_MS = 30_000;
export const DRAIN_BATCH = 200;
export const ACK_FLUSH_MS = 5;
export const ACK_FLUSH_MAX = 1_000;
export const REDELIVERY_TICK_MS = 2_000;
export const SWEEP_INTERVAL_MS = 60_000;
export const EXPIRE_BATCH = 10_000;
export const PURGE_BATCH = 10_000;
// How long final messages stay for `message_status` after their TTL ran out.
export const STATUS_RETENTION_SECONDS = 24 * 3600;

/** A row ready to push: the same shape from the live path and from the drain. */
export interface PushRow {
  messageId: string;
  meshId: string;
  senderKey: string;
  senderMemberKey: string;
  priority: string;
  nonce: Buffer;
  ciphertext: Buffer;
  createdAt: Date;
  clientMessageId: string;
  hops: number;
  target: string;
}

export function pushFrame(row: PushRow): string {
  return JSON.stringify({
    type: 'push',
    messageId: row.messageId,
    meshId: row.meshId,
    senderKey: row.senderKey,
    senderMemberKey: row.senderMemberKey,
    target: row.target,
    priority: row.priority,
    envelope: { nonce: row.nonce.toString('base64'), ciphertext: row.ciphertext.toString('base64') },
    createdAt: row.createdAt.toISOString(),
    clientMessageId: row.clientMessageId,
    hops: row.hops,
  });
}

export interface DeliveryOptions {
  pool: pg.Pool;
  log: Logger;
  hub: Hub;
  roster: RosterCache;
  metrics: BrokerMetrics;
  instanceId: string;
  messageTtlSeconds: number;
  leaseMs?: number;
  tickMs?: number;
  sweepMs?: number;
}

export class Delivery {
  readonly #options: DeliveryOptions;
  readonly #leaseSeconds: number;
  #acks: { messageIds: string[]; recipients: string[]; meshes: string[] } = { messageIds: [], recipients: [], meshes: [] };
  #ackTimer: NodeJS.Timeout | undefined;
  #ackFlush: Promise<void> = Promise.resolve();
  readonly #tick: NodeJS.Timeout;
  readonly #sweep: NodeJS.Timeout;
  #ticking = false;

  constructor(options: DeliveryOptions) {
    this.#options = options;
    this.#leaseSeconds = (options.leaseMs ?? DELIVERY_LEASE_MS) / 1000;
    this.#tick = setInterval(() => void this.redeliver(), options.tickMs ?? REDELIVERY_TICK_MS);
    this.#tick.unref();
    this.#sweep = setInterval(() => void this.sweep(), options.sweepMs ?? SWEEP_INTERVAL_MS);
    this.#sweep.unref();
  }

  get leaseSeconds(): number {
    return this.#leaseSeconds;
  }

  /** Lease and push everything this peer may take now. Concurrent calls coalesce. */
  async drain(peer: Peer): Promise<void> {
    if (peer.draining) {
      peer.drainAgain = true;
      return;
    }
    peer.draining = true;
    try {
      do {
        peer.drainAgain = false;
        await this.#drainOnce(peer);
      } while (peer.drainAgain);
    } catch (error) {
      this.#options.log.warn('drain failed', { meshId: peer.meshId, key: peer.key.slice(0, 12), error });
    } finally {
      peer.draining = false;
    }
  }

  async #drainOnce(peer: Peer): Promise<void> {
    const { pool, hub, roster, instanceId } = this.#options;
    for (;;) {
      if (hub.writable(peer.meshId, peer.key) !== peer) return;
      const status = (await roster.get(peer.meshId)).presences.get(peer.key)?.status ?? 'idle';
      const { rows } = await pool.query(query('drain', [peer.meshId, peer.key, status === 'idle', DRAIN_BATCH, this.#leaseSeconds, instanceId]));
      const socket = peer.socket;
      if (socket === null || socket.readyState !== socket.OPEN) {
        // Never hold a lease for a dead socket: hand the rows back for the reattach drain.
        if (rows.length > 0) await pool.query(query('release_leases', [peer.meshId, peer.key, instanceId]));
        return;
      }
      rows.sort((a, b) => Number(a.id) - Number(b.id));
      for (const row of rows) {
        socket.send(pushFrame({
          messageId: row.message_id, meshId: peer.meshId, senderKey: row.sender_pubkey, senderMemberKey: row.sender_member_key,
          priority: row.priority, nonce: row.nonce, ciphertext: row.ciphertext, createdAt: row.created_at,
          clientMessageId: row.client_message_id, hops: row.hops, target: row.target,
        }));
      }
      if (rows.length < DRAIN_BATCH) return;
    }
  }

  /** Record acks from the recipient on `peer`; applied in one statement per flush. */
  ack(peer: Peer, messageIds: readonly string[]): void {
    for (const messageId of messageIds) {
      this.#acks.messageIds.push(messageId);
      this.#acks.recipients.push(peer.key);
      this.#acks.meshes.push(peer.meshId);
    }
    if (this.#acks.messageIds.length >= ACK_FLUSH_MAX) void this.flushAcks();
    else this.#ackTimer ??= setTimeout(() => void this.flushAcks(), ACK_FLUSH_MS);
  }

  flushAcks(): Promise<void> {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    const batch = this.#acks;
    if (batch.messageIds.length === 0) return this.#ackFlush;
    this.#acks = { messageIds: [], recipients: [], meshes: [] };
    this.#ackFlush = this.#ackFlush.then(() =>
      this.#options.pool.query(query('ack_deliveries', [batch.messageIds, batch.recipients, batch.meshes])).then(
        () => undefined,
        (error: unknown) => this.#options.log.warn('ack flush failed; the rows stay queued and will be pushed again', { count: batch.messageIds.length, error }),
      ),
    );
    return this.#ackFlush;
  }

  async mark(peer: Peer, messageIds: readonly string[], state: 'surfaced' | 'read'): Promise<number> {
    const result = await this.#options.pool.query(query('mark_deliveries', [messageIds, peer.key, peer.meshId, state]));
    return result.rowCount ?? 0;
  }

  /** Hand back this peer's leases (its socket closed) so a reattach drains them at once. */
  async releaseLeases(peer: Peer): Promise<void> {
    await this.#options.pool.query(query('release_leases', [peer.meshId, peer.key, this.#options.instanceId]));
  }

  /** Periodic: drain every open peer that has rows it could take (expired leases, released holds). */
  async redeliver(): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      const { hub, roster, pool } = this.#options;
      const meshes: string[] = [];
      const keys: string[] = [];
      const takeHeld: boolean[] = [];
      for (const peer of hub.online()) {
        if (peer.draining) continue;
        const status = (await roster.get(peer.meshId)).presences.get(peer.key)?.status ?? 'idle';
        meshes.push(peer.meshId);
        keys.push(peer.key);
        takeHeld.push(status === 'idle');
      }
      if (keys.length === 0) return;
      const { rows } = await pool.query(query('pending_recipients', [meshes, keys, takeHeld]));
      for (const row of rows) {
        const peer = hub.get(row.mesh_id, row.recipient_pubkey);
        if (peer !== undefined) void this.drain(peer);
      }
    } catch (error) {
      this.#options.log.warn('redelivery tick failed', { error });
    } finally {
      this.#ticking = false;
    }
  }

  /** Periodic: expire what outlived its TTL (a visible state), purge what is long final,
   * and forget session keys offline for longer than a message could wait for them. */
  async sweep(): Promise<void> {
    const { pool, log } = this.#options;
    try {
      const expired = await pool.query(query('expire_deliveries', [EXPIRE_BATCH]));
      if ((expired.rowCount ?? 0) > 0) log.info('deliveries expired', { count: expired.rowCount });
      await pool.query(query('purge_messages', [this.#options.messageTtlSeconds + STATUS_RETENTION_SECONDS, PURGE_BATCH]));
      await pool.query(query('purge_presences', [OFFLINE_PRESENCE_SECONDS]));
    } catch (error) {
      log.warn('delivery sweep failed', { error });
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#tick);
    clearInterval(this.#sweep);
    await this.flushAcks();
  }
}
