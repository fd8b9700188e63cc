// Two broker instances on one database, as an operator runs them behind a balancer: a
// message accepted by one reaches a connection held by the other at once (Postgres
// LISTEN/NOTIFY, one notification per committed batch), and a kick on one closes the
// member's socket on the other with 4001. The redelivery tick is set to a minute here, so
// only the notification can deliver in time.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { callBroker } from '../lib/broker-client.ts';
import { startTestBroker } from './helpers/broker.ts';
import type { TestBroker } from './helpers/broker.ts';
import { seedMesh, TestPeer } from './helpers/peer.ts';
import type { SeededMesh } from './helpers/peer.ts';

const SLOW_TICK = { redeliveryTickMs: 60_000 };
const WITHIN_MS = 3_000;

describe('two instances on one database', () => {
  let a: TestBroker;
  let b: TestBroker;
  let mesh: SeededMesh;
  before(async () => {
    a = await startTestBroker('instances', { timings: SLOW_TICK, instanceId: 'a' });
    b = await startTestBroker('instances', { timings: SLOW_TICK, instanceId: 'b', database: a.database });
    mesh = await seedMesh(a.db.pool, 4);
  });
  after(async () => {
    await b.close();
    await a.close();
  });

  it('delivers direct messages, broadcasts and groups across instances, once each', async () => {
    const [owner, alice, bob, carol] = mesh.members as [typeof mesh.members[0], typeof mesh.members[0], typeof mesh.members[0], typeof mesh.members[0]];
    const sender = await TestPeer.connect(a.wsUrl, { meshId: mesh.meshId, member: alice! });
    const onB = await TestPeer.connect(b.wsUrl, { meshId: mesh.meshId, member: bob! });
    const groupOnB = await TestPeer.connect(b.wsUrl, { meshId: mesh.meshId, member: carol!, session: (await import('../lib/crypto.ts')).generateKeyPair(), groups: ['ops'] });
    const direct = await sender.send(bob!.publicKey, [bob!.publicKey], 'across');
    assert.equal(direct.queued, true);
    const push = await onB.waitFor((frame) => frame.type === 'push' && frame.messageId === direct.messageId, WITHIN_MS);
    assert.equal(onB.read(push), 'across');
    const everyone = [owner!.publicKey, bob!.publicKey, carol!.publicKey];
    const broadcast = await sender.send('*', everyone, 'to all');
    assert.equal(broadcast.queued, true, JSON.stringify(broadcast));
    await onB.waitFor((frame) => frame.type === 'push' && frame.messageId === broadcast.messageId, WITHIN_MS);
    const group = await sender.send('@ops', [groupOnB.key], 'to ops');
    assert.equal(group.queued, true, JSON.stringify(group));
    await groupOnB.waitFor((frame) => frame.type === 'push' && frame.messageId === group.messageId, WITHIN_MS);
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const [peer, count] of [[onB, 2], [groupOnB, 1]] as const) {
      const ids = peer.pushes().map((frame) => frame.messageId);
      assert.equal(ids.length, new Set(ids).size, 'each arrives once');
      assert.equal(ids.length, count);
    }
    for (const peer of [sender, onB, groupOnB]) await peer.close();
  });

  it('a key that connects to the other instance takes its connection over, silently', async () => {
    const [owner, alice] = mesh.members;
    const watcher = await TestPeer.connect(a.wsUrl, { meshId: mesh.meshId, member: owner! });
    const first = await TestPeer.connect(a.wsUrl, { meshId: mesh.meshId, member: alice! });
    const second = await TestPeer.connect(b.wsUrl, { meshId: mesh.meshId, member: alice! });
    assert.equal(second.ack?.reattached, true, 'it was online a moment ago: a reattach');
    const closed = await Promise.race([first.closed, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), WITHIN_MS))]);
    assert.deepEqual(closed, { code: 1000, reason: 'session_replaced' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const events = watcher.frames.filter((frame) => frame.type === 'system' && frame.peer?.key === alice!.publicKey);
    assert.deepEqual(events.filter((frame) => frame.event === 'peer_left'), [], 'the move is not a departure');
    for (const peer of [watcher, second]) await peer.close();
  });

  it('a kick on one instance closes the member on the other with 4001', async () => {
    const [owner, , , dave] = mesh.members;
    const victim = await TestPeer.connect(b.wsUrl, { meshId: mesh.meshId, member: dave! });
    const kicked = await callBroker({ brokerUrl: a.baseUrl, method: 'POST', path: '/mesh/kick', identity: owner!, meshId: mesh.meshId, body: { key: dave!.publicKey } });
    assert.equal(kicked.status, 200, JSON.stringify(kicked.body));
    const closed = await Promise.race([victim.closed, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), WITHIN_MS))]);
    assert.deepEqual(closed, { code: 4001, reason: 'kicked' });
  });
});

describe('capacity across instances', () => {
  let a: TestBroker;
  let b: TestBroker;
  let mesh: SeededMesh;
  before(async () => {
    const env = { MAX_CONNECTIONS_PER_MESH: '2' };
    a = await startTestBroker('capacity', { env, instanceId: 'a' });
    b = await startTestBroker('capacity', { env, instanceId: 'b', database: a.database });
    mesh = await seedMesh(a.db.pool, 3);
  });
  after(async () => {
    await b.close();
    await a.close();
  });

  it('counts the live connections of every instance, and a reconnect elsewhere frees its slot', async () => {
    const [first, second, third] = mesh.members as [typeof mesh.members[0], typeof mesh.members[0], typeof mesh.members[0]];
    const onA = await TestPeer.connect(a.wsUrl, { meshId: mesh.meshId, member: first });
    const onB = await TestPeer.connect(b.wsUrl, { meshId: mesh.meshId, member: second });
    const refused = await TestPeer.connect(a.wsUrl, { meshId: mesh.meshId, member: third, noWait: true });
    const error = await refused.waitFor((frame) => frame.type === 'error');
    assert.equal(error.code, 'CM_ERR_CAPACITY', 'the mesh is full across both instances');
    // The member on B moves to A: its own connection is not counted against it.
    await onB.close();
    const moved = await TestPeer.connect(a.wsUrl, { meshId: mesh.meshId, member: second });
    assert.equal(moved.ack?.type, 'hello_ack');
    for (const peer of [onA, moved]) await peer.close();
  });
});
