// Where the daemon keeps its files: $CLAUDEMESH_HOME/daemon/ (default ~/.claudemesh/daemon),
// a 0700 directory. The daemon follows CLAUDEMESH_HOME only — never a per-session override —
// so every CLI call of a user finds the same socket, whatever session it runs in.

import { chmodSync, existsSync } from 'node:fs';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

export const DAEMON_DIR_MODE = 0o700;
export const DAEMON_FILE_MODE = 0o600;
const LOOSER_THAN_OWNER = 0o077;

export interface DaemonPaths {
  dir: string;
  /** the IPC unix socket (0600) */
  socket: string;
  /** the single-instance lock, holding the daemon's pid */
  pid: string;
  outbox: string;
  inbox: string;
  /** the last roster of each mesh and the membership the broker last stated (roster-store.ts) */
  roster: string;
  /** stdout and stderr of a detached daemon */
  log: string;
  /** held while one CLI process starts the daemon for everyone */
  spawnLock: string;
  /** written when an automatic start failed, so others do not retry for a while */
  spawnFailure: string;
}

export function daemonPaths(home: string): DaemonPaths {
  const dir = join(home, 'daemon');
  return {
    dir,
    socket: join(dir, 'daemon.sock'),
    pid: join(dir, 'daemon.pid'),
    outbox: join(dir, 'outbox.db'),
    inbox: join(dir, 'inbox.db'),
    roster: join(dir, 'roster.db'),
    log: join(dir, 'daemon.log'),
    spawnLock: join(dir, '.spawn.lock'),
    spawnFailure: join(dir, '.spawn-failure'),
  };
}

/** Make the directory (and its parent, the claudemesh home) 0700, repairing looser modes. */
export async function ensureDaemonDir(paths: DaemonPaths): Promise<void> {
  await mkdir(paths.dir, { recursive: true, mode: DAEMON_DIR_MODE });
  for (const dir of [join(paths.dir, '..'), paths.dir]) {
    const info = await stat(dir);
    if ((info.mode & LOOSER_THAN_OWNER) !== 0) await chmod(dir, DAEMON_DIR_MODE);
  }
}

/**
 * A SQLite database and its -wal and -shm files readable by the owner only, whatever the
 * umask: they hold message bodies and who talks to whom. Called after every open, since
 * SQLite makes the -wal and -shm files anew with the process's umask.
 */
export function restrictFiles(databasePath: string): void {
  for (const path of [databasePath, `${databasePath}-wal`, `${databasePath}-shm`]) {
    if (existsSync(path)) chmodSync(path, DAEMON_FILE_MODE);
  }
}
