import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ftsQuery, Inbox, INBOX_RETENTION_MS } from '../../daemon/inbox.ts';
import type { IncomingMessage } from '../../daemon/inbox.ts';

const MEMBER = 'a'.repeat(64);
const SESSION = 'b'.repeat(64);
const SENDER = 'c'.repeat(64);

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

  it('marks seen once, scoped to the caller keys, and replays unseen after an id', () => {
    const inbox = new Inbox(join(dir, 'seen.db'), { now: () => clock });
    const first = inbox.insert(message({ brokerMessageId: 'x1' }));
    const second = inbox.insert(message({ brokerMessageId: 'x2' }));
    assert.ok(first !== undefined && second !== undefined);
    assert.deepEqual(inbox.markSeen([first.id], [SESSION]), [], 'not the caller’s row');
    assert.equal(inbox.markSeen([first.id]).length, 1);
    assert.equal(inbox.markSeen([first.id]).length, 0, 'seen once');
    assert.deepEqual(inbox.list({ unseenOnly: true }).map((r) => r.id), [second.id]);
    assert.deepEqual(inbox.list({ afterId: 0 }).map((r) => r.id), [first.id, second.id], 'replay is oldest first');
    const [read] = inbox.markRead([second.id]);
    assert.ok(read?.readAt !== null && read?.seenAt !== null, 'read implies seen');
    assert.equal(inbox.markRead([second.id]).length, 0, 'read once');
    assert.deepEqual(inbox.list({ unseenOnly: true }), []);
    inbox.close();
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
