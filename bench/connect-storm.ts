// A connect storm of new peers: every member of several fresh meshes says hello at the same
// moment (what a broker restart looks like when all the daemons come back). Measured: how
// many were accepted, how long until the last hello_ack, and what the broker and Postgres spent.

import { startRun } from './harness.ts';
import type { Postgres } from './harness.ts';
import { seedMesh } from './mesh.ts';
import { BenchPeer } from './peer.ts';
import { distribution } from './stats.ts';
import type { Distribution } from './stats.ts';

const MB = 1024 * 1024;

export interface ConnectStormResult {
  point: string;
  peers: number;
  accepted: number;
  refused: number;
  refusals: Record<string, number>;
  helloAckMs: Distribution;
  brokerCpuSeconds: number;
  postgresCpuSeconds: number | null;
  brokerPeakRssMb: number;
}

export async function connectStorm(postgres: Postgres, options: { meshes: number; perMesh: number }): Promise<ConnectStormResult> {
  const world = await startRun(postgres);
  try {
    const peers: BenchPeer[] = [];
    for (let index = 0; index < options.meshes; index += 1) {
      const mesh = await seedMesh(world.brokerUrl, options.perMesh, `connect-${index}`);
      peers.push(...mesh.members.map((member) => new BenchPeer(mesh.meshId, member)));
    }
    for (const peer of peers) peer.decrypt = false;
    const stop = world.measure();
    const started = performance.now();
    const answers = await Promise.all(peers.map(async (peer) => {
      try {
        const frame = await peer.connect(world.wsUrl);
        return { ms: performance.now() - started, code: frame.type === 'hello_ack' ? undefined : String(frame.code) };
      } catch (error) {
        return { ms: performance.now() - started, code: error instanceof Error ? error.message : String(error) };
      }
    }));
    const usage = stop();
    const refusals: Record<string, number> = {};
    for (const { code } of answers) if (code !== undefined) refusals[code] = (refusals[code] ?? 0) + 1;
    const accepted = answers.filter((answer) => answer.code === undefined);
    await Promise.all(peers.map((peer) => peer.close()));
    return {
      point: `connect storm ${options.meshes}×${options.perMesh} new peers`,
      peers: peers.length,
      accepted: accepted.length,
      refused: peers.length - accepted.length,
      refusals,
      helloAckMs: distribution(accepted.map((answer) => answer.ms)),
      brokerCpuSeconds: usage.broker.cpuSeconds,
      postgresCpuSeconds: usage.postgres?.cpuSeconds ?? null,
      brokerPeakRssMb: usage.broker.peakRssBytes / MB,
    };
  } finally {
    await world.close();
  }
}
