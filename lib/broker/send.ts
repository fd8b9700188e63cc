// The send path: validate, rate-limit, check the envelopes against the roster, then group-
// commit. Sends that arrive while a transaction runs wait and go into the next one: one
// multi-row INSERT … SELECT FROM unnest() of one row per recipient, one fsync for many
// messages. The ack goes out after COMMIT only (acknowledged means durable); then the
// batch is handed to delivery.ts, which pushes it.

import type pg from 'pg';
import type { Context } from '../../broker.ts';
import { BOX_MAC_BYTES, NONCE_BYTES } from '../crypto.ts';
import { cmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import { MAX_HOPS } from '../protocol.ts';
import type { AckFrame, SendFrame } from '../protocol.ts';
import { KeyedTokenBuckets } from '../token-bucket.ts';
import { arrayLiteral, failureOf, query, transaction } from './db.ts';
import type { Row } from './db.ts';
import { SIGNAL_DELIVERIES } from './hub.ts';
import type { Peer } from './hub.ts';
import type { MESSAGE_REJECT_REASONS } from './metrics.ts';
import type { Roster } from './presence.ts';
import { base64Bytes, checkRecipients, fingerprintOf, messageIdOf } from './send-checks.ts';

const MAX_BATCH_SENDS = 2000;
// how long a send that finds no transaction running waits for others to share its commit
export const SEND_GATHER_MS = 1;
// Postgres keeps the plan it made for a prepared statement, from the statistics and the table
// size of that moment. `deliveries` grows from nothing to millions of rows in one broker's
// life, faster than autovacuum re-analyzes it (a plan made while it held a few pages scanned
// the whole table per acknowledged row later): each time the rows this instance inserted
// grow by ANALYZE_GROWTH, it analyzes the table, which also makes every session plan again.
const FIRST_ANALYZE_ROWS = 1_000;
const ANALYZE_GROWTH = 4;
const LEGACY_RECHECK_MS = 10 * 60_000;
const MAX_SIGNAL_BYTES = 7_900;

// nonce and ciphertext stay the base64 the sender wrote: Postgres decodes them, the push repeats them
interface Envelope { to: string; nonce: string; ciphertext: string; claimed: boolean }
interface Pending {
  /** derived from the client message id: messageIdOf */
  messageId: string;
  peer: Peer;
  frame: SendFrame;
  envelopes: Envelope[];
  fingerprint: string;
  answer: Answer;
}
type RejectReason = (typeof MESSAGE_REJECT_REASONS)[number];
type Answer = (ack: AckFrame) => void;
type Stored = Row<'existing_messages'>;

const idOf = (frame: SendFrame) => (frame.id === undefined ? {} : { id: frame.id });
const senderKeyOf = (meshId: string, key: string, clientMessageId: string) => `${meshId}\n${key}\n${clientMessageId}`;

export class Sender {
  readonly #ctx: Context;
  readonly #members: KeyedTokenBuckets;
  readonly #pairs: KeyedTokenBuckets;
  #queue: Pending[] = [];
  #flushing = false;
  #inserted = 0;
  #legacy: { possible: boolean; checkedAt: number } | undefined;
  #analyzeAt = FIRST_ANALYZE_ROWS;
  readonly #peerLimitKeys = new WeakMap<Peer, { member: string; route: string }>();

  constructor(ctx: Context) {
    this.#ctx = ctx;
    const { config, now } = ctx;
    // per member, so that reconnecting does not reset it
    this.#members = new KeyedTokenBuckets({ capacity: config.sendBurst, refillPerSecond: config.sendRatePerSecond, now });
    // the loop guard: per (sender key, target)
    this.#pairs = new KeyedTokenBuckets({ capacity: config.loopGuardBurst, refillPerSecond: config.loopGuardRatePerSecond, now });
  }

  /**
   * Take one send; `answer` is called once with its ack: after the commit, or as soon as it
   * is refused. The common case (limits, envelopes and the cached roster all fine) runs
   * without a promise, an async frame or a closure of its own: up to thousands of sends wait
   * for their commit at once, and what each of them holds is what the young generation has
   * to copy at every collection (docs/benchmarks.md, round six).
   */
  submit(peer: Peer, frame: SendFrame, answer: Answer): void {
    const fingerprint = fingerprintOf(frame);
    const { config } = this.#ctx;
    const limits = this.#limitKeys(peer);
    if (!this.#members.take(limits.member)) {
      return this.#refuse(peer, frame, fingerprint, answer, 'rate_limited', cmError('CM_ERR_RATE_LIMITED', `member ${peer.name} sent more than ${config.sendBurst} messages in a burst (steady limit ${config.sendRatePerSecond}/s)`));
    }
    if (frame.hops > MAX_HOPS) return this.#refuse(peer, frame, fingerprint, answer, 'loop_guard', cmError('CM_ERR_LOOP_GUARD', `message has been relayed ${frame.hops} times (limit ${MAX_HOPS})`));
    if (!this.#pairs.take(limits.route + frame.target)) {
      return this.#refuse(peer, frame, fingerprint, answer, 'loop_guard', cmError('CM_ERR_LOOP_GUARD', `more than ${config.loopGuardBurst} messages from ${peer.key.slice(0, 12)}… to ${frame.target.slice(0, 12)} in a short time`));
    }
    const envelopes: Envelope[] = [];
    for (const envelope of frame.envelopes) {
      const { nonce, ciphertext } = envelope;
      if (base64Bytes(nonce) !== NONCE_BYTES || base64Bytes(ciphertext) < BOX_MAC_BYTES) {
        return this.#refuse(peer, frame, fingerprint, answer, 'bad_envelope', cmError('CM_ERR_BAD_FRAME', `envelope for ${envelope.to.slice(0, 12)}… must carry a ${NONCE_BYTES}-byte nonce and at least ${BOX_MAC_BYTES} bytes of ciphertext`));
      }
      envelopes.push({ to: envelope.to, nonce, ciphertext, claimed: false });
    }
    const cached = this.#ctx.presence.cachedRoster(peer.meshId);
    if (cached !== undefined && checkRecipients(cached, peer, frame.target, envelopes) === undefined) return this.#enqueue(peer, frame, envelopes, fingerprint, cached, answer);
    this.#checkStored(peer, frame, envelopes, fingerprint, cached !== undefined, answer).catch((error: unknown) => this.#failed(frame, answer, error));
  }

  /** The same as submit, as a promise. */
  send(peer: Peer, frame: SendFrame): Promise<AckFrame> {
    return new Promise((resolve) => this.submit(peer, frame, resolve));
  }

  /**
   * The recipients checked against the roster as stored: none was cached, or the cached one
   * refused them and may be a moment behind (a peer that joined on another instance), so
   * only what the stored roster says is refused.
   */
  async #checkStored(peer: Peer, frame: SendFrame, envelopes: Envelope[], fingerprint: string, cachedRefused: boolean, answer: Answer): Promise<void> {
    let roster: Roster;
    let problem: CmError | undefined;
    try {
      if (cachedRefused) this.#ctx.presence.forget(peer.meshId);
      roster = await this.#ctx.presence.roster(peer.meshId);
      problem = checkRecipients(roster, peer, frame.target, envelopes);
      if (problem !== undefined && !cachedRefused) {
        this.#ctx.presence.forget(peer.meshId);
        roster = await this.#ctx.presence.roster(peer.meshId);
        problem = checkRecipients(roster, peer, frame.target, envelopes);
      }
    } catch (error) {
      return this.#refuse(peer, frame, fingerprint, answer, 'db_unavailable', cmError('CM_ERR_DB_UNAVAILABLE', 'the roster could not be read; nothing was stored', { cause: error }));
    }
    if (problem !== undefined) return this.#refuse(peer, frame, fingerprint, answer, problem.code === 'CM_ERR_UNKNOWN_RECIPIENT' ? 'unknown_recipient' : 'bad_envelope', problem);
    this.#enqueue(peer, frame, envelopes, fingerprint, roster, answer);
  }

  /** Queue a checked send for the next commit. */
  #enqueue(peer: Peer, frame: SendFrame, envelopes: Envelope[], fingerprint: string, roster: Roster, answer: Answer): void {
    // Decided now, written with the insert: which recipients are pushed right after commit.
    for (const envelope of envelopes) envelope.claimed = this.#ctx.delivery.claimable(peer.meshId, envelope.to, frame.priority, roster);
    this.#queue.push({ messageId: messageIdOf(peer.meshId, peer.key, frame.clientMessageId), peer, frame, envelopes, fingerprint, answer });
    // A send that finds no transaction running waits SEND_GATHER_MS for company: at a steady
    // rate that fills each commit (and its fsync) with several sends instead of one or two.
    if (this.#queue.length === 1 && !this.#flushing) setTimeout(() => void this.#flush(), this.#ctx.timings.sendGatherMs);
  }

  /**
   * Answer a refused send. A retry of a message already stored (its ack was lost) gets the
   * original answer, whatever a limit or the roster would say now.
   */
  #refuse(peer: Peer, frame: SendFrame, fingerprint: string, answer: Answer, reason: RejectReason, error: CmError): void {
    this.#answerRefused(peer, frame, fingerprint, answer, reason, error).catch((failure: unknown) => this.#failed(frame, answer, failure));
  }

  async #answerRefused(peer: Peer, frame: SendFrame, fingerprint: string, answer: Answer, reason: RejectReason, error: CmError): Promise<void> {
    let original: AckFrame | undefined;
    try {
      original = await this.#original(peer, frame, fingerprint);
    } catch (cause) {
      [reason, error] = ['db_unavailable', cmError('CM_ERR_DB_UNAVAILABLE', 'the broker could not check whether this message was already stored; nothing was queued, retry it', { cause })];
    }
    if (original !== undefined) return answer(original);
    this.#ctx.metrics.messagesRejected.inc({ reason });
    answer({ type: 'ack', ...idOf(frame), queued: false, ...error.toJSON() });
  }

  /** A send whose checks failed unexpectedly is still answered, once, and the broker stays up. */
  #failed(frame: SendFrame, answer: Answer, error: unknown): void {
    this.#ctx.log.warn('send failed', { error });
    try {
      answer({ type: 'ack', ...idOf(frame), queued: false, ...failureOf(error, 'the send').toJSON() });
    } catch (again) {
      this.#ctx.log.warn('a failed send could not be answered', { error: again });
    }
  }

  /** A peer's rate-limit keys, made once per connection rather than once per message. */
  #limitKeys(peer: Peer): { member: string; route: string } {
    let keys = this.#peerLimitKeys.get(peer);
    if (keys === undefined) {
      keys = { member: `${peer.meshId}\n${peer.memberKey}`, route: `${peer.meshId}\n${peer.key}\n` };
      this.#peerLimitKeys.set(peer, keys);
    }
    return keys;
  }

  /** The answer already given for this (sender, clientMessageId), if it was stored. Throws on a database error. */
  async #original(peer: Peer, frame: SendFrame, fingerprint: string): Promise<AckFrame | undefined> {
    const row = (await this.#stored(this.#ctx.pool, [{ peer, frame }]))[0];
    return row === undefined ? undefined : this.#repeat(frame, row, fingerprint);
  }

  /** The answer to a clientMessageId already stored: the same message again, or a conflict. */
  #repeat(frame: SendFrame, original: Pick<Stored, 'id' | 'fingerprint' | 'recipients'> | undefined, fingerprint: string): AckFrame {
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
        pending.answer({ type: 'ack', ...idOf(pending.frame), queued: false, ...failure.toJSON() });
      }
    } finally {
      this.#flushing = false;
      if (this.#queue.length > 0) setImmediate(() => void this.#flush());
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    // A retry sent again before its first copy was answered shares the first's id: only the
    // first goes into the insert, the others get its answer as repeats.
    const firstOf = new Map<string, Pending>();
    for (const pending of batch) if (!firstOf.has(pending.messageId)) firstOf.set(pending.messageId, pending);
    const firsts = [...firstOf.values()];
    // A message of one envelope is written whole or not at all, so a batch of them needs no
    // transaction around its one statement (which also carries the signal): one round trip
    // instead of three. A batch with a wider message may have to take rows out again.
    const { inserted, existing } = firsts.every((pending) => pending.envelopes.length === 1)
      ? await this.#insert(this.#ctx.pool, firsts)
      : await transaction(this.#ctx.pool, (client) => this.#insert(client, firsts));
    for (const pending of batch) {
      const { messageId, peer, frame, envelopes } = pending;
      const createdAt = inserted.get(messageId);
      if (createdAt === undefined || firstOf.get(messageId) !== pending) {
        const first = firstOf.get(messageId);
        const stored = createdAt !== undefined && first !== undefined
          ? { id: messageId, fingerprint: first.fingerprint, recipients: first.envelopes.length }
          : existing.get(senderKeyOf(peer.meshId, peer.key, frame.clientMessageId));
        pending.answer(this.#repeat(frame, stored, pending.fingerprint));
        continue;
      }
      this.#ctx.metrics.messagesRouted.inc({ priority: frame.priority });
      pending.answer({ type: 'ack', ...idOf(frame), queued: true, messageId, recipients: envelopes.length });
      this.#ctx.delivery.pushCommitted({
        messageId, meshId: peer.meshId, senderKey: peer.key, senderMemberKey: peer.memberKey, target: frame.target,
        priority: frame.priority, createdAt, clientMessageId: frame.clientMessageId, hops: frame.hops,
      }, envelopes);
    }
  }

  /**
   * One batch (distinct message ids) in one insert, which also tells the other instances
   * (the signal leaves at COMMIT). The insert has no look-up against the table (its plan
   * cannot go wrong as the table grows); the unique indexes turn a retry away. A retry that
   * reused a client message id for other recipients may write some rows past its first:
   * those are taken out again in the same transaction, and it is answered as a conflict.
   */
  async #insert(client: pg.Pool | pg.PoolClient, batch: Pending[]) {
    const { config, instanceId, delivery } = this.#ctx;
    const existing = new Map<string, Stored>();
    if (await this.#legacyPossible(client)) for (const row of await this.#stored(client, batch)) existing.set(senderKeyOf(row.mesh_id, row.sender_key, row.client_message_id), row);
    const fresh = existing.size === 0 ? batch : batch.filter((p) => !existing.has(senderKeyOf(p.peer.meshId, p.peer.key, p.frame.clientMessageId)));
    // One element per row: a message's own fields repeat for each of its envelopes.
    const senders: Pending[] = [];
    const envelopes: Envelope[] = [];
    const firstRow: boolean[] = [];
    for (const pending of fresh) {
      pending.envelopes.forEach((envelope, position) => {
        senders.push(pending);
        envelopes.push(envelope);
        firstRow.push(position === 0);
      });
    }
    // Every column but the client message id (any printable text) has a shape lib/protocol.ts
    // checked, or is ours: it goes into its array literal as it is.
    const columns = [
      ...[senders.map((p) => p.messageId), senders.map((p) => p.peer.meshId), senders.map((p) => p.peer.key), senders.map((p) => p.peer.memberKey)].map((column) => arrayLiteral(column, true)),
      arrayLiteral(senders.map((p) => p.frame.clientMessageId)),
      ...[senders.map((p) => p.fingerprint), senders.map((p) => p.frame.target), senders.map((p) => p.frame.priority), senders.map((p) => p.frame.hops),
        envelopes.map((e) => e.to), envelopes.map((e) => e.nonce), envelopes.map((e) => e.ciphertext), envelopes.map((e) => e.claimed), firstRow].map((column) => arrayLiteral(column, true)),
    ];
    const { rows: answered } = fresh.length === 0 ? { rows: [] } : await query(client, 'insert_deliveries', [
      ...columns, config.messageTtlSeconds, delivery.claimSeconds, instanceId, SIGNAL_DELIVERIES, unclaimedRecipients(fresh),
    ]);
    const written = new Map<string, { at: Date; recipients: string[] }>();
    let rows = 0;
    for (const { message_id: id, recipient_key: recipient, queued_at: at } of answered) {
      if (id === null) continue; // the signal's row
      rows += 1;
      const entry = written.get(id) ?? { at, recipients: [] };
      entry.recipients.push(recipient);
      written.set(id, entry);
    }
    this.#grew(rows);
    const inserted = new Map<string, Date>();
    const undo: [string[], string[]] = [[], []];
    for (const pending of fresh) {
      const entry = written.get(pending.messageId);
      if (entry === undefined) continue;
      if (entry.recipients.length === pending.envelopes.length) {
        inserted.set(pending.messageId, entry.at);
        continue;
      }
      // Each row by its key (sql/008_one_unique_index.sql): the first envelope's row has the
      // empty slot, and may stand beside the stored first row of the same recipient.
      const first = pending.envelopes[0]?.to;
      for (const recipient of entry.recipients) {
        undo[0].push(pending.messageId);
        undo[1].push(recipient === first ? '' : recipient);
      }
    }
    if (undo[0].length > 0) await query(client, 'delete_deliveries', undo);
    const repeats = fresh.filter((pending) => !inserted.has(pending.messageId));
    if (repeats.length > 0) for (const row of await this.#stored(client, repeats)) existing.set(senderKeyOf(row.mesh_id, row.sender_key, row.client_message_id), row);
    return { inserted, existing };
  }

  /**
   * Whether rows from before migration 005 may still be there (their retries are found by
   * client id, before the insert). Asked once, then again every LEGACY_RECHECK_MS while the
   * answer is yes; no legacy row is ever written again, so a no is final.
   */
  async #legacyPossible(client: pg.Pool | pg.PoolClient): Promise<boolean> {
    const now = this.#ctx.now();
    if (this.#legacy === undefined || (this.#legacy.possible && now - this.#legacy.checkedAt >= LEGACY_RECHECK_MS)) {
      const { rows } = await query(client, 'legacy_rows', []);
      this.#legacy = { possible: rows[0]?.found === true, checkedAt: now };
    }
    return this.#legacy.possible;
  }

  /** Count inserted rows; past each growth step, analyze (in the background: the send does not wait). */
  #grew(rows: number): void {
    this.#inserted += rows;
    if (this.#inserted < this.#analyzeAt) return;
    this.#analyzeAt = this.#inserted * ANALYZE_GROWTH;
    query(this.#ctx.pool, 'analyze_deliveries', []).catch((error: unknown) => this.#ctx.log.warn('could not analyze deliveries; plans stay as they are', { error }));
  }

  /** What is stored for these sends' client message ids (by derived id, or as a row from before migration 005). */
  async #stored(db: pg.Pool | pg.PoolClient, sends: ReadonlyArray<{ peer: Peer; frame: SendFrame }>): Promise<Stored[]> {
    const { rows } = await query(db, 'existing_messages', [
      sends.map((p) => messageIdOf(p.peer.meshId, p.peer.key, p.frame.clientMessageId)),
      sends.map((p) => p.peer.meshId), sends.map((p) => p.peer.key), sends.map((p) => p.frame.clientMessageId),
    ]);
    return rows;
  }
}

/**
 * One notification per batch, at COMMIT, naming the recipients no socket here took. A retry
 * turned away by the insert is named too: the instance that looks finds nothing new.
 */
function unclaimedRecipients(batch: Pending[]): string {
  const pairs = new Map<string, [string, string]>();
  for (const pending of batch) {
    for (const envelope of pending.envelopes) if (!envelope.claimed) pairs.set(`${pending.peer.meshId}\n${envelope.to}`, [pending.peer.meshId, envelope.to]);
  }
  const payload = JSON.stringify([...pairs.values()]);
  // A notification carries at most 8,000 bytes: past that, every instance looks for itself.
  return pairs.size === 0 ? '' : payload.length <= MAX_SIGNAL_BYTES ? payload : '*';
}
