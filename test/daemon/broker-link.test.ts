// The connection lifecycle against a scripted WebSocket server: each case makes the server
// misbehave in one way and checks what the link does, with timings in milliseconds.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import { backoffDelay, BrokerLink } from '../../daemon/broker-link.ts';
import { isTerminalClose } from '../../lib/protocol.ts';
import { challengeFrame, helloAck, member, peersFrame } from '../helpers/frames.ts';
import type { LinkTimings } from '../../daemon/broker-link.ts';

// Frames as a scripted broker writes them (the link parses them with lib/protocol.ts).
type Frame = Record<string, any>;
import { generateKeyPair, verify } from '../../lib/crypto.ts';
import { attestationSigningString, helloSigningString, sessionHelloSigningString } from '../../lib/protocol.ts';
import { waitUntil } from '../helpers/wait.ts';

const FAST: LinkTimings = { helloAckTimeoutMs: 100, backoffStepsMs: [20, 40], pingIntervalMs: 30, idleTimeoutMs: 100, requestTimeoutMs: 200 };
const WAIT_MS = 3_000;

interface Script {
  /** what the server does with each new connection's hello */
  onHello(socket: WebSocket, hello: Frame, connection: number): void;
  onFrame?(socket: WebSocket, frame: Frame): void;
  autoPong?: boolean;
}

