// Sessions on one daemon, in process against a real broker: each session has its own key
// and socket, sees only its own messages (plus its member's), sends as itself, and survives a
// daemon restart without a leave/join.

import assert from 'node:assert/strict';
import { request } from 'node:http';
import type { Server } from 'node:http';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { MeshIdentity } from '../../lib/client-config.ts';
import type { SigningKeyPair } from '../../lib/crypto.ts';
import { ipcRequest, sessionHeader } from '../../lib/daemon-client.ts';
import type { IpcAnswer } from '../../lib/daemon-client.ts';
import { Daemon } from '../../daemon/daemon.ts';
import { closeIpc, listenIpc } from '../../daemon/ipc.ts';
import { daemonPaths, ensureDaemonDir } from '../../daemon/paths.ts';
import { sessionAlive, SessionRegistry } from '../../daemon/sessions.ts';
import { startTestBroker } from '../helpers/broker.ts';
import { enrolAliceAndBob } from '../helpers/pair.ts';
import type { TestBroker } from '../helpers/broker.ts';
import { waitUntil } from '../helpers/wait.ts';

const WAIT_MS = 10_000;
const TIMINGS = { link: { backoffStepsMs: [20, 50, 100], helloAckTimeoutMs: 2_000 }, pollIntervalMs: 50 };

interface Running {
  daemon: Daemon;
  server: Server;
  socket: string;
  stop(): Promise<void>;
}

interface Stream {
  messages: Array<Record<string, any>>;
  lastId: string;
  close(): void;
}

let scratch: string;
let broker: TestBroker;

const until = <T>(what: string, probe: () => T | undefined | Promise<T | undefined>) => waitUntil(what, probe, { timeoutMs: WAIT_MS, pollMs: 20 });

async function run(home: string, mesh: MeshIdentity, { waitOpen = true } = {}): Promise<Running> {
  const paths = daemonPaths(join(scratch, home));
  await ensureDaemonDir(paths);
  const daemon = new Daemon({ paths, config: { version: 1, meshes: [mesh] }, timings: TIMINGS });
  daemon.start();
  const server = await listenIpc(daemon);
  if (waitOpen) await until(`${home} connected`, () => (daemon.links.get(mesh.meshId)?.isOpen === true ? true : undefined));
  return { daemon, server, socket: paths.socket, stop: async () => {
    await closeIpc(server, paths.socket);
    await daemon.close();
  } };
}

function ask(running: Running, method: string, path: string, body?: unknown, token?: string): Promise<IpcAnswer> {
  return ipcRequest(running.socket, method, path, body, 5_000, token === undefined ? {} : sessionHeader(token));
}

function openStream(running: Running, token: string, lastEventId?: string): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const stream: Stream = { messages: [], lastId: lastEventId ?? '0', close: () => {} };
    const headers: Record<string, string> = { ...sessionHeader(token), ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) };
    const req = request({ socketPath: running.socket, path: '/v1/stream', headers }, (res) => {
      stream.close = () => res.destroy();
      let buffer = '';
      res.on('data', (chunk: Buffer) => {
        buffer += chunk.toString('utf8');
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = new Map(block.split('\n').filter((line) => !line.startsWith(':')).map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]));
          if (fields.get('event') === 'message') {
            stream.messages.push(JSON.parse(fields.get('data') ?? '{}') as Record<string, any>);
            stream.lastId = fields.get('id') ?? stream.lastId;
          }
          end = buffer.indexOf('\n\n');
        }
      });
      res.on('error', () => {});
      resolve(stream);
    });
    req.on('error', reject);
    req.end();
  });
}

function identity(keys: SigningKeyPair, meshId: string, memberName: string, owner: string): MeshIdentity {
  return {
    meshId, name: 'team', brokerUrl: broker.baseUrl, role: memberName === 'alice' ? 'owner' : 'member', memberName, publicKey: keys.publicKey,
    secretKey: keys.secretKey.toString('hex'), ownerPubkey: owner, createdAt: new Date().toISOString(), status: 'active',
  };
}

