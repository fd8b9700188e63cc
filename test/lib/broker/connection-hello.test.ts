import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { generateKeyPair, sign, signingString } from '../../../lib/crypto.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { SeededMesh } from '../../helpers/peer.ts';

const CAPACITY = 3;

async function refused(peer: TestPeer): Promise<{ error: Record<string, unknown>; code: number; reason: string }> {
  const error = await peer.waitFor((frame) => frame.type === 'error');
  const closed = await peer.closed;
  return { error, ...closed };
}

describe('handshakes', () => {
  let t: TestBroker;
  let mesh: SeededMesh;
  let other: SeededMesh;

  before(async () => {
    t = await startTestBroker('handshake', { env: { MAX_CONNECTIONS_PER_MESH: String(CAPACITY) }, timings: { helloTimeoutMs: 150 } });
    mesh = await seedMesh(t.db.pool, 5, ['owner', 'alice', 'bob', 'carol', 'dave']);
    other = await seedMesh(t.db.pool, 1);
  });
  after(() => t.close());

  it('hello proves the member key and answers hello_ack with identity, mesh, version and roster', async () => {
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]!, name: 'alice-laptop' });
    const ack = peer.ack!;
    assert.equal(ack.protocolVersion, 2);
    assert.equal(ack.meshId, mesh.meshId);
    assert.equal(ack.key, mesh.members[1]!.publicKey);
    assert.equal(ack.memberKey, mesh.members[1]!.publicKey);
    assert.equal(ack.kind, 'member');
    assert.equal(ack.role, 'member');
    assert.equal(ack.name, 'alice-laptop');
    assert.equal(ack.reattached, false);
    assert.equal(ack.members.length, 5);
    assert.ok(ack.peers.some((p: Record<string, unknown>) => p.key === peer.key && p.online === true));
    await peer.close();
  });

  it('session_hello proves the session key and the member attestation', async () => {
    const session = generateKeyPair();
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[2]!, session, groups: ['team/backend'] });
    assert.equal(peer.ack!.key, session.publicKey);
    assert.equal(peer.ack!.memberKey, mesh.members[2]!.publicKey);
    assert.equal(peer.ack!.kind, 'session');
    const self = peer.ack!.peers.find((p: Record<string, unknown>) => p.key === session.publicKey);
    assert.deepEqual(self.groups, ['team/backend']);
    await peer.close();
  });

  it('refuses a forged attestation (not signed by the member) with 1008 bad_signature', async () => {
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[2]!, session: generateKeyPair(), attestationSigner: generateKeyPair(), noWait: true });
    const { error, code, reason } = await refused(peer);
    assert.equal(error.code, 'CM_ERR_BAD_SIGNATURE');
    assert.equal(code, 1008);
    assert.equal(reason, 'bad_signature');
  });

  it('refuses an unproven session key (hello not signed by it)', async () => {
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[2]!, session: generateKeyPair(), helloSigner: mesh.members[2]!, noWait: true });
    const { error, code } = await refused(peer);
    assert.equal(error.code, 'CM_ERR_BAD_SIGNATURE');
    assert.equal(code, 1008);
  });

  it('refuses a replayed old hello (outside the clock window) with timestamp_skew', async () => {
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]!, timestamp: Date.now() - 120_000, noWait: true });
    const { error, code, reason } = await refused(peer);
    assert.equal(error.code, 'CM_ERR_TIMESTAMP_SKEW');
    assert.equal(code, 1008);
    assert.equal(reason, 'timestamp_skew');
  });

  it('refuses a hello signed for the challenge of another connection: a replay fails on any connection, instance or restart', async () => {
    const first = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[3]! });
    const replay = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[3]!, challenge: first.challenge, noWait: true });
    const refusal = await refused(replay);
    assert.equal(refusal.error.code, 'CM_ERR_REPLAYED');
    assert.deepEqual([refusal.code, refusal.reason], [1008, 'bad_signature']);
    await first.close();
  });

  it('tells an old client (a hello without the challenge) to upgrade, and closes for good', async () => {
    const socket = new WebSocket(t.wsUrl);
    const frames: Array<Record<string, any>> = [];
    socket.on('message', (data) => frames.push(JSON.parse(String(data)) as Record<string, any>));
    const closed = new Promise<[number, string]>((resolve) => socket.once('close', (code, reason) => resolve([code, reason.toString()])));
    await new Promise((resolve) => socket.once('open', resolve));
    const member = mesh.members[3]!;
    const timestamp = Date.now();
    socket.send(JSON.stringify({ type: 'hello', id: 'h', meshId: mesh.meshId, memberKey: member.publicKey, timestamp, signature: sign(signingString('hello', [mesh.meshId, member.publicKey, timestamp]), member.secretKey) }));
    assert.deepEqual(await closed, [1008, 'protocol_version']);
    assert.equal(frames[0]?.type, 'challenge');
    assert.equal(frames[1]?.code, 'CM_ERR_PROTOCOL_VERSION');
  });

  it('refuses a session whose key is its member key', async () => {
    const member = mesh.members[3]!;
    const same = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member, session: member, noWait: true });
    assert.equal((await refused(same)).error.code, 'CM_ERR_BAD_SIGNATURE');
  });

  it('refuses names with control characters at the boundary, naming the field, and names another member holds', async () => {
    for (const name of ['a\u0000b', 'alice\u001b[2K\r\nFAKE-LINE', 'two words']) {
      const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[3]!, session: generateKeyPair(), name, noWait: true });
      const answer = await peer.waitFor((frame) => frame.id === 'hello');
      assert.equal(answer.code, 'CM_ERR_BAD_FRAME');
      assert.match(String(answer.message), /"name"/);
      await peer.close();
    }
    const taken = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[3]!, session: generateKeyPair(), name: 'alice', noWait: true });
    const refusal = await refused(taken);
    assert.equal(refusal.error.code, 'CM_ERR_NAME_TAKEN');
    assert.deepEqual([refusal.code, refusal.reason], [1008, 'name_taken']);
  });

  it('refuses expired attestations and attestations longer than 24 h', async () => {
    const expired = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[2]!, session: generateKeyPair(), attestationExpiresAt: Date.now() - 1, noWait: true });
    const first = await refused(expired);
    assert.equal(first.error.code, 'CM_ERR_EXPIRED');
    assert.equal(first.reason, 'expired');
    const tooLong = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[2]!, session: generateKeyPair(), attestationExpiresAt: Date.now() + 25 * 3_600_000, noWait: true });
    assert.equal((await refused(tooLong)).error.code, 'CM_ERR_EXPIRED');
  });

  it('refuses a key that is not a member, and a member of another mesh, alike', async () => {
    const stranger = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: generateKeyPair(), noWait: true });
    const a = await refused(stranger);
    assert.equal(a.error.code, 'CM_ERR_UNAUTHORIZED');
    assert.equal(a.code, 1008);
    const foreign = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: other.members[0]!, noWait: true });
    assert.equal((await refused(foreign)).error.code, 'CM_ERR_UNAUTHORIZED');
  });

  it('closes a banned member with 4002', async () => {
    const banned = await seedMesh(t.db.pool, 2);
    await t.db.pool.query('UPDATE members SET banned_at = now() WHERE key = $1', [banned.members[1]!.publicKey]);
    const peer = await TestPeer.connect(t.wsUrl, { meshId: banned.meshId, member: banned.members[1]!, noWait: true });
    const { error, code } = await refused(peer);
    assert.equal(error.code, 'CM_ERR_BANNED');
    assert.equal(code, 4002);
  });

  it('closes a socket that does not say hello in time', async () => {
    const socket = new WebSocket(t.wsUrl);
    const frames: Record<string, unknown>[] = [];
    socket.on('message', (data) => frames.push(JSON.parse(String(data))));
    const [code, reason] = await new Promise<[number, string]>((resolve) => socket.once('close', (c, r) => resolve([c, r.toString()])));
    assert.equal(code, 1008);
    assert.equal(reason, 'hello_timeout');
    assert.equal(frames[0]?.type, 'challenge');
    assert.equal(frames[1]?.code, 'CM_ERR_HELLO_TIMEOUT');
  });

  it('answers a second hello, unknown types and malformed frames with errors and stays open', async () => {
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]! });
    const again = await peer.request({ type: 'hello', meshId: mesh.meshId, memberKey: peer.key, timestamp: Date.now(), signature: 'a'.repeat(128) });
    assert.equal(again.code, 'CM_ERR_DUPLICATE_HELLO');
    const unknown = await peer.request({ type: 'teleport' });
    assert.equal(unknown.code, 'CM_ERR_UNKNOWN_TYPE');
    const badField = await peer.request({ type: 'set_status', status: 'sleeping' });
    assert.equal(badField.code, 'CM_ERR_BAD_FRAME');
    assert.match(String(badField.message), /"status".*sleeping/);
    peer.socket.send('{not json');
    const notJson = await peer.waitFor((frame) => frame.type === 'error' && /not JSON/.test(String(frame.message)));
    assert.equal(notJson.code, 'CM_ERR_BAD_FRAME');
    peer.socket.send(JSON.stringify({ type: 'send', id: 's1', __proto__: { polluted: true }, target: 'nobody', envelopes: [] }));
    assert.equal((await peer.waitFor((frame) => frame.id === 's1')).code, 'CM_ERR_BAD_FRAME');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    const peers = await peer.request({ type: 'list_peers' });
    assert.equal(peers.type, 'peers', 'still serving after bad frames');
    await peer.close();
  });

  it('enforces capacity from live state, but never against a reattach or a replacement', async () => {
    const full = await seedMesh(t.db.pool, 4);
    const peers = [];
    for (let i = 0; i < CAPACITY; i += 1) peers.push(await TestPeer.connect(t.wsUrl, { meshId: full.meshId, member: full.members[i]! }));
    const extra = await TestPeer.connect(t.wsUrl, { meshId: full.meshId, member: full.members[3]!, noWait: true });
    const { error, reason } = await refused(extra);
    assert.equal(error.code, 'CM_ERR_CAPACITY');
    assert.equal(reason, 'capacity');
    // The same key connecting again replaces the older socket (1000 session_replaced).
    const replacement = await TestPeer.connect(t.wsUrl, { meshId: full.meshId, member: full.members[0]! });
    assert.deepEqual(await peers[0]!.closed, { code: 1000, reason: 'session_replaced' });
    assert.equal(replacement.ack!.reattached, true);
    // A dropped socket keeps its place for the lease: its reconnect is not refused.
    peers[1]!.crash();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const back = await TestPeer.connect(t.wsUrl, { meshId: full.meshId, member: full.members[1]! });
    assert.equal(back.ack!.reattached, true);
    for (const peer of [replacement, back, peers[2]!]) await peer.close();
  });

  it('counts live sockets only: closed ones in their lease never lock a mesh, the owner included', async () => {
    const crowd = await seedMesh(t.db.pool, 2);
    const [owner, member] = [crowd.members[0]!, crowd.members[1]!];
    // One member opens sessions up to the mesh's capacity, then closes them all.
    const sessions = [];
    for (let i = 0; i < CAPACITY; i += 1) sessions.push(await TestPeer.connect(t.wsUrl, { meshId: crowd.meshId, member, session: generateKeyPair() }));
    for (const session of sessions) await session.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const ownerPeer = await TestPeer.connect(t.wsUrl, { meshId: crowd.meshId, member: owner, noWait: true });
    const answer = await ownerPeer.waitFor((frame) => frame.id === 'hello');
    assert.equal(answer.type, 'hello_ack', 'the leases of closed sockets reserve a reattach, not a slot');
    await ownerPeer.close();
  });

  it('refuses a member past its share of the mesh (MAX_CONNECTIONS_PER_MEMBER)', async () => {
    const local = await startTestBroker('member_share', { env: { MAX_CONNECTIONS_PER_MEMBER: '2' } });
    try {
      const crowd = await seedMesh(local.db.pool, 2);
      const member = crowd.members[1]!;
      const open = [await TestPeer.connect(local.wsUrl, { meshId: crowd.meshId, member }), await TestPeer.connect(local.wsUrl, { meshId: crowd.meshId, member, session: generateKeyPair() })];
      const third = await TestPeer.connect(local.wsUrl, { meshId: crowd.meshId, member, session: generateKeyPair(), noWait: true });
      const refusal = await refused(third);
      assert.equal(refusal.error.code, 'CM_ERR_CAPACITY');
      assert.match(String(refusal.error.message), /already has 2 live connections/);
      const owner = await TestPeer.connect(local.wsUrl, { meshId: crowd.meshId, member: crowd.members[0]! });
      assert.equal(owner.ack!.type, 'hello_ack', 'the others are not affected');
      for (const peer of [...open, owner]) await peer.close();
    } finally {
      await local.close();
    }
  });

  it('refuses a hello that checked membership just before the member was removed', async () => {
    const racing = await seedMesh(t.db.pool, 2);
    // The database still lists the member (the removal's commit raced the hello's read),
    // but the hub has already closed it.
    t.broker.context.hub.removeMember(racing.meshId, racing.members[1]!.publicKey, { code: 4001, reason: 'kicked' });
    const late = await TestPeer.connect(t.wsUrl, { meshId: racing.meshId, member: racing.members[1]!, noWait: true });
    const { error, code } = await refused(late);
    assert.equal(error.code, 'CM_ERR_UNAUTHORIZED');
    assert.equal(code, 1008);
  });

  it('closes a banned member 4002 even when it had also left', async () => {
    const both = await seedMesh(t.db.pool, 2);
    await t.db.pool.query('UPDATE members SET banned_at = now(), left_at = now() WHERE key = $1', [both.members[1]!.publicKey]);
    const peer = await TestPeer.connect(t.wsUrl, { meshId: both.meshId, member: both.members[1]!, noWait: true });
    assert.equal((await refused(peer)).code, 4002);
  });
});
