// The send path: validate, rate-limit, check the envelopes against the roster, then group-
// commit. Sends that arrive while a transaction runs wait and go into the next one: one
// multi-row INSERT … SELECT FROM unnest() for messages and one for deliveries, one fsync for
// many messages. The ack goes out after COMMIT only (acknowledged means durable); then the
// batch is handed to delivery.ts, which pushes it.

import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Context } from '../../broker.ts';
import { BOX_MAC_BYTES, NONCE_BYTES, sha256Hex } from '../crypto.ts';
import { cmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import { groupMatches, MAX_HOPS } from '../protocol.ts';
import type { AckFrame, SendFrame } from '../protocol.ts';
import { KeyedTokenBuckets } from '../token-bucket.ts';
import { failureOf, query, transaction } from './db.ts';
import type { Row } from './db.ts';
import { SIGNAL_DELIVERIES } from './hub.ts';
import type { Peer } from './hub.ts';
import type { MESSAGE_REJECT_REASONS } from './metrics.ts';
import type { Roster } from './presence.ts';

const MAX_BATCH_SENDS = 500;
const MAX_SIGNAL_BYTES = 7_900;

interface Envelope { to: string; nonce: Buffer; ciphertext: Buffer; claimed: boolean }
interface Pending {
  peer: Peer;
  frame: SendFrame;
  envelopes: Envelope[];
  fingerprint: string;
  resolve: (ack: AckFrame) => void;
}
type RejectReason = (typeof MESSAGE_REJECT_REASONS)[number];
type Stored = Row<'existing_messages'>;

const idOf = (frame: SendFrame) => (frame.id === undefined ? {} : { id: frame.id });
const senderKeyOf = (meshId: string, key: string, clientMessageId: string) => `${meshId}\n${key}\n${clientMessageId}`;

export class Sender {
  readonly #ctx: Context;
  readonly #members: KeyedTokenBuckets;
  readonly #pairs: KeyedTokenBuckets;
  #queue: Pending[] = [];
  #flushing = false;

  constructor(ctx: Context) {
    this.#ctx = ctx;
    const { config, now } = ctx;
    // per member, so that reconnecting does not reset it
    this.#members = new KeyedTokenBuckets({ capacity: config.sendBurst, refillPerSecond: config.sendRatePerSecond, now });
    // the loop guard: per (sender key, target)
    this.#pairs = new KeyedTokenBuckets({ capacity: config.loopGuardBurst, refillPerSecond: config.loopGuardRatePerSecond, now });
  }

  async send(peer: Peer, frame: SendFrame): Promise<AckFrame> {
    const fingerprint = fingerprintOf(frame);
    const refuse = async (reason: RejectReason, error: CmError): Promise<AckFrame> => {
      // A retry of a message already stored (its ack was lost) gets the original answer,
      // whatever a limit or the roster would say now.
      let original: AckFrame | undefined;
      try {
        original = await this.#original(peer, frame, fingerprint);
      } catch (cause) {
        [reason, error] = ['db_unavailable', cmError('CM_ERR_DB_UNAVAILABLE', 'the broker could not check whether this message was already stored; nothing was queued, retry it', { cause })];
      }
      if (original !== undefined) return original;
      this.#ctx.metrics.messagesRejected.inc({ reason });
      return { type: 'ack', ...idOf(frame), queued: false, ...error.toJSON() };
    };
    const { config } = this.#ctx;
    if (!this.#members.take(`${peer.meshId}\n${peer.memberKey}`)) {
      return refuse('rate_limited', cmError('CM_ERR_RATE_LIMITED', `member ${peer.name} sent more than ${config.sendBurst} messages in a burst (steady limit ${config.sendRatePerSecond}/s)`));
    }
    if (frame.hops > MAX_HOPS) return refuse('loop_guard', cmError('CM_ERR_LOOP_GUARD', `message has been relayed ${frame.hops} times (limit ${MAX_HOPS})`));
    if (!this.#pairs.take(`${peer.meshId}\n${peer.key}\n${frame.target}`)) {
      return refuse('loop_guard', cmError('CM_ERR_LOOP_GUARD', `more than ${config.loopGuardBurst} messages from ${peer.key.slice(0, 12)}… to ${frame.target.slice(0, 12)} in a short time`));
    }
    const envelopes: Envelope[] = [];
    for (const envelope of frame.envelopes) {
      const nonce = Buffer.from(envelope.nonce, 'base64');
      const ciphertext = Buffer.from(envelope.ciphertext, 'base64');
      if (nonce.length !== NONCE_BYTES || ciphertext.length < BOX_MAC_BYTES) {
        return refuse('bad_envelope', cmError('CM_ERR_BAD_FRAME', `envelope for ${envelope.to.slice(0, 12)}… must carry a ${NONCE_BYTES}-byte nonce and at least ${BOX_MAC_BYTES} bytes of ciphertext`));
      }
      envelopes.push({ to: envelope.to, nonce, ciphertext, claimed: false });
    }
    let roster: Roster;
    try {
      roster = await this.#ctx.presence.roster(peer.meshId);
    } catch (error) {
      return refuse('db_unavailable', cmError('CM_ERR_DB_UNAVAILABLE', 'the roster could not be read; nothing was stored', { cause: error }));
    }
    let problem = checkRecipients(roster, peer, frame.target, envelopes);
    if (problem !== undefined) {
      // The cached roster may be a moment behind (a peer that joined on another instance):
      // refuse only what the roster as stored says.
      this.#ctx.presence.forget(peer.meshId);
      try {
        roster = await this.#ctx.presence.roster(peer.meshId);
      } catch (error) {
        return refuse('db_unavailable', cmError('CM_ERR_DB_UNAVAILABLE', 'the roster could not be read; nothing was stored', { cause: error }));
      }
      problem = checkRecipients(roster, peer, frame.target, envelopes);
    }
    if (problem !== undefined) return refuse(problem.code === 'CM_ERR_UNKNOWN_RECIPIENT' ? 'unknown_recipient' : 'bad_envelope', problem);
    // Decided now, written with the insert: which recipients are pushed right after commit.
    for (const envelope of envelopes) envelope.claimed = this.#ctx.delivery.claimable(peer.meshId, envelope.to, frame.priority, roster);
    return new Promise((resolve) => {
      this.#queue.push({ peer, frame, envelopes, fingerprint, resolve });
      if (this.#queue.length === 1 && !this.#flushing) setImmediate(() => void this.#flush());
    });
  }

  /** The answer already given for this (sender, clientMessageId), if it was stored. Throws on a database error. */
  async #original(peer: Peer, frame: SendFrame, fingerprint: string): Promise<AckFrame | undefined> {
    const found = await query(this.#ctx.pool, 'existing_messages', [[peer.meshId], [peer.key], [frame.clientMessageId]]);
    const row = found.rows[0];
    return row === undefined ? undefined : this.#repeat(frame, row, fingerprint);
  }

  /** The answer to a clientMessageId already stored: the same message again, or a conflict. */
  #repeat(frame: SendFrame, original: Stored | undefined, fingerprint: string): AckFrame {
    if (original !== undefined && original.fingerprint === fingerprint) {
      return { type: 'ack', ...idOf(frame), queued: true, messageId: original.id, recipients: original.recipients, duplicate: true };
    }
    this.#ctx.metrics.messagesRejected.inc({ reason: 'idempotency_conflict' });
    const error = cmError('CM_ERR_IDEMPOTENCY_CONFLICT', `client message id ${JSON.stringify(frame.clientMessageId)} was already used for a different message${original === undefined ? '' : ` (${original.id})`}`);
    return { type: 'ack', ...idOf(frame), queued: false, ...error.toJSON() };
  }

  async #flush(): Promise<void> {
    if (this.#flushing || this.#queue.length === 0) return;
    this.#flushing = true;
    const batch = this.#queue.splice(0, MAX_BATCH_SENDS);
    try {
      await this.#commit(batch);
    } catch (error) {
      const failure = failureOf(error, 'storing the message (nothing was queued)');
      this.#ctx.log.warn('send batch failed', { sends: batch.length, error });
      for (const pending of batch) {
        this.#ctx.metrics.messagesRejected.inc({ reason: 'db_unavailable' });
        pending.resolve({ type: 'ack', ...idOf(pending.frame), queued: false, ...failure.toJSON() });
      }
    } finally {
      this.#flushing = false;
      if (this.#queue.length > 0) setImmediate(() => void this.#flush());
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    const ids = batch.map(() => randomUUID());
    const { inserted, existing } = await transaction(this.#ctx.pool, (client) => this.#insert(client, batch, ids));
    batch.forEach((pending, index) => {
      const { peer, frame, envelopes } = pending;
      const messageId = ids[index] ?? '';
      const createdAt = inserted.get(messageId);
      if (createdAt === undefined) {
        pending.resolve(this.#repeat(frame, existing.get(senderKeyOf(peer.meshId, peer.key, frame.clientMessageId)), pending.fingerprint));
        return;
      }
      this.#ctx.metrics.messagesRouted.inc({ priority: frame.priority });
      pending.resolve({ type: 'ack', ...idOf(frame), queued: true, messageId, recipients: envelopes.length });
      this.#ctx.delivery.pushCommitted({
        messageId, meshId: peer.meshId, senderKey: peer.key, senderMemberKey: peer.memberKey, target: frame.target,
        priority: frame.priority, createdAt, clientMessageId: frame.clientMessageId, hops: frame.hops,
      }, envelopes);
    });
  }

  /** Tell the other instances, inside the transaction so that it leaves only at COMMIT. */
  async #signal(client: pg.PoolClient, batch: Pending[], inserted: ReadonlyMap<string, Date>, ids: readonly string[]): Promise<void> {
    const payload = unclaimedRecipients(batch, inserted, ids);
    if (payload !== '') await query(client, 'notify', [SIGNAL_DELIVERIES, payload]);
  }

  /** One batch in one transaction; a repeated clientMessageId inserts nothing and is looked up. */
  async #insert(client: pg.PoolClient, batch: Pending[], ids: string[]) {
    const { config, instanceId, delivery } = this.#ctx;
    const messages = await query(client, 'insert_messages', [
      ids, batch.map((p) => p.peer.meshId), batch.map((p) => p.peer.memberId), batch.map((p) => p.peer.key), batch.map((p) => p.peer.memberKey),
      batch.map((p) => p.frame.clientMessageId), batch.map((p) => p.fingerprint), batch.map((p) => p.frame.target), batch.map((p) => p.frame.priority),
      batch.map((p) => p.frame.hops), config.messageTtlSeconds,
    ]);
    const inserted = new Map(messages.rows.map((row) => [row.id, row.created_at]));
    const columns: [string[], string[], string[], string[], Buffer[], Buffer[], boolean[]] = [[], [], [], [], [], [], []];
    batch.forEach((pending, index) => {
      const id = ids[index] ?? '';
      if (!inserted.has(id)) return;
      for (const envelope of pending.envelopes) {
        [id, pending.peer.meshId, envelope.to, pending.frame.priority, envelope.nonce, envelope.ciphertext, envelope.claimed]
          .forEach((value, column) => (columns[column] as unknown[]).push(value));
      }
    });
    if (columns[0].length > 0) await query(client, 'insert_deliveries', [...columns, config.messageTtlSeconds, delivery.claimSeconds, instanceId]);
    await this.#signal(client, batch, inserted, ids);
    const existing = new Map<string, Stored>();
    const repeats = batch.filter((_, index) => !inserted.has(ids[index] ?? ''));
    if (repeats.length > 0) {
      const found = await query(client, 'existing_messages', [repeats.map((p) => p.peer.meshId), repeats.map((p) => p.peer.key), repeats.map((p) => p.frame.clientMessageId)]);
      for (const row of found.rows) existing.set(senderKeyOf(row.mesh_id, row.sender_key, row.client_message_id), row);
    }
    return { inserted, existing };
  }
}

/** One notification per batch, at COMMIT, naming the recipients no socket here took. */
function unclaimedRecipients(batch: Pending[], inserted: ReadonlyMap<string, Date>, ids: readonly string[]): string {
  const pairs = new Map<string, [string, string]>();
  batch.forEach((pending, index) => {
    if (!inserted.has(ids[index] ?? '')) return;
    for (const envelope of pending.envelopes) if (!envelope.claimed) pairs.set(`${pending.peer.meshId}\n${envelope.to}`, [pending.peer.meshId, envelope.to]);
  });
  const payload = JSON.stringify([...pairs.values()]);
  // A notification carries at most 8,000 bytes: past that, every instance looks for itself.
  return pairs.size === 0 ? '' : payload.length <= MAX_SIGNAL_BYTES ? payload : '*';
}

/** The request's identity for idempotency: target, priority and the envelopes, in key order. */
function fingerprintOf(frame: SendFrame): string {
  const canonical = frame.envelopes.map((e) => [e.to, e.nonce, e.ciphertext]).sort((a, b) => (a[0] ?? '').localeCompare(b[0] ?? ''));
  return sha256Hex(JSON.stringify([frame.target, frame.priority, canonical]));
}

/**
 * Which keys a target reaches, checked against the envelopes the sender encrypted: a key →
 * exactly that key; `*` → every current member (offline too), plus any live or recent
 * session key the sender chose to include; `@group` → every key in that group.
 */
function checkRecipients(roster: Roster, sender: Peer, target: string, envelopes: ReadonlyArray<{ to: string }>): CmError | undefined {
  const required = new Set<string>();
  const allowed = new Set<string>();
  if (target === '*') {
    for (const key of roster.members.keys()) {
      if (key !== sender.memberKey) required.add(key);
      allowed.add(key);
    }
    for (const key of roster.peers.keys()) allowed.add(key);
  } else if (target.startsWith('@')) {
    for (const peer of roster.peers.values()) {
      if (groupMatches(peer.groups, target)) {
        required.add(peer.key);
        allowed.add(peer.key);
      }
    }
  } else {
    if (!roster.members.has(target) && !roster.peers.has(target)) {
      return cmError('CM_ERR_UNKNOWN_RECIPIENT', `no member or session with key ${target.slice(0, 12)}… in mesh ${sender.meshId}`);
    }
    required.add(target);
    allowed.add(target);
  }
  required.delete(sender.key);
  allowed.delete(sender.key);
  if (allowed.size === 0) return cmError('CM_ERR_UNKNOWN_RECIPIENT', `target ${target} reaches nobody in mesh ${sender.meshId}`, { hint: 'check the group name with list_peers' });
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