interface FakeBroker {
  url: string;
  hellos: Frame[];
  close(): Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function fakeBroker(script: Script): Promise<FakeBroker> {
  const server = createServer();
  const wss = new WebSocketServer({ server, autoPong: script.autoPong ?? true });
  const hellos: Frame[] = [];
  wss.on('connection', (socket) => {
    socket.send(challengeFrame());
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Frame;
      if (frame.type === 'hello' || frame.type === 'session_hello') {
        hellos.push(frame);
        script.onHello(socket, frame, hellos.length);
      } else {
        script.onFrame?.(socket, frame);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const close = async () => {
    for (const client of wss.clients) client.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  cleanups.push(close);
  return { url: `http://127.0.0.1:${port}`, hellos, close };
}

function ack(socket: WebSocket, hello: Frame): void {
  socket.send(helloAck(hello, [member(hello.memberKey, 'me', 'owner')]));
}

function link(url: string, extra: Partial<ConstructorParameters<typeof BrokerLink>[0]> = {}): { link: BrokerLink; events: Array<[string, Frame]> } {
  const member = generateKeyPair();
  const events: Array<[string, Frame]> = [];
  const created = new BrokerLink({
    brokerUrl: url,
    identity: { meshId: 'mesh-test-01', memberKey: member.publicKey, memberSecret: member.secretKey },
    timings: FAST,
    random: () => 1,
    handlers: { onEvent: (kind, fields) => events.push([kind, fields]) },
    ...extra,
  });
  cleanups.push(() => created.close());
  return { link: created, events };
}

const until = (what: string, check: () => boolean) => waitUntil(what, check, { timeoutMs: WAIT_MS, pollMs: 5 });

describe('BrokerLink', () => {
  it('backs off with full jitter over its steps, capped at the last', () => {
    const steps = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000];
    assert.deepEqual([0, 1, 2, 5, 9].map((attempt) => backoffDelay(attempt, steps, () => 1)), [1_000, 2_000, 4_000, 30_000, 30_000]);
    assert.equal(backoffDelay(3, steps, () => 0), 0);
    assert.equal(backoffDelay(3, steps, () => 0.5), 4_000);
  });

  it('knows which closes are terminal', () => {
    assert.equal(isTerminalClose(4001, 'kicked'), true);
    assert.equal(isTerminalClose(4002, 'banned'), true);
    assert.equal(isTerminalClose(1008, 'bad_signature'), true);
    assert.equal(isTerminalClose(1008, 'capacity'), false);
    assert.equal(isTerminalClose(1008, 'timestamp_skew'), false);
    assert.equal(isTerminalClose(1000, 'left'), true);
    assert.equal(isTerminalClose(1012, 'service restart'), false);
    assert.equal(isTerminalClose(1006, ''), false);
  });

  it('opens on hello_ack with a signed hello, and keeps the roster', async () => {
    const broker = await fakeBroker({ onHello: ack });
    const { link: member } = link(broker.url);
    member.start();
    await until('open', () => member.isOpen);
    const hello = broker.hellos[0] as Frame;
    assert.equal(hello.type, 'hello');
    assert.ok(verify(hello.signature, helloSigningString('mesh-test-01', String(hello.memberKey), Number(hello.timestamp), String(hello.challenge)), hello.memberKey));
    assert.equal(member.roster?.members.length, 1);
  });

  it('terminates a connection whose hello_ack does not come, and retries', async () => {
    const broker = await fakeBroker({ onHello: () => {} });
    const { link: member, events } = link(broker.url);
    member.start();
    await until('three attempts', () => broker.hellos.length >= 3);
    assert.equal(member.isOpen, false);
    assert.match(String(member.status().lastError), /no hello_ack within 100 ms/);
    assert.ok(events.some(([kind, fields]) => kind === 'link_retry' && fields.delayMs === 20));
    assert.ok(events.some(([kind, fields]) => kind === 'link_retry' && fields.delayMs === 40), 'the delay grows');
  });

  it('resets the backoff after a proven connection', async () => {
    const broker = await fakeBroker({ onHello: (socket, hello, n) => (n === 3 ? ack(socket, hello) : socket.close(1011, 'db_unavailable')) });
    const { link: member } = link(broker.url);
    member.start();
    await until('open on the third try', () => member.isOpen);
    assert.equal(member.status().attempts, 0);
  });

  it('stops for good on a terminal close and shows why', async () => {
    const broker = await fakeBroker({ onHello: (socket, hello) => {
      ack(socket, hello);
      setTimeout(() => socket.close(4001, 'kicked'), 10);
    } });
    const { link: member } = link(broker.url);
    member.start();
    await until('stopped', () => member.status().state === 'stopped');
    assert.deepEqual(member.status().terminal, { code: 4001, reason: 'kicked' });
    await sleep(100);
    assert.equal(broker.hellos.length, 1, 'no reconnect');
  });

  it('fails pending requests when the socket closes, then reconnects', async () => {
    const broker = await fakeBroker({
      onHello: ack,
      onFrame: (socket, frame) => {
        if (frame.type === 'list_peers') socket.close(1012, 'service restart');
      },
    });
    const { link: member } = link(broker.url);
    member.start();
    await until('open', () => member.isOpen);
    await assert.rejects(member.request({ type: 'list_peers' }), { code: 'CM_ERR_BROKER_UNREACHABLE' });
    await until('reconnected', () => broker.hellos.length === 2 && member.isOpen);
    await member.close();
    await assert.rejects(member.request({ type: 'list_peers' }), { code: 'CM_ERR_BROKER_UNREACHABLE' }, 'a request on a closed link is an error');
  });

  it('never passes a stale roster off as fresh: a roster the broker could not give is none', async () => {
    let failing = false;
    const broker = await fakeBroker({
      onHello: ack,
      onFrame: (socket, frame) => {
        if (frame.type !== 'list_peers') return;
        socket.send(failing
          ? JSON.stringify({ type: 'error', id: frame.id, code: 'CM_ERR_DB_UNAVAILABLE', message: 'list_peers could not be completed: the database did not answer; retry it' })
          : peersFrame(frame.id, [member(String(broker.hellos[0]?.memberKey), 'me', 'owner')]));
      },
    });
    const { link: linked } = link(broker.url);
    linked.start();
    await until('open', () => linked.isOpen);
    assert.equal((await linked.refreshRoster())?.members.length, 1, 'the broker answered: a roster');
    failing = true;
    assert.equal(await linked.refreshRoster(), undefined, 'its database is down: no fresh roster');
    assert.equal(linked.roster?.members.length, 1, 'the last one is still kept, as the last one');
    await linked.close();
    assert.equal(await linked.refreshRoster(), undefined, 'not connected: no fresh roster');
  });

  it('names the roster it holds by its digest, and keeps it when the broker says it is current', async () => {
    const DIGEST = 'digest-of-roster-one00';
    const withDigest = (frame: string, digest: string, lists: boolean) => {
      const { peers, members, ...rest } = JSON.parse(frame) as Frame;
      return JSON.stringify({ ...rest, rosterDigest: digest, ...(lists ? { peers, members } : {}) });
    };
    const broker = await fakeBroker({
      // The first connection gets the lists; later ones only the digest, when they name it.
      onHello: (socket, hello, n) => socket.send(withDigest(helloAck(hello, [member(hello.memberKey, 'me', 'owner')], n > 1), DIGEST, hello.rosterDigest !== DIGEST)),
      onFrame: (socket, frame) => {
        if (frame.type === 'list_peers') socket.send(withDigest(peersFrame(frame.id, []), frame.rosterDigest === DIGEST ? DIGEST : 'digest-of-roster-two00', frame.rosterDigest !== DIGEST));
        if (frame.type === 'set_summary') socket.close(1012, 'service restart');
      },
    });
    const { link: linked, events } = link(broker.url);
    linked.start();
    await until('open', () => linked.isOpen);
    assert.equal(broker.hellos[0]?.rosterDigest, undefined, 'nothing held yet');
    const held = linked.roster;
    assert.equal(held?.members.length, 1);
    assert.equal(await linked.refreshRoster(), held, 'unchanged: the same roster, no lists sent');
    linked.request({ type: 'set_summary', summary: 'x' }).catch(() => {});
    await until('reconnected', () => broker.hellos.length === 2 && linked.isOpen);
    assert.equal(broker.hellos[1]?.rosterDigest, DIGEST, 'the hello names the roster held');
    assert.equal(linked.roster, held, 'kept across the reconnect');
    assert.deepEqual(events.filter(([kind]) => kind === 'frame_refused'), []);
  });

  it('does not keep a roster the broker leaves out for a digest it was not sent', async () => {
    const broker = await fakeBroker({
      onHello: ack,
      onFrame: (socket, frame) => {
        if (frame.type === 'list_peers') socket.send(JSON.stringify({ type: 'peers', id: frame.id, rosterDigest: 'someone-elses-digest00' }));
      },
    });
    const { link: linked, events } = link(broker.url);
    linked.start();
    await until('open', () => linked.isOpen);
    assert.equal(await linked.refreshRoster(), undefined, 'not an answer: no fresh roster');
    assert.equal(linked.roster?.members.length, 1, 'the roster of the hello_ack is still the one held, as the last one');
    assert.ok(events.some(([kind, fields]) => kind === 'frame_refused' && /without its lists/.test(String(fields.error))), JSON.stringify(events));
  });

  it('terminates a socket that stays silent past the idle timeout', async () => {
    const broker = await fakeBroker({ onHello: ack, autoPong: false });
    const { link: member, events } = link(broker.url);
    member.start();
    await until('second connection', () => broker.hellos.length >= 2);
    assert.ok(events.some(([kind, fields]) => kind === 'link_retry' && /nothing heard/.test(String(fields.error))));
  });

  it('mints a fresh attestation for every session connect', async () => {
    const broker = await fakeBroker({ onHello: (socket, hello, n) => (n === 1 ? socket.close(1011, 'db_unavailable') : ack(socket, hello)) });
    const session = generateKeyPair();
    let clock = 1_000_000;
    const member = generateKeyPair();
    const created = new BrokerLink({
      brokerUrl: broker.url,
      identity: { meshId: 'mesh-test-01', memberKey: member.publicKey, memberSecret: member.secretKey, session: { sessionKey: session.publicKey, sessionSecret: session.secretKey, groups: ['ops'] } },
      timings: FAST,
      now: () => (clock += 1_000),
    });
    cleanups.push(() => created.close());
    created.start();
    await until('open', () => created.isOpen);
    assert.equal(created.key, session.publicKey);
    const [first, second] = broker.hellos as [Frame, Frame];
    const attestations = [first, second].map((hello) => hello.attestation as { expiresAt: number; signature: string });
    assert.notEqual(attestations[0]?.expiresAt, attestations[1]?.expiresAt);
    for (const hello of [first, second]) {
      const attestation = hello.attestation as { expiresAt: number; signature: string };
      assert.ok(verify(attestation.signature, attestationSigningString('mesh-test-01', member.publicKey, session.publicKey, attestation.expiresAt), member.publicKey));
      assert.ok(verify(hello.signature, sessionHelloSigningString('mesh-test-01', member.publicKey, session.publicKey, Number(hello.timestamp), String(hello.challenge)), session.publicKey));
      assert.deepEqual(hello.groups, ['ops']);
    }
  });
});
