// The benchmark's world: one Postgres (embedded unless DATABASE_URL is set), a fresh
// database and a fresh broker process per run, and samplers on both.

import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { embeddedPostgres } from '../lib/embedded-pg.ts';
import type { EmbeddedPostgres } from '../lib/embedded-pg.ts';
import { brokerEnv, startBroker } from '../test/helpers/broker-process.ts';
import type { BrokerProcess } from '../test/helpers/broker-process.ts';
import { freePort } from '../test/helpers/ports.ts';
import { Sampler } from './sampler.ts';
import type { Usage } from './sampler.ts';

// How often the end of a burst asks whether every ack has been applied.
const SETTLE_POLL_MS = 10;
// The load test measures throughput, so the per-member limits are opened wide.
const BENCH_BROKER_ENV = { SEND_BURST: '100000000', SEND_RATE_PER_SECOND: '1000000', LOOP_GUARD_BURST: '100000000', LOOP_GUARD_RATE_PER_SECOND: '1000000', MAX_CONNECTIONS_PER_MESH: '5000' };

export interface Postgres {
  adminUrl: string;
  /** pid of the postmaster when embedded (its children are the backends) */
  postmasterPid: number | undefined;
  stop(): Promise<void>;
}

export async function startPostgres(): Promise<Postgres> {
  const external = process.env.DATABASE_URL;
  if (external !== undefined && external !== '') return { adminUrl: external, postmasterPid: undefined, stop: async () => {} };
  const baseDir = await mkdtemp(join(tmpdir(), 'claudemesh-bench-pg-'));
  // As root in a clone others cannot enter (under /root, say), the postgres user cannot
  // reach the binaries in node_modules: a copy is kept where it can (reused by later runs).
  // The cluster itself is in the temporary directory, which it can reach.
  const relocation = { dir: process.env.EMBEDDED_PG_RELOCATE_DIR || join(tmpdir(), 'claudemesh-pg-binaries'), cluster: false };
  const cluster: EmbeddedPostgres = await embeddedPostgres({ baseDir, port: await freePort(), relocation });
  await cluster.start();
  const pid = Number(readFileSync(join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  return {
    adminUrl: cluster.url,
    postmasterPid: pid,
    async stop() {
      await cluster.stop();
      await rm(baseDir, { recursive: true, force: true });
    },
  };
}

function childrenOf(parent: number): number[] {
  const pids: number[] = [parent];
  try {
    const children = readFileSync(`/proc/${parent}/task/${parent}/children`, 'utf8').trim();
    if (children !== '') pids.push(...children.split(' ').map(Number));
  } catch {
    // not on Linux, or gone
  }
  return pids;
}

export interface RunWorld {
  broker: BrokerProcess;
  brokerUrl: string;
  wsUrl: string;
  /** one per broker instance (all on the same database) */
  wsUrls: string[];
  /** start sampling CPU and memory (of every instance together), and the event-loop window */
  measure(): () => { broker: Usage; postgres: Usage | undefined };
  eventLoopP99Ms(): Promise<number>;
  /** wait until the broker holds no delivery queued (every ack applied); false at the limit */
  settled(limitMs: number): Promise<boolean>;
  close(): Promise<void>;
}

let databases = 0;

/** The Node flags of package.json's start script (`node <flags> broker.ts`). */
function startFlags(): string[] {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } };
  const words = pkg.scripts.start.split(/\s+/);
  return words.slice(1, words.indexOf('broker.ts'));
}

export async function startRun(postgres: Postgres, extraEnv: Record<string, string> = {}, instances = 1): Promise<RunWorld> {
  databases += 1;
  const name = `bench_${process.pid}_${databases}`;
  const admin = new pg.Client({ connectionString: postgres.adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(postgres.adminUrl);
  url.pathname = `/${name}`;
  // The broker runs with the Node flags of `npm start` (what operators run), unless
  // BENCH_BROKER_NODE_ARGS replaces them (e.g. "--cpu-prof" to profile it).
  const nodeArgs = process.env.BENCH_BROKER_NODE_ARGS === undefined ? startFlags() : process.env.BENCH_BROKER_NODE_ARGS.split(' ');
  // Several instances share the one database, as behind a balancer; the first migrates.
  const brokers: BrokerProcess[] = [];
  for (let index = 0; index < instances; index += 1) {
    brokers.push(await startBroker(brokerEnv({ ...BENCH_BROKER_ENV, ...extraEnv, DATABASE_URL: url.toString() }), nodeArgs));
  }
  const broker = brokers[0]!;
  const brokerPids = brokers.map((each) => each.child.pid ?? 0);
  return {
    broker,
    brokerUrl: broker.baseUrl,
    wsUrl: `ws://127.0.0.1:${broker.port}/ws`,
    wsUrls: brokers.map((each) => `ws://127.0.0.1:${each.port}/ws`),
    measure() {
      // The broker's event-loop p99 covers the time since its previous scrape: scrape now, so
      // that the one read at the end covers the measured window only.
      void Promise.all(brokers.map((each) => fetch(`${each.baseUrl}/metrics`).then((response) => response.arrayBuffer()).catch(() => undefined)));
      const brokerSampler = new Sampler(() => brokerPids);
      const pgSampler = postgres.postmasterPid === undefined ? undefined : new Sampler(() => childrenOf(postgres.postmasterPid ?? 0));
      brokerSampler.start();
      pgSampler?.start();
      return () => ({ broker: brokerSampler.stop(), postgres: pgSampler?.stop() });
    },
    async eventLoopP99Ms() {
      const p99s = await Promise.all(brokers.map(async (each) => {
        const text = await (await fetch(`${each.baseUrl}/metrics`)).text();
        return Number(/^nodejs_eventloop_delay_p99_seconds (\S+)$/m.exec(text)?.[1]) * 1000;
      }));
      return Math.max(...p99s);
    },
    async settled(limitMs) {
      // The CPU a message costs includes applying its recipient's ack, which the broker does
      // after the push, in batches: a window closed at the last push left a burst's last
      // acks (tens of thousands of rows) to be applied outside it. LIMIT 1 on the queue's own
      // partial index keeps each poll cheap.
      const client = new pg.Client({ connectionString: url.toString() });
      await client.connect();
      try {
        const started = performance.now();
        while (performance.now() - started < limitMs) {
          const { rowCount } = await client.query(`SELECT 1 FROM deliveries WHERE state = 'queued' LIMIT 1`);
          if (rowCount === 0) return true;
          await sleep(SETTLE_POLL_MS);
        }
        return false;
      } finally {
        await client.end();
      }
    },
    async close() {
      await Promise.all(brokers.map((each) => each.stop('SIGTERM')));
      const client = new pg.Client({ connectionString: postgres.adminUrl });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}
