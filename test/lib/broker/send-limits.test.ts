import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';

describe('send limits', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('send_limits', { env: { SEND_BURST: '3', SEND_RATE_PER_SECOND: '1' } });
  });
  after(() => t.close());

  it('rate-limits per member, across reconnects, with queued:false and a code', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [a, b] = mesh.members;
    const first = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    for (let i = 0; i < 2; i += 1) assert.equal((await first.send(b!.publicKey, [b!.publicKey], `m${i}`)).queued, true);
    await first.close();
    const again = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    assert.equal((await again.send(b!.publicKey, [b!.publicKey], 'm2')).queued, true);
    const limited = await again.send(b!.publicKey, [b!.publicKey], 'm3');
    assert.equal(limited.queued, false);
    assert.equal(limited.code, 'CM_ERR_RATE_LIMITED');
    assert.match(String(limited.message), /more than 3 messages/);
    await again.close();
  });

  it('answers a retry of a stored message as a duplicate even when the limits refuse new sends', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [a, b] = mesh.members;
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const envelope = { to: b!.publicKey, nonce: Buffer.alloc(24, 3).toString('base64'), ciphertext: Buffer.alloc(32, 4).toString('base64') };
    const frame = { type: 'send', clientMessageId: 'retry-me', target: b!.publicKey, priority: 'now', envelopes: [envelope] };
    const first = await peer.request(frame);
    assert.equal(first.queued, true);
    for (let i = 0; i < 3; i += 1) await peer.send(b!.publicKey, [b!.publicKey], `filler ${i}`);
    const retry = await peer.request(frame);
    assert.deepEqual([retry.queued, retry.messageId, retry.duplicate], [true, first.messageId, true]);
    const changed = await peer.request({ ...frame, priority: 'low' });
    assert.equal(changed.code, 'CM_ERR_IDEMPOTENCY_CONFLICT');
    await peer.close();
  });
});
