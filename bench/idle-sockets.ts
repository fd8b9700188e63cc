// Many idle sockets on one broker: every member of many meshes connected and saying nothing
// for longer than a ping interval, so the broker's ping cycle runs over all of them. Measured:
// the broker's memory and whether its event loop stalls.

import { startRun } from './harness.ts';
import type { Postgres } from './harness.ts';
import { seedMesh } from './mesh.ts';
import { BenchPeer } from './peer.ts';
import { distribution } from './stats.ts';
import type { Distribution } from './stats.ts';

const MB = 1024 * 1024;
// Longer than the broker's 30 s ping interval (lib/broker/hub.ts PING_INTERVAL_MS).
const IDLE_MS = 35_000;
const CONNECT_CONCURRENCY = 100;
// While idle, the broker is asked for /health this often (its answer waits for a database
// ping, so it shows Postgres too); the broker's own loop-delay gauge covers the idle time only.
const PROBE_EVERY_MS = 100;

export interface IdleResult {
  point: string;
  sockets: number;
  connected: number;
  connectSeconds: number;
  idleSeconds: number;
  brokerPeakRssMb: number;
  brokerCpuSeconds: number;
  eventLoopP99Ms: number;
  healthMs: Distribution;
  stillOpen: number;
}

export async function idleSockets(postgres: Postgres, options: { meshes: number; perMesh: number; idleMs?: number }): Promise<IdleResult> {
  const world = await startRun(postgres, { MAX_CONNECTIONS_PER_MESH: String(options.perMesh) });
  try {
    const peers: BenchPeer[] = [];
    for (let index = 0; index < options.meshes; index += 1) {
      const mesh = await seedMesh(world.brokerUrl, options.perMesh, `idle-${index}`);
      peers.push(...mesh.members.map((member) => new BenchPeer(mesh.meshId, member)));
    }
    const started = performance.now();
    let connected = 0;
    for (let start = 0; start < peers.length; start += CONNECT_CONCURRENCY) {
      const answers = await Promise.all(peers.slice(start, start + CONNECT_CONCURRENCY).map((peer) => peer.connect(world.wsUrl).catch(() => undefined)));
      connected += answers.filter((answer) => answer?.type === 'hello_ack').length;
    }
    const connectSeconds = (performance.now() - started) / 1000;
    const stop = world.measure();
    const idleMs = options.idleMs ?? IDLE_MS;
    const answers: number[] = [];
    for (const until = performance.now() + idleMs; performance.now() < until;) {
      const asked = performance.now();
      await fetch(`${world.brokerUrl}/health`).then((response) => response.arrayBuffer());
      answers.push(performance.now() - asked);
      await new Promise((resolve) => setTimeout(resolve, PROBE_EVERY_MS));
    }
    const usage = stop();
    const eventLoopP99Ms = await world.eventLoopP99Ms();
    const stillOpen = peers.filter((peer) => peer.socket?.readyState === peer.socket?.OPEN).length;
    for (const peer of peers) peer.drop();
    return {
      point: `${peers.length} idle sockets (${options.meshes} meshes × ${options.perMesh})`,
      sockets: peers.length, connected, connectSeconds, idleSeconds: idleMs / 1000,
      brokerPeakRssMb: usage.broker.peakRssBytes / MB, brokerCpuSeconds: usage.broker.cpuSeconds, eventLoopP99Ms, healthMs: distribution(answers), stillOpen,
    };
  } finally {
    await world.close();
  }
}
