import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { acquireDaemonLock, processAlive } from '../../daemon/lock.ts';
import { daemonPaths, ensureDaemonDir } from '../../daemon/paths.ts';

/** The pid of a process that has already exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(child.stdout.toString());
}

describe('acquireDaemonLock', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'cm-lock-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('takes over a pid file whose pid now belongs to another program', { skip: process.platform !== 'linux' }, async () => {
    const paths = daemonPaths(join(root, 'reused'));
    await ensureDaemonDir(paths);
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      await writeFile(paths.pid, `${other.pid}\n`);
      const lock = await acquireDaemonLock(paths, 200);
      assert.equal((await readFile(paths.pid, 'utf8')).trim(), String(process.pid), 'the pid file now names this process');
      assert.equal(processAlive(other.pid ?? 0), true, 'the other program is left alone');
      await lock.release();
      await assert.rejects(access(paths.pid), 'released: the pid file is gone');
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('takes a free lock and releases only its own', async () => {
    const paths = daemonPaths(join(root, 'free'));
    const lock = await acquireDaemonLock(paths);
    assert.equal((await readFile(paths.pid, 'utf8')).trim(), String(process.pid));
    await lock.release();
    await assert.rejects(access(paths.pid));
  });

  it('cleans a stale pid file and socket left by a dead process', async () => {
    const paths = daemonPaths(join(root, 'stale'));
    await ensureDaemonDir(paths);
    const pid = deadPid();
    assert.equal(processAlive(pid), false);
    await writeFile(paths.pid, `${pid}\n`);
    await writeFile(paths.socket, 'not a socket');
    const lock = await acquireDaemonLock(paths, 200);
    await assert.rejects(access(paths.socket), 'the leftover socket is gone');
    await lock.release();
  });

  it('refuses while a live daemon holds the lock, and says which daemon answers', async () => {
    const paths = daemonPaths(join(root, 'busy'));
    await ensureDaemonDir(paths);
    // A process whose command line looks like a starting daemon that does not answer yet.
    const starting = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'cli.ts', 'daemon', 'up'], { stdio: 'ignore' });
    try {
      await writeFile(paths.pid, `${starting.pid}\n`);
      await assert.rejects(acquireDaemonLock(paths, 200), { code: 'CM_ERR_DAEMON_RUNNING' });
    } finally {
      starting.kill('SIGKILL');
    }
    const server = createServer((_req, res) => res.end(JSON.stringify({ version: '9.9.9', ipcApi: 'v1', pid: 4242, startedAt: '', uptimeMs: 61_000, meshes: ['team'], socket: paths.socket })));
    await new Promise<void>((resolve) => server.listen(paths.socket, resolve));
    try {
      await assert.rejects(acquireDaemonLock(paths, 500), (error: Error & { code?: string; details?: Record<string, unknown> }) => {
        assert.equal(error.code, 'CM_ERR_DAEMON_RUNNING');
        assert.match(error.message, /pid 4242, version 9\.9\.9, up 61 s, meshes team/);
        assert.equal(error.details?.pid, 4242);
        return true;
      });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
