import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair, sign } from '../../lib/crypto.ts';
import { isCmError } from '../../lib/errors.ts';
import {
  checkInvite,
  createInvite,
  decodeInvite,
  encodeInvite,
  INVITE_PREFIX,
  inviteSignatureValid,
  inviteSigningString,
  MAX_TOKEN_LENGTH,
  normaliseBrokerUrl,
} from '../../lib/invite.ts';
import type { Invite } from '../../lib/invite.ts';

const NOW = Date.UTC(2030, 0, 1);
const owner = generateKeyPair();

function sample(overrides: Partial<Parameters<typeof createInvite>[0]> = {}): Invite {
  return createInvite(
      { meshId: 'Mesh_0123456789', meshName: 'Team Rocket', brokerUrl: 'https://mesh.example.com', role: 'member', expiresAt: NOW / 1000 + 3_600, maxUses: 1, ...overrides },
    owner.secretKey,
  );
}

/** The token with its JSON payload edited. */
function edit(token: string, change: (json: Record<string, unknown>) => void): string {
  const json = JSON.parse(Buffer.from(token.slice(INVITE_PREFIX.length), 'base64url').toString('utf8')) as Record<string, unknown>;
  change(json);
  return INVITE_PREFIX + Buffer.from(JSON.stringify(json)).toString('base64url');
}

function codeOf(work: () => unknown): string | undefined {
  try {
    work();
  } catch (error) {
    return isCmError(error) ? error.code : `not a CmError: ${String(error)}`;
  }
  return undefined;
}

describe('invite tokens', () => {
  it('round-trip through one copy-pasteable line', () => {
    const invite = sample();
    const token = encodeInvite(invite);
    assert.ok(token.startsWith('cm1.'));
    assert.match(token, /^cm1\.[A-Za-z0-9_-]+$/);
    assert.deepEqual(decodeInvite(`  ${token}\n`), invite);
    assert.equal(invite.inviterKey, owner.publicKey);
    assert.match(invite.nonce, /^[A-Za-z0-9_-]{22}$/);
    assert.notEqual(sample().nonce, invite.nonce);
  });

  it('verify offline with the signature over every field', () => {
    const token = encodeInvite(sample());
    assert.equal(codeOf(() => checkInvite(decodeInvite(token), NOW)), undefined);
    const tampered: Array<[string, (json: Record<string, unknown>) => void]> = [
      ['role', (json) => (json.role = 'admin')],
      ['expiry', (json) => (json.exp = (json.exp as number) + 86_400)],
      ['uses', (json) => (json.uses = 100)],
      ['broker', (json) => (json.broker = 'https://evil.example')],
      ['mesh', (json) => (json.mesh = 'OtherMesh_0001')],
      ['name', (json) => (json.name = 'Team Rocket!')],
      ['nonce', (json) => (json.nonce = 'AAAAAAAAAAAAAAAAAAAAAA')],
      ['signer', (json) => (json.by = generateKeyPair().publicKey)],
      ['signature', (json) => (json.sig = `${'0'.repeat(127)}1`)],
    ];
    for (const [field, change] of tampered) {
      const invite = decodeInvite(edit(token, change));
      assert.equal(inviteSignatureValid(invite), false, field);
      assert.equal(codeOf(() => checkInvite(invite, NOW)), 'CM_ERR_INVITE_BAD_SIGNATURE', field);
    }
  });

  it('an invite re-signed by another key is valid offline but names that key', () => {
    const stranger = generateKeyPair();
    const invite = { ...sample(), role: 'admin' as const, inviterKey: stranger.publicKey };
    invite.signature = sign(inviteSigningString(invite), stranger.secretKey);
    assert.equal(inviteSignatureValid(invite), true);
    assert.equal(invite.inviterKey, stranger.publicKey);
  });

  it('domain-separates the signed bytes', () => {
    const text = inviteSigningString(sample()).toString('utf8');
    assert.ok(text.startsWith('claudemesh/v1/invite\n1\nMesh_0123456789\nTeam Rocket\nhttps://mesh.example.com\nmember\n'));
  });

  it('expire by the clock given', () => {
    const invite = sample({ expiresAt: NOW / 1000 + 10 });
    assert.equal(codeOf(() => checkInvite(invite, NOW + 9_999)), undefined);
    assert.equal(codeOf(() => checkInvite(invite, NOW + 10_000)), 'CM_ERR_INVITE_EXPIRED');
  });

  it('refuse malformed tokens with CM_ERR_INVITE_MALFORMED', () => {
    const token = encodeInvite(sample());
    const bad = [
      '',
      'cm2.abc',
      token.slice(4),
      `${token.slice(0, 40)}`,
      `${token}!`,
      `cm1.${Buffer.from('[1,2]').toString('base64url')}`,
      `cm1.${'A'.repeat(MAX_TOKEN_LENGTH)}`,
      edit(token, (json) => (json.v = 2)),
      edit(token, (json) => (json.extra = 'rides along')),
      edit(token, (json) => delete json.sig),
      edit(token, (json) => (json.role = 'owner')),
      edit(token, (json) => (json.uses = 0)),
      edit(token, (json) => (json.exp = '1999')),
      edit(token, (json) => (json.broker = 'https://mesh.example.com/path')),
      edit(token, (json) => (json.mesh = 'short')),
      edit(token, (json) => (json.name = 'two\nlines')),
      `cm1.${Buffer.from('{"__proto__":{"role":"admin"}}').toString('base64url')}`,
    ];
    for (const text of bad) assert.equal(codeOf(() => decodeInvite(text)), 'CM_ERR_INVITE_MALFORMED', text.slice(0, 60));
  });

  it('createInvite refuses fields that could not be decoded again', () => {
    assert.equal(codeOf(() => sample({ brokerUrl: 'ftp://x' })), 'CM_ERR_INVITE_MALFORMED');
    assert.equal(codeOf(() => sample({ maxUses: 1.5 })), 'CM_ERR_INVITE_MALFORMED');
  });
});

describe('normaliseBrokerUrl', () => {
  it('keeps the origin of http(s) URLs and refuses the rest', () => {
    assert.equal(normaliseBrokerUrl('http://127.0.0.1:7900'), 'http://127.0.0.1:7900');
    assert.equal(normaliseBrokerUrl('http://127.0.0.1:7900/'), 'http://127.0.0.1:7900');
    assert.equal(normaliseBrokerUrl(' HTTPS://Mesh.Example.com:443 '), 'https://mesh.example.com');
    for (const bad of ['mesh.example.com', 'ws://x', 'https://u:p@x', 'https://x/api', 'https://x?a=1', 'https://x#f', '']) {
      assert.equal(normaliseBrokerUrl(bad), undefined, bad);
    }
  });
});
