// Getting stored messages to their recipients. This file owns every push (one builder for
// the live path and the catch-up path), the hold rule, claims, acks, surfaced/read marks,
// the sender's status view and the periodic ticks (redelivery, expiry, purge).
//
// A delivery is claimed only for an open connection and pushed again until the recipient's
// `client_ack`; a recipient that connects, reattaches or turns idle catches up at once.

import type { Context } from '../../broker.ts';
import { Batcher } from '../batch.ts';
import { cmError } from '../errors.ts';
import { encodeFrame, encodePush } from '../protocol.ts';
import type { Priority, ServerFrameOf, Status } from '../protocol.ts';
import { sendFrame } from '../ws-writes.ts';
import { arrayLiteral, query, transaction } from './db.ts';
import { entryKey } from './hub.ts';
import type { Peer } from './hub.ts';
import { OFFLINE_PRESENCE_SECONDS } from './presence.ts';
import type { Roster } from './presence.ts';

export const CLAIM_MS = 30_000;
export const REDELIVERY_TICK_MS = 2_000;
export const SWEEP_INTERVAL_MS = 60_000;
const CATCH_UP_BATCH = 200;
const REDELIVERY_SLICE = 2_000;
// Acks only move rows to `delivered` (pushes are not waiting on them): gathered for a while,
// they cost one statement per flush instead of one per recipient batch. One statement runs at
// a time; what gathers while it runs goes in the next, up to ACK_BATCH_MAX rows (a group
// commit): a burst's 100,000 acks cost 25-38 statements instead of a queue of 110 flushes of
// 1,000, each held in memory until its turn (docs/benchmarks.md, round seven).
const ACK_FLUSH_MS = 20;
// this many gathered start a statement without waiting for the timer
const ACK_FLUSH_MAX = 1_000;
const ACK_BATCH_MAX = 10_000;
const EXPIRE_BATCH = 10_000;
const PURGE_BATCH = 10_000;
// How long final messages stay for `message_status` after their TTL ran out.
const STATUS_RETENTION_SECONDS = 24 * 3600;

/**
 * The hold rule, the only place it is decided: `now` is pushed at once; `next` and `low`
 * wait while the recipient is working or dnd, and go when it turns idle. (The catch-up
 * queries take its answer for "held priorities" as their parameter.)
 */
function mayPush(priority: Priority, status: Status): boolean {
  return priority === 'now' || status === 'idle';
}

/** What a push carries: the same from the live path and from catch-up. */
interface PushRow {
  messageId: string;
  meshId: string;
  senderKey: string;
  senderMemberKey: string;
  target: string;
  priority: Priority;
  /** base64, as the sender wrote it (live) or as stored (catch-up) */
  nonce: string;
  ciphertext: string;
  createdAt: Date;
  clientMessageId: string;
  hops: number;
}

// The rows of one insert share one Date (db.ts parses an insert's time once): format it once.
let lastTime: { date: Date; iso: string } | undefined;

function pushFrame(row: Omit<PushRow, 'nonce' | 'ciphertext'>, envelope: { nonce: string; ciphertext: string }): string {
  if (lastTime?.date !== row.createdAt) lastTime = { date: row.createdAt, iso: row.createdAt.toISOString() };
  return encodePush({
    messageId: row.messageId, meshId: row.meshId, senderKey: row.senderKey, senderMemberKey: row.senderMemberKey, target: row.target, priority: row.priority,
    envelope, createdAt: lastTime.iso, clientMessageId: row.clientMessageId, hops: row.hops,
  });
}

