// Delivery rules that a store-and-forward broker gets wrong easily: a message for a peer
// whose socket just died (inside its lease) must not be claimed for that dead socket; a push
// made at once and one made on catch-up must look the same to the recipient; final messages
// are purged in time while undelivered ones are never dropped silently.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadQueries } from '../../../lib/broker/db.ts';
import { generateKeyPair } from '../../../lib/crypto.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { Frame } from '../../helpers/peer.ts';
import { waitUntil } from '../../helpers/wait.ts';

// The default claim: a message claimed for a dead socket would wait this long.
const CLAIM_MS = 30_000;
const LEASE_MS = 5_000;
// Well inside the claim: pushed by the reattach itself, not by a lapsed claim.
const REATTACH_PUSH_MS = 5_000;
// Acks sent one by one while an ack statement waits, each further apart than the broker's
// 20 ms gathering (lib/broker/delivery.ts), so that gathering alone would not join them.
const ACKED_LATER = 4;
const ACK_SPACING_MS = 40;
// Enough rows that reading them all costs more than probing the key for each due one.
const PLAN_ROWS = 20_000;
const EXPIRE_LIMIT = 10_000;
const QUERIES = new URL('../../../sql/queries/broker.sql', import.meta.url);

describe('delivery', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('delivery', { timings: { claimMs: CLAIM_MS, leaseMs: LEASE_MS } });
  });
  after(() => t.close());

  it('never claims a message for a socket that died inside its lease, and pushes it on the reattach at once', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    const first = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    first.crash();
    await waitUntil('the broker saw the socket close', () => t.broker.context.hub.get(mesh.meshId, bob.publicKey)?.socket === null);
    const ack = await sender.send(bob.publicKey, [bob.publicKey], 'sent inside the lease');
    assert.equal(ack.queued, true);
    const { rows } = await t.db.pool.query('SELECT claimed_until, pushes FROM deliveries WHERE message_id = $1', [ack.messageId]);
    assert.deepEqual(rows, [{ claimed_until: null, pushes: 0 }], 'not claimed for the dead socket');
    const started = Date.now();
    const back = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    assert.equal(back.ack!.reattached, true);
    const push = await back.waitFor((frame) => frame.type === 'push' && frame.messageId === ack.messageId, REATTACH_PUSH_MS);
    assert.equal(back.read(push), 'sent inside the lease');
    assert.ok(Date.now() - started < REATTACH_PUSH_MS);
    await back.close();
    await sender.close();
  });

  it('pushes the same fields live and on catch-up', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    // A session sends, so that the sender key and the sender's member key differ.
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice, session: generateKeyPair() });
    const online = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    const liveAck = await sender.send(bob.publicKey, [bob.publicKey], 'live', { hops: 1 });
    const live = await online.waitFor((frame) => frame.type === 'push' && frame.messageId === liveAck.messageId);
    online.clientAck([live.messageId]);
    await online.close();
    const queuedAck = await sender.send(bob.publicKey, [bob.publicKey], 'queued', { hops: 1 });
    const later = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    const caughtUp = await later.waitFor((frame) => frame.type === 'push' && frame.messageId === queuedAck.messageId);
    const shape = (push: Frame) => Object.keys(push).sort();
    assert.deepEqual(shape(caughtUp), shape(live));
    const { messageId: _a, clientMessageId: _b, envelope: _c, createdAt: _d, ...liveRest } = live;
    const { messageId: _e, clientMessageId: _f, envelope: _g, createdAt: _h, ...caughtUpRest } = caughtUp;
    assert.deepEqual(caughtUpRest, liveRest);
    assert.equal(live.senderKey, sender.key);
    assert.equal(live.senderMemberKey, alice.publicKey);
    assert.deepEqual([later.read(caughtUp), live.hops], ['queued', 1]);
    await later.close();
    await sender.close();
  });

  it('says caught_up once per connection, after what waited was pushed, and at once when nothing waited', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    const caught = await sender.waitFor((frame) => frame.type === 'caught_up');
    assert.deepEqual(caught, { type: 'caught_up' }, 'nothing waited for alice');
    const acks = [await sender.send(bob.publicKey, [bob.publicKey], 'one'), await sender.send(bob.publicKey, [bob.publicKey], 'two')];
    const later = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    await later.waitFor((frame) => frame.type === 'caught_up');
    const after = later.frames.filter((frame) => frame.type === 'push' || frame.type === 'caught_up').map((frame) => frame.type === 'push' ? later.read(frame) : frame.type);
    assert.deepEqual(after, ['one', 'two', 'caught_up'], 'every waiting message before it');
    assert.deepEqual(acks.map((ack) => ack.queued), [true, true]);
    assert.equal(sender.frames.filter((frame) => frame.type === 'caught_up').length, 1, 'once per connection');
    await later.close();
    await sender.close();
  });

  it('purges messages long final, and never one still waiting for its recipient', async () => {
    const mesh = await seedMesh(t.db.pool, 3);
    const [alice, bob, carol] = [mesh.members[0]!, mesh.members[1]!, mesh.members[2]!];
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    const delivered = await sender.send(bob.publicKey, [bob.publicKey], 'read long ago');
    receiver.clientAck([String((await receiver.waitFor((frame) => frame.type === 'push')).messageId)]);
    const waiting = await sender.send(carol.publicKey, [carol.publicKey], 'carol is away');
    await waitUntil('delivered', async () => (await t.db.pool.query("SELECT state FROM deliveries WHERE message_id = $1", [delivered.messageId])).rows[0]?.state === 'delivered');
    // Both were sent long before the TTL and the status retention: as if they were weeks old.
    await t.db.pool.query("UPDATE deliveries SET queued_at = now() - interval '400 days' WHERE message_id = ANY($1::uuid[])", [[delivered.messageId, waiting.messageId]]);
    await t.broker.context.delivery.sweep();
    const left = (await t.db.pool.query('SELECT message_id FROM deliveries WHERE message_id = ANY($1::uuid[])', [[delivered.messageId, waiting.messageId]])).rows.map((row) => row.message_id);
    assert.deepEqual(left, [waiting.messageId], 'the final one purged, the queued one kept');
    assert.equal((await t.db.pool.query('SELECT count(*)::int AS n FROM deliveries WHERE message_id = $1', [delivered.messageId])).rows[0]?.n, 0);
    const late = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: carol });
    assert.equal(late.read(await late.waitFor((frame) => frame.type === 'push')), 'carol is away');
    for (const peer of [sender, receiver, late]) await peer.close();
  });

  it('applies acks one statement at a time: those that gather while one runs go in the next, together', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    const ids: string[] = [];
    for (let k = 0; k < ACKED_LATER + 1; k += 1) ids.push(String((await sender.send(bob.publicKey, [bob.publicKey], `m${k}`)).messageId));
    await waitUntil('all pushed', () => receiver.pushes().length === ids.length);
    const [first, ...rest] = ids as [string, ...string[]];
    // Hold the first row: the statement that acks it waits on the lock.
    const holder = await t.db.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM deliveries WHERE message_id = $1 FOR UPDATE', [first]);
      receiver.clientAck([first]);
      await waitUntil('the first ack statement waits on the lock', async () =>
        (await t.db.pool.query("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE deliveries d SET%'")).rowCount === 1);
      // Each ack in its own frame, further apart than the gathering time.
      for (const id of rest) {
        receiver.clientAck([id]);
        await sleep(ACK_SPACING_MS);
      }
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    const states = async () => (await t.db.pool.query('SELECT state, xmin::text AS xid FROM deliveries WHERE message_id = ANY($1::uuid[])', [rest])).rows;
    await waitUntil('every ack applied', async () => (await states()).every((row) => row.state === 'delivered'));
    const xids = new Set((await states()).map((row) => row.xid));
    assert.equal(xids.size, 1, `the acks that gathered meanwhile were applied by one transaction, not ${xids.size}`);
    await sender.close();
    await receiver.close();
  });

  it('expires what is due by its key, without reading the whole table', async () => {
    const mesh = 'plan-expiry';
    await t.db.pool.query(`INSERT INTO deliveries (message_id, mesh_id, sender_key, sender_member_key, client_message_id, fingerprint, target, priority, hops,
        recipient_key, nonce, ciphertext, first_row, expires_at, state)
      SELECT gen_random_uuid(), $1, 'a', 'a', 'c' || i, 'f', 't', 'now', 0, 'r' || (i % 50), '\\x00', '\\x01', true,
             now() + CASE WHEN i % 100 = 0 THEN interval '-1 s' ELSE interval '1 day' END, CASE WHEN i % 10 = 0 THEN 'queued' ELSE 'delivered' END
      FROM generate_series(1, $2::int) i`, [mesh, PLAN_ROWS]);
    try {
      await t.db.pool.query('ANALYZE deliveries');
      const { rows } = await t.db.pool.query({ text: `EXPLAIN (FORMAT JSON) ${loadQueries(readFileSync(QUERIES, 'utf8')).get('expire_deliveries')}`, values: [EXPIRE_LIMIT] });
      const scans: string[] = [];
      const walk = (node: { 'Node Type': string; 'Relation Name'?: string; Plans?: unknown[] }) => {
        if (node['Relation Name'] === 'deliveries') scans.push(node['Node Type']);
        for (const child of node.Plans ?? []) walk(child as typeof node);
      };
      walk(rows[0]['QUERY PLAN'][0].Plan);
      assert.ok(scans.length > 0 && !scans.includes('Seq Scan'), `deliveries read by ${scans.join(', ')}`);
      await t.broker.context.delivery.sweep();
      const states = await t.db.pool.query(`SELECT count(*) FILTER (WHERE state = 'expired')::int AS expired, count(*) FILTER (WHERE state = 'queued' AND expires_at <= now())::int AS due FROM deliveries WHERE mesh_id = $1`, [mesh]);
      assert.deepEqual(states.rows[0], { expired: PLAN_ROWS / 100, due: 0 });
    } finally {
      await t.db.pool.query('DELETE FROM deliveries WHERE mesh_id = $1', [mesh]);
    }
  });
});
