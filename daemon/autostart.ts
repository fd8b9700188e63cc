// ensureDaemonReady: what a CLI verb that needs the daemon calls first (docs/daemon.md,
// *Auto-start*). In order:
//   1. probe: GET /v1/version within 2.5 s → up (a socket file alone proves nothing);
//   2. a systemd/launchd unit for this claudemesh home is installed (and, on Linux,
//      enabled) → the service manager owns the daemon: wait up to 8 s for it → up, or
//      service-not-ready (never spawn a second one);
//   3. the recursion guard (CLAUDEMESH_INTERNAL_NO_AUTOSPAWN, set for the spawned daemon)
//      or CLAUDEMESH_NO_AUTOSTART → down;
//   4. the config is read here first: a broken one, or one without an active mesh, is
//      thrown as its own error (the real reason, in the verb's output), never spawned;
//   5. an automatic start failed less than 30 s ago and the config has not changed since
//      → spawn-suppressed (no thundering herd; a fixed config is retried at once);
//   6. under a spawn lock, spawn `node cli daemon up --foreground` detached (output to
//      daemon.log) and wait for it to answer → started, or spawn-failed with the error the
//      daemon printed (read back from daemon.log) and the failure marker.
// Another CLI process holding the spawn lock is waited for instead of spawning twice.
// The CLI probes by itself and loads this module only when nothing answers (a warm command
// must not load what starting a daemon takes); it then passes `probed` to skip step 1.

