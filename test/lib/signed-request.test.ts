import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair } from '../../lib/crypto.ts';
import { CLOCK_SKEW_MS, HEADER_SIGNATURE, signRequest, verifySignedRequest } from '../../lib/signed-request.ts';

const NOW = 1_800_000_000_000;

function signed(body = '{"a":1}', now = NOW) {
  const key = generateKeyPair();
  const headers = signRequest({ method: 'post', path: '/members/kick', body, publicKey: key.publicKey, secretKey: key.secretKey, meshId: 'mesh_abcdefgh', now });
  return { key, headers, body: Buffer.from(body) };
}

describe('signed requests', () => {
  it('proves the key, the mesh and the timestamp of exactly this request', () => {
    const { key, headers, body } = signed();
    const verified = verifySignedRequest({ method: 'POST', path: '/members/kick', headers, body, now: NOW + 1_000 });
    assert.deepEqual(verified, { publicKey: key.publicKey, meshId: 'mesh_abcdefgh', timestamp: NOW, signature: headers['x-claudemesh-signature'] });
  });

  it('refuses another path, method, body or mesh with CM_ERR_BAD_SIGNATURE', () => {
    const { headers, body } = signed();
    const cases = [
      { method: 'POST', path: '/members/ban', headers, body },
      { method: 'GET', path: '/members/kick', headers, body },
      { method: 'POST', path: '/members/kick', headers, body: Buffer.from('{"a":2}') },
      { method: 'POST', path: '/members/kick', headers: { ...headers, 'x-claudemesh-mesh': 'mesh_other123' }, body },
    ];
    for (const input of cases) assert.throws(() => verifySignedRequest({ ...input, now: NOW }), { code: 'CM_ERR_BAD_SIGNATURE' });
  });

  it('refuses missing headers, bad keys and skewed timestamps (replays: test/lib/broker/membership.test.ts)', () => {
    const { headers, body } = signed();
    const input = { method: 'POST', path: '/members/kick', body, now: NOW };
    assert.throws(() => verifySignedRequest({ ...input, headers: {} }), { code: 'CM_ERR_UNAUTHORIZED' });
    assert.throws(() => verifySignedRequest({ ...input, headers: { ...headers, 'x-claudemesh-key': 'XYZ' } }), { code: 'CM_ERR_UNAUTHORIZED' });
    assert.throws(() => verifySignedRequest({ ...input, headers, now: NOW + CLOCK_SKEW_MS + 1 }), { code: 'CM_ERR_TIMESTAMP_SKEW' });
    assert.throws(() => verifySignedRequest({ ...input, headers: { ...headers, 'x-claudemesh-timestamp': '1e12' } }), { code: 'CM_ERR_TIMESTAMP_SKEW' });
    assert.throws(() => verifySignedRequest({ ...input, headers: { ...headers, [HEADER_SIGNATURE]: 'f'.repeat(128) } }), { code: 'CM_ERR_BAD_SIGNATURE' });
  });
});
