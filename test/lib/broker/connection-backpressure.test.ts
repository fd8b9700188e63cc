// Slow consumers: a recipient that stops reading while messages keep coming, and a client that
// keeps sending without reading its answers. Real sockets on loopback: the client pauses its
// socket, so the kernel's buffers fill first (several MB on loopback), then the broker's own
// send buffer — the memory this test bounds, read from GET /metrics as an operator would.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MAX_BUFFERED_BYTES } from '../../../lib/broker/hub.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { metricValue } from '../../helpers/http.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { Frame, SeededMesh } from '../../helpers/peer.ts';
import { waitUntil } from '../../helpers/wait.ts';

// 600 pushes of about 64 KB: some 40 MB, far more than the kernel's buffers hold.
const MESSAGES = 600;
const TEXT_BYTES = 47_000;
const SEND_CONCURRENCY = 16;
// list_peers answers of about 30 KB (200 members) asked 2,000 times: some 60 MB of answers.
const MEMBERS = 200;
const REQUESTS = 2_000;
// What may sit in the broker's send buffer: the limit, plus the pushes or answers already on
// their way when it was crossed (one catch-up batch of 200 pushes at most, or 32 answers).
const PUSH_FRAME_BYTES = 66_000;
const BOUND_BYTES = MAX_BUFFERED_BYTES + 200 * PUSH_FRAME_BYTES;
const WAIT_MS = 60_000;

const SLOW = 'broker_slow_consumer_connections';
const BUFFERED = 'broker_slow_consumer_buffered_bytes';

/** Scrape the two series until `done` resolves; the largest values seen. */
async function watch(t: TestBroker, done: Promise<unknown>): Promise<{ slow: number; bytes: number }> {
  let finished = false;
  void done.finally(() => (finished = true));
  const most = { slow: 0, bytes: 0 };
  while (!finished) {
    most.slow = Math.max(most.slow, await metricValue(t.baseUrl, SLOW));
    most.bytes = Math.max(most.bytes, await metricValue(t.baseUrl, BUFFERED));
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return most;
}

describe('slow consumers', () => {
  let t: TestBroker;
  let mesh: SeededMesh;
  before(async () => {
    t = await startTestBroker('slow_consumer', {
      env: { SEND_BURST: '100000', SEND_RATE_PER_SECOND: '100000', LOOP_GUARD_BURST: '100000', LOOP_GUARD_RATE_PER_SECOND: '100000' },
      // Claims outlast the test, so a push that waits in a buffer is never pushed again.
      timings: { redeliveryTickMs: 200, claimMs: 120_000 },
    });
    mesh = await seedMesh(t.db.pool, MEMBERS);
  });
  after(() => t.close());

  it('a recipient that stops reading gets at most its buffer, and everything once when it reads again', async (test) => {
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const receiver = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: bob });
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: alice });
    receiver.socket.pause();
    const text = 'x'.repeat(TEXT_BYTES);
    let next = 0;
    const acks: Frame[] = [];
    const sending = Promise.all(Array.from({ length: SEND_CONCURRENCY }, async () => {
      while (next < MESSAGES) {
        next += 1;
        acks.push(await sender.send(bob.publicKey, [bob.publicKey], text));
      }
    }));
    const during = await watch(t, sending);
    assert.equal(acks.filter((ack) => ack.queued === true).length, MESSAGES, 'every send taken while the recipient does not read');
    // The pushes that fit went out; the rest wait, queued, for the recipient to read.
    await waitUntil('the recipient counted as a slow consumer', async () => (await metricValue(t.baseUrl, SLOW)) === 1, { timeoutMs: WAIT_MS });
    const buffered = await metricValue(t.baseUrl, BUFFERED);
    assert.ok(buffered > MAX_BUFFERED_BYTES, `the buffer is over the limit (${buffered})`);
    assert.ok(during.bytes <= BOUND_BYTES, `at most ${BOUND_BYTES} bytes buffered, saw ${during.bytes}`);
    const { rows } = await t.db.pool.query("SELECT count(*)::int AS n FROM deliveries WHERE state = 'queued' AND claimed_until IS NULL");
    assert.ok((rows[0]?.n ?? 0) > 0, 'some deliveries were held back rather than buffered');

    receiver.socket.resume();
    await waitUntil('every message pushed after the recipient read again', () => new Set(receiver.pushes().map((push) => push.messageId)).size === MESSAGES, { timeoutMs: WAIT_MS, pollMs: 50 });
    receiver.clientAck(receiver.pushes().map((push) => String(push.messageId)));
    await waitUntil('every delivery acknowledged', async () => (await t.db.pool.query("SELECT count(*)::int AS n FROM deliveries WHERE state = 'delivered'")).rows[0]?.n === MESSAGES, { timeoutMs: WAIT_MS });
    assert.equal(receiver.pushes().length, MESSAGES, 'nothing pushed twice');
    assert.equal(await metricValue(t.baseUrl, SLOW), 0);
    test.diagnostic(`slow recipient: ${MESSAGES} pushes of ${TEXT_BYTES} bytes; most buffered ${during.bytes} bytes (limit ${MAX_BUFFERED_BYTES})`);
    await sender.close();
    await receiver.close();
  });

  it('a client that sends without reading its answers is not read until it does', async (test) => {
    const peer = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: mesh.members[2]! });
    peer.socket.pause();
    for (let index = 0; index < REQUESTS; index += 1) peer.socket.send(JSON.stringify({ type: 'list_peers', id: `p${index}` }));
    const settled = new Promise((resolve) => setTimeout(resolve, 3_000));
    const during = await watch(t, settled);
    assert.equal(await metricValue(t.baseUrl, SLOW), 1, 'counted as a slow consumer');
    assert.ok(during.bytes <= BOUND_BYTES, `at most ${BOUND_BYTES} bytes buffered, saw ${during.bytes}`);
    peer.socket.resume();
    await waitUntil('every request answered once it read', () => peer.frames.filter((frame) => frame.type === 'peers').length === REQUESTS, { timeoutMs: WAIT_MS, pollMs: 50 });
    test.diagnostic(`client not reading: ${REQUESTS} list_peers; most buffered ${during.bytes} bytes`);
    await peer.close();
  });
});
