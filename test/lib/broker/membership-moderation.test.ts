import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair } from '../../../lib/crypto.ts';
import type { SigningKeyPair } from '../../../lib/crypto.ts';
import { startMembershipHarness } from './membership-harness.ts';
import type { Harness } from './membership-harness.ts';

describe('membership routes: leave, members, kick, ban, unban, bans', () => {
  let h: Harness;
  let meshId: string;
  let owner: SigningKeyPair;
  let admin: SigningKeyPair;

  before(async () => {
    h = await startMembershipHarness('membership_moderation');
    ({ meshId, owner } = await h.createMesh('team', 'boss'));
    admin = (await h.join(await h.invite(owner, meshId, { role: 'admin' }), 'deputy')).key;
  });
  after(() => h.close());

  const newMember = async (name: string) => (await h.join(await h.invite(owner, meshId), name)).key;
  const post = (as: SigningKeyPair, path: string, pubkey?: string) =>
    h.call('POST', path, as, { meshId, body: pubkey === undefined ? {} : { key: pubkey } });
  const memberNames = async (as: SigningKeyPair = owner) =>
    ((await h.call('GET', '/mesh/members', as, { meshId })).body.members as Array<{ name: string }>).map((member) => member.name);
  const lastRemoval = () => h.removals.at(-1);

  it('lists the current members to any current member', async () => {
    const member = await newMember('lister');
    const answer = await h.call('GET', '/mesh/members', member, { meshId });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.meshName, 'team');
    const boss = answer.body.members.find((entry: { name: string }) => entry.name === 'boss');
    assert.deepEqual({ ...boss, joinedAt: typeof boss.joinedAt }, { name: 'boss', key: owner.publicKey, role: 'owner', joinedAt: 'string' });
  });

  it('leave ends the membership and closes the connections with 1000', async () => {
    const member = await newMember('leaver');
    const answer = await post(member, '/mesh/leave');
    assert.equal(answer.status, 200);
    assert.deepEqual(lastRemoval(), { meshId, key: member.publicKey, closeCode: 1000, reason: 'left' });
    assert.ok(!(await memberNames()).includes('leaver'));
    assert.equal((await h.call('GET', '/mesh/members', member, { meshId })).body.code, 'CM_ERR_FORBIDDEN');
  });

  it('the owner cannot leave', async () => {
    const answer = await post(owner, '/mesh/leave');
    assert.equal(answer.status, 403);
    assert.match(answer.body.hint, /--local/);
  });

  it('kick: the member is out (4001), cannot act, and needs a new invite', async () => {
    const member = await newMember('kickme');
    const answer = await post(admin, '/mesh/kick', member.publicKey);
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { meshId, name: 'kickme', key: member.publicKey, role: 'member' });
    assert.deepEqual(lastRemoval(), { meshId, key: member.publicKey, closeCode: 4001, reason: 'kicked' });
    assert.ok(!(await memberNames()).includes('kickme'));
    assert.equal((await h.call('GET', '/mesh/members', member, { meshId })).body.code, 'CM_ERR_FORBIDDEN');
    const { rows } = await h.pool.query('SELECT left_at IS NOT NULL AS left, banned_at IS NULL AS not_banned FROM members WHERE key = $1', [member.publicKey]);
    assert.deepEqual(rows, [{ left: true, not_banned: true }]);
    assert.equal((await post(admin, '/mesh/kick', member.publicKey)).body.code, 'CM_ERR_NOT_FOUND');
  });

  it('only owners and admins moderate, and only downwards', async () => {
    const member = await newMember('plain');
    const other = await newMember('plain2');
    const removalsBefore = h.removals.length;
    for (const [caller, path, target] of [
      [member, '/mesh/kick', other],
      [member, '/mesh/ban', other],
      [admin, '/mesh/kick', owner],
      [admin, '/mesh/ban', owner],
      [owner, '/mesh/kick', owner],
      [owner, '/mesh/ban', owner],
      [admin, '/mesh/kick', admin],
    ] as const) {
      const answer = await post(caller, path, target.publicKey);
      assert.equal(answer.status, 403, `${path} by ${caller === owner ? 'owner' : caller === admin ? 'admin' : 'member'}`);
      assert.equal(answer.body.code, 'CM_ERR_FORBIDDEN');
    }
    const secondAdmin = (await h.join(await h.invite(owner, meshId, { role: 'admin' }), 'deputy2')).key;
    assert.equal((await post(admin, '/mesh/kick', secondAdmin.publicKey)).status, 403);
    assert.equal((await h.call('GET', '/mesh/bans', member, { meshId })).status, 403);
    assert.equal(h.removals.length, removalsBefore);
    assert.equal((await post(owner, '/mesh/kick', secondAdmin.publicKey)).status, 200);
  });

  it('ban: banned_at is set, the sockets close 4002, the key cannot come back until unbanned', async () => {
    const member = await newMember('villain');
    const answer = await post(admin, '/mesh/ban', member.publicKey);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.alreadyBanned, false);
    assert.deepEqual(lastRemoval(), { meshId, key: member.publicKey, closeCode: 4002, reason: 'banned' });
    const state = async () =>
      (await h.pool.query('SELECT banned_at IS NOT NULL AS banned, left_at IS NOT NULL AS left FROM members WHERE key = $1', [member.publicKey])).rows;
    // left_at stays unset while banned, so a hello reads "banned" (4002), not "not a member"
    assert.deepEqual(await state(), [{ banned: true, left: false }]);
    assert.ok(!(await memberNames()).includes('villain'));
    assert.equal((await h.join(await h.invite(owner, meshId), 'villain', member)).body.code, 'CM_ERR_BANNED');

    const bans = await h.call('GET', '/mesh/bans', owner, { meshId });
    const entry = bans.body.bans.find((ban: { name: string }) => ban.name === 'villain');
    assert.equal(entry.key, member.publicKey);
    assert.equal(entry.bannedBy, 'deputy');

    assert.equal((await post(admin, '/mesh/ban', member.publicKey)).body.alreadyBanned, true);
    assert.equal((await post(owner, '/mesh/unban', member.publicKey)).status, 200);
    assert.deepEqual(await state(), [{ banned: false, left: true }]);
    assert.equal((await post(owner, '/mesh/unban', member.publicKey)).body.code, 'CM_ERR_NOT_FOUND');
    // Unbanned is not let back in: it still needs an invite, and then it may.
    assert.equal((await h.call('GET', '/mesh/members', member, { meshId })).body.code, 'CM_ERR_FORBIDDEN');
    assert.equal((await h.join(await h.invite(owner, meshId), 'villain', member)).status, 201);
  });

  it('ban reaches a former member too (a kicked key cannot return with another invite)', async () => {
    const member = await newMember('former');
    await post(owner, '/mesh/kick', member.publicKey);
    assert.equal((await post(owner, '/mesh/ban', member.publicKey)).status, 200);
    assert.equal((await h.join(await h.invite(owner, meshId), 'former', member)).body.code, 'CM_ERR_BANNED');
  });

  it('refuses a malformed key and a route used without a mesh', async () => {
    assert.equal((await post(owner, '/mesh/kick', 'ABC')).body.code, 'CM_ERR_BAD_REQUEST');
    assert.equal((await h.call('GET', '/mesh/members', owner)).body.code, 'CM_ERR_BAD_REQUEST');
  });
});

