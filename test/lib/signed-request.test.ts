import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair } from '../../lib/crypto.ts';
import { ReplayGuard } from '../../lib/signed-request.ts';
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
    assert.deepEqual(verified, { publicKey: key.publicKey, meshId: 'mesh_abcdefgh', timestamp: NOW });
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

  it('refuses missing headers, bad keys, skewed timestamps and replays', () => {
    const { headers, body } = signed();
    const input = { method: 'POST', path: '/members/kick', body, now: NOW };
    assert.throws(() => verifySignedRequest({ ...input, headers: {} }), { code: 'CM_ERR_UNAUTHORIZED' });
    assert.throws(() => verifySignedRequest({ ...input, headers: { ...headers, 'x-claudemesh-key': 'XYZ' } }), { code: 'CM_ERR_UNAUTHORIZED' });
    assert.throws(() => verifySignedRequest({ ...input, headers, now: NOW + CLOCK_SKEW_MS + 1 }), { code: 'CM_ERR_TIMESTAMP_SKEW' });
    assert.throws(() => verifySignedRequest({ ...input, headers: { ...headers, 'x-claudemesh-timestamp': '1e12' } }), { code: 'CM_ERR_TIMESTAMP_SKEW' });
    assert.throws(() => verifySignedRequest({ ...input, headers: { ...headers, [HEADER_SIGNATURE]: 'f'.repeat(128) } }), { code: 'CM_ERR_BAD_SIGNATURE' });
    const replay = new ReplayGuard({ now: () => NOW });
    verifySignedRequest({ ...input, headers, replay });
    assert.throws(() => verifySignedRequest({ ...input, headers, replay }), { code: 'CM_ERR_REPLAYED' });
  });
});

describe('ReplayGuard', () => {
  it('forgets a signature once its window has passed, and stays bounded', () => {
    let now = 0;
    const guard = new ReplayGuard({ now: () => now, maxEntries: 100 });
    assert.equal(guard.firstUse('sig', 10), true);
    assert.equal(guard.firstUse('sig', 10), false);
    now = 11;
    assert.equal(guard.firstUse('sig', 30), true, 'usable again once it could no longer pass the clock check');
    for (let i = 0; i < 1_000; i += 1) guard.firstUse(`s${i}`, 1_000_000);
    assert.ok(guard.size <= 100);
  });
});
