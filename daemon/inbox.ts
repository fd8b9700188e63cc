// The daemon's inbox: every message pushed to one of this daemon's keys, decrypted, stored
// once. The broker pushes at least once (a push not acknowledged in time is sent again, and
// again after a reconnect), so the row is unique per (recipient key, broker message id): a
// second push of the same message to the same key is a no-op, while a broadcast reaching two
// local keys (the member and a session) is two rows, one for each key. Unique on the message
// id alone, the second key's copy would be dropped. The caller sends `client_ack` only after
// `insert` returned, i.e. after the commit.
//
// A body that does not decrypt is kept with `undecryptable = 1` and no body, never as garbage.
// `body_fts` indexes decrypted bodies (FTS5, external content). Rows older than the retention
// (30 days) are pruned.
//
// "Surfaced" is the inbox's word for "shown to the recipient" (e.g. emitted into a Claude
// session); "read" implies surfaced. The file carries its schema version in
// `PRAGMA user_version`: 0 is a file made before versioning, whose column was `seen_at`;
// opening it renames the column to `surfaced_at` in place, rows and marks kept. A file of a
// newer version than this code knows is refused rather than guessed at.

import Database from 'better-sqlite3';
import type { Database as SqliteDatabase, Statement } from 'better-sqlite3';
import { cmError } from '../lib/errors.ts';
import { restrictFiles } from './paths.ts';
import { decodeReply } from '../lib/reply.ts';

export const INBOX_RETENTION_MS = 30 * 24 * 3600 * 1000;
const BUSY_TIMEOUT_MS = 5_000;
const DEFAULT_LIST = 100;
const MAX_LIST = 1_000;
const SCHEMA_VERSION = 1;

type RecipientKind = 'member' | 'session';

export interface IncomingMessage {
  meshId: string;
  recipientKey: string;
  recipientKind: RecipientKind;
  brokerMessageId: string;
  clientMessageId: string;
  senderKey: string;
  senderMemberKey: string;
  senderName: string | null;
  target: string;
  priority: string;
  /** null when the envelope did not decrypt */
  body: string | null;
  /** broker's createdAt (ISO) */
  createdAt: string;
}

