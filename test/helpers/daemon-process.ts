// A real daemon process (`node cli.ts daemon up --foreground`) on a CLAUDEMESH_HOME, with
// its JSON log lines collected and its IPC socket at hand. For tests that kill it, or that
// put its home on a file system that fails.

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeConfig } from '../../lib/client-config.ts';
import type { MeshIdentity } from '../../lib/client-config.ts';
import type { SigningKeyPair } from '../../lib/crypto.ts';
import { ipcRequest } from '../../lib/daemon-client.ts';
import type { IpcAnswer } from '../../lib/daemon-client.ts';
import { daemonPaths } from '../../daemon/paths.ts';
import { waitUntil } from './wait.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const START_WAIT_MS = 30_000;
const STOP_WAIT_MS = 10_000;
// Reconnects in milliseconds, as every daemon test runs.
const DAEMON_TIMINGS = JSON.stringify({ link: { backoffStepsMs: [20, 50, 100], helloAckTimeoutMs: 3_000 }, pollIntervalMs: 50 });

export interface DaemonProcess {
  child: ChildProcess;
  home: string;
  socket: string;
  /** the daemon's log lines (JSON on stderr), parsed */
  logs: Array<Record<string, unknown>>;
  ask(method: string, path: string, body?: unknown): Promise<IpcAnswer>;
  /** send `signal` and wait for the exit; its code (null when killed by the signal) */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** One mesh identity, as `claudemesh join` would write it into the config. */
export function meshIdentity(keys: SigningKeyPair, meshId: string, memberName: string, ownerKey: string, brokerUrl: string): MeshIdentity {
  return {
    meshId, name: 'team', brokerUrl, role: keys.publicKey === ownerKey ? 'owner' : 'member', memberName, publicKey: keys.publicKey,
    secretKey: keys.secretKey.toString('hex'), ownerPubkey: ownerKey, createdAt: new Date().toISOString(), status: 'active',
  };
}

export function daemonEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CLAUDEMESH_HOME: home, CLAUDEMESH_DAEMON_TIMINGS: DAEMON_TIMINGS };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

/** Write the config (when given) and start the daemon; resolves once its mesh link is open. */
export async function startDaemonProcess(home: string, identity?: MeshIdentity): Promise<DaemonProcess> {
  if (identity !== undefined) await writeConfig(home, { version: 1, meshes: [identity] });
  const child = spawn(process.execPath, ['cli.ts', 'daemon', 'up', '--foreground'], { cwd: ROOT, env: daemonEnv(home), stdio: ['ignore', 'ignore', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  let partial = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const socket = daemonPaths(home).socket;
  const ask = (method: string, path: string, body?: unknown) => ipcRequest(socket, method, path, body, 5_000);
  await waitUntil(`the daemon of ${home}`, async () => {
    if (child.exitCode !== null) throw new Error(`daemon exited ${child.exitCode}: ${JSON.stringify(logs.slice(-3))}`);
    const health = await ask('GET', '/v1/health').catch(() => undefined);
    return health?.body.meshes?.[0]?.state === 'open' ? true : undefined;
  }, { timeoutMs: START_WAIT_MS, pollMs: 50 });
  return {
    child, home, socket, logs, ask,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_WAIT_MS);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
