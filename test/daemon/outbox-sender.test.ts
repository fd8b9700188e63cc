// The outbox sender against a scripted broker: what each kind of answer does to a row.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import { BrokerLink } from '../../daemon/broker-link.ts';
// Frames as a scripted broker writes them (the link parses them with lib/protocol.ts).
type Frame = Record<string, any>;
import { OutboxSender } from '../../daemon/outbox-sender.ts';
import { Outbox } from '../../daemon/outbox.ts';
import { encryptFor } from '../../daemon/router.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import type { MemberView } from '../../lib/protocol.ts';
import { challengeFrame, helloAck, member, peersFrame, refused, stored } from '../helpers/frames.ts';
import { waitUntil } from '../helpers/wait.ts';

const me = generateKeyPair();
const bob = generateKeyPair();
const carol = generateKeyPair();
const WAIT_MS = 3_000;

type Answer = (frame: Frame, sends: Frame[]) => Frame;
const [M1, M2, M3] = [randomUUID(), randomUUID(), randomUUID()];

async function scriptedBroker(answer: Answer, members: () => MemberView[]): Promise<{ url: string; sends: Frame[]; close(): Promise<void> }> {
  const server = createServer();
  const wss = new WebSocketServer({ server });
  const sends: Frame[] = [];
  wss.on('connection', (socket) => {
    socket.send(challengeFrame());
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Frame;
      if (frame.type === 'hello') socket.send(helloAck(frame, members()));
      else if (frame.type === 'list_peers') socket.send(peersFrame(frame.id, members()));
      else if (frame.type === 'send') {
        sends.push(frame);
        socket.send(JSON.stringify({ ...answer(frame, sends), id: frame.id }));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sends,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const until = (what: string, check: () => boolean) => waitUntil(what, check, { timeoutMs: WAIT_MS, pollMs: 5 });

describe('OutboxSender', () => {
  let dir: string;
  const cleanups: Array<() => Promise<void>> = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cm-outbox-sender-'));
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function setup(name: string, answer: Answer, members: () => MemberView[]) {
    const broker = await scriptedBroker(answer, members);
    const outbox = new Outbox(join(dir, `${name}.db`), { backoffBaseMs: 10 });
    const link = new BrokerLink({ brokerUrl: broker.url, identity: { meshId: 'mesh-sender-01', memberKey: me.publicKey, memberSecret: me.secretKey }, timings: { backoffStepsMs: [20] } });
    const sender = new OutboxSender({ outbox, links: () => [link], pollIntervalMs: 20 });
    link.start();
    await until('open', () => link.isOpen);
    sender.start();
    cleanups.push(async () => {
      await sender.stop();
      await link.close();
      outbox.close();
      await broker.close();
    });
    return { broker, outbox, sender };
  }

  const request = (text: string, to: string) => ({ meshId: 'mesh-sender-01', senderKey: me.publicKey, to, priority: 'now' as const, text });

  it('marks a row done on a queued ack and forgets its text', async () => {
    const { outbox, sender } = await setup('done', () => stored(1, M1), () => []);
    outbox.enqueue('d1', request('hi', 'bob'), { target: bob.publicKey, envelopes: encryptFor('hi', [bob.publicKey], me.secretKey) });
    sender.wake();
    await until('done', () => outbox.get('d1')?.status === 'done');
    assert.equal(outbox.get('d1')?.brokerMessageId, M1);
    assert.equal(outbox.get('d1')?.text, null);
  });

  it('a permanent refusal is dead, a transient one waits and retries the same request', async () => {
    const { broker, outbox, sender } = await setup('fail', (frame, sends) => {
      if (frame.clientMessageId === 'dead-1') return refused('CM_ERR_UNKNOWN_RECIPIENT', 'no such key');
      const tries = sends.filter((each) => each.clientMessageId === frame.clientMessageId).length;
      return tries < 3 ? refused('CM_ERR_RATE_LIMITED', 'slow down') : stored(1, M2);
    }, () => []);
    const envelopes = encryptFor('x', [bob.publicKey], me.secretKey);
    outbox.enqueue('dead-1', request('x', 'bob'), { target: bob.publicKey, envelopes });
    outbox.enqueue('retry-1', request('y', 'bob'), { target: bob.publicKey, envelopes });
    sender.wake();
    await until('dead', () => outbox.get('dead-1')?.status === 'dead');
    assert.match(String(outbox.get('dead-1')?.lastError), /^CM_ERR_UNKNOWN_RECIPIENT/);
    await until('retried until done', () => outbox.get('retry-1')?.status === 'done');
    const tries = broker.sends.filter((frame) => frame.clientMessageId === 'retry-1');
    assert.equal(tries.length, 3);
    assert.equal(outbox.get('retry-1')?.attempts, 3);
    assert.ok(tries.every((frame) => JSON.stringify(frame.envelopes) === JSON.stringify(envelopes)), 'every retry is byte-for-byte the same');
  });

  it('encrypts a broadcast again when the roster changed while it waited', async () => {
    let members = [member(me.publicKey, 'me'), member(bob.publicKey, 'bob')];
    const { outbox, sender } = await setup('mismatch', (frame) => {
      const keys = (frame.envelopes as Array<{ to: string }>).map((envelope) => envelope.to).sort();
      const wanted = members.map((member) => String(member.key)).filter((key) => key !== me.publicKey).sort();
      return JSON.stringify(keys) === JSON.stringify(wanted)
        ? stored(keys.length, M3)
        : refused('CM_ERR_ENVELOPES_MISMATCH', 'roster changed');
    }, () => members);
    outbox.enqueue('b1', request('to all', '*'), { target: '*', envelopes: encryptFor('to all', [bob.publicKey], me.secretKey) });
    members = [...members, member(carol.publicKey, 'carol')];
    sender.wake();
    await until('done after re-encryption', () => outbox.get('b1')?.status === 'done');
    assert.equal(outbox.get('b1')?.recipients, 2);
    assert.deepEqual(outbox.get('b1')?.envelopes.map((envelope) => envelope.to).sort(), [bob.publicKey, carol.publicKey].sort());
  });
});