export interface InboxRow extends IncomingMessage {
  id: number;
  undecryptable: boolean;
  receivedAt: number;
  /** shown to the recipient (e.g. emitted into a Claude session) */
  surfacedAt: number | null;
  /** read by the recipient; implies surfaced */
  readAt: number | null;
  /** the message this one answers (lib/reply.ts: carried inside the sealed text) */
  replyTo: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS inbox (
  -- AUTOINCREMENT: ids never come back after a delete, so a stream's Last-Event-ID stays true
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  mesh_id TEXT NOT NULL,
  recipient_key TEXT NOT NULL,
  recipient_kind TEXT NOT NULL CHECK (recipient_kind IN ('member', 'session')),
  broker_message_id TEXT NOT NULL,
  client_message_id TEXT NOT NULL,
  sender_key TEXT NOT NULL,
  sender_member_key TEXT NOT NULL,
  sender_name TEXT,
  target TEXT NOT NULL,
  priority TEXT NOT NULL,
  body TEXT,
  undecryptable INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  surfaced_at INTEGER,
  read_at INTEGER,
  UNIQUE (recipient_key, broker_message_id)
);
CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_at);
CREATE INDEX IF NOT EXISTS inbox_recipient ON inbox (recipient_key, surfaced_at);
CREATE VIRTUAL TABLE IF NOT EXISTS inbox_fts USING fts5 (body, content = 'inbox', content_rowid = 'id');
CREATE TRIGGER IF NOT EXISTS inbox_fts_insert AFTER INSERT ON inbox WHEN new.body IS NOT NULL BEGIN
  INSERT INTO inbox_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER IF NOT EXISTS inbox_fts_delete AFTER DELETE ON inbox WHEN old.body IS NOT NULL BEGIN
  INSERT INTO inbox_fts (inbox_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
`;

/**
 * Bring the file to SCHEMA_VERSION in one transaction: a file from before versioning gets
 * its `seen_at` column renamed to `surfaced_at`; a new file gets the whole schema.
 */
function upgradeSchema(db: SqliteDatabase, path: string): void {
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw cmError('CM_ERR_DAEMON_DB_VERSION', `${path} has schema version ${version}; this claudemesh knows versions up to ${SCHEMA_VERSION}`, {
        details: { path, version, known: SCHEMA_VERSION },
      });
    }
    const columns = db.prepare("SELECT name FROM pragma_table_info('inbox')").all() as Array<{ name: string }>;
    if (columns.some((column) => column.name === 'seen_at')) db.exec('ALTER TABLE inbox RENAME COLUMN seen_at TO surfaced_at');
    db.exec(SCHEMA);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

interface RawRow {
  id: number;
  mesh_id: string;
  recipient_key: string;
  recipient_kind: RecipientKind;
  broker_message_id: string;
  client_message_id: string;
  sender_key: string;
  sender_member_key: string;
  sender_name: string | null;
  target: string;
  priority: string;
  body: string | null;
  undecryptable: number;
  created_at: string;
  received_at: number;
  surfaced_at: number | null;
  read_at: number | null;
}

function toRow(raw: RawRow): InboxRow {
  const reply = raw.body === null ? { text: null, replyTo: null } : decodeReply(raw.body);
  return {
    id: raw.id,
    meshId: raw.mesh_id,
    recipientKey: raw.recipient_key,
    recipientKind: raw.recipient_kind,
    brokerMessageId: raw.broker_message_id,
    clientMessageId: raw.client_message_id,
    senderKey: raw.sender_key,
    senderMemberKey: raw.sender_member_key,
    senderName: raw.sender_name,
    target: raw.target,
    priority: raw.priority,
    body: reply.text,
    replyTo: reply.replyTo,
    undecryptable: raw.undecryptable === 1,
    createdAt: raw.created_at,
    receivedAt: raw.received_at,
    surfacedAt: raw.surfaced_at,
    readAt: raw.read_at,
  };
}

export interface InboxQuery {
  /** only rows addressed to these keys (a session sees its own key and its member's) */
  recipientKeys?: readonly string[];
  meshId?: string;
  /** only rows not surfaced yet */
  unsurfacedOnly?: boolean;
  /** FTS5 query over decrypted bodies; words are quoted, so punctuation is never syntax */
  search?: string;
  /** only rows with id greater than this (replay after a reconnect) */
  afterId?: number;
  limit?: number;
}

/** Quote every word so user text is searched, never parsed as FTS5 syntax. */
export function ftsQuery(text: string): string {
  const words = text.split(/\s+/).filter((word) => word !== '');
  return words.map((word) => `"${word.replaceAll('"', '""')}"`).join(' ');
}

export class Inbox {
  readonly #db: SqliteDatabase;
  readonly #now: () => number;
  readonly #insert: Statement;
  readonly #byKey: Statement;
  readonly #byId: Statement;
  readonly #markSurfaced: Statement;
  readonly #markRead: Statement;