describe('membership routes: meshes are isolated', () => {
  let h: Harness;
  let a: { meshId: string; owner: SigningKeyPair };
  let b: { meshId: string; owner: SigningKeyPair };
  let bMember: SigningKeyPair;

  before(async () => {
    h = await startMembershipHarness('membership_isolation');
    a = await h.createMesh('alpha');
    b = await h.createMesh('bravo');
    bMember = (await h.join(await h.invite(b.owner, b.meshId, { meshName: 'bravo' }), 'bea')).key;
  });
  after(() => h.close());

  /** The answer with the mesh id the caller named blanked out, to compare two meshes. */
  const shape = (answer: { status: number; body: Record<string, unknown> }, meshId: string) =>
    JSON.stringify({ status: answer.status, body: answer.body }).replaceAll(meshId, 'MESH');

  it('a member of A gets the same answer about B as about a mesh that does not exist', async () => {
    const missing = 'NoSuchMesh_0001';
    const requests: Array<[method: 'GET' | 'POST', path: string, body?: Record<string, unknown>]> = [
      ['GET', '/mesh/members'],
      ['GET', '/mesh/bans'],
      ['POST', '/mesh/kick', { key: bMember.publicKey }],
      ['POST', '/mesh/ban', { key: bMember.publicKey }],
      ['POST', '/mesh/unban', { key: bMember.publicKey }],
      ['POST', '/mesh/leave', {}],
      ['POST', '/mesh/invite/revoke', { inviteId: 'AAAAAAAAAAAAAAAAAAAAAA' }],
    ];
    for (const [method, path, body] of requests) {
      const options = body === undefined ? {} : { body };
      const aboutB = await h.call(method, path, a.owner, { meshId: b.meshId, ...options });
      const aboutNothing = await h.call(method, path, a.owner, { meshId: missing, ...options });
      assert.equal(aboutB.status, 403, path);
      assert.equal(shape(aboutB, b.meshId), shape(aboutNothing, missing), path);
    }
    const token = h.makeInvite(a.owner, b.meshId, { meshName: 'bravo' });
    const { encodeInvite } = await import('../../../lib/invite.ts');
    const invite = await h.call('POST', '/mesh/invite', a.owner, { meshId: b.meshId, body: { token: encodeInvite(token) } });
    assert.equal(invite.body.code, 'CM_ERR_FORBIDDEN');
    assert.ok((await h.call('GET', '/mesh/members', b.owner, { meshId: b.meshId })).body.members.some((m: { name: string }) => m.name === 'bea'));
  });

  it('the owner of A cannot reach a member of B through A', async () => {
    const kick = await h.call('POST', '/mesh/kick', a.owner, { meshId: a.meshId, body: { key: bMember.publicKey } });
    const nobody = await h.call('POST', '/mesh/kick', a.owner, { meshId: a.meshId, body: { key: generateKeyPair().publicKey } });
    assert.equal(kick.status, 404);
    assert.equal(shape(kick, bMember.publicKey.slice(0, 12)), shape(nobody, String(nobody.body.message).match(/[0-9a-f]{12}/)?.[0] ?? ''));
    assert.equal(h.removals.length, 0);
  });
});
