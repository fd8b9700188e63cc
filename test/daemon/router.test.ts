import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encryptFor, resolveTarget } from '../../daemon/router.ts';
import type { Roster } from '../../daemon/held-roster.ts';
import { generateKeyPair, open } from '../../lib/crypto.ts';

const me = generateKeyPair();
const bob = generateKeyPair();
const carol = generateKeyPair();
const bobSession = generateKeyPair();
const mySession = generateKeyPair();
// What a peer carries besides the fields these tests are about.
const LIVE = { status: 'idle', summary: '', connectedAt: new Date(0).toISOString(), online: true } as const;
const roster: Roster = {
  members: [
    { key: me.publicKey, name: 'me', role: 'owner' },
    { key: bob.publicKey, name: 'bob', role: 'member' },
    { key: carol.publicKey, name: 'carol', role: 'member' },
  ],
  peers: [
    { key: bobSession.publicKey, memberKey: bob.publicKey, name: 'bob-worker', kind: 'session', role: 'member', groups: ['ops/deploy'], ...LIVE },
    { key: mySession.publicKey, memberKey: me.publicKey, name: 'mine', kind: 'session', role: 'member', groups: ['ops'], ...LIVE },
    { key: carol.publicKey, memberKey: carol.publicKey, name: 'carol', kind: 'member', role: 'member', groups: [], ...LIVE },
  ],
};
const sender = { key: me.publicKey, memberKey: me.publicKey, secret: me.secretKey };

describe('resolveTarget', () => {
  it('resolves a member name, a key prefix and a full key to one key', () => {
    assert.deepEqual(resolveTarget('bob', roster, sender), { target: bob.publicKey, recipients: [bob.publicKey] });
    assert.equal(resolveTarget(carol.publicKey.slice(0, 8), roster, sender).target, carol.publicKey);
    assert.equal(resolveTarget(bob.publicKey, roster, sender).target, bob.publicKey);
  });

  it('falls back to session names when no member has the name', () => {
    assert.equal(resolveTarget('bob-worker', roster, sender).target, bobSession.publicKey);
  });

  it('* reaches every member but the sender’s own; @group every key in the group, hierarchically', () => {
    assert.deepEqual(resolveTarget('*', roster, sender).recipients.sort(), [bob.publicKey, carol.publicKey].sort());
    // The broker requires every key of the group but the sender's own: my own sessions too.
    assert.deepEqual(resolveTarget('@ops', roster, sender).recipients, [bobSession.publicKey, mySession.publicKey]);
    assert.deepEqual(resolveTarget('@ops/deploy', roster, sender).recipients, [bobSession.publicKey]);
    const fromSession = { key: bobSession.publicKey, memberKey: bob.publicKey, secret: bobSession.secretKey };
    assert.deepEqual(resolveTarget('*', roster, fromSession).recipients.sort(), [me.publicKey, carol.publicKey].sort());
  });

  it('refuses unknown, ambiguous, empty and self targets with codes', () => {
    assert.throws(() => resolveTarget('nobody', roster, sender), { code: 'CM_ERR_PEER_UNKNOWN' });
    assert.throws(() => resolveTarget('@nobody', roster, sender), { code: 'CM_ERR_PEER_UNKNOWN' });
    assert.throws(() => resolveTarget('me', roster, sender), { code: 'CM_ERR_PEER_UNKNOWN' });
    const twins: Roster = { members: [...roster.members, { key: generateKeyPair().publicKey, name: 'bob', role: 'member' }], peers: [] };
    assert.throws(() => resolveTarget('bob', twins, sender), { code: 'CM_ERR_AMBIGUOUS' });
  });

  it('refuses a full key that is no member or session of the mesh, and 64 hex that is not a key, at once', () => {
    const stranger = generateKeyPair().publicKey;
    assert.throws(() => resolveTarget(stranger, roster, sender), { code: 'CM_ERR_PEER_UNKNOWN', message: /is not a member or session of this mesh/ });
    assert.throws(() => resolveTarget('0'.repeat(64), roster, sender), { code: 'CM_ERR_INVALID_KEY', message: /not an ed25519 public key/ });
  });
});

describe('encryptFor', () => {
  it('seals one envelope per recipient, each opened only by its own key', () => {
    const envelopes = encryptFor('secret plan', [bob.publicKey, carol.publicKey], me.secretKey);
    assert.deepEqual(envelopes.map((envelope) => envelope.to), [bob.publicKey, carol.publicKey]);
    const [forBob, forCarol] = envelopes.map((envelope) => ({ nonce: Buffer.from(envelope.nonce, 'base64'), ciphertext: Buffer.from(envelope.ciphertext, 'base64') }));
    assert.equal(open(forBob!, me.publicKey, bob.secretKey)?.toString(), 'secret plan');
    assert.equal(open(forCarol!, me.publicKey, carol.secretKey)?.toString(), 'secret plan');
    assert.equal(open(forBob!, me.publicKey, carol.secretKey), undefined);
    assert.notEqual(envelopes[0]?.nonce, envelopes[1]?.nonce, 'a fresh nonce each');
  });
});
