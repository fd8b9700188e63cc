import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair, sign } from '../../../lib/crypto.ts';
import { decodeInvite, encodeInvite, inviteSigningString } from '../../../lib/invite.ts';
import { startMembershipHarness } from './membership-harness.ts';
import type { Harness } from './membership-harness.ts';

const ADMIN_TOKEN = 'operator-token-0123456789';

describe('membership routes: signatures', () => {
  let h: Harness;
  before(async () => {
    h = await startMembershipHarness('membership_sig');
  });
  after(() => h.close());

  it('refuses an unsigned request', async () => {
    const answer = await h.call('POST', '/mesh/create', generateKeyPair(), { unsigned: true, body: { name: 'x', ownerName: 'o' } });
    assert.equal(answer.status, 401);
    assert.equal(answer.body.code, 'CM_ERR_UNAUTHORIZED');
  });

  it('refuses a request signed more than 60 s away from the broker clock', async () => {
    const answer = await h.call('POST', '/mesh/create', generateKeyPair(), { signedAt: h.clock.now - 61_000, body: { name: 'x', ownerName: 'o' } });
    assert.equal(answer.body.code, 'CM_ERR_TIMESTAMP_SKEW');
  });

  it('refuses a signature made by another key than the one named', async () => {
    const owner = generateKeyPair();
    const answer = await h.call('POST', '/mesh/create', owner, {
      body: { name: 'x', ownerName: 'o' },
      headers: { 'x-claudemesh-key': generateKeyPair().publicKey },
    });
    assert.equal(answer.body.code, 'CM_ERR_BAD_SIGNATURE');
  });

  it('refuses the same signed request twice', async () => {
    const owner = generateKeyPair();
    const body = JSON.stringify({ name: 'replayed', ownerName: 'o' });
    const { signRequest } = await import('../../../lib/signed-request.ts');
    const headers = signRequest({ method: 'POST', path: '/mesh/create', body, publicKey: owner.publicKey, secretKey: owner.secretKey, now: h.clock.now });
    const first = await fetch(`${h.baseUrl}/mesh/create`, { method: 'POST', headers, body });
    assert.equal(first.status, 201);
    const second = await fetch(`${h.baseUrl}/mesh/create`, { method: 'POST', headers, body });
    assert.equal(((await second.json()) as { code: string }).code, 'CM_ERR_REPLAYED');
  });
});

describe('POST /mesh/create', () => {
  let h: Harness;
  before(async () => {
    h = await startMembershipHarness('membership_create');
  });
  after(() => h.close());

  it('stores the owner public key only and mints an id that fits meshes.id', async () => {
    const owner = generateKeyPair();
    const answer = await h.call('POST', '/mesh/create', owner, { body: { name: 'Team Rocket', ownerName: 'jessie' } });
    assert.equal(answer.status, 201);
    assert.match(answer.body.meshId, /^[A-Za-z0-9_-]{8,64}$/);
    assert.deepEqual({ ...answer.body, meshId: undefined }, { meshId: undefined, name: 'Team Rocket', ownerKey: owner.publicKey, memberName: 'jessie', role: 'owner' });
    const { rows } = await h.pool.query('SELECT m.owner_key, p.role, p.name FROM meshes m JOIN members p ON p.mesh_id = m.id WHERE m.id = $1', [answer.body.meshId]);
    assert.deepEqual(rows, [{ owner_key: owner.publicKey, role: 'owner', name: 'jessie' }]);
  });

  it('refuses bad names with the field and value', async () => {
    for (const body of [{ name: '', ownerName: 'a' }, { name: 'line\nbreak', ownerName: 'a' }, { name: 'ok', ownerName: '@group' }, { name: 'ok' }]) {
      const answer = await h.call('POST', '/mesh/create', generateKeyPair(), { body });
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.equal(answer.body.code, 'CM_ERR_BAD_REQUEST');
    }
  });
});

