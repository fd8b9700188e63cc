// Who hears of whom: peer_joined and peer_left reach the same peers (a member's own other
// connections included), and a member removed by a kick or a ban is announced as gone like any
// other. Removals take a whole member key from a member: a key prefix, the caller itself or a
// session key signing for its member are refused and change nothing.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { callBroker } from '../../../lib/broker-client.ts';
import { BrokerRefusal } from '../../../lib/errors.ts';
import { generateKeyPair } from '../../../lib/crypto.ts';
import type { SigningKeyPair } from '../../../lib/crypto.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { enrolMesh } from '../../helpers/pair.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { Frame } from '../../helpers/peer.ts';

const LEASE_MS = 300;

// A peers_joined frame tells of several joins at once: each counts as that peer's peer_joined.
const events = (peer: TestPeer, key: string) =>
  peer.frames.filter((frame) => frame.type === 'system' && (frame.peer?.key === key || (frame.peers as Array<{ key: string }> | undefined)?.some((view) => view.key === key)))
    .map((frame: Frame) => `${frame.event === 'peers_joined' ? 'peer_joined' : frame.event}${frame.reason === undefined ? '' : `:${frame.reason}`}`);

describe('peer events', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('presence_events', { timings: { leaseMs: LEASE_MS } });
  });
  after(() => t.close());

  it('tells a member’s own connections of its sessions coming and going, like everyone else', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const other = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    const sibling = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    const session = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob, session: generateKeyPair() });
    await session.close();
    for (const watcher of [other, sibling]) await watcher.waitFor((frame) => frame.type === 'system' && frame.event === 'peer_left', LEASE_MS + 3_000);
    assert.deepEqual(events(sibling, session.key), ['peer_joined', 'peer_left:lease_expired'], 'the member’s own connection hears both');
    assert.deepEqual(events(other, session.key), events(sibling, session.key));
    await other.close();
    await sibling.close();
  });

  it('announces a kicked or banned member as gone, and refuses a removal by key prefix, of oneself or signed by a session', async () => {
    const { owner, members: [bob, carol], meshId } = await enrolMesh(t.baseUrl, 'team', ['bob', 'carol']);
    assert.ok(bob !== undefined && carol !== undefined);
    // The answer as "status code": refusals come back as BrokerRefusal.
    const call = (identity: SigningKeyPair, path: string, body: Record<string, unknown>) =>
      callBroker({ brokerUrl: t.baseUrl, method: 'POST', path, identity, meshId, body })
        .then((answer) => ({ status: answer.status, body: answer.body }), (error: unknown) => {
          if (!(error instanceof BrokerRefusal)) throw error;
          return { status: error.status, body: { code: error.code } as Record<string, unknown> };
        });
    const watcher = await TestPeer.connect(t.wsUrl, { meshId, member: owner });
    const bobPeer = await TestPeer.connect(t.wsUrl, { meshId, member: bob });
    const carolPeer = await TestPeer.connect(t.wsUrl, { meshId, member: carol });
    const ownerSession = generateKeyPair();
    const ownerSessionPeer = await TestPeer.connect(t.wsUrl, { meshId, member: owner, session: ownerSession });

    const refused = [
      await call(owner, '/mesh/kick', { key: bob.publicKey.slice(0, 12) }),
      await call(owner, '/mesh/kick', { key: owner.publicKey }),
      await call(ownerSession, '/mesh/kick', { key: bob.publicKey }),
      await call(ownerSession, '/mesh/ban', { key: carol.publicKey }),
    ].map((answer) => `${answer.status} ${String(answer.body.code)}`);
    assert.deepEqual(refused, ['400 CM_ERR_BAD_REQUEST', '403 CM_ERR_FORBIDDEN', '403 CM_ERR_FORBIDDEN', '403 CM_ERR_FORBIDDEN']);
    const members = async () => ((await callBroker({ brokerUrl: t.baseUrl, method: 'GET', path: '/mesh/members', identity: owner, meshId })).body.members as Array<{ name: string }>).map((member) => member.name).sort();
    assert.deepEqual(await members(), ['alice', 'bob', 'carol'], 'nothing changed');

    assert.equal((await call(owner, '/mesh/kick', { key: bob.publicKey })).status, 200);
    assert.deepEqual(await bobPeer.closed, { code: 4001, reason: 'kicked' });
    assert.equal((await call(owner, '/mesh/ban', { key: carol.publicKey })).status, 200);
    assert.deepEqual(await carolPeer.closed, { code: 4002, reason: 'banned' });
    for (const peer of [watcher, ownerSessionPeer]) {
      await peer.waitFor((frame) => frame.type === 'system' && frame.event === 'peer_left' && frame.peer?.key === carol.publicKey);
      assert.deepEqual(events(peer, bob.publicKey).filter((event) => event.startsWith('peer_left')), ['peer_left:kicked']);
      assert.deepEqual(events(peer, carol.publicKey).filter((event) => event.startsWith('peer_left')), ['peer_left:banned']);
    }
    assert.deepEqual(await members(), ['alice']);
    await watcher.close();
    await ownerSessionPeer.close();
  });
});
