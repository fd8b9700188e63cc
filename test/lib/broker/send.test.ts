import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { generateKeyPair } from '../../../lib/crypto.ts';
import { query } from '../../../lib/broker/db.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { recipientsOf, seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { Frame } from '../../helpers/peer.ts';
import { waitUntil } from '../../helpers/wait.ts';

const settle = (ms = 100) => new Promise((resolve) => setTimeout(resolve, ms));

describe('send and delivery', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('send', { timings: { redeliveryTickMs: 100, claimMs: 300 } });
  });
  after(() => t.close());

  it('stores a message for an offline recipient; it arrives once on connect and stays delivered after the ack', async () => {
    const mesh = await seedMesh(t.db.pool, 2, ['alice', 'bob']);
    const alice = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]! });
    const bob = mesh.members[1]!;
    const ack = await alice.send(bob.publicKey, [bob.publicKey], 'hello bob, you were away');
    assert.equal(ack.type, 'ack');
    assert.equal(ack.queued, true);
    assert.equal(ack.recipients, 1);
    assert.match(ack.messageId, /^[0-9a-f-]{36}$/);

    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    const push = await receiver.waitFor((frame) => frame.type === 'push');
    assert.equal(push.messageId, ack.messageId);
    assert.equal(push.senderKey, alice.key);
    assert.equal(push.senderMemberKey, alice.key);
    assert.equal(push.meshId, mesh.meshId);
    assert.equal(push.priority, 'now');
    assert.equal(typeof push.clientMessageId, 'string');
    assert.equal(receiver.read(push), 'hello bob, you were away');
    receiver.clientAck([push.messageId]);
    await settle(200);
    await receiver.close();

    const again = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    await settle(400);
    assert.equal(again.pushes().length, 0, 'an acked message is not pushed again');
    const status = await alice.request({ type: 'message_status', messageId: ack.messageId });
    assert.equal(status.recipients[0].state, 'delivered');
    assert.ok(status.recipients[0].deliveredAt);
    await again.close();
    await alice.close();
  });

  it('pushes a live recipient at once, and re-pushes until acked when the receiver crashed before acking', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [a, b] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const first = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b! });
    const ack = await sender.send(b!.publicKey, [b!.publicKey], 'do not lose me');
    const push = await first.waitFor((frame) => frame.type === 'push');
    assert.equal(push.messageId, ack.messageId);
    first.crash();
    await settle(50);
    const second = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b! });
    const redelivered = await second.waitFor((frame) => frame.type === 'push');
    assert.equal(redelivered.messageId, ack.messageId);
    assert.equal(second.read(redelivered), 'do not lose me');
    // Without an ack the lease runs out and the redelivery tick pushes it again.
    const third = await second.waitFor((frame) => frame.type === 'push' && frame !== redelivered, 3_000);
    assert.equal(third.messageId, ack.messageId);
    second.clientAck([ack.messageId]);
    await settle(300);
    const count = second.pushes().length;
    await settle(700);
    assert.equal(second.pushes().length, count, 'no more pushes after the ack');
    await second.close();
    await sender.close();
  });

  it('broadcasts to every online and offline member, and to nobody outside the mesh', async () => {
    const mesh = await seedMesh(t.db.pool, 4);
    const outsider = await seedMesh(t.db.pool, 1);
    const [a, b, c, d] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const online = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b! });
    const session = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: c!, session: generateKeyPair() });
    const stranger = await TestPeer.connect(t.wsUrl, { meshId: outsider.meshId, member: outsider.members[0]! });
    const roster = await sender.request({ type: 'list_peers' });
    const recipients = recipientsOf(roster, '*', sender.key);
    assert.equal(recipients.length, 3, 'members b, c, d');
    const ack = await sender.send('*', [...recipients, session.key], 'to everyone');
    assert.equal(ack.queued, true);
    assert.equal(ack.recipients, 4);
    assert.equal(online.read(await online.waitFor((f) => f.type === 'push')), 'to everyone');
    assert.equal(session.read(await session.waitFor((f) => f.type === 'push')), 'to everyone');
    const offline = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: d! });
    const late = await offline.waitFor((f) => f.type === 'push');
    assert.equal(late.target, '*');
    assert.equal(offline.read(late), 'to everyone');
    await settle(200);
    assert.equal(stranger.pushes().length, 0);
    assert.equal(sender.pushes().length, 0, 'the sender does not get its own broadcast');
    const missing = await sender.send('*', recipients.slice(1), 'forgot one');
    assert.equal(missing.queued, false);
    assert.equal(missing.code, 'CM_ERR_ENVELOPES_MISMATCH');
    assert.deepEqual(missing.details.missing, [recipients[0]]);
    for (const peer of [sender, online, session, offline, stranger]) await peer.close();
  });

  it('refuses to route into another mesh or to an unknown key', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const outsider = await seedMesh(t.db.pool, 1);
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]! });
    const foreignKey = outsider.members[0]!.publicKey;
    const refused = await sender.send(foreignKey, [foreignKey], 'leak?');
    assert.equal(refused.queued, false);
    assert.equal(refused.code, 'CM_ERR_UNKNOWN_RECIPIENT');
    const smuggled = await sender.send(mesh.members[1]!.publicKey, [mesh.members[1]!.publicKey, foreignKey], 'extra envelope');
    assert.equal(smuggled.code, 'CM_ERR_UNKNOWN_RECIPIENT');
    const count = await t.db.pool.query('SELECT count(*)::int AS n FROM deliveries WHERE recipient_key = $1', [foreignKey]);
    assert.equal(count.rows[0]?.n, 0);
    await sender.close();
  });

  it('answers a retried send with the original message id, and a changed retry with idempotency_conflict', async () => {
    const mesh = await seedMesh(t.db.pool, 3);
    const [a, b, c] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const clientMessageId = randomUUID();
    const envelope = { to: b!.publicKey, nonce: Buffer.alloc(24, 1).toString('base64'), ciphertext: Buffer.alloc(40, 2).toString('base64') };
    const sendOnce = () => sender.request({ type: 'send', clientMessageId, target: b!.publicKey, priority: 'now', envelopes: [envelope] });
    const [one, two] = await Promise.all([sendOnce(), sendOnce()]);
    const three = await sendOnce();
    assert.equal(one.queued, true);
    assert.equal(two.messageId, one.messageId);
    assert.equal(three.messageId, one.messageId);
    assert.equal(three.duplicate, true);
    const changed = await sender.request({ type: 'send', clientMessageId, target: b!.publicKey, priority: 'next', envelopes: [envelope] });
    assert.equal(changed.queued, false);
    assert.equal(changed.code, 'CM_ERR_IDEMPOTENCY_CONFLICT');
    // The same client id for other recipients: to c alone, then to everyone (b's row is taken,
    // c's would be new): both conflicts, and c is never written.
    const toCarol = { ...envelope, to: c!.publicKey };
    const elsewhere = await sender.request({ type: 'send', clientMessageId, target: c!.publicKey, priority: 'now', envelopes: [toCarol] });
    assert.equal(elsewhere.code, 'CM_ERR_IDEMPOTENCY_CONFLICT');
    const wider = await sender.request({ type: 'send', clientMessageId, target: '*', priority: 'now', envelopes: [envelope, toCarol] });
    assert.equal(wider.code, 'CM_ERR_IDEMPOTENCY_CONFLICT');
    const rows = await t.db.pool.query('SELECT message_id, recipient_key FROM deliveries WHERE client_message_id = $1', [clientMessageId]);
    assert.deepEqual(rows.rows, [{ message_id: one.messageId, recipient_key: b!.publicKey }]);
    await sender.close();
  });

  it('knows a retry whose envelopes come in another order, and a retry after the recipient acked, without touching the stored rows', async () => {
    const mesh = await seedMesh(t.db.pool, 3);
    const [a, b, c] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b! });
    const clientMessageId = randomUUID();
    const envelopeFor = (to: string, fill: number) => ({ to, nonce: Buffer.alloc(24, fill).toString('base64'), ciphertext: Buffer.alloc(40, fill).toString('base64') });
    const [toBob, toCarol] = [envelopeFor(b!.publicKey, 1), envelopeFor(c!.publicKey, 2)];
    const sendAll = (envelopes: object[]) => sender.request({ type: 'send', clientMessageId, target: '*', priority: 'now', envelopes });
    const first = await sendAll([toBob, toCarol]);
    assert.equal(first.queued, true);
    const push = await receiver.waitFor((frame) => frame.type === 'push' && frame.messageId === first.messageId);
    receiver.clientAck([String(push.messageId)]);
    await waitUntil('bob acked', async () => (await t.db.pool.query('SELECT state FROM deliveries WHERE message_id = $1 AND recipient_key = $2', [first.messageId, b!.publicKey])).rows[0]?.state === 'delivered');
    // Carol's envelope first: its row would be the first row of the retry, and bob's a second
    // row beside his stored one, written and taken out again in the retry's transaction.
    const reordered = await sendAll([toCarol, toBob]);
    assert.deepEqual([reordered.messageId, reordered.duplicate], [first.messageId, true]);
    const changed = await sendAll([toCarol, envelopeFor(b!.publicKey, 3)]);
    assert.equal(changed.code, 'CM_ERR_IDEMPOTENCY_CONFLICT');
    const rows = await t.db.pool.query('SELECT recipient_key, state FROM deliveries WHERE message_id = $1 ORDER BY recipient_key', [first.messageId]);
    assert.deepEqual(rows.rows, [{ recipient_key: b!.publicKey, state: 'delivered' }, { recipient_key: c!.publicKey, state: 'queued' }].sort((x, y) => x.recipient_key.localeCompare(y.recipient_key)));
    await sender.close();
    await receiver.close();
  });

  it('holds next while the recipient works and releases it when the recipient turns idle', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [a, b] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b!, session: generateKeyPair() });
    const working = await receiver.request({ type: 'set_status', status: 'working' });
    assert.equal(working.status, 'working');
    const held = await sender.send(receiver.key, [receiver.key], 'when you have a moment', { priority: 'next' });
    const urgent = await sender.send(receiver.key, [receiver.key], 'now please', { priority: 'now' });
    const urgentPush = await receiver.waitFor((f) => f.type === 'push');
    assert.equal(urgentPush.messageId, urgent.messageId);
    receiver.clientAck([urgent.messageId]);
    await settle(400);
    assert.deepEqual(receiver.pushes().map((f) => [f.messageId, f.priority]), [[urgent.messageId, 'now']], 'next is held while working');
    await receiver.request({ type: 'set_status', status: 'idle' });
    const released = await receiver.waitFor((f) => f.type === 'push' && f.messageId === held.messageId);
    assert.equal(receiver.read(released), 'when you have a moment');
    await receiver.close();
    await sender.close();
  });

  it('routes @group hierarchically, to live and offline group members', async () => {
    const mesh = await seedMesh(t.db.pool, 3);
    const [a, b, c] = mesh.members;
    const backend = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b!, session: generateKeyPair(), groups: ['team/backend'] });
    const frontendKey = generateKeyPair();
    const frontend = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: c!, session: frontendKey, groups: ['team/frontend'] });
    await frontend.close();
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const roster = await sender.request({ type: 'list_peers' });
    const team = recipientsOf(roster, '@team', sender.key);
    assert.equal(team.length, 2);
    const ack = await sender.send('@team', team, 'standup in 5');
    assert.equal(ack.recipients, 2);
    assert.equal(backend.read(await backend.waitFor((f) => f.type === 'push')), 'standup in 5');
    const back = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: c!, session: frontendKey });
    assert.equal(back.read(await back.waitFor((f) => f.type === 'push')), 'standup in 5');
    const nobody = await sender.send('@ops', [backend.key], 'x');
    assert.equal(nobody.code, 'CM_ERR_UNKNOWN_RECIPIENT');
    for (const peer of [backend, back, sender]) await peer.close();
  });

  it('shows message_status to the sender only, with expiry as a visible state', async () => {
    const mesh = await seedMesh(t.db.pool, 3);
    const [a, b, c] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const ack = await sender.send(b!.publicKey, [b!.publicKey], 'will expire');
    await t.db.pool.query(`UPDATE deliveries SET expires_at = now() - interval '1 second' WHERE message_id = $1`, [ack.messageId]);
    await t.broker.context.delivery.sweep();
    const status = await sender.request({ type: 'message_status', messageId: ack.messageId });
    assert.equal(status.type, 'message_status');
    assert.equal(status.recipients[0].state, 'expired');
    assert.ok(status.recipients[0].expiredAt);
    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b! });
    await settle(300);
    assert.equal(receiver.pushes().length, 0, 'an expired message is not delivered');
    const snoop = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: c! });
    const denied = await snoop.request({ type: 'message_status', messageId: ack.messageId });
    assert.equal(denied.code, 'CM_ERR_NOT_FOUND');
    for (const peer of [sender, receiver, snoop]) await peer.close();
  });

  it('tracks surfaced and read marks from the recipient only', async () => {
    const mesh = await seedMesh(t.db.pool, 3);
    const [a, b, c] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: b! });
    const other = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: c! });
    const ack = await sender.send(b!.publicKey, [b!.publicKey], 'mark me');
    await receiver.waitFor((f) => f.type === 'push');
    const forged = await other.request({ type: 'mark', messageIds: [ack.messageId], state: 'read' });
    assert.equal(forged.updated, 0, 'only the recipient can mark its delivery');
    assert.equal((await receiver.request({ type: 'mark', messageIds: [ack.messageId], state: 'surfaced' })).updated, 1);
    assert.equal((await receiver.request({ type: 'mark', messageIds: [ack.messageId], state: 'read' })).updated, 1);
    const status = await sender.request({ type: 'message_status', messageId: ack.messageId });
    assert.equal(status.recipients[0].state, 'read');
    assert.ok(status.recipients[0].surfacedAt && status.recipients[0].readAt && status.recipients[0].deliveredAt);
    for (const peer of [sender, receiver, other]) await peer.close();
  });

  it('refuses priority null and a summary with NUL at the boundary, naming the field, not as a database outage', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]! });
    const nulled = await sender.send(mesh.members[1]!.publicKey, [mesh.members[1]!.publicKey], 'x', { priority: null });
    assert.equal(nulled.code, 'CM_ERR_BAD_FRAME');
    assert.match(String(nulled.message), /"priority"/);
    const summary = await sender.request({ type: 'set_summary', summary: 'a\u0000b' });
    assert.equal(summary.code, 'CM_ERR_BAD_FRAME');
    assert.match(String(summary.message), /"summary"/);
    assert.equal(sender.socket.readyState, sender.socket.OPEN, 'the connection stays open');
    await sender.close();
  });

  it('never hands the same delivery to two parallel claims', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [a, b] = mesh.members;
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const total = 100; // under the loop guard's burst for one pair
    const acks = await Promise.all(Array.from({ length: total }, (_, i) => sender.send(b!.publicKey, [b!.publicKey], `m${i}`)));
    assert.ok(acks.every((ack: Frame) => ack.queued === true));
    const pools = [0, 1, 2, 3, 4, 5].map(() => new pg.Pool({ connectionString: t.database.url, max: 1 }));
    try {
      const results = await Promise.all(pools.map((pool, index) => query(pool, 'claim_queued', [mesh.meshId, b!.publicKey, true, 30, 30, `claimer-${index}`])));
      const ids = results.flatMap((result) => result.rows.map((row) => String(row.id)));
      assert.equal(new Set(ids).size, ids.length, 'disjoint sets');
      assert.equal(ids.length, total, 'together they took every row exactly once');
    } finally {
      for (const pool of pools) await pool.end();
    }
    await sender.close();
  });
});
