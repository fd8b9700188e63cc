// The send path (DESIGN §5): validate, rate-limit, check envelopes against the roster,
// then group-commit. Sends arriving while a transaction runs wait and go into the next
// one: a multi-row INSERT … SELECT FROM unnest() for messages and one for deliveries, one
// fsync for many messages. Acks go out after COMMIT only; recipients with an open socket
// get their push straight from the committed batch, without a query per recipient.

import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { cmError, isCmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import { sha256Hex, NONCE_BYTES, BOX_MAC_BYTES } from '../crypto.ts';
import type { Logger } from '../log.ts';
import { groupMatches, MAX_HOPS } from '../protocol.ts';
import type { SendFrame } from '../protocol.ts';
import { KeyedTokenBuckets } from '../token-bucket.ts';
import type { Delivery } from './delivery.ts';
import { pushFrame } from './delivery.ts';
import type { Hub, Peer } from './hub.ts';
import type { BrokerMetrics, MESSAGE_REJECT_REASONS } from './metrics.ts';
import type { Roster, RosterCache } from './roster.ts';
import { transaction } from './db.ts';
import { query } from './sql.ts';

export const MAX_BATCH_SENDS = 500;

export type AckFrame =
  | { type: 'ack'; id?: string; queued: true; messageId: string; recipients: number; duplicate?: true }
  | { type: 'ack'; id?: string; queued: false; code: string; message: string; hint: string; details?: Record<string, unknown> };

interface Envelope { to: string; nonce: Buffer; ciphertext: Buffer }
interface StoredMessage { id: string; fingerprint: string; recipients: number }
interface Pending {
  peer: Peer;
  frame: SendFrame;
  envelopes: Envelope[];
  fingerprint: string;
  roster: Roster;
  resolve: (ack: AckFrame) => void;
}

export interface SenderOptions {
  pool: pg.Pool;
  log: Logger;
  hub: Hub;
  roster: RosterCache;
  delivery: Delivery;
  metrics: BrokerMetrics;
  instanceId: string;
  messageTtlSeconds: number;
  /** per member (so reconnecting does not reset it): a burst, then a steady rate */
  sendBurst: number;
  sendRatePerSecond: number;
  /** loop guard per (sender key, target): a burst, then a steady rate */
  pairBurst: number;
  pairRatePerSecond: number;
  now?: () => number;
}

type RejectReason = (typeof MESSAGE_REJECT_REASONS)[number];

export class Sender {
  readonly #options: SenderOptions;
  readonly #members: KeyedTokenBuckets;
  readonly #pairs: KeyedTokenBuckets;
  #queue: Pending[] = [];
  #flushing = false;

  constructor(options: SenderOptions) {
    this.#options = options;
    const now = options.now === undefined ? {} : { now: options.now };
    this.#members = new KeyedTokenBuckets({ capacity: options.sendBurst, refillPerSecond: options.sendRatePerSecond, ...now });
    this.#pairs = new KeyedTokenBuckets({ capacity: options.pairBurst, refillPerSecond: options.pairRatePerSecond, ...now });
  }

  async send(peer: Peer, frame: SendFrame): Promise<AckFrame> {
    const fingerprint = fingerprintOf(frame);
    const refuse = async (reason: RejectReason, error: CmError): Promise<AckFrame> => {
      // A retry of a message that is already stored (its ack was lost) gets the original
      // answer, whatever a limit or the roster would say now.
      const original = await this.#original(peer, frame, fingerprint);
      if (original !== undefined) return original;
      this.#options.metrics.messagesRejected.inc({ reason });
      return { type: 'ack', ...(frame.id === undefined ? {} : { id: frame.id }), queued: false, ...error.toJSON() };
    };
    if (!this.#members.take(`${peer.meshId}\n${peer.memberKey}`)) {
      return refuse('rate_limited', cmError('CM_ERR_RATE_LIMITED', `member ${peer.name} sent more than ${this.#options.sendBurst} messages in a burst (steady limit ${this.#options.sendRatePerSecond}/s)`));
    }
    if (frame.hops > MAX_HOPS) {
      return refuse('loop_guard', cmError('CM_ERR_LOOP_GUARD', `message has been relayed ${frame.hops} times (limit ${MAX_HOPS})`));
    }
    if (!this.#pairs.take(`${peer.meshId}\n${peer.key}\n${frame.target}`)) {
      return refuse('loop_guard', cmError('CM_ERR_LOOP_GUARD', `more than ${this.#options.pairBurst} messages from ${peer.key.slice(0, 12)}… to ${frame.target.slice(0, 12)} in a short time`));
    }
    const envelopes: Envelope[] = [];
    for (const envelope of frame.envelopes) {
      const nonce = Buffer.from(envelope.nonce, 'base64');
      const ciphertext = Buffer.from(envelope.ciphertext, 'base64');
      if (nonce.length !== NONCE_BYTES || ciphertext.length < BOX_MAC_BYTES) {
        return refuse('bad_envelope', cmError('CM_ERR_BAD_FRAME', `envelope for ${envelope.to.slice(0, 12)}… must carry a ${NONCE_BYTES}-byte nonce and at least ${BOX_MAC_BYTES} bytes of ciphertext`));
      }
      envelopes.push({ to: envelope.to, nonce, ciphertext });
    }
    let roster: Roster;
    try {
      roster = await this.#options.roster.get(peer.meshId);
    } catch (error) {
      return refuse('db_unavailable', cmError('CM_ERR_DB_UNAVAILABLE', 'the roster could not be read; nothing was stored', { cause: error }));
    }
    const problem = checkRecipients(roster, peer, frame.target, envelopes);
    if (problem !== undefined) return refuse(problem.code === 'CM_ERR_UNKNOWN_RECIPIENT' ? 'unknown_recipient' : 'bad_envelope', problem);
    return new Promise((resolve) => {
      this.#queue.push({ peer, frame, envelopes, fingerprint, roster, resolve });
      if (this.#queue.length === 1 && !this.#flushing) setImmediate(() => void this.#flush());
    });
  }

  /** The answer already given for this (sender, clientMessageId), if it was stored. */
  async #original(peer: Peer, frame: SendFrame, fingerprint: string): Promise<AckFrame | undefined> {
    let row: StoredMessage | undefined;
    try {
      const found = await this.#options.pool.query(query('existing_messages', [[peer.meshId], [peer.key], [frame.clientMessageId]]));
      row = found.rows[0];
    } catch {
      return undefined;
    }
    return row === undefined ? undefined : this.#repeat(frame, row, fingerprint);
  }

  /** The answer to a clientMessageId that is already stored: the same message, or a conflict. */
  #repeat(frame: SendFrame, original: StoredMessage | undefined, fingerprint: string): AckFrame {
    const base = frame.id === undefined ? {} : { id: frame.id };
    if (original !== undefined && original.fingerprint === fingerprint) {
      return { type: 'ack', ...base, queued: true, messageId: original.id, recipients: original.recipients, duplicate: true };
    }
    this.#options.metrics.messagesRejected.inc({ reason: 'idempotency_conflict' });
    const error = cmError('CM_ERR_IDEMPOTENCY_CONFLICT', `client message id ${JSON.stringify(frame.clientMessageId)} was already used for a different message${original === undefined ? '' : ` (${original.id})`}`);
    return { type: 'ack', ...base, queued: false, ...error.toJSON() };
  }

  async #flush(): Promise<void> {
    if (this.#flushing || this.#queue.length === 0) return;
    this.#flushing = true;
    const batch = this.#queue.splice(0, MAX_BATCH_SENDS);
    try {
      await this.#commit(batch);
    } catch (error) {
      const failure = isCmError(error) ? error : cmError('CM_ERR_DB_UNAVAILABLE', 'the message could not be stored; nothing was queued, retry it', { cause: error });
      this.#options.log.warn('send batch failed', { sends: batch.length, error });
      for (const pending of batch) {
        this.#options.metrics.messagesRejected.inc({ reason: 'db_unavailable' });
        pending.resolve({ type: 'ack', ...(pending.frame.id === undefined ? {} : { id: pending.frame.id }), queued: false, ...failure.toJSON() });
      }
    } finally {
      this.#flushing = false;
      if (this.#queue.length > 0) setImmediate(() => void this.#flush());
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    const { pool, hub, instanceId, delivery, metrics } = this.#options;
    const ids = batch.map(() => randomUUID());
    // Decide before the insert which deliveries are pushed right after commit, so their
    // lease is written in the same statement: held priorities and closed sockets are not.
    const leased = batch.map((pending) => pending.envelopes.map((envelope) => {
      const recipient = hub.writable(pending.peer.meshId, envelope.to);
      if (recipient === undefined) return false;
      return pending.frame.priority === 'now' || (pending.roster.presences.get(envelope.to)?.status ?? 'idle') === 'idle';
    }));
    let inserted = new Map<string, Date>();
    const existing = new Map<string, StoredMessage>();
    await transaction(pool, async (client) => {
      const messages = await client.query(query('insert_messages', [
        ids, batch.map((p) => p.peer.meshId), batch.map((p) => p.peer.memberId), batch.map((p) => p.peer.key),
        batch.map((p) => p.peer.memberKey), batch.map((p) => p.frame.clientMessageId), batch.map((p) => p.fingerprint),
        batch.map((p) => p.frame.target), batch.map((p) => p.frame.priority), batch.map((p) => p.frame.hops),
        this.#options.messageTtlSeconds,
      ]));
      inserted = new Map(messages.rows.map((row) => [row.id as string, row.created_at as Date]));
      const columns: [string[], string[], string[], string[], Buffer[], Buffer[], boolean[]] = [[], [], [], [], [], [], []];
      batch.forEach((pending, index) => {
        const id = ids[index] ?? '';
        if (!inserted.has(id)) return;
        pending.envelopes.forEach((envelope, envelopeIndex) => {
          columns[0].push(id);
          columns[1].push(pending.peer.meshId);
          columns[2].push(envelope.to);
          columns[3].push(pending.frame.priority);
          columns[4].push(envelope.nonce);
          columns[5].push(envelope.ciphertext);
          columns[6].push(leased[index]?.[envelopeIndex] ?? false);
        });
      });
      if (columns[0].length > 0) {
        await client.query(query('insert_deliveries', [...columns, this.#options.messageTtlSeconds, delivery.leaseSeconds, instanceId]));
      }
      const repeats = batch.filter((_, index) => !inserted.has(ids[index] ?? ''));
      if (repeats.length > 0) {
        const found = await client.query(query('existing_messages', [
          repeats.map((p) => p.peer.meshId), repeats.map((p) => p.peer.key), repeats.map((p) => p.frame.clientMessageId),
        ]));
        for (const row of found.rows) existing.set(`${row.mesh_id}\n${row.sender_pubkey}\n${row.client_message_id}`, { id: row.id, fingerprint: row.fingerprint, recipients: row.recipients });
      }
    });

    batch.forEach((pending, index) => {
      const id = ids[index] ?? '';
      const base = pending.frame.id === undefined ? {} : { id: pending.frame.id };
      const createdAt = inserted.get(id);
      if (createdAt === undefined) {
        const original = existing.get(`${pending.peer.meshId}\n${pending.peer.key}\n${pending.frame.clientMessageId}`);
        pending.resolve(this.#repeat(pending.frame, original, pending.fingerprint));
        return;
      }
      metrics.messagesRouted.inc({ priority: pending.frame.priority });
      pending.resolve({ type: 'ack', ...base, queued: true, messageId: id, recipients: pending.envelopes.length });
      pending.envelopes.forEach((envelope, envelopeIndex) => {
        if (leased[index]?.[envelopeIndex] !== true) return;
        const recipient = hub.get(pending.peer.meshId, envelope.to);
        const socket = recipient?.socket;
        if (recipient === undefined || socket === null || socket === undefined || socket.readyState !== socket.OPEN) {
          if (recipient !== undefined) void delivery.releaseLeases(recipient).catch(() => {});
          return;
        }
        socket.send(pushFrame({
          messageId: id, meshId: pending.peer.meshId, senderKey: pending.peer.key, senderMemberKey: pending.peer.memberKey,
          priority: pending.frame.priority, nonce: envelope.nonce, ciphertext: envelope.ciphertext, createdAt,
          clientMessageId: pending.frame.clientMessageId, hops: pending.frame.hops, target: pending.frame.target,
        }));
      });
    });
  }
}

/** The request's identity for idempotency: target, priority and the envelopes, in key order. */
export function fingerprintOf(frame: SendFrame): string {
  const canonical = frame.envelopes.map((e) => [e.to, e.nonce, e.ciphertext]).sort((a, b) => (a[0] ?? '').localeCompare(b[0] ?? ''));
  return sha256Hex(JSON.stringify([frame.target, frame.priority, canonical]));
}

/**
 * Which keys a target reaches, checked against the envelopes the sender encrypted:
 * a key → exactly that key; `*` → every current member (offline too), plus any live or
 * recent session key the sender chose to include; `@group` → every key in that group.
 */
export function checkRecipients(roster: Roster, sender: Peer, target: string, envelopes: readonly Envelope[]): CmError | undefined {
  const required = new Set<string>();
  const allowed = new Set<string>();
  if (target === '*') {
    for (const key of roster.members.keys()) {
      if (key !== sender.memberKey) required.add(key);
      allowed.add(key);
    }
    for (const key of roster.presences.keys()) allowed.add(key);
  } else if (target.startsWith('@')) {
    for (const presence of roster.presences.values()) {
      if (groupMatches(presence.groups, target)) {
        required.add(presence.key);
        allowed.add(presence.key);
      }
    }
  } else {
    if (!roster.members.has(target) && !roster.presences.has(target)) {
      return cmError('CM_ERR_UNKNOWN_RECIPIENT', `no member or session with key ${target.slice(0, 12)}… in mesh ${sender.meshId}`);
    }
    required.add(target);
    allowed.add(target);
  }
  required.delete(sender.key);
  allowed.delete(sender.key);
  if (allowed.size === 0) {
    return cmError('CM_ERR_UNKNOWN_RECIPIENT', `target ${target} reaches nobody in mesh ${sender.meshId}`, { hint: 'check the group name with list_peers' });
  }
  const seen = new Set<string>();
  const unexpected: string[] = [];
  for (const envelope of envelopes) {
    if (seen.has(envelope.to) || !allowed.has(envelope.to)) unexpected.push(envelope.to);
    seen.add(envelope.to);
  }
  const missing = [...required].filter((key) => !seen.has(key));
  if (unexpected.length > 0 && !target.startsWith('@') && target !== '*') {
    return cmError('CM_ERR_UNKNOWN_RECIPIENT', `a message to ${target.slice(0, 12)}… carries envelopes for other keys: ${unexpected.map((k) => k.slice(0, 12)).join(', ')}`);
  }
  if (unexpected.length > 0 || missing.length > 0) {
    return cmError('CM_ERR_ENVELOPES_MISMATCH', `envelopes do not match the recipients of ${target}: ${missing.length} missing, ${unexpected.length} unexpected or repeated`, {
      details: { missing, unexpected },
    });
  }
  return undefined;
}