describe('POST /mesh/create with BROKER_ADMIN_TOKEN', () => {
  let h: Harness;
  before(async () => {
    h = await startMembershipHarness('membership_token', { BROKER_ADMIN_TOKEN: ADMIN_TOKEN });
  });
  after(() => h.close());

  it('needs the operator token', async () => {
    const body = { name: 'x', ownerName: 'o' };
    const missing = await h.call('POST', '/mesh/create', generateKeyPair(), { body });
    assert.equal(missing.status, 401);
    assert.equal(missing.body.code, 'CM_ERR_UNAUTHORIZED');
    assert.match(missing.body.hint, /--token/);
    const wrong = await h.call('POST', '/mesh/create', generateKeyPair(), { body, headers: { authorization: 'Bearer not-the-token-at-all' } });
    assert.equal(wrong.status, 401);
    const right = await h.call('POST', '/mesh/create', generateKeyPair(), { body, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(right.status, 201);
  });
});

describe('POST /mesh/invite', () => {
  let h: Harness;
  let meshId: string;
  let owner: ReturnType<typeof generateKeyPair>;
  let member: ReturnType<typeof generateKeyPair>;
  let admin: ReturnType<typeof generateKeyPair>;

  before(async () => {
    h = await startMembershipHarness('membership_invite');
    ({ meshId, owner } = await h.createMesh());
    member = (await h.join(await h.invite(owner, meshId), 'member1')).key;
    admin = (await h.join(await h.invite(owner, meshId, { role: 'admin' }), 'admin1')).key;
  });
  after(() => h.close());

  const register = (signer: ReturnType<typeof generateKeyPair>, token: string, options: { meshId?: string; host?: string } = {}) =>
    h.call('POST', '/mesh/invite', signer, { meshId: options.meshId ?? meshId, body: { token }, ...(options.host === undefined ? {} : { host: options.host }) });

  it('registers an owner invite, and the same invite again is harmless', async () => {
    const token = encodeInvite(h.makeInvite(owner, meshId, { maxUses: 3 }));
    const first = await register(owner, token);
    assert.equal(first.status, 201);
    assert.equal(first.body.maxUses, 3);
    assert.equal(first.body.alreadyRegistered, false);
    const again = await register(owner, token);
    assert.equal(again.status, 200);
    assert.equal(again.body.alreadyRegistered, true);
  });

  it('lets an admin invite members but only the owner invite admins', async () => {
    assert.equal((await register(admin, encodeInvite(h.makeInvite(admin, meshId)))).status, 201);
    const refused = await register(admin, encodeInvite(h.makeInvite(admin, meshId, { role: 'admin' })));
    assert.equal(refused.status, 403);
    assert.equal(refused.body.code, 'CM_ERR_FORBIDDEN');
  });

  it('refuses a plain member and a stranger', async () => {
    assert.equal((await register(member, encodeInvite(h.makeInvite(member, meshId)))).body.code, 'CM_ERR_FORBIDDEN');
    const stranger = generateKeyPair();
    assert.equal((await register(stranger, encodeInvite(h.makeInvite(stranger, meshId)))).body.code, 'CM_ERR_FORBIDDEN');
  });

  it('refuses an invite signed by another key than the caller', async () => {
    const answer = await register(admin, encodeInvite(h.makeInvite(owner, meshId)));
    assert.equal(answer.body.code, 'CM_ERR_BAD_REQUEST');
  });

  it('refuses a tampered invite', async () => {
    const invite = h.makeInvite(owner, meshId);
    const answer = await register(owner, encodeInvite({ ...invite, maxUses: 50 }));
    assert.equal(answer.body.code, 'CM_ERR_INVITE_BAD_SIGNATURE');
  });

  it('refuses an invite naming another broker address than the one reached', async () => {
    const answer = await register(owner, encodeInvite(h.makeInvite(owner, meshId, { brokerUrl: 'https://elsewhere.example' })));
    assert.equal(answer.status, 400);
    assert.equal(answer.body.code, 'CM_ERR_INVITE_WRONG_BROKER');
  });

  it('ignores X-Forwarded-Host unless TRUST_PROXY says a proxy of ours sets it', async () => {
    const token = encodeInvite(h.makeInvite(owner, meshId, { brokerUrl: 'https://mesh.example.com' }));
    const answer = await h.call('POST', '/mesh/invite', owner, { meshId, body: { token }, headers: { 'x-forwarded-host': 'mesh.example.com' } });
    assert.equal(answer.body.code, 'CM_ERR_INVITE_WRONG_BROKER');
    const proxied = await startMembershipHarness('membership_proxy', { TRUST_PROXY: '1' });
    try {
      const mine = await proxied.createMesh();
      const forwarded = encodeInvite(proxied.makeInvite(mine.owner, mine.meshId, { brokerUrl: 'https://mesh.example.com' }));
      const accepted = await proxied.call('POST', '/mesh/invite', mine.owner, { meshId: mine.meshId, body: { token: forwarded }, headers: { 'x-forwarded-host': 'mesh.example.com' } });
      assert.equal(accepted.status, 201);
    } finally {
      await proxied.close();
    }
  });

  it('refuses an invite that expired or lives more than a year', async () => {
    const nowSeconds = Math.floor(h.clock.now / 1000);
    assert.equal((await register(owner, encodeInvite(h.makeInvite(owner, meshId, { expiresAt: nowSeconds })))).body.code, 'CM_ERR_INVITE_EXPIRED');
    const long = await register(owner, encodeInvite(h.makeInvite(owner, meshId, { expiresAt: nowSeconds + 400 * 86_400 })));
    assert.equal(long.body.code, 'CM_ERR_BAD_REQUEST');
  });

  it('refuses an invite for another mesh than the request is signed for, and a malformed token', async () => {
    const other = await h.createMesh('other');
    const answer = await register(owner, encodeInvite(h.makeInvite(owner, other.meshId, { meshName: 'other' })));
    assert.equal(answer.body.code, 'CM_ERR_BAD_REQUEST');
    assert.equal((await register(owner, 'cm1.nope')).body.code, 'CM_ERR_INVITE_MALFORMED');
  });

  it('revokes: the owner any invite, an admin only its own', async () => {
    const ownerToken = await h.invite(owner, meshId);
    const ownerInviteId = decodeInvite(ownerToken).nonce;
    const byAdmin = await h.call('POST', '/mesh/invite/revoke', admin, { meshId, body: { inviteId: ownerInviteId } });
    assert.equal(byAdmin.body.code, 'CM_ERR_INVITE_UNKNOWN');
    const byOwner = await h.call('POST', '/mesh/invite/revoke', owner, { meshId, body: { inviteId: ownerInviteId } });
    assert.equal(byOwner.status, 200);
    const join = await h.join(ownerToken, 'late');
    assert.equal(join.body.code, 'CM_ERR_INVITE_REVOKED');
  });
});

describe('POST /mesh/join', () => {
  let h: Harness;
  let meshId: string;
  let owner: ReturnType<typeof generateKeyPair>;

  before(async () => {
    h = await startMembershipHarness('membership_join');
    ({ meshId, owner } = await h.createMesh());
  });
  after(() => h.close());

  const uses = async (token: string) => (await h.pool.query('SELECT uses FROM invites WHERE id = $1', [decodeInvite(token).nonce])).rows[0]?.uses as number;

  it('enrols the key that signs the join, with the invite role', async () => {
    const token = await h.invite(owner, meshId, { role: 'admin' });
    const joined = await h.join(token, 'ada');
    assert.equal(joined.status, 201);
    assert.deepEqual(joined.body, {
      meshId,
      meshName: 'team',
      ownerKey: owner.publicKey,
      role: 'admin',
      name: 'ada',
      alreadyMember: false,
      key: joined.key.publicKey,
    });
    const { rows } = await h.pool.query('SELECT role, invite_id FROM members WHERE mesh_id = $1 AND key = $2', [meshId, joined.key.publicKey]);
    assert.deepEqual(rows, [{ role: 'admin', invite_id: decodeInvite(token).nonce }]);
  });

  it('joining twice with the same key is harmless and takes no use', async () => {
    const token = await h.invite(owner, meshId, { maxUses: 2 });
    const first = await h.join(token, 'twice');
    const second = await h.join(token, 'twice-renamed', first.key);
    assert.equal(second.status, 200);
    assert.equal(second.body.alreadyMember, true);
    assert.equal(second.body.name, 'twice');
    assert.equal(await uses(token), 1);
    // a retry whose first answer was lost still succeeds once the invite is gone
    await h.call('POST', '/mesh/invite/revoke', owner, { meshId, body: { inviteId: decodeInvite(token).nonce } });
    assert.equal((await h.join(token, 'twice', first.key)).body.alreadyMember, true);
  });

  it('a single-use invite lets exactly one of many concurrent joins in', async () => {
    const token = await h.invite(owner, meshId);
    const results = await Promise.all(Array.from({ length: 12 }, (_, index) => h.join(token, `racer${index}`)));
    const winners = results.filter((result) => result.status === 201);
    assert.equal(winners.length, 1);
    for (const loser of results.filter((result) => result.status !== 201)) assert.equal(loser.body.code, 'CM_ERR_INVITE_EXHAUSTED');
    assert.equal(await uses(token), 1);
  });

  it('refuses an invite this broker never registered, and one for a mesh that does not exist, alike', async () => {
    const unregistered = await h.join(encodeInvite(h.makeInvite(owner, meshId)), 'x');
    const nowhere = await h.join(encodeInvite(h.makeInvite(owner, 'NoSuchMesh123')), 'x');
    assert.equal(unregistered.status, 404);
    assert.equal(unregistered.body.code, 'CM_ERR_INVITE_UNKNOWN');
    assert.equal(nowhere.status, 404);
    assert.equal(nowhere.body.code, 'CM_ERR_INVITE_UNKNOWN');
  });

  it('refuses a tampered invite, even one re-signed by the owner under the same nonce', async () => {
    const token = await h.invite(owner, meshId);
    const invite = decodeInvite(token);
    const changed = await h.join(encodeInvite({ ...invite, role: 'admin' }), 'x');
    assert.equal(changed.body.code, 'CM_ERR_INVITE_BAD_SIGNATURE');
    const resigned = { ...invite, role: 'admin' as const };
    resigned.signature = sign(inviteSigningString(resigned), owner.secretKey);
    const answer = await h.join(encodeInvite(resigned), 'x');
    assert.equal(answer.body.code, 'CM_ERR_INVITE_BAD_SIGNATURE');
    assert.equal(await uses(token), 0);
  });

  it('refuses a join that reaches the broker under another address than the invite names', async () => {
    const token = await h.invite(owner, meshId);
    const answer = await h.call('POST', '/mesh/join', generateKeyPair(), { body: { token, name: 'x' }, host: 'evil.example:443' });
    assert.equal(answer.status, 400);
    assert.equal(answer.body.code, 'CM_ERR_INVITE_WRONG_BROKER');
  });

  it('refuses an expired invite by the broker clock', async () => {
    const token = await h.invite(owner, meshId, { expiresAt: Math.floor(h.clock.now / 1000) + 30 });
    h.clock.now += 31_000;
    try {
      assert.equal((await h.join(token, 'slow')).body.code, 'CM_ERR_INVITE_EXPIRED');
    } finally {
      h.clock.now -= 31_000;
    }
  });

  it('refuses an exhausted invite and a name already taken', async () => {
    const token = await h.invite(owner, meshId, { maxUses: 2 });
    assert.equal((await h.join(token, 'first')).status, 201);
    const clash = await h.join(token, 'first');
    assert.equal(clash.status, 409);
    assert.equal(clash.body.code, 'CM_ERR_NAME_TAKEN');
    assert.equal((await h.join(token, 'second')).status, 201);
    assert.equal((await h.join(token, 'third')).body.code, 'CM_ERR_INVITE_EXHAUSTED');
  });

  it('voids the invites of a signer who is no longer an admin', async () => {
    const admin = (await h.join(await h.invite(owner, meshId, { role: 'admin' }), 'shortlived')).key;
    const token = await h.invite(admin, meshId);
    assert.equal((await h.call('POST', '/mesh/kick', owner, { meshId, body: { key: admin.publicKey } })).status, 200);
    assert.equal((await h.join(token, 'orphan')).body.code, 'CM_ERR_INVITE_REVOKED');
  });

  it('needs a new invite to come back after leaving, and refuses a banned key even with one', async () => {
    const token = await h.invite(owner, meshId, { maxUses: 5 });
    const joined = await h.join(token, 'boomerang');
    assert.equal((await h.call('POST', '/mesh/leave', joined.key, { meshId, body: {} })).status, 200);
    assert.equal((await h.join(token, 'boomerang', joined.key)).body.code, 'CM_ERR_INVITE_EXHAUSTED');
    const back = await h.join(await h.invite(owner, meshId), 'boomerang', joined.key);
    assert.equal(back.status, 201);
    assert.equal((await h.call('POST', '/mesh/ban', owner, { meshId, body: { key: joined.key.publicKey } })).status, 200);
    const banned = await h.join(await h.invite(owner, meshId), 'boomerang', joined.key);
    assert.equal(banned.status, 403);
    assert.equal(banned.body.code, 'CM_ERR_BANNED');
  });

  it('refuses a body without a valid member name or token', async () => {
    const token = await h.invite(owner, meshId);
    assert.equal((await h.join(token, 'has space')).body.code, 'CM_ERR_BAD_REQUEST');
    assert.equal((await h.call('POST', '/mesh/join', generateKeyPair(), { body: { name: 'x' } })).body.code, 'CM_ERR_BAD_REQUEST');
    assert.equal((await h.join('not-a-token', 'x')).body.code, 'CM_ERR_INVITE_MALFORMED');
  });
});
