// The daemon's outbox: every message a local caller sends waits here, encrypted, until the
// broker acknowledged it (the broker's ack comes after its own commit, so "done" means the
// message is durable on both sides).
//
// State machine (also in docs/daemon.md, *The outbox*):
//   pending → inflight (claimed by the outbox sender, attempts + 1)
//   inflight → done      (ack queued:true; broker message id kept)
//   inflight → pending   (transient failure; next attempt after 500 ms·2ⁿ, capped at 30 s)
//   inflight → dead      (permanent refusal, or the 25th attempt failed)
//   dead → pending       (requeue by an operator; the stored request is sent again unchanged)
// `inflight` rows found at open belonged to a process that died: they go back to pending.
//
// A row stores exactly the request the broker receives (target, priority, envelopes), so a
// retry is byte-for-byte the same `send` and the broker's idempotency (clientMessageId +
// fingerprint of target/priority/envelopes) turns a retry of a lost ack into `duplicate`.
// The enqueue answer is given only after the SQLite commit (WAL, synchronous=FULL).
//
// The text itself is kept only where it may be needed again, and only until the row is done:
// a broadcast or group message whose recipients changed while it waited (a member joined, a
// session left) is refused with CM_ERR_ENVELOPES_MISMATCH and must be encrypted again for
// the new roster (nothing was stored at the broker then, so the new request under the same
// id is safe); a deferred row (target '' and no envelopes: queued before any roster said
// who its target is) is resolved and encrypted when the broker is reached. A message to one
// key never stores its text. Erasing a text zeroes it in the file (secure_delete) and is
// followed by a checkpoint that truncates the WAL, so no copy of a sent text stays on disk.

import Database from 'better-sqlite3';
import type { Database as SqliteDatabase, Statement } from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { cmError } from '../lib/errors.ts';
import type { EnvelopeFrame, Priority } from '../lib/protocol.ts';
import { restrictFiles } from './paths.ts';

export const MAX_ATTEMPTS = 25;
const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 30_000;
export const CLAIM_BATCH = 32;
const DONE_RETENTION_MS = 7 * 24 * 3600 * 1000;
const BUSY_TIMEOUT_MS = 5_000;
const MAX_LIST = 500;

export const OUTBOX_STATUSES = ['pending', 'inflight', 'done', 'dead'] as const;
export type OutboxStatus = (typeof OUTBOX_STATUSES)[number];

/** What a caller asked for; its fingerprint decides whether a reused id is a repeat. */
export interface SendRequest {
  meshId: string;
  /** the key the message leaves as (member key, or a session key: only its own socket sends it) */
  senderKey: string;
  /** the target as the caller typed it (name, prefix, key, *, @group) */
  to: string;
  priority: Priority;
  text: string;
}

/** What the router made of a request: the resolved target and one envelope per recipient. */
export interface Encrypted {
  target: string;
  envelopes: EnvelopeFrame[];
}

/** A row queued before its target could be resolved: the outbox sender resolves it. */
export const DEFERRED_TARGET = '';

/** Whether a row needs its text after encryption: broadcasts, groups and deferred rows do. */
function keepsText(target: string): boolean {
  return target === DEFERRED_TARGET || target === '*' || target.startsWith('@');
}

export interface OutboxRow {
  clientMessageId: string;
  meshId: string;
  senderKey: string;
  to: string;
  target: string;
  priority: Priority;
  envelopes: EnvelopeFrame[];
  /** the plaintext, until the row is done (for re-encryption after a roster change) */
  text: string | null;
  status: OutboxStatus;
  attempts: number;
  nextAttemptAt: number;
  enqueuedAt: number;
  doneAt: number | null;
  brokerMessageId: string | null;
  recipients: number | null;
  lastError: string | null;
}

