// The durability promise under a crash: a burst of 500 sends through the sender's daemon (a
// real child process), SIGKILLed in the middle. The caller then does what any client does
// with requests it got no answer for: sends them again under the same ids. Every message
// reaches its recipient's inbox exactly once. Five recipients (100 messages each) keep each
// (sender, target) pair under the broker's loop guard.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { writeConfig } from '../../lib/client-config.ts';
import type { MeshIdentity } from '../../lib/client-config.ts';
import { callBroker } from '../../lib/broker-client.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import type { SigningKeyPair } from '../../lib/crypto.ts';
import { ipcRequest, probeDaemon } from '../../lib/daemon-client.ts';
import { createInvite, encodeInvite } from '../../lib/invite.ts';
import { Daemon } from '../../daemon/daemon.ts';
import { daemonPaths, ensureDaemonDir } from '../../daemon/paths.ts';
import { startTestBroker } from '../helpers/broker.ts';
import type { TestBroker } from '../helpers/broker.ts';
import { waitUntil } from '../helpers/wait.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const MESSAGES = 500;
const RECIPIENTS = 5;
const CONCURRENCY = 25;
const KILL_AFTER_ANSWERS = 200;
const WAIT_MS = 30_000;
const TIMINGS = JSON.stringify({ link: { backoffStepsMs: [20, 50, 100], helloAckTimeoutMs: 3_000 }, pollIntervalMs: 50 });

let scratch: string;
let broker: TestBroker;

const until = <T>(what: string, probe: () => T | undefined | Promise<T | undefined>) => waitUntil(what, probe, { timeoutMs: WAIT_MS, pollMs: 50 });

function identity(keys: SigningKeyPair, meshId: string, memberName: string, owner: string): MeshIdentity {
  return {
    meshId, name: 'team', brokerUrl: broker.baseUrl, role: memberName === 'alice' ? 'owner' : 'member', memberName, publicKey: keys.publicKey,
    secretKey: keys.secretKey.toString('hex'), ownerPubkey: owner, createdAt: new Date().toISOString(), status: 'active',
  };
}

async function startSender(home: string): Promise<ChildProcess> {
  const env: NodeJS.ProcessEnv = { ...process.env, CLAUDEMESH_HOME: home, CLAUDEMESH_DAEMON_TIMINGS: TIMINGS };
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['cli.ts', 'daemon', 'up', '--foreground'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'ignore'] });
  const socket = daemonPaths(home).socket;
  await until('the sender daemon', async () => {
    if (child.exitCode !== null) throw new Error(`sender daemon exited ${child.exitCode}`);
    const health = await ipcRequest(socket, 'GET', '/v1/health', undefined, 500).catch(() => undefined);
    return health?.body.meshes?.[0]?.state === 'open' ? true : undefined;
  });
  return child;
}

describe('SIGKILL in the middle of a burst', () => {
  const receivers: Daemon[] = [];
  let sender: ChildProcess | undefined;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-burst-'));
    broker = await startTestBroker('daemon_burst');
  });
  after(async () => {
    sender?.kill('SIGKILL');
    for (const receiver of receivers) await receiver.close();
    await broker.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('loses nothing and duplicates nothing', async () => {
    const alice = generateKeyPair();
    const created = await callBroker({ brokerUrl: broker.baseUrl, method: 'POST', path: '/mesh/create', identity: alice, body: { name: 'team', ownerName: 'alice' } });
    const meshId = String(created.body.meshId);
    const token = encodeInvite(createInvite({ meshId, meshName: 'team', brokerUrl: broker.baseUrl, role: 'member', expiresAt: Math.floor(Date.now() / 1000) + 3600, maxUses: RECIPIENTS }, alice.secretKey));
    await callBroker({ brokerUrl: broker.baseUrl, method: 'POST', path: '/mesh/invite', identity: alice, meshId, body: { token } });
    for (let index = 0; index < RECIPIENTS; index += 1) {
      const keys = generateKeyPair();
      await callBroker({ brokerUrl: broker.baseUrl, method: 'POST', path: '/mesh/join', identity: keys, body: { token, name: `r${index}` } });
      const paths = daemonPaths(join(scratch, `r${index}`));
      await ensureDaemonDir(paths);
      const receiver = new Daemon({ paths, config: { version: 1, meshes: [identity(keys, meshId, `r${index}`, alice.publicKey)] }, timings: JSON.parse(TIMINGS) });
      receiver.start();
      receivers.push(receiver);
    }
    const aliceHome = join(scratch, 'alice');
    await writeConfig(aliceHome, { version: 1, meshes: [identity(alice, meshId, 'alice', alice.publicKey)] });
    sender = await startSender(aliceHome);
    const socket = daemonPaths(aliceHome).socket;
    const message = (index: number) => ({ to: `r${index % RECIPIENTS}`, text: `burst message ${index}`, clientMessageId: `burst-${index}` });

    // The burst: CONCURRENCY requests at a time; the daemon dies after KILL_AFTER_ANSWERS answers.
    const answered = new Set<number>();
    let next = 0;
    const victim = sender;
    const worker = async () => {
      while (next < MESSAGES) {
        const index = next;
        next += 1;
        const answer = await ipcRequest(socket, 'POST', '/v1/send', message(index), 5_000).catch(() => undefined);
        if (answer?.status === 202) answered.add(index);
        if (answered.size >= KILL_AFTER_ANSWERS && victim.exitCode === null && victim.signalCode === null) victim.kill('SIGKILL');
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    assert.ok(answered.size >= KILL_AFTER_ANSWERS && answered.size < MESSAGES, `killed mid-burst (${answered.size} answered)`);
    assert.equal(await probeDaemon(socket, 500), undefined, 'the sender is dead');

    // Restart, and send again everything that might not have been taken.
    sender = await startSender(aliceHome);
    for (let index = 0; index < MESSAGES; index += 1) {
      const answer = await ipcRequest(socket, 'POST', '/v1/send', message(index));
      assert.ok(answer.status === 200 || answer.status === 202, JSON.stringify(answer.body));
      if (answered.has(index)) assert.equal(answer.status, 200, `burst-${index} was acknowledged before the crash, so it is a repeat`);
    }

    const all = () => receivers.flatMap((receiver) => receiver.listInbox({ limit: 1_000 }));
    await until('every message delivered', () => (all().length >= MESSAGES ? true : undefined));
    await sleep(500);
    const bodies = all().map((row) => row.body);
    assert.equal(bodies.length, MESSAGES, 'no duplicates');
    assert.equal(new Set(bodies).size, MESSAGES);
    for (const [index, receiver] of receivers.entries()) {
      const mine = receiver.listInbox({ limit: 1_000 }).map((row) => Number(String(row.body).split(' ').at(-1)));
      assert.ok(mine.every((number) => number % RECIPIENTS === index), 'each message reached its own recipient');
    }
  });
});
