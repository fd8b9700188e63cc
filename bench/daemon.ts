// The daemon path: a send through alice's daemon (IPC → outbox → broker) until
// it sits decrypted in bob's daemon inbox. Two real daemon processes, one broker process.
// Arrival is noted by polling bob's inbox over IPC every POLL_MS (the figure's resolution).
// The command a person types against such a daemon is measured in bench/cli.ts.

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callBroker } from '../lib/broker-client.ts';
import { writeConfig } from '../lib/client-config.ts';
import type { MeshIdentity } from '../lib/client-config.ts';
import { generateKeyPair } from '../lib/crypto.ts';
import type { SigningKeyPair } from '../lib/crypto.ts';
import { ipcRequest, probeDaemon } from '../lib/daemon-client.ts';
import { createInvite, encodeInvite } from '../lib/invite.ts';
import { daemonPaths } from '../daemon/paths.ts';
import type { Postgres } from './harness.ts';
import { startRun } from './harness.ts';
import { distribution } from './stats.ts';
import type { Distribution } from './stats.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const POLL_MS = 2;
const START_LIMIT_MS = 20_000;
const DELIVERY_LIMIT_MS = 120_000;
const CONCURRENCY = 32;

export interface DaemonResult {
  point: string;
  latencyMessages: number;
  ipcAnswerMs: Distribution;
  sendToInboxMs: Distribution;
  throughputMessages: number;
  throughputSeconds: number;
  messagesPerSecond: number;
  lost: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function identity(keys: SigningKeyPair, meshId: string, brokerUrl: string, role: MeshIdentity['role'], memberName: string, owner: string): MeshIdentity {
  return {
    meshId, name: 'bench', brokerUrl, role, memberName, publicKey: keys.publicKey, secretKey: keys.secretKey.toString('hex'),
    ownerPubkey: owner, createdAt: new Date().toISOString(), status: 'active',
  };
}

/** A daemon for this home, from the clone's cli.ts, once its mesh connection is open. */
export async function startDaemon(home: string): Promise<{ child: ChildProcess; socket: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, CLAUDEMESH_HOME: home };
  const child = spawn(process.execPath, ['cli.ts', 'daemon', 'up', '--foreground'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'ignore'] });
  const socket = daemonPaths(home).socket;
  const deadline = Date.now() + START_LIMIT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`daemon in ${home} exited ${child.exitCode}`);
    const health = await probeDaemon(socket, 500);
    if (health !== undefined) {
      const state = await ipcRequest(socket, 'GET', '/v1/health');
      if (state.body.meshes?.[0]?.state === 'open') return { child, socket };
    }
    await sleep(50);
  }
  throw new Error(`daemon in ${home} did not connect within ${START_LIMIT_MS} ms`);
}

/** SIGTERM each daemon and wait until it has exited. */
export async function stopDaemons(children: readonly ChildProcess[]): Promise<void> {
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(children.map((child) => new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(undefined)))));
}

/** alice owns a new mesh and bob joins it through a signed invite, both with fresh keys. */
async function seedPair(brokerUrl: string): Promise<{ meshId: string; alice: SigningKeyPair; bob: SigningKeyPair }> {
  const alice = generateKeyPair();
  const bob = generateKeyPair();
  const created = await callBroker({ brokerUrl, method: 'POST', path: '/mesh/create', identity: alice, body: { name: 'bench', ownerName: 'alice' } });
  const meshId = String(created.body.meshId);
  const token = encodeInvite(createInvite({ meshId, meshName: 'bench', brokerUrl, role: 'member', expiresAt: Math.floor(Date.now() / 1000) + 3600, maxUses: 1 }, alice.secretKey));
  await callBroker({ brokerUrl, method: 'POST', path: '/mesh/invite', identity: alice, meshId, body: { token } });
  await callBroker({ brokerUrl, method: 'POST', path: '/mesh/join', identity: bob, body: { token, name: 'bob' } });
  return { meshId, alice, bob };
}

/** The pair seeded on the broker, and a claudemesh home for each (scratch/alice, scratch/bob). */
export async function seedHomes(brokerUrl: string, scratch: string): Promise<{ alice: string; bob: string }> {
  const { meshId, alice, bob } = await seedPair(brokerUrl);
  const homes = { alice: join(scratch, 'alice'), bob: join(scratch, 'bob') };
  await writeConfig(homes.alice, { version: 1, meshes: [identity(alice, meshId, brokerUrl, 'owner', 'alice', alice.publicKey)] });
  await writeConfig(homes.bob, { version: 1, meshes: [identity(bob, meshId, brokerUrl, 'member', 'bob', alice.publicKey)] });
  return homes;
}