  constructor(path: string, options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
    this.#db.pragma('journal_mode = WAL');
    // FULL as well: the client_ack that follows an insert tells the broker to stop keeping it.
    this.#db.pragma('synchronous = FULL');
    upgradeSchema(this.#db, path);
    restrictFiles(path);
    this.#insert = this.#db.prepare(`INSERT INTO inbox (mesh_id, recipient_key, recipient_kind, broker_message_id, client_message_id,
      sender_key, sender_member_key, sender_name, target, priority, body, undecryptable, created_at, received_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recipient_key, broker_message_id) DO NOTHING`);
    this.#byKey = this.#db.prepare('SELECT * FROM inbox WHERE recipient_key = ? AND broker_message_id = ?');
    this.#byId = this.#db.prepare('SELECT * FROM inbox WHERE id = ?');
    this.#markSurfaced = this.#db.prepare('UPDATE inbox SET surfaced_at = ? WHERE id = ? AND surfaced_at IS NULL');
    this.#markRead = this.#db.prepare('UPDATE inbox SET read_at = ?, surfaced_at = coalesce(surfaced_at, ?) WHERE id = ? AND read_at IS NULL');
  }

  /** Store a pushed message; returns the new row, or undefined when it was already here. */
  insert(message: IncomingMessage): InboxRow | undefined {
    const result = this.#insert.run(message.meshId, message.recipientKey, message.recipientKind, message.brokerMessageId,
      message.clientMessageId, message.senderKey, message.senderMemberKey, message.senderName, message.target, message.priority,
      message.body, message.body === null ? 1 : 0, message.createdAt, this.#now());
    if (result.changes === 0) return undefined;
    return toRow(this.#byKey.get(message.recipientKey, message.brokerMessageId) as RawRow);
  }

  list(query: InboxQuery = {}): InboxRow[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.recipientKeys !== undefined) {
      if (query.recipientKeys.length === 0) return [];
      where.push(`inbox.recipient_key IN (${query.recipientKeys.map(() => '?').join(', ')})`);
      params.push(...query.recipientKeys);
    }
    if (query.meshId !== undefined) {
      where.push('inbox.mesh_id = ?');
      params.push(query.meshId);
    }
    if (query.unsurfacedOnly === true) where.push('inbox.surfaced_at IS NULL');
    if (query.afterId !== undefined) {
      where.push('inbox.id > ?');
      params.push(query.afterId);
    }
    let from = 'inbox';
    const search = query.search === undefined ? '' : ftsQuery(query.search);
    if (search !== '') {
      from = 'inbox JOIN inbox_fts ON inbox_fts.rowid = inbox.id';
      where.push('inbox_fts MATCH ?');
      params.push(search);
    }
    const limit = Math.min(Math.max(1, query.limit ?? DEFAULT_LIST), MAX_LIST);
    // Oldest first when replaying after an id; newest first for a listing.
    const order = query.afterId !== undefined ? 'ASC' : 'DESC';
    const sql = `SELECT inbox.* FROM ${from}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY inbox.id ${order} LIMIT ?`;
    return (this.#db.prepare(sql).all(...params, limit) as RawRow[]).map(toRow);
  }

  get(id: number): InboxRow | undefined {
    const raw = this.#byId.get(id) as RawRow | undefined;
    return raw === undefined ? undefined : toRow(raw);
  }

  /** Stamp rows as surfaced (only those not surfaced yet); returns the rows that changed. */
  markSurfaced(ids: readonly number[], recipientKeys?: readonly string[]): InboxRow[] {
    return this.#stamp(ids, recipientKeys, (row, now) =>
      this.#markSurfaced.run(now, row.id).changes === 1 ? { ...row, surfacedAt: now } : undefined);
  }

  /** Stamp rows as read (and surfaced, if not yet); returns the rows that changed. */
  markRead(ids: readonly number[], recipientKeys?: readonly string[]): InboxRow[] {
    return this.#stamp(ids, recipientKeys, (row, now) =>
      this.#markRead.run(now, now, row.id).changes === 1 ? { ...row, surfacedAt: row.surfacedAt ?? now, readAt: now } : undefined);
  }

  /** One transaction over the rows the caller may touch (its recipient keys, if scoped). */
  #stamp(ids: readonly number[], recipientKeys: readonly string[] | undefined, apply: (row: InboxRow, now: number) => InboxRow | undefined): InboxRow[] {
    const run = this.#db.transaction((): InboxRow[] => {
      const now = this.#now();
      const changed: InboxRow[] = [];
      for (const id of ids) {
        const row = this.get(id);
        if (row === undefined) continue;
        if (recipientKeys !== undefined && !recipientKeys.includes(row.recipientKey)) continue;
        const stamped = apply(row, now);
        if (stamped !== undefined) changed.push(stamped);
      }
      return changed;
    });
    return run.immediate();
  }

  delete(ids: readonly number[]): number {
    const statement = this.#db.prepare('DELETE FROM inbox WHERE id = ?');
    return this.#db.transaction(() => ids.reduce((sum, id) => sum + statement.run(id).changes, 0)).immediate();
  }

  /** Delete rows received longer ago than the retention. */
  prune(retentionMs = INBOX_RETENTION_MS): number {
    return this.#db.prepare('DELETE FROM inbox WHERE received_at < ?').run(this.#now() - retentionMs).changes;
  }

  count(): number {
    return (this.#db.prepare('SELECT count(*) AS n FROM inbox').get() as { n: number }).n;
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