interface EnqueueResult {
  /** 202: a new row; 200: the same request was already here (nothing added) */
  status: 202 | 200;
  row: OutboxRow;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  client_message_id TEXT NOT NULL UNIQUE,
  fingerprint TEXT NOT NULL,
  mesh_id TEXT NOT NULL,
  sender_key TEXT NOT NULL,
  to_spec TEXT NOT NULL,
  target TEXT NOT NULL,
  priority TEXT NOT NULL,
  envelopes TEXT NOT NULL,
  body TEXT,
  status TEXT NOT NULL CHECK (status IN ('pending', 'inflight', 'done', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  enqueued_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  done_at INTEGER,
  broker_message_id TEXT,
  recipients INTEGER,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sender_key, status, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_done ON outbox (status, done_at);
`;

interface RawRow {
  client_message_id: string;
  fingerprint: string;
  mesh_id: string;
  sender_key: string;
  to_spec: string;
  target: string;
  priority: Priority;
  envelopes: string;
  body: string | null;
  status: OutboxStatus;
  attempts: number;
  next_attempt_at: number;
  enqueued_at: number;
  done_at: number | null;
  broker_message_id: string | null;
  recipients: number | null;
  last_error: string | null;
}

function toRow(raw: RawRow): OutboxRow {
  return {
    clientMessageId: raw.client_message_id,
    meshId: raw.mesh_id,
    senderKey: raw.sender_key,
    to: raw.to_spec,
    target: raw.target,
    priority: raw.priority,
    envelopes: JSON.parse(raw.envelopes) as EnvelopeFrame[],
    text: raw.body,
    status: raw.status,
    attempts: raw.attempts,
    nextAttemptAt: raw.next_attempt_at,
    enqueuedAt: raw.enqueued_at,
    doneAt: raw.done_at,
    brokerMessageId: raw.broker_message_id,
    recipients: raw.recipients,
    lastError: raw.last_error,
  };
}

/** sha256 over the request's fields, NUL-separated; the text enters as its own hash. */
function requestFingerprint(request: SendRequest): string {
  const textHash = createHash('sha256').update(request.text, 'utf8').digest('hex');
  return createHash('sha256').update(['v1', request.meshId, request.senderKey, request.to, request.priority, textHash].join('\0')).digest('hex');
}

/** Delay before the next attempt after `attempts` failed ones: 500 ms, 1 s, 2 s, … ≤ 30 s. */
export function retryDelayMs(attempts: number, baseMs = BACKOFF_BASE_MS, capMs = BACKOFF_CAP_MS): number {
  const exponent = Math.max(0, attempts - 1);
  return Math.min(capMs, baseMs * 2 ** Math.min(exponent, 16));
}

export class Outbox {
  readonly #db: SqliteDatabase;
  readonly #now: () => number;
  readonly #backoffBaseMs: number;
  readonly #byId: Statement;
  readonly #insert: Statement;
  readonly #due: Statement;
  readonly #claim: Statement;
  #checkpointDue = false;

  constructor(path: string, options: { now?: () => number; backoffBaseMs?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#backoffBaseMs = options.backoffBaseMs ?? BACKOFF_BASE_MS;
    this.#db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
    this.#db.pragma('journal_mode = WAL');
    // FULL: an enqueue that was answered survives a power cut, not only a crash.
    this.#db.pragma('synchronous = FULL');
    // An erased text is overwritten with zeros, not just unlinked from the b-tree.
    this.#db.pragma('secure_delete = ON');
    this.#db.exec(SCHEMA);
    restrictFiles(path);
    this.#byId = this.#db.prepare('SELECT * FROM outbox WHERE client_message_id = ?');
    this.#insert = this.#db.prepare(`INSERT INTO outbox (client_message_id, fingerprint, mesh_id, sender_key, to_spec, target, priority,
      envelopes, body, status, next_attempt_at, enqueued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)`);
    this.#due = this.#db.prepare(`SELECT client_message_id FROM outbox WHERE sender_key = ? AND status = 'pending'
      AND next_attempt_at <= ? ORDER BY id LIMIT ?`);
    this.#claim = this.#db.prepare(`UPDATE outbox SET status = 'inflight', attempts = attempts + 1, updated_at = ?
      WHERE client_message_id = ? AND status = 'pending'`);
    this.resetInflight();
  }

  /**
   * Inflight → pending (at open: a previous process died with these in flight; at shutdown:
   * their acks will never come). The broker dedupes whatever it already got.
   */
  resetInflight(): number {
    const now = this.#now();
    return this.#db.prepare(`UPDATE outbox SET status = 'pending', next_attempt_at = ?, updated_at = ? WHERE status = 'inflight'`).run(now, now).changes;
  }

  get(clientMessageId: string): OutboxRow | undefined {
    const raw = this.#byId.get(clientMessageId) as RawRow | undefined;
    return raw === undefined ? undefined : toRow(raw);
  }

  /**
   * The existing row for this id, if any: the same request → 200 with it; another request
   * under the same id → CM_ERR_OUTBOX_CONFLICT (409). Undefined: the id is free.
   */
  check(clientMessageId: string, request: SendRequest): EnqueueResult | undefined {
    const raw = this.#byId.get(clientMessageId) as RawRow | undefined;
    if (raw === undefined) return undefined;
    if (raw.fingerprint !== requestFingerprint(request)) {
      throw cmError('CM_ERR_OUTBOX_CONFLICT', `client message id ${JSON.stringify(clientMessageId)} was used for another message (${raw.status})`, {
        details: { clientMessageId, status: raw.status },
      });
    }
    return { status: 200, row: toRow(raw) };
  }

  /**
   * Store a new message (pending, due now). Idempotent by client message id: see `check`.
   * Returns after the commit. Checked again inside the write transaction because the caller
   * encrypted between its own check and this call.
   */
  enqueue(clientMessageId: string, request: SendRequest, encrypted: Encrypted | undefined): EnqueueResult {
    const { target, envelopes } = encrypted ?? { target: DEFERRED_TARGET, envelopes: [] };
    const run = this.#db.transaction((): EnqueueResult => {
      const existing = this.check(clientMessageId, request);
      if (existing !== undefined) return existing;
      const now = this.#now();
      this.#insert.run(clientMessageId, requestFingerprint(request), request.meshId, request.senderKey, request.to, target,
        request.priority, JSON.stringify(envelopes), keepsText(target) ? request.text : null, now, now, now);
      return { status: 202, row: toRow(this.#byId.get(clientMessageId) as RawRow) };
    });
    return run.immediate();
  }

  /** Claim up to `limit` due rows of one sender key: pending → inflight, attempts + 1. */
  claim(senderKey: string, limit = CLAIM_BATCH): OutboxRow[] {
    const run = this.#db.transaction((): OutboxRow[] => {
      const now = this.#now();
      const ids = (this.#due.all(senderKey, now, limit) as Array<{ client_message_id: string }>).map((row) => row.client_message_id);
      const claimed: OutboxRow[] = [];
      for (const id of ids) {
        if (this.#claim.run(now, id).changes === 1) claimed.push(toRow(this.#byId.get(id) as RawRow));
      }
      return claimed;
    });
    return run.immediate();
  }

  markDone(clientMessageId: string, brokerMessageId: string, recipients: number): void {
    const now = this.#now();
    const hadText = this.#byId.get(clientMessageId) as RawRow | undefined;
    // Done: the plaintext has no further use here.
    this.#db.prepare(`UPDATE outbox SET status = 'done', done_at = ?, updated_at = ?, broker_message_id = ?, recipients = ?, last_error = NULL, body = NULL
      WHERE client_message_id = ? AND status = 'inflight'`).run(now, now, brokerMessageId, recipients, clientMessageId);
    if (hadText?.body !== null && hadText?.body !== undefined) this.#scheduleCheckpoint();
  }

  /**
   * Truncate the WAL once the current burst of acks is written: the WAL still holds the page
   * images with the erased texts until then. One checkpoint per burst, not per message.
   */
  #scheduleCheckpoint(): void {
    if (this.#checkpointDue) return;
    this.#checkpointDue = true;
    setImmediate(() => {
      this.#checkpointDue = false;
      if (this.#db.open) this.#db.pragma('wal_checkpoint(TRUNCATE)');
    });
  }

  /** A deferred row resolved at last: its target and envelopes, its text kept only if still needed. */
  resolved(clientMessageId: string, encrypted: Encrypted): void {
    const now = this.#now();
    const text = keepsText(encrypted.target) ? 'body' : 'NULL';
    this.#db.prepare(`UPDATE outbox SET target = ?, envelopes = ?, body = ${text}, updated_at = ? WHERE client_message_id = ? AND status = 'inflight'`)
      .run(encrypted.target, JSON.stringify(encrypted.envelopes), now, clientMessageId);
    if (text === 'NULL') this.#scheduleCheckpoint();
  }

  /** A failed attempt: back to pending with backoff, or dead when permanent or out of attempts. */
  markFailed(clientMessageId: string, error: string, permanent: boolean): OutboxStatus | undefined {
    const raw = this.#byId.get(clientMessageId) as RawRow | undefined;
    if (raw === undefined || raw.status !== 'inflight') return raw?.status;
    const now = this.#now();
    const status: OutboxStatus = permanent || raw.attempts >= MAX_ATTEMPTS ? 'dead' : 'pending';
    const next = status === 'pending' ? now + retryDelayMs(raw.attempts, this.#backoffBaseMs) : raw.next_attempt_at;
    this.#db.prepare(`UPDATE outbox SET status = ?, next_attempt_at = ?, updated_at = ?, last_error = ? WHERE client_message_id = ?`)
      .run(status, next, now, error.slice(0, 500), clientMessageId);
    return status;
  }

  /** New envelopes for an inflight row (re-encrypted for a changed roster); pending again at once. */
  reencrypted(clientMessageId: string, envelopes: EnvelopeFrame[], why: string): void {
    const now = this.#now();
    this.#db.prepare(`UPDATE outbox SET envelopes = ?, status = 'pending', next_attempt_at = ?, updated_at = ?, last_error = ?
      WHERE client_message_id = ? AND status = 'inflight'`).run(JSON.stringify(envelopes), now, now, why.slice(0, 500), clientMessageId);
  }

  /** A claimed row that could not even be tried (its socket closed first): no attempt spent. */
  release(clientMessageId: string): void {
    const now = this.#now();
    this.#db.prepare(`UPDATE outbox SET status = 'pending', attempts = max(0, attempts - 1), next_attempt_at = ?, updated_at = ?
      WHERE client_message_id = ? AND status = 'inflight'`).run(now, now, clientMessageId);
  }

  /**
   * The connection of this sender key is gone for good (session ended, mesh left): its
   * pending rows can never leave (they never go through another key's socket), so they are
   * dead, visibly, with the reason. `requeue` brings one back if the key returns.
   */
  abandon(senderKey: string, why: string): number {
    const now = this.#now();
    return this.#db.prepare(`UPDATE outbox SET status = 'dead', updated_at = ?, last_error = ? WHERE sender_key = ? AND status IN ('pending', 'inflight')`)
      .run(now, why.slice(0, 500), senderKey).changes;
  }

  /** Dead → pending, attempts from zero, with the same stored target and envelopes. */
  requeue(clientMessageId: string): OutboxRow {
    const raw = this.#byId.get(clientMessageId) as RawRow | undefined;
    if (raw === undefined) throw cmError('CM_ERR_NOT_FOUND', `no outbox message with id ${JSON.stringify(clientMessageId)}`, { hint: 'claudemesh daemon outbox --status dead lists what can be requeued' });
    if (raw.status !== 'dead') {
      throw cmError('CM_ERR_OUTBOX_CONFLICT', `outbox message ${clientMessageId} is ${raw.status}, not dead: only dead messages are requeued`, { details: { status: raw.status } });
    }
    const now = this.#now();
    this.#db.prepare(`UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?, last_error = NULL WHERE client_message_id = ?`)
      .run(now, now, clientMessageId);
    return toRow(this.#byId.get(clientMessageId) as RawRow);
  }

  list(options: { status?: OutboxStatus; limit?: number } = {}): OutboxRow[] {
    const limit = Math.min(Math.max(1, options.limit ?? 50), MAX_LIST);
    const rows = options.status === undefined
      ? this.#db.prepare('SELECT * FROM outbox ORDER BY id DESC LIMIT ?').all(limit)
      : this.#db.prepare('SELECT * FROM outbox WHERE status = ? ORDER BY id DESC LIMIT ?').all(options.status, limit);
    return (rows as RawRow[]).map(toRow);
  }

  counts(): Record<OutboxStatus, number> {
    const counts: Record<OutboxStatus, number> = { pending: 0, inflight: 0, done: 0, dead: 0 };
    for (const row of this.#db.prepare('SELECT status, count(*) AS n FROM outbox GROUP BY status').all() as Array<{ status: OutboxStatus; n: number }>) {
      counts[row.status] = row.n;
    }
    return counts;
  }

  /** The earliest time a pending row of any sender falls due (for the outbox sender's sleep). */
  nextDueAt(): number | undefined {
    const row = this.#db.prepare(`SELECT min(next_attempt_at) AS at FROM outbox WHERE status = 'pending'`).get() as { at: number | null };
    return row.at ?? undefined;
  }

  /** Delete done rows older than `retentionMs` (their ciphertext has no further use). */
  prune(retentionMs = DONE_RETENTION_MS): number {
    return this.#db.prepare(`DELETE FROM outbox WHERE status = 'done' AND done_at < ?`).run(this.#now() - retentionMs).changes;
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
