import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ftsQuery, Inbox, INBOX_RETENTION_MS } from '../../daemon/inbox.ts';
import type { IncomingMessage } from '../../daemon/inbox.ts';

const MEMBER = 'a'.repeat(64);
const SESSION = 'b'.repeat(64);
const SENDER = 'c'.repeat(64);
// inbox.db as the daemon made it before the file carried a schema version.
const SCHEMA_BEFORE_VERSIONS = `
CREATE TABLE inbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, mesh_id TEXT NOT NULL, recipient_key TEXT NOT NULL,
  recipient_kind TEXT NOT NULL CHECK (recipient_kind IN ('member', 'session')), broker_message_id TEXT NOT NULL,
  client_message_id TEXT NOT NULL, sender_key TEXT NOT NULL, sender_member_key TEXT NOT NULL, sender_name TEXT,
  target TEXT NOT NULL, priority TEXT NOT NULL, body TEXT, undecryptable INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, received_at INTEGER NOT NULL, seen_at INTEGER, read_at INTEGER,
  UNIQUE (recipient_key, broker_message_id)
);
CREATE INDEX inbox_received ON inbox (received_at);
CREATE INDEX inbox_recipient ON inbox (recipient_key, seen_at);
CREATE VIRTUAL TABLE inbox_fts USING fts5 (body, content = 'inbox', content_rowid = 'id');
CREATE TRIGGER inbox_fts_insert AFTER INSERT ON inbox WHEN new.body IS NOT NULL BEGIN
  INSERT INTO inbox_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER inbox_fts_delete AFTER DELETE ON inbox WHEN old.body IS NOT NULL BEGIN
  INSERT INTO inbox_fts (inbox_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
`;

function message(overrides: Partial<IncomingMessage> = {}): IncomingMessage {
  return {
    meshId: 'mesh-0001', recipientKey: MEMBER, recipientKind: 'member', brokerMessageId: 'm-1', clientMessageId: 'c-1',
    senderKey: SENDER, senderMemberKey: SENDER, senderName: 'alice', target: MEMBER, priority: 'now',
    body: 'the deploy is green', createdAt: new Date(0).toISOString(), ...overrides,
  };
}

