import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair } from '../../../lib/crypto.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import { waitUntil } from '../../helpers/wait.ts';

const LEASE_MS = 300;
const settle = (ms = 100) => new Promise((resolve) => setTimeout(resolve, ms));

describe('presence', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('presence', { timings: { leaseMs: LEASE_MS, pingIntervalMs: 50, pongTimeoutMs: 200 } });
  });
  after(() => t.close());

  it('lists peers with key, member key, name, kind, role, status, summary, groups and connected-at', async () => {
    const mesh = await seedMesh(t.db.pool, 2, ['alice', 'bob']);
    const alice = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]! });
    const bob = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]!, session: generateKeyPair(), name: 'bob-claude' });
    assert.equal((await bob.request({ type: 'set_summary', summary: 'refactoring the parser' })).type, 'ok');
    assert.deepEqual((await bob.request({ type: 'join_group', group: 'team/backend' })).groups, ['team/backend']);
    assert.deepEqual((await bob.request({ type: 'join_group', group: 'reviewers' })).groups, ['team/backend', 'reviewers']);
    assert.deepEqual((await bob.request({ type: 'leave_group', group: 'team/backend' })).groups, ['reviewers']);
    const dnd = await bob.request({ type: 'set_status', status: 'dnd' });
    assert.deepEqual([dnd.applied, dnd.status], [true, 'dnd']);
    const list = await alice.request({ type: 'list_peers' });
    const peer = list.peers.find((p: Record<string, unknown>) => p.key === bob.key);
    assert.deepEqual(
      { ...peer, connectedAt: typeof peer.connectedAt },
      { key: bob.key, memberKey: mesh.members[1]!.publicKey, name: 'bob-claude', kind: 'session', role: 'member', status: 'dnd', summary: 'refactoring the parser', groups: ['reviewers'], connectedAt: 'string', online: true },
    );
    assert.deepEqual(list.members.map((m: Record<string, unknown>) => m.name), ['alice', 'bob']);
    await bob.close();
    await alice.close();
  });

  it('keeps the keys of a member who left or was banned out of the roster, though their presences are still stored', async () => {
    const mesh = await seedMesh(t.db.pool, 4, ['alice', 'bob', 'carol', 'dave']);
    const [alice, bob, carol, dave] = mesh.members;
    const bobSession = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob!, session: generateKeyPair(), name: 'bob-claude' });
    const others = [await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: carol! }), await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: dave! })];
    await bobSession.close();
    await others[1]!.close();
    await t.db.pool.query('UPDATE members SET left_at = now() WHERE mesh_id = $1 AND key = $2', [mesh.meshId, bob!.publicKey]);
    await t.db.pool.query('UPDATE members SET banned_at = now() WHERE mesh_id = $1 AND key = $2', [mesh.meshId, dave!.publicKey]);
    t.broker.context.presence.forget(mesh.meshId);
    const { rows } = await t.db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM presences WHERE mesh_id = $1', [mesh.meshId]);
    assert.equal(rows[0]!.n, 3, 'the presences of bob and dave are still stored');
    const viewer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice! });
    const list = await viewer.request({ type: 'list_peers' });
    assert.deepEqual(list.peers.map((p: Record<string, unknown>) => p.name).sort(), ['alice', 'carol']);
    assert.deepEqual(list.members.map((m: Record<string, unknown>) => m.name), ['alice', 'carol']);
    await viewer.close();
    await others[0]!.close();
  });

  it('sends the roster with its digest, and only the digest to a client that names the current one', async () => {
    const mesh = await seedMesh(t.db.pool, 2, ['alice', 'bob']);
    const alice = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]! });
    const first = alice.ack!;
    assert.match(first.rosterDigest, /^[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(first.peers.map((p: Record<string, unknown>) => p.key), [alice.key]);
    const same = await alice.request({ type: 'list_peers', rosterDigest: first.rosterDigest });
    assert.deepEqual(same, { type: 'peers', id: same.id, rosterDigest: first.rosterDigest }, 'unchanged: no lists');
    const stranger = await alice.request({ type: 'list_peers', rosterDigest: 'A'.repeat(22) });
    assert.equal(stranger.rosterDigest, first.rosterDigest);
    assert.equal(stranger.peers.length, 1, 'a digest that is not the current one gets the lists');

    const bob = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]! });
    const changed = await alice.request({ type: 'list_peers', rosterDigest: first.rosterDigest });
    assert.notEqual(changed.rosterDigest, first.rosterDigest, 'a join changes the digest');
    assert.deepEqual(changed.peers.map((p: Record<string, unknown>) => p.key).sort(), [alice.key, bob.key].sort());

    // A reconnect inside the lease changes nothing others see: the hello_ack leaves the lists out.
    alice.crash();
    const back = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]!, rosterDigest: changed.rosterDigest });
    assert.equal(back.ack!.reattached, true);
    assert.equal(back.ack!.rosterDigest, changed.rosterDigest);
    assert.deepEqual([back.ack!.peers, back.ack!.members], [undefined, undefined]);
    const refused = await back.request({ type: 'list_peers', rosterDigest: 'short' });
    assert.equal(refused.code, 'CM_ERR_BAD_FRAME');
    assert.match(refused.message, /rosterDigest.*22 base64url/);
    await back.close();
    await bob.close();
  });

  it('announces a new peer, keeps a reattach silent, and says peer_left only when the lease runs out', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const watcher = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]! });
    const session = generateKeyPair();
    const first = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]!, session });
    const joined = await watcher.waitFor((f) => f.type === 'system' && f.event === 'peer_joined');
    assert.equal(joined.peer.key, session.publicKey);
    first.crash();
    await settle(50);
    const back = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]!, session });
    assert.equal(back.ack!.reattached, true);
    await settle(LEASE_MS + 150);
    const events = watcher.frames.filter((f) => f.type === 'system').map((f) => f.event);
    assert.deepEqual(events, ['peer_joined'], 'no peer_left and no second peer_joined for a reattach');
    await back.close();
    const left = await watcher.waitFor((f) => f.type === 'system' && f.event === 'peer_left', LEASE_MS + 2_000);
    assert.equal(left.peer.key, session.publicKey);
    assert.equal(left.reason, 'lease_expired');
    const list = await watcher.request({ type: 'list_peers' });
    assert.equal(list.peers.find((p: Record<string, unknown>) => p.key === session.publicKey)?.online, false);
    await watcher.close();
  });

  it('terminates a socket that stops answering pings', async () => {
    const mesh = await seedMesh(t.db.pool, 1);
    const { WebSocket } = await import('ws');
    const silent = new WebSocket(t.wsUrl, { autoPong: false });
    const challenged = new Promise<string>((resolve) => silent.once('message', (data) => resolve(String(JSON.parse(String(data)).nonce))));
    await new Promise((resolve) => silent.once('open', resolve));
    const challenge = await challenged;
    const { helloSigningString } = await import('../../../lib/protocol.ts');
    const { sign } = await import('../../../lib/crypto.ts');
    const member = mesh.members[0]!;
    const timestamp = Date.now();
    silent.send(JSON.stringify({ type: 'hello', meshId: mesh.meshId, memberKey: member.publicKey, timestamp, challenge, signature: sign(helloSigningString(mesh.meshId, member.publicKey, timestamp, challenge), member.secretKey) }));
    const code = await new Promise<number>((resolve) => silent.once('close', (closeCode) => resolve(closeCode)));
    assert.equal(code, 1006, 'terminated without a close handshake');
  });

  it('terminates a silent socket soon after the pong timeout, not up to a ping interval later', async () => {
    // Ping every 600 ms, silence allowed 700 ms: checked only at pings, the socket would live
    // until the 1200 ms ping; checked several times per interval it goes at about 700 ms.
    const local = await startTestBroker('half_open', { timings: { pingIntervalMs: 600, pongTimeoutMs: 700 } });
    try {
      const mesh = await seedMesh(local.db.pool, 1);
      const peer = await TestPeer.connect(local.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]! });
      const started = Date.now();
      // Reads nothing, answers no ping: half-open as the broker sees it.
      const raw = (peer.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
      raw.pause();
      const hub = local.broker.context.hub;
      await waitUntil('the broker terminated the silent socket', () => hub.get(mesh.meshId, peer.key)?.socket === null, { timeoutMs: 5_000, pollMs: 10 });
      const elapsed = Date.now() - started;
      raw.resume();
      assert.ok(elapsed >= 650 && elapsed < 1_100, `terminated after ${elapsed} ms`);
    } finally {
      await local.close();
    }
  });

  it('ranks hook over manual while fresh; dnd is manual only; the TTL sweep flips stale working', async () => {
    const mesh = await seedMesh(t.db.pool, 1);
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]!, session: generateKeyPair() });
    const { presence } = t.broker.context;
    assert.deepEqual(await presence.setStatus(mesh.meshId, peer.key, 'working', 'hook'), { applied: true, status: 'working' });
    assert.deepEqual(await presence.setStatus(mesh.meshId, peer.key, 'idle', 'manual'), { applied: false, status: 'working' }, 'a fresh hook outranks manual');
    assert.deepEqual(await presence.setStatus(mesh.meshId, peer.key, 'dnd', 'hook'), { applied: false, status: 'working' }, 'hooks cannot set dnd');
    assert.deepEqual(await presence.setStatus(mesh.meshId, peer.key, 'dnd', 'manual'), { applied: true, status: 'dnd' }, 'dnd by hand always applies');
    assert.deepEqual(await presence.setStatus(mesh.meshId, peer.key, 'idle', 'hook'), { applied: false, status: 'dnd' }, 'hooks cannot clear dnd');
    assert.deepEqual(await presence.setStatus(mesh.meshId, peer.key, 'working', 'manual'), { applied: true, status: 'working' });
    await t.db.pool.query(`UPDATE presences SET status_at = now() - interval '10 minutes' WHERE key = $1`, [peer.key]);
    const before = await (await fetch(`${t.baseUrl}/metrics`)).text();
    assert.ok(await presence.ttlSweep() >= 1);
    const list = await peer.request({ type: 'list_peers' });
    assert.equal(list.peers.find((p: Record<string, unknown>) => p.key === peer.key).status, 'idle');
    const after = await (await fetch(`${t.baseUrl}/metrics`)).text();
    const flipped = (text: string) => Number(/^broker_ttl_sweeps_total\{flipped="true"\} (\d+)$/m.exec(text)?.[1]);
    assert.equal(flipped(after), flipped(before) + 1);
    await peer.close();
  });
});
