// A stranger's worst: generated frames and HTTP bodies (a fixed seed, so a failure replays)
// against a real broker process. Every frame is answered or its socket closed, the broker
// stays up, its memory stays flat, and a well-behaved client on the same broker is unaffected.
// `npm test` runs FUZZ_FRAMES (default 2,000) frames; `just chaos` runs 20,000.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { WebSocket } from 'ws';
import { generateKeyPair, sign } from '../lib/crypto.ts';
import { createLogger } from '../lib/log.ts';
import { CLIENT_FRAME_TYPES } from '../lib/protocol.ts';
import { signRequest } from '../lib/signed-request.ts';
import { createDatabase, migrate } from '../lib/broker/db.ts';
import { seededRandom } from '../bench/stats.ts';
import { brokerEnv, startBroker } from './helpers/broker-process.ts';
import type { BrokerProcess } from './helpers/broker-process.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { metricValue } from './helpers/http.ts';
import { seedMesh, TestPeer } from './helpers/peer.ts';
import type { SeededMesh } from './helpers/peer.ts';

const FRAMES = Number(process.env.FUZZ_FRAMES ?? 2_000);
const BODIES = Math.ceil(FRAMES / 4);
const SEED = 20_261_128;
const SOCKETS = 8;
const ANSWER_WAIT_MS = 5_000;
// RSS may move with the JIT and the pool; a leak per frame would move it far more.
const RSS_GROWTH_LIMIT_BYTES = 64 * 1024 * 1024;

const ODD_VALUES: unknown[] = [
  null, true, 0, -1, 1.5, 2 ** 53, 'x', '', '\u0000', '\u001b[2K\rFAKE', 'a'.repeat(70_000), [], [1, 'a', null], {}, { nested: { deeper: [] } },
  '0'.repeat(64), 'f'.repeat(128), '@', '@'.repeat(70), '*', '__proto__', { __proto__: { polluted: true } }, '💥'.repeat(20),
];
const FIELDS = ['id', 'meshId', 'memberKey', 'sessionKey', 'timestamp', 'signature', 'challenge', 'name', 'groups', 'attestation', 'clientMessageId',
  'target', 'priority', 'envelopes', 'hops', 'messageIds', 'state', 'status', 'summary', 'group', 'messageId'];

/** One generated frame: a real type with random fields, a broken shape, or not JSON at all. */
function frameOf(random: () => number): string {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
  const roll = random();
  if (roll < 0.05) return pick(['', '{', 'null', '[]', '"text"', '{"type":', '\u0000\u0001', '{}'.repeat(50)]);
  const frame: Record<string, unknown> = { type: roll < 0.15 ? pick(['nope', 42, null, 'HELLO', 'system', 'push', '']) : pick(CLIENT_FRAME_TYPES) };
  const fields = 1 + Math.floor(random() * 6);
  for (let i = 0; i < fields; i += 1) frame[pick(FIELDS)] = pick(ODD_VALUES);
  if (random() < 0.3) frame.envelopes = Array.from({ length: Math.floor(random() * 4) }, () => ({ to: pick(ODD_VALUES), nonce: pick(ODD_VALUES), ciphertext: pick(ODD_VALUES) }));
  if (random() < 0.2) frame.id = `f${Math.floor(random() * 1e9)}`;
  return JSON.stringify(frame);
}

type Open = () => Promise<WebSocket>;

/** A socket that has received its challenge (and, for a member, said hello). */
function opener(wsUrl: string, member?: { meshId: string; key: { publicKey: string; secretKey: Buffer } }): Open {
  return async () => {
    if (member !== undefined) return (await TestPeer.connect(wsUrl, { meshId: member.meshId, member: member.key })).socket;
    const socket = new WebSocket(wsUrl);
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('message', resolve));
    return socket;
  };
}

/**
 * Send each frame and wait for its answer or the socket's close (then reconnect for the
 * next). Returns how many were answered and how many ended a socket; the two add up to all.
 */
async function fuzzFrames(open: Open, frames: string[]): Promise<{ answered: number; closed: number; silent: number }> {
  const counts = { answered: 0, closed: 0, silent: 0 };
  let socket = await open();
  for (const frame of frames) {
    if (socket.readyState !== socket.OPEN) socket = await open();
    const outcome = await new Promise<keyof typeof counts>((resolve) => {
      const timer = setTimeout(() => done('silent'), ANSWER_WAIT_MS);
      const onMessage = () => done('answered');
      const onClose = () => done('closed');
      function done(result: keyof typeof counts): void {
        clearTimeout(timer);
        socket.off('message', onMessage);
        socket.off('close', onClose);
        resolve(result);
      }
      socket.once('message', onMessage);
      socket.once('close', onClose);
      socket.send(frame);
    });
    counts[outcome] += 1;
  }
  socket.close();
  return counts;
}

