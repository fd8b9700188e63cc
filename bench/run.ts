// `just bench`: the load benchmark (docs/benchmarks.md). Starts Postgres (embedded unless
// DATABASE_URL is set), then for each point a fresh database and broker process; runs
// each point RUNS times with a fixed seed and reports the median run.
// Usage: node bench/run.ts [--quick] [--only burst,mesh,instances,steady,held,storm,connect,idle,daemon,cli] [--runs N] [--out FILE]
//        [--write-docs]  (replaces the generated section of docs/benchmarks.md)

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { connectStorm } from './connect-storm.ts';
import type { ConnectStormResult } from './connect-storm.ts';
import { startPostgres } from './harness.ts';
import { idleSockets } from './idle-sockets.ts';
import type { IdleResult } from './idle-sockets.ts';
import { CLI_VERBS, everydayCli, WAYS } from './cli.ts';
import type { CliResult } from './cli.ts';
import { daemonPath } from './daemon.ts';
import type { DaemonResult } from './daemon.ts';
import { directTraffic, heldPriority, reconnectStorm } from './scenarios.ts';
import type { BurstResult, HeldResult, StormResult } from './scenarios.ts';
import { medianRun } from './stats.ts';

const SEED = 20261123;
const RUNS = 3;
// The everyday CLI point measures whole commands, many of them, once (not RUNS times).
const CLI_COMMANDS = { quick: 10, full: 30 };
const OUT_DIR = new URL('./results/', import.meta.url).pathname;
const DOCS_START = '<!-- bench:start -->';
const DOCS_END = '<!-- bench:end -->';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    out: { type: 'string' },
    runs: { type: 'string' },
    'write-docs': { type: 'boolean', default: false },
  },
});
const runs = values.runs === undefined ? (values.quick ? 1 : RUNS) : Number(values.runs);
const wanted = (name: string) => values.only === undefined || values.only.split(',').includes(name);

const fmt = (value: number | null, digits = 1) => (value === null || Number.isNaN(value) ? '–' : value.toFixed(digits));
const log = (line: string) => process.stderr.write(`${line}\n`);