interface Arrivals {
  /** client message id → when bob's inbox first listed it */
  arrived: Map<string, number>;
  stop(): Promise<void>;
}

/** Poll an inbox every POLL_MS for rows after the last one seen, noting when each arrived. */
function watchInbox(socket: string): Arrivals {
  const arrived = new Map<string, number>();
  let lastId = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const answer = await ipcRequest(socket, 'GET', `/v1/inbox?after=${lastId}&limit=1000`);
      const now = performance.now();
      for (const item of answer.body.items ?? []) {
        if (!arrived.has(item.clientMessageId)) arrived.set(item.clientMessageId, now);
        lastId = Math.max(lastId, Number(item.id));
      }
      await sleep(POLL_MS);
    }
  })();
  return {
    arrived,
    async stop() {
      polling = false;
      await poller;
    },
  };
}

async function waitFor(arrived: ReadonlyMap<string, number>, ids: readonly string[]): Promise<void> {
  const deadline = performance.now() + DELIVERY_LIMIT_MS;
  while (ids.some((id) => !arrived.has(id)) && performance.now() < deadline) await sleep(1);
}

/** After a warm-up, one message at a time: the latency of the path itself. */
async function measureLatency(socket: string, arrived: ReadonlyMap<string, number>, count: number): Promise<{ ipcMs: number[]; endToEnd: number[] }> {
  for (let i = 0; i < 5; i += 1) {
    await ipcRequest(socket, 'POST', '/v1/send', { to: 'bob', text: `warm ${i}`, clientMessageId: `warm-${i}` });
    await waitFor(arrived, [`warm-${i}`]);
  }
  const ipcMs: number[] = [];
  const endToEnd: number[] = [];
  for (let i = 0; i < count; i += 1) {
    const id = `lat-${i}`;
    const started = performance.now();
    await ipcRequest(socket, 'POST', '/v1/send', { to: 'bob', text: `latency ${i}`, clientMessageId: id });
    ipcMs.push(performance.now() - started);
    await waitFor(arrived, [id]);
    endToEnd.push((arrived.get(id) ?? Number.NaN) - started);
  }
  return { ipcMs, endToEnd };
}

/** Many sends in flight through one daemon's outbox: seconds until the last arrived, and how many never did. */
async function measureThroughput(socket: string, arrived: ReadonlyMap<string, number>, count: number): Promise<{ seconds: number; lost: number }> {
  const ids = Array.from({ length: count }, (_, i) => `tp-${i}`);
  const started = performance.now();
  for (let start = 0; start < ids.length; start += CONCURRENCY) {
    await Promise.all(ids.slice(start, start + CONCURRENCY).map((id) => ipcRequest(socket, 'POST', '/v1/send', { to: 'bob', text: `bulk ${id}`, clientMessageId: id })));
  }
  await waitFor(arrived, ids);
  const seconds = (Math.max(...ids.map((id) => arrived.get(id) ?? 0)) - started) / 1000;
  return { seconds, lost: ids.filter((id) => !arrived.has(id)).length };
}

export async function daemonPath(postgres: Postgres, options: { latencyMessages: number; throughputMessages: number }): Promise<DaemonResult> {
  const world = await startRun(postgres);
  const scratch = await mkdtemp(join(tmpdir(), 'cm-bench-daemon-'));
  const daemons: ChildProcess[] = [];
  try {
    const homes = await seedHomes(world.brokerUrl, scratch);
    const a = await startDaemon(homes.alice);
    const b = await startDaemon(homes.bob);
    daemons.push(a.child, b.child);

    const inbox = watchInbox(b.socket);
    const latency = await measureLatency(a.socket, inbox.arrived, options.latencyMessages);
    const throughput = await measureThroughput(a.socket, inbox.arrived, options.throughputMessages);
    await inbox.stop();
    return {
      point: 'daemon path',
      latencyMessages: options.latencyMessages,
      ipcAnswerMs: distribution(latency.ipcMs),
      sendToInboxMs: distribution(latency.endToEnd),
      throughputMessages: options.throughputMessages,
      throughputSeconds: throughput.seconds,
      messagesPerSecond: (options.throughputMessages - throughput.lost) / throughput.seconds,
      lost: throughput.lost,
    };
  } finally {
    await stopDaemons(daemons);
    await world.close();
    await rm(scratch, { recursive: true, force: true });
  }
}
