// A socket that closes while its hello is still being handled must leave nothing behind that
// outlives the lease: no entry that counts against capacity (a member may hold one live
// connection here, so a leftover would refuse its real connection), no peer shown online.
//
// The hard moment is a close while the hello's presence row is being written: the close's own
// record can reach Postgres first and then be overwritten by the connect. The test makes that
// order certain instead of hoping for it: it holds a lock on the member's row, which the
// presence insert waits for (its foreign key) while the close's update does not.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { WebSocket } from 'ws';
import { sign } from '../../../lib/crypto.ts';
import type { SigningKeyPair } from '../../../lib/crypto.ts';
import { helloSigningString } from '../../../lib/protocol.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import { waitUntil } from '../../helpers/wait.ts';

const ATTEMPTS = 30;
const LEASE_MS = 300;

/** Open a socket and send a signed hello without waiting for its answer. */
async function helloAndGo(url: string, meshId: string, member: SigningKeyPair): Promise<WebSocket> {
  const socket = new WebSocket(url);
  socket.on('error', () => {});
  const challenge = await new Promise<string>((resolve) => socket.once('message', (data) => resolve(String((JSON.parse(String(data)) as { nonce: string }).nonce))));
  const timestamp = Date.now();
  socket.send(JSON.stringify({ type: 'hello', meshId, memberKey: member.publicKey, timestamp, challenge, signature: sign(helloSigningString(meshId, member.publicKey, timestamp, challenge), member.secretKey) }));
  return socket;
}

describe('connection lifecycle', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('connection_lifecycle', { env: { MAX_CONNECTIONS_PER_MEMBER: '1' }, timings: { leaseMs: LEASE_MS } });
  });
  after(() => t.close());

  const online = async (watcher: TestPeer, key: string) =>
    ((await watcher.request({ type: 'list_peers' })).peers as Array<{ key: string; online: boolean }>).some((peer) => peer.key === key && peer.online);

  it('sockets closed during their hello leave no live entry and use no capacity', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const watcher = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    for (let attempt = 0; attempt < ATTEMPTS; attempt += 1) (await helloAndGo(t.wsUrl, mesh.meshId, bob)).terminate();
    await waitUntil('every half-said hello settled', () => [...t.broker.context.hub.online(mesh.meshId)].length === 1, { timeoutMs: 5_000 });
    const real = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    assert.equal(real.ack!.type, 'hello_ack', 'bob’s one connection is not refused for capacity');
    await real.close();
    await watcher.close();
  });

  it('a socket closed while its presence is written is not shown online once its lease ran out', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const watcher = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    const locker = new pg.Client({ connectionString: t.database.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT id FROM members WHERE mesh_id = $1 AND key = $2 FOR UPDATE', [mesh.meshId, bob.publicKey]);
      const socket = await helloAndGo(t.wsUrl, mesh.meshId, bob);
      // Asked outside the locker's transaction, which would see one snapshot of the activity.
      await waitUntil('the presence insert waiting on the lock', async () => (await t.db.pool.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO presences%'",
      )).rows[0]?.n === 1);
      socket.terminate();
      await waitUntil('the broker saw the close', () => t.broker.context.hub.get(mesh.meshId, bob.publicKey)?.socket === null);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await locker.query('ROLLBACK');
    } finally {
      await locker.end();
    }
    await waitUntil('no entry once the lease ran out', () => t.broker.context.hub.get(mesh.meshId, bob.publicKey) === undefined, { timeoutMs: LEASE_MS + 5_000 });
    await waitUntil('bob not shown online', async () => !(await online(watcher, bob.publicKey)), { timeoutMs: 5_000 });
    await watcher.close();
  });
});
