import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BACKOFF_CAP_MS, MAX_ATTEMPTS, Outbox, retryDelayMs } from '../../daemon/outbox.ts';
import type { Encrypted, SendRequest } from '../../daemon/outbox.ts';

const SENDER = 'a'.repeat(64);
const OTHER_SENDER = 'b'.repeat(64);
const RECIPIENT = 'c'.repeat(64);

function request(overrides: Partial<SendRequest> = {}): SendRequest {
  return { meshId: 'mesh-0001', senderKey: SENDER, to: 'bob', priority: 'now', text: 'hello', ...overrides };
}
const encrypted: Encrypted = { target: RECIPIENT, envelopes: [{ to: RECIPIENT, nonce: 'bm9uY2U=', ciphertext: 'Y2lwaGVy' }] };

describe('Outbox', () => {
  let dir: string;
  let clock = 1_000_000;
  const now = () => clock;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cm-outbox-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('enqueues once per client message id: new 202, same request 200, another request 409', () => {
    const outbox = new Outbox(join(dir, 'idem.db'), { now });
    const first = outbox.enqueue('m1', request(), encrypted);
    assert.equal(first.status, 202);
    assert.equal(first.row.status, 'pending');
    assert.deepEqual(first.row.envelopes, encrypted.envelopes);
    const again = outbox.enqueue('m1', request(), { target: RECIPIENT, envelopes: [] });
    assert.equal(again.status, 200);
    assert.deepEqual(again.row.envelopes, encrypted.envelopes, 'the stored request is kept');
    assert.equal(outbox.check('m1', request())?.status, 200);
    assert.throws(() => outbox.enqueue('m1', request({ text: 'other' }), encrypted), { code: 'CM_ERR_OUTBOX_CONFLICT' });
    assert.throws(() => outbox.check('m1', request({ priority: 'low' })), { code: 'CM_ERR_OUTBOX_CONFLICT' });
    assert.equal(outbox.counts().pending, 1);
    outbox.close();
  });

  it('claims only the rows of the sender key whose socket is asking', () => {
    const outbox = new Outbox(join(dir, 'claim.db'), { now });
    outbox.enqueue('s1', request(), encrypted);
    outbox.enqueue('s2', request({ senderKey: OTHER_SENDER }), encrypted);
    const claimed = outbox.claim(SENDER);
    assert.deepEqual(claimed.map((row) => [row.clientMessageId, row.status, row.attempts]), [['s1', 'inflight', 1]]);
    assert.deepEqual(outbox.claim(SENDER), [], 'an inflight row is not claimed twice');
    assert.equal(outbox.get('s2')?.status, 'pending');
    outbox.markDone('s1', 'broker-1', 1);
    const done = outbox.get('s1');
    assert.equal(done?.status, 'done');
    assert.equal(done?.brokerMessageId, 'broker-1');
    outbox.close();
  });

  it('backs off 500 ms·2ⁿ capped at 30 s, and is dead after 25 attempts', () => {
    assert.deepEqual([1, 2, 3, 4].map((attempts) => retryDelayMs(attempts)), [500, 1000, 2000, 4000]);
    assert.equal(retryDelayMs(20), BACKOFF_CAP_MS);
    const outbox = new Outbox(join(dir, 'backoff.db'), { now });
    outbox.enqueue('b1', request(), encrypted);
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
      const [row] = outbox.claim(SENDER);
      assert.equal(row?.attempts, attempt);
      const status = outbox.markFailed('b1', 'broker unreachable', false);
      assert.equal(status, attempt === MAX_ATTEMPTS ? 'dead' : 'pending');
      if (status === 'pending') {
        assert.deepEqual(outbox.claim(SENDER), [], 'not due before its backoff');
        assert.equal(outbox.get('b1')?.nextAttemptAt, clock + retryDelayMs(attempt));
        clock += retryDelayMs(attempt);
      }
    }
    assert.equal(outbox.list({ status: 'dead' }).length, 1);
    assert.equal(outbox.get('b1')?.lastError, 'broker unreachable');
    const requeued = outbox.requeue('b1');
    assert.equal(requeued.status, 'pending');
    assert.equal(requeued.attempts, 0);
    assert.deepEqual(requeued.envelopes, encrypted.envelopes, 'requeue keeps the routing and the encryption');
    assert.throws(() => outbox.requeue('b1'), { code: 'CM_ERR_OUTBOX_CONFLICT' });
    assert.throws(() => outbox.requeue('nope'), { code: 'CM_ERR_NOT_FOUND' });
    outbox.close();
  });

  it('a permanent refusal is dead at once; a released claim costs no attempt', () => {
    const outbox = new Outbox(join(dir, 'perm.db'), { now });
    outbox.enqueue('p1', request(), encrypted);
    outbox.claim(SENDER);
    assert.equal(outbox.markFailed('p1', 'CM_ERR_UNKNOWN_RECIPIENT', true), 'dead');
    outbox.enqueue('p2', request({ text: 'two' }), encrypted);
    outbox.claim(SENDER);
    outbox.release('p2');
    assert.equal(outbox.get('p2')?.attempts, 0);
    assert.equal(outbox.get('p2')?.status, 'pending');
    outbox.close();
  });

  it('abandons the rows of a sender key whose connection is gone for good, and can requeue them', () => {
    const outbox = new Outbox(join(dir, 'abandon.db'), { now });
    outbox.enqueue('a1', request({ senderKey: OTHER_SENDER }), encrypted);
    outbox.enqueue('a2', request({ text: 'mine' }), encrypted);
    assert.equal(outbox.abandon(OTHER_SENDER, 'session ended'), 1);
    assert.equal(outbox.get('a1')?.status, 'dead');
    assert.equal(outbox.get('a1')?.lastError, 'session ended');
    assert.equal(outbox.get('a2')?.status, 'pending', 'other keys untouched');
    assert.equal(outbox.requeue('a1').status, 'pending');
    outbox.close();
  });

  it('resets inflight rows to pending when opened again (the previous process died)', () => {
    const path = join(dir, 'crash.db');
    const first = new Outbox(path, { now });
    first.enqueue('c1', request(), encrypted);
    first.claim(SENDER);
    assert.equal(first.get('c1')?.status, 'inflight');
    first.close();
    const second = new Outbox(path, { now });
    assert.equal(second.get('c1')?.status, 'pending');
    assert.equal(second.claim(SENDER).length, 1);
    second.close();
  });

  it('prunes done rows older than the retention, and nothing else', () => {
    const outbox = new Outbox(join(dir, 'prune.db'), { now });
    outbox.enqueue('d1', request(), encrypted);
    outbox.enqueue('d2', request({ text: 'still pending' }), encrypted);
    outbox.claim(SENDER, 1);
    outbox.markDone('d1', 'broker-d1', 1);
    clock += 10_000;
    assert.equal(outbox.prune(60_000), 0);
    clock += 60_000;
    assert.equal(outbox.prune(60_000), 1);
    assert.equal(outbox.get('d1'), undefined);
    assert.equal(outbox.get('d2')?.status, 'pending');
    assert.equal(outbox.nextDueAt() !== undefined, true);
    outbox.close();
  });
});
