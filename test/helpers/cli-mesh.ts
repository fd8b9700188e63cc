// A mesh made the way a new user makes one: a real broker child on a fixed port (so it can
// be stopped and started again at the same address), then `claudemesh new`, `invite` and
// `join` run as real processes, one CLAUDEMESH_HOME per person. Daemons are never started
// by hand: the verbs start them. Timings are shortened for the daemons the verbs start.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPidFile } from '../../daemon/lock.ts';
import { daemonPaths } from '../../daemon/paths.ts';
import { brokerEnv, startBroker } from './broker-process.ts';
import type { BrokerProcess } from './broker-process.ts';
import { runCli } from './cli.ts';
import type { CliRun } from './cli.ts';
import { createTestDatabase } from './db.ts';
import type { TestDatabase } from './db.ts';
import { freePort } from './ports.ts';

// Reconnects in tens of milliseconds instead of seconds.
const TIMINGS = JSON.stringify({ link: { backoffStepsMs: [50, 100, 200, 400], helloAckTimeoutMs: 3_000, pingIntervalMs: 1_000, idleTimeoutMs: 5_000 }, pollIntervalMs: 100 });

export interface CliMesh {
  scratch: string;
  brokerUrl: string;
  home(person: string): string;
  env(person: string, extra?: Record<string, string>): NodeJS.ProcessEnv;
  cli(person: string, args: string[], extra?: Record<string, string>): Promise<CliRun>;
  /** an invite token from `inviter` (alice by default) */
  invite(inviter?: string): Promise<string>;
  stopBroker(): Promise<void>;
  startBroker(): Promise<void>;
  close(): Promise<void>;
}

export async function cliMesh(label: string, people: readonly string[]): Promise<CliMesh> {
  const scratch = await mkdtemp(join(tmpdir(), `cm-${label}-`));
  const database: TestDatabase = await createTestDatabase(label.replaceAll('-', '_'));
  const port = await freePort();
  const brokerUrl = `http://127.0.0.1:${port}`;
  let broker: BrokerProcess | undefined = await startBroker(brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(port) }));
  const home = (person: string) => join(scratch, person);
  const env = (person: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
    const out: NodeJS.ProcessEnv = { ...process.env, CLAUDEMESH_HOME: home(person), CLAUDEMESH_DAEMON_TIMINGS: TIMINGS, XDG_CONFIG_HOME: join(scratch, 'xdg'), ...extra };
    delete out.NODE_TEST_CONTEXT;
    return out;
  };
  const cli = (person: string, args: string[], extra?: Record<string, string>) => runCli(args, env(person, extra));
  const invite = async (inviter = people[0] ?? 'alice') => {
    const run = await cli(inviter, ['invite', '--uses', '1']);
    if (run.code !== 0) throw new Error(`invite failed: ${run.stderr}`);
    return run.stdout.trim();
  };
  const [owner, ...others] = people;
  const made = await cli(owner ?? 'alice', ['new', 'team', '--broker', brokerUrl, '--name', owner ?? 'alice']);
  if (made.code !== 0) throw new Error(`new failed: ${made.stderr}`);
  for (const person of others) {
    const joined = await cli(person, ['join', await invite(), '--name', person]);
    if (joined.code !== 0) throw new Error(`join failed: ${joined.stderr}`);
  }
  return {
    scratch, brokerUrl, home, env, cli, invite,
    async stopBroker() {
      await broker?.stop();
      broker = undefined;
    },
    async startBroker() {
      broker = await startBroker(brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(port) }));
    },
    async close() {
      for (const person of people) {
        const pid = await readPidFile(daemonPaths(home(person)).pid);
        try {
          if (pid !== undefined) process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await broker?.stop();
      await database.drop();
      await rm(scratch, { recursive: true, force: true });
    },
  };
}