describe('Inbox', () => {
  let dir: string;
  let clock = 5_000_000;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cm-inbox-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stores a message once per (recipient key, broker message id)', () => {
    const inbox = new Inbox(join(dir, 'unique.db'), { now: () => clock });
    const row = inbox.insert(message());
    assert.equal(row?.body, 'the deploy is green');
    assert.equal(inbox.insert(message()), undefined, 'a re-push is a no-op');
    const sibling = inbox.insert(message({ recipientKey: SESSION, recipientKind: 'session' }));
    assert.ok(sibling !== undefined, 'the same broadcast to another local key is its own row');
    assert.equal(inbox.count(), 2);
    assert.deepEqual(inbox.list({ recipientKeys: [SESSION] }).map((r) => r.id), [sibling.id]);
    inbox.close();
  });

  it('keeps an undecryptable message flagged, without a body', () => {
    const inbox = new Inbox(join(dir, 'flag.db'), { now: () => clock });
    const row = inbox.insert(message({ body: null, brokerMessageId: 'm-bad' }));
    assert.equal(row?.undecryptable, true);
    assert.equal(row?.body, null);
    inbox.close();
  });

  it('searches decrypted bodies with FTS5, treating the query as words', () => {
    const inbox = new Inbox(join(dir, 'fts.db'), { now: () => clock });
    inbox.insert(message({ brokerMessageId: 'a', body: 'deploy failed on staging' }));
    inbox.insert(message({ brokerMessageId: 'b', body: 'lunch?' }));
    inbox.insert(message({ brokerMessageId: 'c', body: null }));
    assert.deepEqual(inbox.list({ search: 'staging' }).map((r) => r.brokerMessageId), ['a']);
    assert.deepEqual(inbox.list({ search: 'lunch? "' }).map((r) => r.brokerMessageId), ['b'], 'punctuation is not syntax');
    assert.equal(ftsQuery('a "b'), '"a" """b"');
    inbox.delete([inbox.list({ search: 'staging' })[0]?.id ?? 0]);
    assert.deepEqual(inbox.list({ search: 'staging' }), [], 'a deleted row leaves the index');
    inbox.close();
  });

  it('marks surfaced once, scoped to the caller keys, and replays what is not surfaced after an id', () => {
    const inbox = new Inbox(join(dir, 'surfaced.db'), { now: () => clock });
    const first = inbox.insert(message({ brokerMessageId: 'x1' }));
    const second = inbox.insert(message({ brokerMessageId: 'x2' }));
    assert.ok(first !== undefined && second !== undefined);
    assert.deepEqual(inbox.markSurfaced([first.id], [SESSION]), [], 'not the caller’s row');
    assert.equal(inbox.markSurfaced([first.id]).length, 1);
    assert.equal(inbox.markSurfaced([first.id]).length, 0, 'surfaced once');
    assert.deepEqual(inbox.list({ unsurfacedOnly: true }).map((r) => r.id), [second.id]);
    assert.deepEqual(inbox.list({ afterId: 0 }).map((r) => r.id), [first.id, second.id], 'replay is oldest first');
    const [read] = inbox.markRead([second.id]);
    assert.ok(read?.readAt !== null && read?.surfacedAt !== null, 'read implies surfaced');
    assert.equal(inbox.markRead([second.id]).length, 0, 'read once');
    assert.deepEqual(inbox.list({ unsurfacedOnly: true }), []);
    inbox.close();
  });

  it('upgrades a file made before schema versions (seen_at) in place, keeping rows and marks', () => {
    const path = join(dir, 'before-versions.db');
    const old = new Database(path);
    old.exec(SCHEMA_BEFORE_VERSIONS);
    const insert = old.prepare(`INSERT INTO inbox (mesh_id, recipient_key, recipient_kind, broker_message_id, client_message_id, sender_key,
      sender_member_key, sender_name, target, priority, body, created_at, received_at, seen_at, read_at) VALUES (?, ?, 'member', ?, ?, ?, ?, 'alice', ?, 'now', ?, ?, ?, ?, ?)`);
    insert.run('mesh-0001', MEMBER, 'm-old-1', 'c-old-1', SENDER, SENDER, MEMBER, 'surfaced before the upgrade', 'x', clock, clock + 1, null);
    insert.run('mesh-0001', MEMBER, 'm-old-2', 'c-old-2', SENDER, SENDER, MEMBER, 'never surfaced', 'x', clock, null, null);
    old.close();

    const inbox = new Inbox(path, { now: () => clock });
    const rows = inbox.list({ afterId: 0 });
    assert.deepEqual(rows.map((row) => [row.brokerMessageId, row.surfacedAt]), [['m-old-1', clock + 1], ['m-old-2', null]]);
    assert.deepEqual(inbox.list({ unsurfacedOnly: true }).map((row) => row.brokerMessageId), ['m-old-2']);
    assert.deepEqual(inbox.list({ search: 'upgrade' }).map((row) => row.brokerMessageId), ['m-old-1'], 'the full-text index still answers');
    assert.equal(inbox.markSurfaced([rows[1]?.id ?? 0]).length, 1);
    inbox.close();

    const check = new Database(path, { readonly: true });
    assert.equal(check.pragma('user_version', { simple: true }), 1);
    const columns = (check.prepare("SELECT name FROM pragma_table_info('inbox')").all() as Array<{ name: string }>).map((column) => column.name);
    assert.ok(columns.includes('surfaced_at') && !columns.includes('seen_at'), columns.join(', '));
    check.close();
    const again = new Inbox(path, { now: () => clock });
    assert.equal(again.count(), 2, 'opening an upgraded file again changes nothing');
    again.close();
  });

  it('refuses a file of a newer schema version, naming the file and both versions', () => {
    const path = join(dir, 'newer.db');
    const newer = new Database(path);
    newer.pragma('user_version = 7');
    newer.close();
    assert.throws(() => new Inbox(path), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'CM_ERR_DAEMON_DB_VERSION');
      assert.match(error.message, /newer\.db has schema version 7; this claudemesh knows versions up to 1/);
      return true;
    });
  });

  it('prunes rows older than the retention', () => {
    const inbox = new Inbox(join(dir, 'prune.db'), { now: () => clock });
    inbox.insert(message({ brokerMessageId: 'old' }));
    clock += INBOX_RETENTION_MS + 1;
    inbox.insert(message({ brokerMessageId: 'new' }));
    assert.equal(inbox.prune(), 1);
    assert.deepEqual(inbox.list().map((r) => r.brokerMessageId), ['new']);
    inbox.close();
  });
});