export class Delivery {
  readonly #ctx: Context;
  // catch-up in progress per peer: `again` when another was asked for meanwhile
  readonly #catchingUp = new Map<Peer, { again: boolean; done: Promise<boolean> }>();
  #acks = { messageIds: [] as string[], recipients: [] as string[] };
  #ackTimer: NodeJS.Timeout | undefined;
  // the one ack statement running, if any (acks are applied one statement at a time)
  #ackRunning: Promise<void> | undefined;
  readonly #tick: NodeJS.Timeout;
  readonly #sweep: NodeJS.Timeout;
  #ticking = false;
  // The hellos of one moment ask together which of them have anything queued; only those
  // claim (most connects after a restart have nothing waiting).
  readonly #queuedFor = new Batcher<Peer, boolean>(async (peers) => {
    const { rows } = await query(this.#ctx.pool, 'keys_with_queued', [peers.map((peer) => peer.meshId), peers.map((peer) => peer.key)]);
    const waiting = new Set(rows.map((row) => entryKey(row.mesh_id, row.key)));
    return peers.map((peer) => waiting.has(entryKey(peer.meshId, peer.key)));
  });

  constructor(ctx: Context) {
    this.#ctx = ctx;
    this.#tick = setInterval(() => void this.redeliver(), ctx.timings.redeliveryTickMs);
    this.#tick.unref();
    this.#sweep = setInterval(() => void this.sweep(), ctx.timings.sweepIntervalMs);
    this.#sweep.unref();
  }

  get claimSeconds(): number {
    return this.#ctx.timings.claimMs / 1000;
  }

  /** Before a send commits: which of its recipients are pushed right after (claimed in the insert). */
  claimable(meshId: string, recipientKey: string, priority: Priority, roster: Roster): boolean {
    if (this.#ctx.hub.writable(meshId, recipientKey) === undefined) return false;
    return mayPush(priority, roster.peers.get(recipientKey)?.status ?? 'idle');
  }

  /** After a send committed: push the claimed recipients from memory, no query per recipient. */
  pushCommitted(row: Omit<PushRow, 'nonce' | 'ciphertext'>, envelopes: ReadonlyArray<{ to: string; nonce: string; ciphertext: string; claimed: boolean }>): void {
    for (const envelope of envelopes) {
      if (!envelope.claimed) continue;
      const recipient = this.#ctx.hub.get(row.meshId, envelope.to);
      const socket = recipient?.socket;
      if (socket === null || socket === undefined || socket.readyState !== socket.OPEN) {
        // It closed since the claim: hand the row back for its reattach.
        if (recipient !== undefined) void this.releaseClaims(recipient);
        continue;
      }
      sendFrame(socket, pushFrame(row, envelope));
    }
  }

  /**
   * A peer just said hello: catch up if anything waits for it, then say `caught_up` (a client
   * that was away can tell "nothing waits" from "not pushed yet"). Not said when the catch-up
   * could not finish: the redelivery tick pushes what waits, and the client stops waiting.
   */
  async catchUpAfterHello(peer: Peer): Promise<void> {
    try {
      if (await this.#queuedFor.run(peer) && !(await this.catchUp(peer))) return;
    } catch (error) {
      this.#ctx.log.warn('catch-up check failed; the redelivery tick will find what waits', { meshId: peer.meshId, key: peer.key.slice(0, 12), error });
      return;
    }
    const socket = peer.socket;
    if (socket !== null && socket.readyState === socket.OPEN) sendFrame(socket, encodeFrame('caught_up', {}));
  }

  /**
   * Claim and push everything this peer may take now; true when it all went out. A call
   * while one runs makes that one look again, and shares its end.
   */
  catchUp(peer: Peer): Promise<boolean> {
    const running = this.#catchingUp.get(peer);
    if (running !== undefined) {
      running.again = true;
      return running.done;
    }
    const state = { again: false, done: Promise.resolve(false) };
    this.#catchingUp.set(peer, state);
    state.done = (async () => {
      try {
        let complete: boolean;
        do {
          state.again = false;
          complete = await this.#catchUpOnce(peer);
        } while (state.again && complete);
        return complete;
      } catch (error) {
        this.#ctx.log.warn('catch-up failed', { meshId: peer.meshId, key: peer.key.slice(0, 12), error });
        return false;
      } finally {
        this.#catchingUp.delete(peer);
      }
    })();
    return state.done;
  }

  /** One pass; false when the peer's socket went away (or another connection took its key). */
  async #catchUpOnce(peer: Peer): Promise<boolean> {
    const { pool, hub, presence, instanceId } = this.#ctx;
    for (;;) {
      if (hub.writable(peer.meshId, peer.key) !== peer) return false;
      const takeHeld = mayPush('next', await presence.statusOf(peer.meshId, peer.key));
      const { rows } = await query(pool, 'claim_queued', [peer.meshId, peer.key, takeHeld, CATCH_UP_BATCH, this.claimSeconds, instanceId]);
      const socket = peer.socket;
      if (socket === null || socket.readyState !== socket.OPEN) {
        // Never hold a claim for a dead socket: hand the rows back for the reattach.
        if (rows.length > 0) await this.releaseClaims(peer);
        return false;
      }
      rows.sort((a, b) => Number(a.id) - Number(b.id));
      for (const row of rows) {
        sendFrame(socket, pushFrame({
          messageId: row.message_id, meshId: peer.meshId, senderKey: row.sender_key, senderMemberKey: row.sender_member_key, target: row.target,
          priority: row.priority, createdAt: row.created_at, clientMessageId: row.client_message_id, hops: row.hops,
        }, { nonce: row.nonce.toString('base64'), ciphertext: row.ciphertext.toString('base64') }));
      }
      if (rows.length < CATCH_UP_BATCH) return true;
    }
  }

  /** Acks from the recipient on `peer`, gathered and applied together (ACK_FLUSH_MS). */
  ack(peer: Peer, messageIds: readonly string[]): void {
    for (const messageId of messageIds) {
      this.#acks.messageIds.push(messageId);
      this.#acks.recipients.push(peer.key);
    }
    this.#scheduleAcks();
  }

  /** Resolves once every ack gathered so far is applied (or its failure logged). */
  async flushAcks(): Promise<void> {
    while (this.#ackRunning !== undefined || this.#acks.messageIds.length > 0) {
      this.#startAcks();
      await this.#ackRunning;
    }
  }

  #scheduleAcks(): void {
    // A running statement picks up what gathered meanwhile when it ends.
    if (this.#ackRunning !== undefined || this.#acks.messageIds.length === 0) return;
    if (this.#acks.messageIds.length >= ACK_FLUSH_MAX) this.#startAcks();
    else this.#ackTimer ??= setTimeout(() => this.#startAcks(), ACK_FLUSH_MS);
  }

  #startAcks(): void {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    if (this.#ackRunning !== undefined || this.#acks.messageIds.length === 0) return;
    const count = Math.min(ACK_BATCH_MAX, this.#acks.messageIds.length);
    const messageIds = this.#acks.messageIds.splice(0, count);
    const recipients = this.#acks.recipients.splice(0, count);
    this.#ackRunning = transaction(this.#ctx.pool, async (client) => {
      // An ack a crash loses costs one push made again (the daemon keeps each message once),
      // so its commit does not wait for the disk: the sends' commits do.
      await query(client, 'commit_without_flush', []);
      await query(client, 'ack_deliveries', [arrayLiteral(messageIds), arrayLiteral(recipients)]);
    }).then(
      () => undefined,
      (error: unknown) => this.#ctx.log.warn('ack flush failed; the rows stay queued and will be pushed again', { count, error }),
    ).finally(() => {
      this.#ackRunning = undefined;
      this.#scheduleAcks();
    });
  }

  /** Surfaced or read, for this recipient's own rows only; states only move forward. */
  async mark(peer: Peer, messageIds: readonly string[], state: 'surfaced' | 'read'): Promise<number> {
    return (await query(this.#ctx.pool, 'mark_deliveries', [messageIds, peer.key, peer.meshId, state])).rowCount ?? 0;
  }

  /** The whole timeline of a message, for its sender's member only. */
  async status(peer: Peer, messageId: string, id?: string): Promise<ServerFrameOf<'message_status'>> {
    const { rows } = await query(this.#ctx.pool, 'message_status', [messageId, peer.meshId, peer.memberKey]);
    const first = rows[0];
    // Someone else's message and a missing one answer alike.
    if (first === undefined) throw cmError('CM_ERR_NOT_FOUND', `no message ${messageId} sent by you in this mesh`);
    const iso = (value: Date | null) => (value === null ? null : value.toISOString());
    return {
      type: 'message_status', ...(id === undefined ? {} : { id }), messageId: first.id, target: first.target, priority: first.priority,
      clientMessageId: first.client_message_id, createdAt: first.created_at.toISOString(), expiresAt: first.expires_at.toISOString(),
      recipients: rows.map((row) => ({
        key: row.recipient_key, state: row.state, queuedAt: row.queued_at.toISOString(), deliveredAt: iso(row.delivered_at),
        surfacedAt: iso(row.surfaced_at), readAt: iso(row.read_at), expiredAt: iso(row.expired_at), pushes: row.pushes,
      })),
    };
  }

  /** Hand back this peer's claims (its socket closed) so a reattach catches up at once. */
  async releaseClaims(peer: Peer): Promise<void> {
    await query(this.#ctx.pool, 'release_claims', [peer.meshId, peer.key, this.#ctx.instanceId])
      .catch((error: unknown) => this.#ctx.log.warn('could not release claims; they lapse after the claim time', { error }));
  }

  /**
   * Periodic: let every open peer with rows it could take catch up (lapsed claims, released
   * holds). The database names who has anything waiting, REDELIVERY_SLICE peers per query
   * with the event loop free in between; only for those is the hold rule asked (10,000 idle
   * sockets used to cost 10,000 roster look-ups and one long stall every tick).
   */
  async redeliver(): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      const { hub, presence, pool } = this.#ctx;
      const online = [...hub.online()].filter((peer) => !this.#catchingUp.has(peer));
      for (let start = 0; start < online.length; start += REDELIVERY_SLICE) {
        const slice = online.slice(start, start + REDELIVERY_SLICE);
        const { rows } = await query(pool, 'pending_recipients', [arrayLiteral(slice.map((peer) => peer.meshId)), arrayLiteral(slice.map((peer) => peer.key))]);
        for (const row of rows) {
          const peer = hub.get(row.mesh_id, row.recipient_key);
          if (peer === undefined) continue;
          if (row.urgent || mayPush('next', await presence.statusOf(peer.meshId, peer.key))) void this.catchUp(peer);
        }
      }
    } catch (error) {
      this.#ctx.log.warn('redelivery tick failed', { error });
    } finally {
      this.#ticking = false;
    }
  }

  /** Periodic: expire what outlived its TTL (a visible state), purge what is long final, and
   * forget session keys offline for longer than a message could wait for them. */
  async sweep(): Promise<void> {
    const { pool, log, config } = this.#ctx;
    try {
      const expired = await query(pool, 'expire_deliveries', [EXPIRE_BATCH]);
      if ((expired.rowCount ?? 0) > 0) log.info('deliveries expired', { count: expired.rowCount });
      await query(pool, 'purge_messages', [config.messageTtlSeconds + STATUS_RETENTION_SECONDS, PURGE_BATCH]);
      await query(pool, 'purge_presences', [OFFLINE_PRESENCE_SECONDS]);
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
