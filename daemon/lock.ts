// One daemon per user: the pid file is the lock, created with O_EXCL. When it exists, a real
// request decides (a socket file alone proves nothing: a killed daemon leaves it behind): a
// daemon that answers GET /v1/version is
// running → refuse and say which; a pid file whose process is gone is stale → remove it and
// the socket, then take the lock. A live process that does not answer (starting, or hung)
// is refused too (two daemons would fight over the member connections) — unless the process
// is visibly something else: after a reboot the old pid may belong to an unrelated program,
// which on Linux /proc/<pid>/cmdline tells apart.
//
// The lock holder removes a leftover socket file before listening, so a socket left by a
// killed daemon never stops a new one.

import { readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { cmError } from '../lib/errors.ts';
import { processAlive } from '../lib/processes.ts';
import { probeDaemon } from '../lib/daemon-client.ts';
import type { DaemonVersion } from '../lib/daemon-client.ts';
import { DAEMON_FILE_MODE, ensureDaemonDir } from './paths.ts';
import type { DaemonPaths } from './paths.ts';

const STALE_RETRIES = 2;

// The daemon's modules import it from here.
export { processAlive } from '../lib/processes.ts';

/**
 * Could this pid be a claudemesh daemon? Where /proc exists, its command line must name the
 * daemon; elsewhere we cannot tell, and assume it could.
 */
export function mayBeDaemon(pid: number): boolean {
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return true;
  }
  const args = cmdline.split('\0');
  return args.includes('daemon') && args.includes('up');
}

/**
 * When the process started, as the kernel counts it (Linux: field 22 of /proc/<pid>/stat);
 * undefined where that cannot be read. A pid with another start time is another process.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

export async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function alreadyRunning(running: DaemonVersion): Error {
  const uptime = Math.round(running.uptimeMs / 1000);
  return cmError('CM_ERR_DAEMON_RUNNING', `a daemon already runs: pid ${running.pid}, version ${running.version}, up ${uptime} s, meshes ${running.meshes.join(', ') || '(none)'}, socket ${running.socket}`, {
    details: { ...running },
  });
}

export interface DaemonLock {
  release(): Promise<void>;
}

export async function acquireDaemonLock(paths: DaemonPaths, probeTimeoutMs?: number): Promise<DaemonLock> {
  await ensureDaemonDir(paths);
  for (let attempt = 0; attempt <= STALE_RETRIES; attempt += 1) {
    try {
      const file = await open(paths.pid, 'wx', DAEMON_FILE_MODE);
      await file.writeFile(`${process.pid}\n`);
      await file.sync();
      await file.close();
      // We hold the lock: any socket file here is a leftover.
      await unlink(paths.socket).catch(() => {});
      return {
        async release() {
          if ((await readPidFile(paths.pid)) === process.pid) await unlink(paths.pid).catch(() => {});
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const running = await probeDaemon(paths.socket, probeTimeoutMs);
    if (running !== undefined) throw alreadyRunning(running);
    const pid = await readPidFile(paths.pid);
    if (pid !== undefined && pid !== process.pid && processAlive(pid) && mayBeDaemon(pid)) {
      throw cmError('CM_ERR_DAEMON_RUNNING', `process ${pid} holds ${paths.pid} but does not answer on ${paths.socket}`, {
        hint: `it may still be starting: retry in a few seconds; if it hangs, stop it (kill ${pid}) and start again`,
        details: { pid, socket: paths.socket },
      });
    }
    // Stale: the process is gone. Remove only the file we judged (another starter may have
    // replaced it meanwhile), and its socket.
    if ((await readPidFile(paths.pid)) === pid) {
      // Gone already is fine; a file that cannot go (a read-only home) is the real reason.
      await unlink(paths.pid).catch((error: unknown) => {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      });
      await unlink(paths.socket).catch(() => {});
    }
  }
  throw cmError('CM_ERR_DAEMON_RUNNING', `another daemon keeps taking ${paths.pid}`, { details: { pid: await readPidFile(paths.pid) } });
}