describe(`fuzzing the broker (${FRAMES} frames, ${BODIES} HTTP bodies, seed ${SEED})`, () => {
  let database: TestDatabase;
  let broker: BrokerProcess;
  let mesh: SeededMesh;
  before(async () => {
    database = await createTestDatabase('fuzz');
    const quiet = createLogger({ write: () => {} });
    const setup = createDatabase({ url: database.url, log: quiet });
    await migrate(setup.pool, quiet);
    await setup.close();
    const pool = new pg.Pool({ connectionString: database.url, max: 1 });
    mesh = await seedMesh(pool, 6);
    await pool.end();
    // The memory flags of npm start, so that RSS shows what is kept, not what a lazy GC left.
    broker = await startBroker(brokerEnv({ DATABASE_URL: database.url, MAX_MESSAGE_BYTES: '65536' }), ['--max-semi-space-size=8', '--max-old-space-size=192']);
  });
  after(async () => {
    await broker.stop('SIGTERM');
    await database.drop();
  });

  it('answers or closes on every frame, stays up with flat memory, and a good client is unaffected', async (t) => {
    const wsUrl = `ws://127.0.0.1:${broker.port}/ws`;
    const random = seededRandom(SEED);
    const frames = Array.from({ length: FRAMES }, () => frameOf(random));
    const rssBefore = await metricValue(broker.baseUrl, 'process_resident_memory_bytes');
    const per = Math.ceil(FRAMES / SOCKETS);
    // Half the sockets stay strangers; half said hello as a member, to reach every handler.
    const results = await Promise.all(Array.from({ length: SOCKETS }, (_, i) => fuzzFrames(
      opener(wsUrl, i % 2 === 0 ? undefined : { meshId: mesh.meshId, key: mesh.members[2 + Math.floor(i / 2)]! }),
      frames.slice(i * per, (i + 1) * per),
    )));
    const total = { answered: 0, closed: 0, silent: 0 };
    for (const result of results) for (const key of ['answered', 'closed', 'silent'] as const) total[key] += result[key];
    assert.equal(total.silent, 0, 'every frame is answered or ends its socket');
    assert.equal(total.answered + total.closed, FRAMES);
    assert.equal(broker.child.exitCode, null, 'the broker is up');
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const receiver = await TestPeer.connect(wsUrl, { meshId: mesh.meshId, member: bob });
    const sender = await TestPeer.connect(wsUrl, { meshId: mesh.meshId, member: alice });
    const ack = await sender.send(bob.publicKey, [bob.publicKey], 'still here');
    assert.equal(ack.queued, true);
    const push = await receiver.waitFor((frame) => frame.type === 'push');
    assert.equal(receiver.read(push), 'still here');
    const rssAfter = await metricValue(broker.baseUrl, 'process_resident_memory_bytes');
    assert.ok(rssAfter - rssBefore < RSS_GROWTH_LIMIT_BYTES, `RSS grew ${Math.round((rssAfter - rssBefore) / 1e6)} MB`);
    t.diagnostic(`${FRAMES} frames: ${total.answered} answered, ${total.closed} closed their socket, 0 silent; broker RSS ${Math.round(rssBefore / 1e6)} → ${Math.round(rssAfter / 1e6)} MB`);
    await sender.close();
    await receiver.close();
  });

  it('answers every generated HTTP body on every route with a JSON error or a result, never a 500', async (t) => {
    const random = seededRandom(SEED + 1);
    const paths = ['/hook/set-status', '/mesh/create', '/mesh/invite', '/mesh/invite/revoke', '/mesh/join', '/mesh/leave', '/mesh/kick', '/mesh/ban', '/mesh/unban'];
    const statuses = new Map<number, number>();
    for (let i = 0; i < BODIES; i += 1) {
      const path = paths[Math.floor(random() * paths.length)] ?? '/mesh/join';
      const body = frameOf(random);
      const key = generateKeyPair();
      const headers = random() < 0.5
        ? signRequest({ method: 'POST', path, body, publicKey: key.publicKey, secretKey: key.secretKey, meshId: random() < 0.5 ? mesh.meshId : '', now: Date.now() })
        : { 'x-claudemesh-key': String(ODD_VALUES[Math.floor(random() * ODD_VALUES.length)]).replace(/[^\x20-\x7e]/g, '?').slice(0, 200), 'x-claudemesh-signature': sign(Buffer.from(body), key.secretKey) };
      const response = await fetch(`${broker.baseUrl}${path}`, { method: 'POST', body, headers });
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      const answer = (await response.json()) as { code?: string };
      assert.ok(response.status < 500, `${path} answered ${response.status} ${JSON.stringify(answer)} to ${body.slice(0, 120)}`);
      if (response.status >= 400) assert.match(String(answer.code), /^CM_ERR_[A-Z_]+$/);
    }
    assert.equal(broker.child.exitCode, null);
    assert.ok(statuses.size > 1, `several outcomes: ${JSON.stringify([...statuses])}`);
    t.diagnostic(`${BODIES} bodies, answers by status: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
  });
});
