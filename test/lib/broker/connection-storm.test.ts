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
import { waitUntil } from '../../helpers/wait.ts';
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

  it('tells those already online of every joiner exactly once, in far fewer frames than joiners, and no joiner of itself', async () => {
    const crowd = await seedMesh(t.db.pool, 205);
    const [watchers, joiners] = [crowd.members.slice(0, 5), crowd.members.slice(5)];
    const online = await Promise.all(watchers.map((member) => TestPeer.connect(t.wsUrl, { meshId: crowd.meshId, member })));
    const arrived = await Promise.all(joiners.map((member) => TestPeer.connect(t.wsUrl, { meshId: crowd.meshId, member })));
    const joinedKeys = (peer: TestPeer) => peer.frames.filter((frame) => frame.type === 'system' && frame.event !== 'peer_left')
      .flatMap((frame) => (frame.event === 'peers_joined' ? (frame.peers as Array<{ key: string }>) : [frame.peer as { key: string }]).map((view) => view.key));
    const expected = joiners.map((member) => member.publicKey).sort();
    const ofJoiners = (peer: TestPeer) => joinedKeys(peer).filter((key) => expected.includes(key)).sort();
    for (const watcher of online) {
      await waitUntil('every joiner told', async () => new Set(ofJoiners(watcher)).size === joiners.length);
      assert.deepEqual(ofJoiners(watcher), expected, 'each joiner once');
      const frames = watcher.frames.filter((frame) => frame.type === 'system').length;
      assert.ok(frames < joiners.length / 4, `${frames} frames told ${joiners.length} joins`);
    }
    for (const peer of arrived) {
      const told = joinedKeys(peer);
      assert.ok(!told.includes(peer.key), 'nobody hears of itself');
      assert.equal(new Set(told).size, told.length, 'nobody hears of the same joiner twice');
      // what it was told plus its hello_ack roster covers everyone who came after the watchers
      const listed = new Set([...(peer.ack?.peers as Array<{ key: string }>).map((view) => view.key), ...told]);
      for (const key of expected) assert.ok(listed.has(key), 'every other joiner is in its roster or was told');
    }
    for (const peer of [...online, ...arrived]) peer.socket.terminate();
  });
});