async function repeat<T>(label: string, once: (run: number) => Promise<T>, key: (result: T) => number): Promise<{ median: T; all: T[] }> {
  const all: T[] = [];
  for (let run = 0; run < runs; run += 1) {
    const started = Date.now();
    all.push(await once(run));
    log(`  ${label} run ${run + 1}/${runs} done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  return { median: medianRun(all, key), all };
}

const postgres = await startPostgres();
const bursts: BurstResult[] = [];
const held: HeldResult[] = [];
const storms: StormResult[] = [];
const connects: ConnectStormResult[] = [];
const idles: IdleResult[] = [];
const daemonRuns: DaemonResult[] = [];
const cliRuns: CliResult[] = [];
const started = Date.now();
try {
  if (wanted('burst')) {
    const points: Array<[number, number]> = values.quick ? [[10, 100], [100, 100]] : [[10, 100], [100, 100], [100, 1_000]];
    for (const [peers, perPeer] of points) {
      const point = `burst ${peers}×${perPeer}`;
      log(point);
      bursts.push((await repeat(point, (run) => directTraffic(postgres, { peers, perPeer, seed: SEED + run, point }), (r) => r.sendToPushMs.p99)).median);
    }
  }
  if (wanted('mesh')) {
    // One big mesh: every push, roster and join reaches a thousand members.
    const [peers, perPeer] = values.quick ? [300, 10] : [1_000, 10];
    const point = `mesh of ${peers}, burst ${peers}×${perPeer}`;
    log(point);
    bursts.push((await repeat(point, (run) => directTraffic(postgres, { peers, perPeer, seed: SEED + run, point }), (r) => r.sendToPushMs.p99)).median);
  }
  if (wanted('instances')) {
    // The cost of the hop between instances: the same burst with peers spread over two
    // brokers on one database, so about half of all messages cross through LISTEN/NOTIFY.
    const [peers, perPeer] = values.quick ? [100, 100] : [100, 1_000];
    const point = `burst ${peers}×${perPeer} across 2 instances`;
    log(point);
    bursts.push((await repeat(point, (run) => directTraffic(postgres, { peers, perPeer, seed: SEED + run, point, instances: 2 }), (r) => r.sendToPushMs.p99)).median);
  }
  if (wanted('steady')) {
    const seconds = values.quick ? 10 : 30;
    const rate = 1_000;
    const peers = 100;
    const point = `steady ${rate} msg/s × ${seconds} s`;
    log(point);
    bursts.push((await repeat(point, (run) => directTraffic(postgres, { peers, perPeer: (rate * seconds) / peers, seed: SEED + run, point, rate }), (r) => r.sendToPushMs.p99)).median);
  }
  if (wanted('held')) {
    log('next held while working');
    held.push((await repeat('held', () => heldPriority(postgres, { peers: 20, perPeer: 50, holdMs: 1_000 }), (r) => r.releaseToPushMs.p99)).median);
  }
  if (wanted('storm')) {
    const sockets = values.quick ? 200 : 1_000;
    log(`reconnect storm ${sockets}`);
    storms.push((await repeat('storm', () => reconnectStorm(postgres, { sockets, senders: 10 }), (r) => r.reattachedMs)).median);
  }
  if (wanted('connect')) {
    const shapes: Array<[number, number]> = values.quick ? [[10, 20], [1, 200]] : [[10, 100], [1, 1_000]];
    for (const [meshes, perMesh] of shapes) {
      log(`connect storm ${meshes}×${perMesh}`);
      connects.push((await repeat('connect', () => connectStorm(postgres, { meshes, perMesh }), (r) => r.helloAckMs.max)).median);
    }
  }
  if (wanted('idle')) {
    const [meshes, perMesh] = values.quick ? [10, 100] : [100, 100];
    log(`idle sockets ${meshes}×${perMesh}`);
    idles.push((await repeat('idle', () => idleSockets(postgres, { meshes, perMesh }), (r) => r.eventLoopP99Ms)).median);
  }
  if (wanted('daemon')) {
    log('daemon path');
    const sizes = values.quick ? { latencyMessages: 50, throughputMessages: 500 } : { latencyMessages: 200, throughputMessages: 2_000 };
    daemonRuns.push((await repeat('daemon', () => daemonPath(postgres, sizes), (r) => r.sendToInboxMs.p50)).median);
  }
  if (wanted('cli')) {
    log('everyday CLI');
    cliRuns.push(await everydayCli(postgres, { runs: values.quick ? CLI_COMMANDS.quick : CLI_COMMANDS.full }));
  }
} finally {
  await postgres.stop();
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const lines: string[] = [];
lines.push(`Machine: ${machine}; runs per point: ${runs} (median by p99 shown); seed ${SEED}; total ${((Date.now() - started) / 1000).toFixed(0)} s`);
lines.push('');
if (bursts.length > 0) {
  lines.push('| point | delivered | lost | dup | send→ack p50/p99 ms | send→push p50/p95/p99/max ms | total s | acks applied +s | msg/s | broker RSS MB | broker CPU s | PG CPU s | loop p99 ms |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
}
for (const r of bursts) {
  lines.push(`| ${r.point} | ${fmt(r.deliveredPercent, 2)}% | ${r.lost} | ${r.duplicates} | ${fmt(r.sendToAckMs.p50)} / ${fmt(r.sendToAckMs.p99)} | ${fmt(r.sendToPushMs.p50)} / ${fmt(r.sendToPushMs.p95)} / ${fmt(r.sendToPushMs.p99)} / ${fmt(r.sendToPushMs.max)} | ${fmt(r.totalMs / 1000, 2)} | ${r.ackLagMs === null ? 'never' : fmt(r.ackLagMs / 1000, 2)} | ${fmt(r.messagesPerSecond, 0)} | ${fmt(r.brokerPeakRssMb, 0)} | ${fmt(r.brokerCpuSeconds)} | ${fmt(r.postgresCpuSeconds)} | ${fmt(r.eventLoopP99Ms)} |`);
}
for (const r of held) {
  lines.push('');
  lines.push(`${r.point}: ${r.held} held, ${r.pushedWhileWorking} pushed while working, ${r.delivered} delivered after idle (lost ${r.lost}); idle→push p50 ${fmt(r.releaseToPushMs.p50)} ms, p99 ${fmt(r.releaseToPushMs.p99)} ms`);
}
for (const r of storms) {
  lines.push('');
  lines.push(`${r.point}: ${r.reattached}/${r.sockets} reattached silently in ${fmt(r.reattachedMs / 1000, 2)} s; ${r.messagesDuringStorm} messages sent meanwhile, lost ${r.lost}, duplicates ${r.duplicates}; broker peak RSS ${fmt(r.brokerPeakRssMb, 0)} MB; their hello_acks ${fmt(r.helloAckMb, 2)} MB, ${r.rosterResent} with the whole roster`);
}
for (const r of connects) {
  lines.push('');
  const refusals = Object.entries(r.refusals).map(([code, count]) => `${code} ×${count}`).join(', ');
  lines.push(`${r.point}: ${r.accepted}/${r.peers} accepted${r.refused > 0 ? ` (refused: ${refusals})` : ''}; hello_ack p50 ${fmt(r.helloAckMs.p50)} ms / p99 ${fmt(r.helloAckMs.p99)} ms / last ${fmt(r.helloAckMs.max)} ms; broker CPU ${fmt(r.brokerCpuSeconds)} s, PG CPU ${fmt(r.postgresCpuSeconds)} s, broker peak RSS ${fmt(r.brokerPeakRssMb, 0)} MB`);
}
for (const r of idles) {
  lines.push('');
  lines.push(`${r.point}: ${r.connected}/${r.sockets} connected in ${fmt(r.connectSeconds)} s, ${r.stillOpen} still open after ${fmt(r.idleSeconds, 0)} s idle (a ping cycle); broker peak RSS ${fmt(r.brokerPeakRssMb, 0)} MB, CPU ${fmt(r.brokerCpuSeconds)} s while idle; /health answered p50 ${fmt(r.healthMs.p50)} ms / p99 ${fmt(r.healthMs.p99)} ms / max ${fmt(r.healthMs.max)} ms while idle (its answer includes a database ping); event loop p99 while idle ${fmt(r.eventLoopP99Ms)} ms`);
}
for (const r of daemonRuns) {
  lines.push('');
  lines.push(`${r.point}: one send at a time (${r.latencyMessages}), IPC answer (after the outbox commit) p50 ${fmt(r.ipcAnswerMs.p50)} ms / p99 ${fmt(r.ipcAnswerMs.p99)} ms; IPC → recipient daemon's inbox p50 ${fmt(r.sendToInboxMs.p50)} ms / p95 ${fmt(r.sendToInboxMs.p95)} ms / p99 ${fmt(r.sendToInboxMs.p99)} ms; outbox throughput ${r.throughputMessages} messages in ${fmt(r.throughputSeconds, 2)} s = ${fmt(r.messagesPerSecond, 0)} msg/s, lost ${r.lost}`);
}
const WAY_LABELS = { clone: 'clone: node cli.ts', linked: 'linked bin (npm link)', package: 'package bin (dist/)' } as const;
for (const r of cliRuns) {
  const floor = r.nodeStartMs.p50;
  lines.push('');
  lines.push(`${r.point}, warm daemon, whole processes (${r.runs} runs each, round-robin): Node's own start (node -e 0) p50 ${fmt(floor)} ms / p95 ${fmt(r.nodeStartMs.p95)} ms; the daemon's part over its socket: POST /v1/send p50 ${fmt(r.ipcSendMs.p50)} ms, GET /v1/peers p50 ${fmt(r.ipcPeersMs.p50)} ms`);
  lines.push('');
  lines.push(`| way | ${CLI_VERBS.map((verb) => `${verb} p50 / p95 ms | above Node p50`).join(' | ')} |`);
  lines.push(`|---|${CLI_VERBS.map(() => '---|---|').join('')}`);
  for (const way of WAYS) {
    lines.push(`| ${WAY_LABELS[way]} | ${CLI_VERBS.map((verb) => `${fmt(r.commandMs[way][verb].p50)} / ${fmt(r.commandMs[way][verb].p95)} | ${fmt(r.commandMs[way][verb].p50 - floor)}`).join(' | ')} |`);
  }
}
const report = lines.join('\n');
process.stdout.write(`${report}\n`);
await mkdir(OUT_DIR, { recursive: true });
const out = values.out ?? `${OUT_DIR}latest.json`;
await writeFile(out, JSON.stringify({ machine, runs, seed: SEED, bursts, held, storms, connects, idles, daemon: daemonRuns, cli: cliRuns, report }, null, 2));
process.stderr.write(`results written to ${out}\n`);

if (values['write-docs']) {
  const docs = new URL('../docs/benchmarks.md', import.meta.url);
  const text = await readFile(docs, 'utf8');
  const start = text.indexOf(DOCS_START);
  const end = text.indexOf(DOCS_END);
  if (start === -1 || end === -1) throw new Error(`docs/benchmarks.md lacks the ${DOCS_START} … ${DOCS_END} markers`);
  await writeFile(docs, `${text.slice(0, start + DOCS_START.length)}\n${report}\n${text.slice(end)}`);
  process.stderr.write('docs/benchmarks.md updated\n');
}
