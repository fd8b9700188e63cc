// A connect storm: after a broker restart every daemon says hello at the same moment. That is
// the normal case, not an attack, so no hello may be refused because the database pool is
// busy — the hellos that arrive together share their database work (one membership lookup,
// one presence write, one roster load per mesh for the whole group).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { metricSum } from '../../helpers/http.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { SeededMesh } from '../../helpers/peer.ts';

// Far more hellos at once than the pool has connections (lib/broker/db.ts POOL_MAX).
const STORM = 600;
const SESSIONS = 60;

describe('a connect storm', () => {
  let t: TestBroker;
  let mesh: SeededMesh;
  before(async () => {
    t = await startTestBroker('storm', { env: { MAX_CONNECTIONS_PER_MESH: '1000' } });
    mesh = await seedMesh(t.db.pool, STORM);
  });
  after(() => t.close());

  it(`accepts ${STORM} members and ${SESSIONS} named sessions saying hello at once, refuses none, and counts what it refused`, async () => {
    const { generateKeyPair } = await import('../../../lib/crypto.ts');
    const results = await Promise.allSettled([
      ...mesh.members.map((member) => TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member })),
      ...mesh.members.slice(0, SESSIONS).map((member, index) => TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member, session: generateKeyPair(), name: `session-${index}` })),
    ]);
    const refused = results.filter((result) => result.status === 'rejected').map((result) => String((result as PromiseRejectedResult).reason));
    assert.deepEqual(refused.slice(0, 3), [], `${refused.length} of ${results.length} hellos refused`);
    const peers = results.map((result) => (result as PromiseFulfilledResult<TestPeer>).value);
    assert.equal(new Set(peers.map((peer) => peer.ack?.key)).size, STORM + SESSIONS, 'each got its own hello_ack');
    assert.equal(await metricSum(t.baseUrl, 'broker_connections_rejected_total'), 0);
    // Every one of them is recorded, and everyone's roster says so.
    const last = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]!, session: generateKeyPair() });
    assert.equal((last.ack?.peers as unknown[]).length, STORM + SESSIONS + 1);
    for (const peer of [...peers, last]) peer.socket.terminate();
  });

  it('still refuses what it must in a storm, and counts each refusal', async () => {
    const strangers = await seedMesh(t.db.pool, 1);
    const before = await metricSum(t.baseUrl, 'broker_connections_rejected_total');
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: strangers.members[0]! })));
    assert.equal(results.filter((result) => result.status === 'rejected').length, 20, 'a key of another mesh is no member here');
    assert.equal(await metricSum(t.baseUrl, 'broker_connections_rejected_total') - before, 20);
  });
});
