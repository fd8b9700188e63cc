import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair } from '../../../lib/crypto.ts';
import { signRequest } from '../../../lib/signed-request.ts';
import { HOOK_PATH } from '../../../lib/broker/http.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { metricValue, rawPost } from '../../helpers/http.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { SeededMesh } from '../../helpers/peer.ts';

const HOOK_LIMIT = 3;

describe('POST /hook/set-status', () => {
  let t: TestBroker;
  let mesh: SeededMesh;
  let peer: TestPeer;
  let clock = Date.now();

  before(async () => {
    t = await startTestBroker('hook', { env: { HOOK_RATE_LIMIT_PER_MIN: String(HOOK_LIMIT), MAX_MESSAGE_BYTES: '2048' }, now: () => clock });
    mesh = await seedMesh(t.db.pool, 2);
    peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[0]!, session: generateKeyPair(), timestamp: clock });
  });
  after(async () => {
    await peer.close();
    await t.close();
  });

  function hook(body: Record<string, unknown>, signer = peer.session!, meshId = mesh.meshId): Promise<Response> {
    const text = JSON.stringify(body);
    clock += 1; // a signature is good for one use: identical requests need distinct timestamps
    const headers = signRequest({ method: 'POST', path: HOOK_PATH, body: text, publicKey: signer.publicKey, secretKey: signer.secretKey, meshId, now: clock });
    return fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: text, headers });
  }

  it('applies a signed status to that session and nothing else', async () => {
    const response = await hook({ pid: 100, cwd: '/work/a', status: 'working' });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { ok: true, applied: true, status: 'working' });
    const list = await peer.request({ type: 'list_peers' });
    assert.equal(list.peers.find((p: Record<string, unknown>) => p.key === peer.key).status, 'working');
    clock += 1_000;
    assert.equal((await hook({ pid: 100, cwd: '/work/a', status: 'idle' })).status, 200);
  });

  it('refuses unsigned, wrongly signed, other-mesh and non-session requests with 401', async () => {
    const unsigned = await fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: JSON.stringify({ pid: 1, cwd: '/x', status: 'idle' }) });
    assert.equal(unsigned.status, 401);
    assert.equal(((await unsigned.json()) as { code: string }).code, 'CM_ERR_UNAUTHORIZED');
    const text = JSON.stringify({ pid: 1, cwd: '/x', status: 'idle' });
    const headers = signRequest({ method: 'POST', path: HOOK_PATH, body: text, publicKey: peer.key, secretKey: generateKeyPair().secretKey, meshId: mesh.meshId, now: clock });
    const forged = await fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: text, headers });
    assert.equal(forged.status, 401);
    assert.equal(((await forged.json()) as { code: string }).code, 'CM_ERR_BAD_SIGNATURE');
    const tampered = await fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: text.replace('idle', 'working'), headers: signRequest({ method: 'POST', path: HOOK_PATH, body: text, publicKey: peer.key, secretKey: peer.session!.secretKey, meshId: mesh.meshId, now: clock }) });
    assert.equal(((await tampered.json()) as { code: string }).code, 'CM_ERR_BAD_SIGNATURE', 'the signature covers the body');
    const stranger = await hook({ pid: 2, cwd: '/x', status: 'idle' }, generateKeyPair());
    assert.equal(stranger.status, 401);
    const member = await hook({ pid: 3, cwd: '/x', status: 'idle' }, mesh.members[1]!);
    assert.equal(member.status, 401, 'a member key is not a session');
    const otherMesh = await hook({ pid: 4, cwd: '/x', status: 'idle' }, peer.session!, 'mesh_otherxyz');
    assert.equal(otherMesh.status, 401);
  });

  it('refuses bad bodies with 400 and oversize bodies with 413', async () => {
    for (const body of [{ cwd: '/x', status: 'idle' }, { pid: -1, cwd: '/x', status: 'idle' }, { pid: 5 , status: 'idle' }, { pid: 5, cwd: '/x', status: 'dnd' }]) {
      const response = await hook(body);
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal(((await response.json()) as { code: string }).code, 'CM_ERR_BAD_REQUEST');
    }
    const unsignedJunk = await fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: 'nope' });
    assert.equal(((await unsignedJunk.json()) as { code: string }).code, 'CM_ERR_UNAUTHORIZED', 'authentication comes before reading the body');
    clock += 1;
    const signedJunk = signRequest({ method: 'POST', path: HOOK_PATH, body: 'nope', publicKey: peer.key, secretKey: peer.session!.secretKey, meshId: mesh.meshId, now: clock });
    const notJson = await fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: 'nope', headers: signedJunk });
    assert.equal(((await notJson.json()) as { code: string }).code, 'CM_ERR_BAD_JSON');
    const big = Buffer.alloc(3000, 'a');
    const declared = await rawPost(`${t.baseUrl}${HOOK_PATH}`, [big], { 'content-length': String(big.length) });
    assert.equal(declared.status, 413);
    assert.equal((JSON.parse(declared.body) as { code: string }).code, 'CM_ERR_PAYLOAD_TOO_LARGE');
    const streamed = await rawPost(`${t.baseUrl}${HOOK_PATH}`, [Buffer.alloc(1500, 'a'), Buffer.alloc(1500, 'b')], { 'transfer-encoding': 'chunked' });
    assert.equal(streamed.status, 413);
  });

  it('rate-limits per session with 429 and Retry-After, counted in the metrics', async () => {
    const own = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]!, session: generateKeyPair(), timestamp: clock });
    const limitedBefore = await metricValue(t.baseUrl, 'broker_hook_requests_rate_limited_total');
    const requestsBefore = await metricValue(t.baseUrl, 'broker_hook_requests_total');
    for (let i = 0; i < HOOK_LIMIT; i += 1) assert.equal((await hook({ pid: 42, cwd: `/work/${i}`, status: 'idle' }, own.session!)).status, 200);
    const limited = await hook({ pid: 43, cwd: '/work/other', status: 'idle' }, own.session!);
    assert.equal(limited.status, 429, 'the budget is the session\'s, whatever pid or cwd it reports');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal(((await limited.json()) as { code: string }).code, 'CM_ERR_RATE_LIMITED');
    clock += 60_000 / HOOK_LIMIT;
    assert.equal((await hook({ pid: 42, cwd: '/work/r', status: 'idle' }, own.session!)).status, 200, 'one token back after 1/limit of a minute');
    assert.equal(await metricValue(t.baseUrl, 'broker_hook_requests_rate_limited_total'), limitedBefore + 1);
    assert.equal(await metricValue(t.baseUrl, 'broker_hook_requests_total'), requestsBefore + HOOK_LIMIT + 2);
    await own.close();
  });

  it('never lets strangers spend a session\'s budget: failed authentications are counted per address, apart', async () => {
    const own = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[1]!, session: generateKeyPair(), timestamp: clock });
    // The same pid and cwd as the real session, signed by a key in no mesh: 401 each.
    for (let i = 0; i < 40; i += 1) assert.equal((await hook({ pid: 7, cwd: '/work/victim', status: 'working' }, generateKeyPair())).status, 401);
    assert.equal((await hook({ pid: 7, cwd: '/work/victim', status: 'working' }, own.session!)).status, 200, 'the session still has its whole budget');
    // Past the per-address allowance a stranger is slowed down with 429; a valid session is not.
    let slowed = 0;
    for (let i = 0; i < 40; i += 1) if ((await hook({ pid: 7, cwd: '/x', status: 'idle' }, generateKeyPair())).status === 429) slowed += 1;
    assert.ok(slowed > 0, 'strangers are slowed down past the allowance');
    assert.equal((await hook({ pid: 7, cwd: '/work/victim', status: 'idle' }, own.session!)).status, 200, 'while a valid session from the same address is not');
    await own.close();
  });

  it('refuses a replayed signed request, also after it was first answered', async () => {
    const text = JSON.stringify({ pid: 9, cwd: '/r', status: 'idle' });
    clock += 61_000; // the strangers above emptied this address's allowance for failures
    await peer.request({ type: 'list_peers' }); // a connection quiet for a minute is still ours
    const headers = signRequest({ method: 'POST', path: HOOK_PATH, body: text, publicKey: peer.key, secretKey: peer.session!.secretKey, meshId: mesh.meshId, now: clock });
    const first = await fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: text, headers });
    assert.equal(first.status, 200);
    const again = await fetch(`${t.baseUrl}${HOOK_PATH}`, { method: 'POST', body: text, headers });
    assert.equal(((await again.json()) as { code: string }).code, 'CM_ERR_REPLAYED');
    const { rows } = await t.db.pool.query('SELECT count(*)::int AS n FROM replays WHERE signature = $1', [headers['x-claudemesh-signature']]);
    assert.equal(rows[0]?.n, 1, 'the record lives in Postgres: every instance and every restart sees it');
  });
});
