import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BrokerLink } from '../../daemon/broker-link.ts';
import type { Frame } from '../../daemon/broker-link.ts';
import { EventRing } from '../../daemon/events.ts';
import { Inbox } from '../../daemon/inbox.ts';
import { receivePush } from '../../daemon/receive.ts';
import { encryptFor } from '../../daemon/router.ts';
import { generateKeyPair } from '../../lib/crypto.ts';

const me = generateKeyPair();
const alice = generateKeyPair();

describe('receivePush', () => {
  let dir: string;
  let inbox: Inbox;
  const events = new EventRing();
  const link = new BrokerLink({ brokerUrl: 'http://127.0.0.1:9', identity: { meshId: 'mesh-recv-01', memberKey: me.publicKey, memberSecret: me.secretKey } });
  const acked: Array<{ ids: unknown; storedBefore: boolean }> = [];
  link.notify = (frame: Frame) => {
    const ids = frame.messageIds as string[];
    acked.push({ ids, storedBefore: inbox.list().some((row) => row.brokerMessageId === ids[0]) });
    return true;
  };
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cm-recv-'));
    inbox = new Inbox(join(dir, 'inbox.db'));
  });
  after(async () => {
    inbox.close();
    await rm(dir, { recursive: true, force: true });
  });

  function push(messageId: string, envelope: Record<string, unknown>): Frame {
    return { type: 'push', messageId, meshId: 'mesh-recv-01', senderKey: alice.publicKey, senderMemberKey: alice.publicKey, target: me.publicKey, priority: 'now', envelope, createdAt: new Date(0).toISOString(), clientMessageId: `c-${messageId}` };
  }
  const deliver = (frame: Frame) => receivePush({ link, meshId: 'mesh-recv-01', frame, inbox, events, now: Date.now });

  it('decrypts, stores, and acknowledges only after the row is stored', () => {
    const [envelope] = encryptFor('hello from alice', [me.publicKey], alice.secretKey);
    deliver(push('m-1', { nonce: envelope?.nonce, ciphertext: envelope?.ciphertext }));
    assert.equal(inbox.list()[0]?.body, 'hello from alice');
    assert.equal(inbox.list()[0]?.recipientKind, 'member');
    assert.deepEqual(acked.at(-1), { ids: ['m-1'], storedBefore: true });
    assert.equal(events.list().at(-1)?.kind, 'message');
  });

  it('acknowledges a duplicate push again without storing it twice', () => {
    const [envelope] = encryptFor('hello from alice', [me.publicKey], alice.secretKey);
    deliver(push('m-1', { nonce: envelope?.nonce, ciphertext: envelope?.ciphertext }));
    assert.equal(inbox.count(), 1);
    assert.deepEqual(acked.at(-1)?.ids, ['m-1']);
  });

  it('keeps an envelope that does not decrypt, flagged', () => {
    const [forSomeoneElse] = encryptFor('not for me', [generateKeyPair().publicKey], alice.secretKey);
    deliver(push('m-2', { nonce: forSomeoneElse?.nonce, ciphertext: forSomeoneElse?.ciphertext }));
    const row = inbox.list().find((each) => each.brokerMessageId === 'm-2');
    assert.equal(row?.undecryptable, true);
    assert.equal(row?.body, null);
  });

  it('ignores a malformed push and says so', () => {
    deliver({ type: 'push', messageId: 42 });
    assert.equal(events.list().at(-1)?.kind, 'push_malformed');
    assert.equal(inbox.count(), 2);
  });
});