import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { access, open, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { configPath, readConfig } from '../lib/client-config.ts';
import { CLI_ENTRY } from '../lib/entry.ts';
import { envFlag } from '../lib/env-flag.ts';
import { cmError } from '../lib/errors.ts';
import { probeDaemon, PROBE_TIMEOUT_MS } from '../lib/daemon-client.ts';
import type { DaemonVersion } from '../lib/daemon-client.ts';
import { mayBeDaemon, processAlive, readPidFile } from './lock.ts';
import { DAEMON_FILE_MODE, daemonPaths, ensureDaemonDir } from './paths.ts';
import type { DaemonPaths } from './paths.ts';
import { serviceFor, unitEnabled } from './service.ts';
import { storageFailure } from './storage.ts';

const SERVICE_WAIT_MS = 8_000;
const SPAWN_WAIT_MS = 10_000;
const FAILURE_MARKER_MS = 30_000;
const POLL_MS = 50;
// The daemon's own error line, as the CLI prints it (lib/cli/output.ts) into daemon.log.
const ERROR_LINE = /^error (CM_ERR_[A-Z_]+): (.*)$/gm;
export const GUARD_ENV = 'CLAUDEMESH_INTERNAL_NO_AUTOSPAWN';
export const OPT_OUT_ENV = 'CLAUDEMESH_NO_AUTOSTART';

type ReadyOutcome = 'up' | 'started' | 'down' | 'spawn-failed' | 'spawn-suppressed' | 'service-not-ready';

interface EnsureOptions {
  home: string;
  env: Readonly<Record<string, string | undefined>>;
  probeTimeoutMs?: number;
  serviceWaitMs?: number;
  spawnWaitMs?: number;
  /** the caller probed the socket just now and nothing answered: go straight to step 2 */
  probed?: boolean;
  /** a unit file that marks a service-managed daemon (tests); default: this home's, if enabled */
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

/**
 * A socket whose daemon is gone is removed, so nobody waits on it. A socket something listens
 * on is never stale, pid file or not: the probe may have failed only because that daemon was
 * still starting (or busy), and removing its socket would strand it.
 */
async function removeStale(paths: DaemonPaths): Promise<void> {
  const pid = await readPidFile(paths.pid);
  if (pid !== undefined && processAlive(pid) && mayBeDaemon(pid)) return;
  if (await someoneListens(paths.socket)) return;
  await unlink(paths.socket).catch(() => {});
  await unlink(paths.pid).catch(() => {});
}

function someoneListens(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socket);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
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

/** This home's unit, when it is installed (and enabled, where systemctl can say). */
async function installedUnit(options: EnsureOptions): Promise<string | undefined> {
  if ('serviceUnit' in options) return (await exists(options.serviceUnit)) ? options.serviceUnit : undefined;
  const service = serviceFor(options.home, options.env);
  if (service === undefined || !(await exists(service.path))) return undefined;
  return (await unitEnabled(service)) ? service.path : undefined;
}

/** The real reason a start cannot work: a broken config, or no active mesh (thrown). */
async function preflight(home: string): Promise<void> {
  const config = await readConfig(home);
  if (config.meshes.some((mesh) => mesh.status === 'active')) return;
  const pending = config.meshes.filter((mesh) => mesh.status === 'pending').map((mesh) => mesh.name);
  throw cmError('CM_ERR_MESH_UNKNOWN', pending.length > 0
    ? `no mesh to connect to: the join of ${pending.join(', ')} is not confirmed yet`
    : `no mesh to connect to: ${configPath(home)} holds no mesh`, {
    hint: pending.length > 0 ? 'run the same claudemesh join again' : 'run claudemesh new NAME, or claudemesh join <token>',
  });
}

/** Suppressed: a start failed less than 30 s ago, and the config did not change since. */
async function recentlyFailed(paths: DaemonPaths, home: string, now: number): Promise<boolean> {
  const marker = await stat(paths.spawnFailure).catch(() => undefined);
  if (marker === undefined || now - marker.mtimeMs >= FAILURE_MARKER_MS) return false;
  const config = await stat(configPath(home)).catch(() => undefined);
  return config === undefined || config.mtimeMs <= marker.mtimeMs;
}

/** The last error the daemon printed into its log after `offset`, as one line. */
async function loggedError(paths: DaemonPaths, offset: number): Promise<string | undefined> {
  const text = await readFile(paths.log, 'utf8').then((all) => all.slice(offset), () => '');
  const last = [...text.matchAll(ERROR_LINE)].pop();
  return last === undefined ? undefined : `${last[1]}: ${last[2]}`;
}

export async function ensureDaemonReady(options: EnsureOptions): Promise<ReadyResult> {
  // A home that is full or read-only fails at the first file written here: say so, by path.
  return ensure(options).catch((error: unknown) => {
    throw storageFailure(error, daemonPaths(options.home).dir, 'the daemon could not be started') ?? error;
  });
}

async function ensure(options: EnsureOptions): Promise<ReadyResult> {
  const paths = daemonPaths(options.home);
  const probeMs = options.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
  const now = options.now ?? Date.now;
  const result = (outcome: ReadyOutcome, reason?: string): ReadyResult => ({ outcome, socket: paths.socket, ...(reason === undefined ? {} : { reason }) });
  const running = options.probed === true ? undefined : await probeDaemon(paths.socket, probeMs);
  if (running !== undefined) return { ...result('up'), running };
  await ensureDaemonDir(paths);
  await removeStale(paths);
  const unit = await installedUnit(options);
  if (unit !== undefined) {
    const up = await waitUntilUp(paths, options.serviceWaitMs ?? SERVICE_WAIT_MS, probeMs);
    return up ? result('up') : result('service-not-ready', `${unit} manages the daemon and it did not answer`);
  }
  if (envFlag(options.env, GUARD_ENV) || envFlag(options.env, OPT_OUT_ENV)) return result('down', 'automatic start is off here');
  await preflight(options.home);
  if (await recentlyFailed(paths, options.home, now())) {
    return result('spawn-suppressed', `an automatic start failed less than ${FAILURE_MARKER_MS / 1000} s ago (${(await loggedError(paths, 0)) ?? `see ${paths.log}`}); it is tried again at once when the config changes`);
  }
  const waitMs = options.spawnWaitMs ?? SPAWN_WAIT_MS;
  const release = await takeSpawnLock(paths);
  if (release === undefined) {
    // Another CLI process is starting it: wait for that one.
    return (await waitUntilUp(paths, waitMs, probeMs)) ? result('started') : result('spawn-failed', `the daemon started by another process did not answer; see ${paths.log}`);
  }
  try {
    return await spawnDaemon(options, paths, waitMs, probeMs, now, result);
  } finally {
    await release();
  }
}

async function spawnDaemon(options: EnsureOptions, paths: DaemonPaths, waitMs: number, probeMs: number, now: () => number, result: (outcome: ReadyOutcome, reason?: string) => ReadyResult): Promise<ReadyResult> {
  const logFile = await open(paths.log, 'a', DAEMON_FILE_MODE);
  const offset = (await logFile.stat()).size;
  let exitedWith: number | null | undefined;
  const child = spawn(process.execPath, [CLI_ENTRY, 'daemon', 'up', '--foreground'], {
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
  const said = await loggedError(paths, offset);
  const how = exitedWith === undefined ? `did not answer within ${waitMs} ms` : `exited with ${exitedWith}`;
  return result('spawn-failed', `the daemon ${how}${said === undefined ? `; see ${paths.log}` : `: ${said}`}`);
}