describe('SessionRegistry', () => {
  it('keeps one key and one token per (mesh, session id), in 0600 files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cm-sess-'));
    try {
      const registry = new SessionRegistry(dir);
      const input = { sessionId: '3f2a-claude', meshId: 'mesh-0001', name: 'worker', pid: null, cwd: null, groups: ['ops'] };
      const first = registry.register(input);
      assert.equal(first.created, true);
      assert.match(first.record.token, /^[0-9a-f]{64}$/);
      const again = registry.register({ ...input, name: 'renamed' });
      assert.equal(again.created, false);
      assert.equal(again.record.token, first.record.token);
      assert.equal(again.record.sessionKey, first.record.sessionKey);
      assert.equal((await stat(join(dir, 'sessions.json'))).mode & 0o777, 0o600);
      const reloaded = new SessionRegistry(dir);
      assert.equal(reloaded.get(first.record.token)?.name, 'renamed');
      assert.equal(reloaded.keyPair('mesh-0001', '3f2a-claude').publicKey, first.record.sessionKey);
      assert.equal(reloaded.get('nope'), undefined);
      assert.equal(reloaded.unregister(first.record.token)?.sessionId, '3f2a-claude');
      assert.equal(new SessionRegistry(dir).list().length, 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('takes a session for alive only while its own process runs (a reused pid is not it)', { skip: process.platform !== 'linux' }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cm-sess-'));
    try {
      const { record } = new SessionRegistry(dir).register({ sessionId: 's', meshId: 'mesh-0001', name: 'w', pid: process.pid, cwd: null, groups: [] });
      assert.match(String(record.pidStartTime), /^\d+$/);
      assert.equal(sessionAlive(record), true);
      assert.equal(sessionAlive({ ...record, pidStartTime: '1' }), false, 'same pid, another start time');
      assert.equal(sessionAlive({ ...record, pid: null }), true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('sessions on one daemon', () => {
  let alice: Running;
  let bob: Running;
  let bobIdentity: MeshIdentity;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-sessions-'));
    broker = await startTestBroker('daemon_sessions');
    const { aliceKeys, bobKeys, meshId } = await enrolAliceAndBob(broker.baseUrl);
    alice = await run('alice', identity(aliceKeys, meshId, 'alice', aliceKeys.publicKey));
    bobIdentity = identity(bobKeys, meshId, 'bob', aliceKeys.publicKey);
    bob = await run('bob', bobIdentity);
  });
  after(async () => {
    await alice.stop();
    await bob.stop();
    await broker.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('two sessions never see each other’s messages; each sends as itself; a restart reattaches them', async () => {
    const first = await ask(bob, 'POST', '/v1/sessions/register', { sessionId: 'claude-1', name: 'bob-a', pid: process.pid, groups: ['ops'] });
    const second = await ask(bob, 'POST', '/v1/sessions/register', { sessionId: 'claude-2', name: 'bob-b', pid: process.pid });
    assert.equal(first.status, 201);
    assert.equal(second.status, 201);
    const tokenA = String(first.body.token);
    const tokenB = String(second.body.token);
    const listed = await ask(bob, 'GET', '/v1/sessions');
    assert.doesNotMatch(JSON.stringify(listed.body), new RegExp(`${tokenA}|${tokenB}|secret`, 'i'), 'no tokens, no secrets');
    assert.equal((await ask(bob, 'GET', '/v1/sessions/me', undefined, 'f'.repeat(64))).status, 401);
    assert.equal((await ask(bob, 'GET', '/v1/stream')).status, 401, 'a stream needs a session');
    await until('session links open', () => ([...bob.daemon.sessionLinks.values()].every((link) => link.isOpen) ? true : undefined));
    // Joins that come together may reach alice in one peers_joined frame: her daemon tells each.
    const joined = () => alice.daemon.events.list().filter((event) => event.kind === 'peer_joined').map((event) => (event.peer as { key: string }).key);
    const sessionKeys = [String(first.body.sessionKey), String(second.body.sessionKey)];
    await until('alice hears both sessions join', () => (sessionKeys.every((key) => joined().includes(key)) ? true : undefined));
    for (const key of sessionKeys) assert.equal(joined().filter((each) => each === key).length, 1, 'each join told once');
    const streamA = await openStream(bob, tokenA);
    const streamB = await openStream(bob, tokenB);

    const toA = await ask(alice, 'POST', '/v1/send', { to: 'bob-a', text: 'for session a only' });
    assert.equal(toA.status, 202, JSON.stringify(toA.body));
    assert.equal(toA.body.target, first.body.sessionKey);
    const toGroup = await ask(alice, 'POST', '/v1/send', { to: '@ops', text: 'for the ops group' });
    assert.equal(toGroup.status, 202, JSON.stringify(toGroup.body));
    await until('session a’s stream', () => (streamA.messages.length >= 2 ? true : undefined));
    await sleep(200);
    assert.deepEqual(streamA.messages.map((message) => message.body).sort(), ['for session a only', 'for the ops group']);
    assert.deepEqual(streamB.messages, [], 'session b sees nothing of it');
    const inboxB = await ask(bob, 'GET', '/v1/inbox', undefined, tokenB);
    assert.deepEqual(inboxB.body.items, []);

    const reply = await ask(bob, 'POST', '/v1/send', { to: 'alice', text: 'reply from session a' }, tokenA);
    assert.equal(reply.status, 202, JSON.stringify(reply.body));
    const received = await until('alice receives the reply', () => alice.daemon.listInbox({}).find((row) => row.body === 'reply from session a'));
    assert.equal(received.senderKey, first.body.sessionKey, 'sent as the session, through its own socket');

    // Surfaced by session a: a restarted stream replays only what is not surfaced yet.
    const [surfacedId] = streamA.messages.map((message) => Number(message.id));
    const marked = await ask(bob, 'POST', '/v1/inbox/surfaced', { ids: [surfacedId] }, tokenA);
    assert.deepEqual(marked.body, { markedSurfaced: 1 });
    streamA.close();
    streamB.close();
    await bob.stop();
    const whileDown = await ask(alice, 'POST', '/v1/send', { to: 'bob-a', text: 'sent while bob’s daemon was down' });
    assert.equal(whileDown.status, 202);
    bob = await run('bob', bobIdentity);
    await until('sessions reattached', () => ([...bob.daemon.sessionLinks.values()].length === 2 && [...bob.daemon.sessionLinks.values()].every((link) => link.isOpen) ? true : undefined));
    const reattached = bob.daemon.events.list().filter((event) => event.kind === 'link_open' && event.session !== undefined);
    assert.ok(reattached.length === 2 && reattached.every((event) => event.reattached === true), JSON.stringify(reattached));
    assert.equal((await ask(bob, 'GET', '/v1/sessions/me', undefined, tokenA)).status, 200, 'the token still works');
    const replay = await openStream(bob, tokenA);
    await until('replay of what was not surfaced', () => (replay.messages.some((message) => message.body === 'sent while bob’s daemon was down') ? true : undefined));
    assert.ok(!replay.messages.some((message) => Number(message.id) === surfacedId), 'a surfaced message is not replayed');
    replay.close();
    const leftDuringRestart = alice.daemon.events.list().filter((event) => event.kind === 'peer_left');
    assert.deepEqual(leftDuringRestart, [], 'peers saw no leave/join while bob’s daemon restarted');

    const status = await ask(bob, 'POST', '/v1/status', { status: 'dnd' }, tokenA);
    assert.equal(status.status, 200, JSON.stringify(status.body));
    const summary = await ask(bob, 'POST', '/v1/summary', { summary: 'reviewing the deploy' }, tokenA);
    assert.equal(summary.status, 200, JSON.stringify(summary.body));
    const seenByAlice = await until('alice sees session a’s status', async () => {
      const peers = await ask(alice, 'GET', '/v1/peers');
      const peer = (peers.body.peers as Array<Record<string, unknown>>).find((each) => each.key === first.body.sessionKey);
      return peer?.status === 'dnd' && peer.summary === 'reviewing the deploy' ? peer : undefined;
    });
    assert.equal(seenByAlice.name, 'bob-a');

    const gone = await ask(bob, 'POST', '/v1/sessions/unregister', {}, tokenB);
    assert.equal(gone.status, 200);
    assert.equal(bob.daemon.sessionLinks.size, 1);
  });

  it('answers a session’s first roster only once it is connected, so peers can reach it by name at once', async () => {
    const registered = await ask(bob, 'POST', '/v1/sessions/register', { sessionId: 'claude-3', name: 'bob-c', pid: process.pid });
    assert.equal(registered.status, 201);
    const token = String(registered.body.token);
    // No waiting here: the MCP server welcomes its Claude with this very answer.
    const peers = await ask(bob, 'GET', '/v1/peers', undefined, token);
    assert.equal(peers.status, 200, JSON.stringify(peers.body));
    const itself = (peers.body.peers as Array<Record<string, unknown>>).find((each) => each.key === registered.body.sessionKey);
    assert.equal(itself?.online, true, 'the session is in the roster it is given');
    const sent = await ask(alice, 'POST', '/v1/send', { to: 'bob-c', text: 'hello, new session' });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    assert.equal((await ask(bob, 'POST', '/v1/sessions/unregister', {}, token)).status, 200);
  });

  it('answers a cold daemon’s first inbox read with what waited at the broker', async () => {
    await bob.stop();
    const sent = await ask(alice, 'POST', '/v1/send', { to: 'bob', text: 'waited for a cold daemon', clientMessageId: 'cold-inbox' });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    await until('stored at the broker', () => (alice.daemon.outbox.get('cold-inbox')?.status === 'done' ? true : undefined));
    bob = await run('bob', bobIdentity, { waitOpen: false });
    // Asked at once, before bob's link is even open: "no messages" would be a lie.
    const first = await ask(bob, 'GET', '/v1/inbox');
    assert.ok((first.body.items as Array<{ body: string }>).some((item) => item.body === 'waited for a cold daemon'), JSON.stringify(first.body));
  });

  it('unregisters a session whose process is gone', async () => {
    const paths = daemonPaths(join(scratch, 'reaper'));
    await ensureDaemonDir(paths);
    const daemon = new Daemon({ paths, config: { version: 1, meshes: [bobIdentity] }, timings: { ...TIMINGS, reapIntervalMs: 20 } });
    daemon.start();
    try {
      daemon.registerSession({ sessionId: 'short-lived', pid: 2 ** 22 + 12345 });
      await until('reaped', () => (daemon.sessions.list().length === 0 && daemon.sessionLinks.size === 0 ? true : undefined));
      assert.ok(daemon.events.list().some((event) => event.kind === 'session_unregistered'));
    } finally {
      await daemon.close();
    }
  });
});
