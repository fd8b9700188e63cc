// ensureDaemonReady: what a CLI verb that needs the daemon calls first (docs/daemon.md,
// *Auto-start*). In order:
//   1. probe: GET /v1/version within 2.5 s → up (a socket file alone proves nothing);
//   2. a systemd/launchd unit exists → the service manager owns the daemon: wait up to 8 s
//      for it → up, or service-not-ready (never spawn a second one);
//   3. the recursion guard (CLAUDEMESH_INTERNAL_NO_AUTOSPAWN, set for the spawned daemon)
//      or CLAUDEMESH_NO_AUTOSTART → down;
//   4. an automatic start failed less than 30 s ago → spawn-suppressed (no thundering herd);
//   5. under a spawn lock, spawn `node cli.ts daemon up --foreground` detached (output to
//      daemon.log) and wait for it to answer → started, or spawn-failed (+ the marker).
// Another CLI process holding the spawn lock is waited for instead of spawning twice.

import { spawn } from 'node:child_process';
import { access, open, stat, unlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { probeDaemon, PROBE_TIMEOUT_MS } from '../lib/daemon-client.ts';
import type { DaemonVersion } from '../lib/daemon-client.ts';
import { mayBeDaemon, processAlive, readPidFile } from './lock.ts';
import { DAEMON_FILE_MODE, daemonPaths, ensureDaemonDir } from './paths.ts';
import type { DaemonPaths } from './paths.ts';
import { serviceUnitPath } from './service.ts';

const SERVICE_WAIT_MS = 8_000;
const SPAWN_WAIT_MS = 10_000;
const FAILURE_MARKER_MS = 30_000;
const POLL_MS = 50;
export const GUARD_ENV = 'CLAUDEMESH_INTERNAL_NO_AUTOSPAWN';
export const OPT_OUT_ENV = 'CLAUDEMESH_NO_AUTOSTART';
const CLI_PATH = new URL('../cli.ts', import.meta.url).pathname;

type ReadyOutcome = 'up' | 'started' | 'down' | 'spawn-failed' | 'spawn-suppressed' | 'service-not-ready';

interface EnsureOptions {
  home: string;
  env: Readonly<Record<string, string | undefined>>;
  probeTimeoutMs?: number;
  serviceWaitMs?: number;
  spawnWaitMs?: number;
  /** the unit file that marks a service-managed daemon; default: this platform's */
  serviceUnit?: string | undefined;
  now?: () => number;
}

interface ReadyResult {
  outcome: ReadyOutcome;
  socket: string;
  /** why, when not up or started */
  reason?: string;
  /** what the running daemon said about itself (up only) */
  running?: DaemonVersion;
}

async function exists(path: string | undefined): Promise<boolean> {
  if (path === undefined) return false;
  return access(path).then(() => true, () => false);
}

async function waitUntilUp(paths: DaemonPaths, timeoutMs: number, probeTimeoutMs: number, gaveUp: () => boolean = () => false): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !gaveUp()) {
    if ((await probeDaemon(paths.socket, probeTimeoutMs)) !== undefined) return true;
    await sleep(POLL_MS);
  }
  return (await probeDaemon(paths.socket, probeTimeoutMs)) !== undefined;
}

/** A socket whose daemon is gone is removed, so nobody waits on it. */
async function removeStale(paths: DaemonPaths): Promise<void> {
  const pid = await readPidFile(paths.pid);
  if (pid !== undefined && processAlive(pid) && mayBeDaemon(pid)) return;
  await unlink(paths.socket).catch(() => {});
  await unlink(paths.pid).catch(() => {});
}

async function takeSpawnLock(paths: DaemonPaths): Promise<(() => Promise<void>) | undefined> {
  try {
    const file = await open(paths.spawnLock, 'wx', DAEMON_FILE_MODE);
    await file.writeFile(String(process.pid));
    await file.close();
    return () => unlink(paths.spawnLock).catch(() => {});
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const holder = await readPidFile(paths.spawnLock);
  if (holder !== undefined && processAlive(holder)) return undefined;
  await unlink(paths.spawnLock).catch(() => {});
  return takeSpawnLock(paths);
}

export async function ensureDaemonReady(options: EnsureOptions): Promise<ReadyResult> {
  const paths = daemonPaths(options.home);
  const probeMs = options.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
  const now = options.now ?? Date.now;
  const result = (outcome: ReadyOutcome, reason?: string): ReadyResult => ({ outcome, socket: paths.socket, ...(reason === undefined ? {} : { reason }) });
  const running = await probeDaemon(paths.socket, probeMs);
  if (running !== undefined) return { ...result('up'), running };
  await ensureDaemonDir(paths);
  await removeStale(paths);
  const unit = 'serviceUnit' in options ? options.serviceUnit : serviceUnitPath();
  if (await exists(unit)) {
    const up = await waitUntilUp(paths, options.serviceWaitMs ?? SERVICE_WAIT_MS, probeMs);
    return up ? result('up') : result('service-not-ready', `${unit} manages the daemon and it did not answer`);
  }
  if (options.env[GUARD_ENV] === '1' || options.env[OPT_OUT_ENV] === '1') return result('down', 'automatic start is off here');
  const marker = await stat(paths.spawnFailure).catch(() => undefined);
  if (marker !== undefined && now() - marker.mtimeMs < FAILURE_MARKER_MS) {
    return result('spawn-suppressed', `an automatic start failed less than ${FAILURE_MARKER_MS / 1000} s ago; see ${paths.log}`);
  }
  const waitMs = options.spawnWaitMs ?? SPAWN_WAIT_MS;
  const release = await takeSpawnLock(paths);
  if (release === undefined) {
    // Another CLI process is starting it: wait for that one.
    return (await waitUntilUp(paths, waitMs, probeMs)) ? result('started') : result('spawn-failed', `the daemon started by another process did not answer; see ${paths.log}`);
  }
  try {
    const logFile = await open(paths.log, 'a', DAEMON_FILE_MODE);
    let exitedWith: number | null | undefined;
    const child = spawn(process.execPath, [CLI_PATH, 'daemon', 'up', '--foreground'], {
      detached: true,
      stdio: ['ignore', logFile.fd, logFile.fd],
      env: { ...options.env, CLAUDEMESH_HOME: options.home, [GUARD_ENV]: '1' },
    });
    child.on('exit', (code) => void (exitedWith = code));
    child.on('error', () => void (exitedWith = -1));
    child.unref();
    await logFile.close();
    const up = await waitUntilUp(paths, waitMs, probeMs, () => exitedWith !== undefined);
    if (up) return result('started');
    await writeFile(paths.spawnFailure, `${new Date(now()).toISOString()}\n`, { mode: DAEMON_FILE_MODE });
    return result('spawn-failed', exitedWith === undefined ? `no answer within ${waitMs} ms; see ${paths.log}` : `the daemon exited with ${exitedWith}; see ${paths.log}`);
  } finally {
    await release();
  }
}
