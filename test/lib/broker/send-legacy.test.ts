// A retry that crosses the upgrade to migration 005: the first copy was stored with a random
// id (a `legacy` row); the retry derives another id, and must still be answered as the
// message already stored, not stored again (lib/broker/send.ts, #legacyPossible).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';

const LEGACY_ID = '0badc0de-0000-4000-8000-000000000005';

describe('a retry of a message stored before migration 005', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('send_legacy');
  });
  after(() => t.close());

  it('is answered with the stored message (or a conflict when it changed), and stores nothing new', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const envelope = { to: bob.publicKey, nonce: Buffer.alloc(24, 3).toString('base64'), ciphertext: Buffer.alloc(40, 4).toString('base64') };
    // The fingerprint the broker keeps: SHA-256 of [target, priority, [[to, nonce, ciphertext]]].
    const fingerprint = createHash('sha256').update(JSON.stringify([bob.publicKey, 'now', [[envelope.to, envelope.nonce, envelope.ciphertext]]])).digest('hex');
    // Before the broker's first send: it asks once whether legacy rows exist.
    await t.db.pool.query(`INSERT INTO deliveries (message_id, mesh_id, recipient_key, priority, nonce, ciphertext, sender_key, sender_member_key,
        client_message_id, fingerprint, target, hops, expires_at, legacy, state, delivered_at)
      VALUES ($1, $2, $3, 'now', $4, $5, $6, $6, 'sent-before-005', $7, $3, 0, now() + interval '1 day', true, 'delivered', now())`,
    [LEGACY_ID, mesh.meshId, bob.publicKey, Buffer.from(envelope.nonce, 'base64'), Buffer.from(envelope.ciphertext, 'base64'), alice.publicKey, fingerprint]);
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    const retry = await sender.request({ type: 'send', clientMessageId: 'sent-before-005', target: bob.publicKey, priority: 'now', envelopes: [envelope] });
    assert.equal(retry.queued, true);
    assert.equal(retry.duplicate, true);
    assert.equal(retry.messageId, LEGACY_ID);
    const changed = await sender.request({ type: 'send', clientMessageId: 'sent-before-005', target: bob.publicKey, priority: 'next', envelopes: [envelope] });
    assert.equal(changed.code, 'CM_ERR_IDEMPOTENCY_CONFLICT');
    const { rows } = await t.db.pool.query('SELECT message_id FROM deliveries WHERE client_message_id = $1', ['sent-before-005']);
    assert.deepEqual(rows, [{ message_id: LEGACY_ID }], 'nothing stored again');
    await sender.close();
  });
});
