// The everyday CLI: a warm `claudemesh send` and `claudemesh peer list` as whole processes
// (Node's start included) against a running daemon connected to a real broker, in the three
// ways people run them:
//   clone    node cli.ts …                     types stripped; cli.ts turns the compile cache on
//   linked   node bin/claudemesh.js …          `npm link` in a clone: the bin turns it on first
//   package  node <package>/bin/claudemesh.js  `npm pack`: compiled dist/, built here with
//                                              tsconfig.build.json into the package's layout
// beside Node's own start (`node -e 0`), the floor under all of them, and the same two requests
// straight over the socket (the daemon's part). Each way is warmed first (its compile cache
// filled), then the runs go round-robin, so load from elsewhere on the machine falls on every
// way alike. Figures only: nothing here asserts a time.

import { execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ipcRequest } from '../lib/daemon-client.ts';
import { seedHomes, startDaemon, stopDaemons } from './daemon.ts';
import type { Postgres } from './harness.ts';
import { startRun } from './harness.ts';
import { distribution } from './stats.ts';
import type { Distribution } from './stats.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const WARMUP_RUNS = 3;
const BUILD_TIMEOUT_MS = 300_000;
const COMMAND_TIMEOUT_MS = 30_000;

export const WAYS = ['clone', 'linked', 'package'] as const;
export const CLI_VERBS = ['send', 'peer list'] as const;
type Way = (typeof WAYS)[number];
type CliVerb = (typeof CLI_VERBS)[number];

export interface CliResult {
  point: string;
  runs: number;
  /** `node -e 0`: what any Node program costs here */
  nodeStartMs: Distribution;
  /** whole commands, by way and verb */
  commandMs: Record<Way, Record<CliVerb, Distribution>>;
  /** the same requests over the daemon's socket, without a process */
  ipcSendMs: Distribution;
  ipcPeersMs: Distribution;
}

const run = promisify(execFile);

/** The package's layout in scratch: bin/, dist/ (compiled now), package.json, and the clone's dependencies. */
async function buildPackage(scratch: string): Promise<string> {
  const dir = join(scratch, 'package');
  await run(process.execPath, [TSC, '-p', 'tsconfig.build.json', '--outDir', join(dir, 'dist')], { cwd: ROOT, timeout: BUILD_TIMEOUT_MS });
  await mkdir(join(dir, 'bin'));
  await copyFile(join(ROOT, 'bin', 'claudemesh.js'), join(dir, 'bin', 'claudemesh.js'));
  await copyFile(join(ROOT, 'package.json'), join(dir, 'package.json'));
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return join(dir, 'bin', 'claudemesh.js');
}

/** Milliseconds from spawning the process to its exit; a failed command fails the point. */
async function timed(args: readonly string[], home: string): Promise<number> {
  const env: NodeJS.ProcessEnv = { ...process.env, CLAUDEMESH_HOME: home };
  delete env.CLAUDEMESH_SESSION_TOKEN_FILE;
  const started = performance.now();
  await run(process.execPath, args, { cwd: ROOT, env, timeout: COMMAND_TIMEOUT_MS });
  return performance.now() - started;
}

async function timedIpc(socket: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<number> {
  const started = performance.now();
  const answer = await ipcRequest(socket, method, path, body);
  if (answer.status >= 400) throw new Error(`${method} ${path} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return performance.now() - started;
}

export async function everydayCli(postgres: Postgres, options: { runs: number }): Promise<CliResult> {
  const world = await startRun(postgres);
  const scratch = await mkdtemp(join(tmpdir(), 'cm-bench-cli-'));
  const daemons: ChildProcess[] = [];
  try {
    const homes = await seedHomes(world.brokerUrl, scratch);
    const packageBin = await buildPackage(scratch);
    const daemon = await startDaemon(homes.alice);
    daemons.push(daemon.child);
    const entry: Record<Way, string> = { clone: 'cli.ts', linked: join('bin', 'claudemesh.js'), package: packageBin };
    const argv = (way: Way, verb: CliVerb, n: number) => (verb === 'send' ? [entry[way], 'send', 'bob', 'round', String(n), 'by', way] : [entry[way], 'peer', 'list']);
    const samples = new Map<string, number[]>();
    const note = (key: string, ms: number) => samples.set(key, [...(samples.get(key) ?? []), ms]);
    // Rounds 0 … WARMUP_RUNS - 1 fill the compile caches and are not counted.
    for (let n = 0; n < WARMUP_RUNS + options.runs; n += 1) {
      const round: Array<[string, number]> = [['node', await timed(['-e', '0'], homes.alice)]];
      for (const way of WAYS) for (const verb of CLI_VERBS) round.push([`${way} ${verb}`, await timed(argv(way, verb, n), homes.alice)]);
      round.push(['ipc send', await timedIpc(daemon.socket, 'POST', '/v1/send', { to: 'bob', text: `ipc ${n}`, clientMessageId: `ipc-${n}` })]);
      round.push(['ipc peers', await timedIpc(daemon.socket, 'GET', '/v1/peers')]);
      if (n >= WARMUP_RUNS) for (const [key, ms] of round) note(key, ms);
    }
    const of = (key: string) => distribution(samples.get(key) ?? []);
    const byVerb = (way: Way) => ({ send: of(`${way} send`), 'peer list': of(`${way} peer list`) });
    return {
      point: 'everyday CLI',
      runs: options.runs,
      nodeStartMs: of('node'),
      commandMs: { clone: byVerb('clone'), linked: byVerb('linked'), package: byVerb('package') },
      ipcSendMs: of('ipc send'),
      ipcPeersMs: of('ipc peers'),
    };
  } finally {
    await stopDaemons(daemons);
    await world.close();
    await rm(scratch, { recursive: true, force: true });
  }
}
