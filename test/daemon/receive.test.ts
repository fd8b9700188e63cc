import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BrokerLink } from '../../daemon/broker-link.ts';
// Frames as a scripted broker writes them (the link parses them with lib/protocol.ts).
type Frame = Record<string, any>;
import { EventRing } from '../../daemon/events.ts';
import { Inbox } from '../../daemon/inbox.ts';
import { receivePush } from '../../daemon/receive.ts';
import { encryptFor } from '../../daemon/router.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import { parseServerFrame } from '../../lib/protocol.ts';
import type { PushFrame } from '../../lib/protocol.ts';

const me = generateKeyPair();
const alice = generateKeyPair();

describe('receivePush', () => {
  let dir: string;
  let inbox: Inbox;
  const events = new EventRing();
  const link = new BrokerLink({ brokerUrl: 'http://127.0.0.1:9', identity: { meshId: 'mesh-recv-01', memberKey: me.publicKey, memberSecret: me.secretKey } });
  const acked: Array<{ ids: unknown; storedBefore: boolean }> = [];
  link.notify = (frame) => {
    const ids = (frame as { messageIds: string[] }).messageIds;
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
    return { type: 'push', messageId, meshId: 'mesh-recv-01', senderKey: alice.publicKey, senderMemberKey: alice.publicKey, target: me.publicKey, priority: 'now', envelope, createdAt: new Date(0).toISOString(), clientMessageId: `c-${messageId}`, hops: 0 };
  }
  // Through the parser the link uses: receivePush only ever sees a push that fits the contract.
  const deliver = (frame: Frame) => receivePush({ link, meshId: 'mesh-recv-01', frame: parseServerFrame(JSON.stringify(frame)) as PushFrame, inbox, events, now: Date.now });
  const M1 = randomUUID();
  const M2 = randomUUID();

  it('decrypts, stores, and acknowledges only after the row is stored', () => {
    const [envelope] = encryptFor('hello from alice', [me.publicKey], alice.secretKey);
    deliver(push(M1, { nonce: envelope?.nonce, ciphertext: envelope?.ciphertext }));
    assert.equal(inbox.list()[0]?.body, 'hello from alice');
    assert.equal(inbox.list()[0]?.recipientKind, 'member');
    assert.deepEqual(acked.at(-1), { ids: [M1], storedBefore: true });
    assert.equal(events.list().at(-1)?.kind, 'message');
  });

  it('acknowledges a duplicate push again without storing it twice', () => {
    const [envelope] = encryptFor('hello from alice', [me.publicKey], alice.secretKey);
    deliver(push(M1, { nonce: envelope?.nonce, ciphertext: envelope?.ciphertext }));
    assert.equal(inbox.count(), 1);
    assert.deepEqual(acked.at(-1)?.ids, [M1]);
  });

  it('keeps an envelope that does not decrypt, flagged', () => {
    const [forSomeoneElse] = encryptFor('not for me', [generateKeyPair().publicKey], alice.secretKey);
    deliver(push(M2, { nonce: forSomeoneElse?.nonce, ciphertext: forSomeoneElse?.ciphertext }));
    const row = inbox.list().find((each) => each.brokerMessageId === M2);
    assert.equal(row?.undecryptable, true);
    assert.equal(row?.body, null);
  });

  it('never sees a malformed push: the parser refuses it, naming the field', () => {
    assert.throws(() => deliver({ type: 'push', messageId: 42 }), (error: Error & { code?: string }) => error.code === 'CM_ERR_BAD_FRAME' && /messageId/.test(error.message));
    assert.equal(inbox.count(), 2);
  });
});
