// The daemon process, in the foreground (what `claudemesh daemon up --foreground`, service
// managers and the auto-start run). Boot order: lock → config → databases → broker links →
// IPC socket → config watcher → `daemon started` log line. SIGTERM/SIGINT: stop accepting IPC, close every
// broker socket with 1000, let the sends on the wire settle, close the databases, remove
// the socket and the pid file, exit 0. Logs are JSON lines on stderr.
//
// Timings come from the environment only for tests (CLAUDEMESH_DAEMON_TIMINGS, JSON with the
// fields of DaemonTimings), so the real-process tests run in milliseconds.

import type { Server } from 'node:http';
import { readConfig } from '../lib/client-config.ts';
import type { ClientConfig } from '../lib/client-config.ts';
import { cmError } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import type { Logger } from '../lib/log.ts';
import { VERSION } from '../lib/version.ts';
import { Daemon } from './daemon.ts';
import type { DaemonTimings } from './daemon.ts';
import { closeIpc, listenIpc } from './ipc.ts';
import { watchConfig } from './config-watch.ts';
import { acquireDaemonLock } from './lock.ts';
import type { DaemonLock } from './lock.ts';
import { daemonPaths } from './paths.ts';
import { storageFailure } from './storage.ts';

const SHUTDOWN_TIMEOUT_MS = 5_000;
const TIMINGS_ENV = 'CLAUDEMESH_DAEMON_TIMINGS';

interface RunningDaemon {
  daemon: Daemon;
  /** resolves when the daemon has stopped (after a signal or `stop()`) */
  stopped: Promise<void>;
  stop(): Promise<void>;
}

function timingsFrom(env: Readonly<Record<string, string | undefined>>): DaemonTimings {
  const raw = env[TIMINGS_ENV];
  if (raw === undefined || raw === '') return {};
  try {
    return JSON.parse(raw) as DaemonTimings;
  } catch {
    throw cmError('CM_ERR_USAGE', `${TIMINGS_ENV} is not JSON: ${raw.slice(0, 80)}`);
  }
}

function meshesReady(config: ClientConfig): void {
  if (config.meshes.some((mesh) => mesh.status === 'active')) return;
  throw cmError('CM_ERR_MESH_UNKNOWN', 'no mesh to connect to: the config holds no active mesh', {
    hint: 'start one with claudemesh new NAME, or join with claudemesh join TOKEN, then start the daemon',
  });
}

/** Start the daemon in this process; installs signal handlers unless `signals` is false. */
export async function runDaemon(options: { home: string; env: Readonly<Record<string, string | undefined>>; log?: Logger; signals?: boolean }): Promise<RunningDaemon> {
  const log = options.log ?? createLogger({ fields: { component: 'daemon' } });
  const paths = daemonPaths(options.home);
  const timings = timingsFrom(options.env);
  const config = await readConfig(options.home);
  meshesReady(config);
  const lock: DaemonLock = await acquireDaemonLock(paths).catch((error: unknown) => {
    throw storageFailure(error, paths.dir, 'the daemon did not start') ?? error;
  });
  let daemon: Daemon;
  let server: Server;
  try {
    daemon = new Daemon({ paths, config, timings });
    daemon.events.subscribe((event) => {
      if (event.kind !== 'message' && event.kind !== 'sent') log.info(event.kind, event);
    });
    daemon.start();
    server = await listenIpc(daemon);
  } catch (error) {
    await lock.release();
    throw storageFailure(error, paths.dir, 'the daemon did not start') ?? error;
  }
  const watcher = watchConfig(options.home, (next) => daemon.reload(next), (error) => {
    daemon.events.push('config_invalid', { message: error instanceof Error ? error.message : String(error) });
  });
  log.info('daemon started', { version: VERSION, pid: process.pid, socket: paths.socket, meshes: config.meshes.map((mesh) => mesh.name) });

  let stopping: Promise<void> | undefined;
  let resolveStopped: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const timer = setTimeout(() => {
        log.error('daemon shutdown timed out; exiting anyway', { timeoutMs: SHUTDOWN_TIMEOUT_MS });
        process.exit(1);
      }, SHUTDOWN_TIMEOUT_MS);
      timer.unref();
      watcher.close();
      await closeIpc(server, paths.socket);
      await daemon.close();
      await lock.release();
      clearTimeout(timer);
      log.info('daemon stopped', { pid: process.pid });
      resolveStopped();
    })();
    return stopping;
  };
  if (options.signals !== false) {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void stop());
  }
  return { daemon, stopped, stop };
}
