import assert from 'node:assert/strict';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureDaemonReady, GUARD_ENV, OPT_OUT_ENV } from '../../daemon/autostart.ts';
import { daemonPaths, ensureDaemonDir } from '../../daemon/paths.ts';

describe('ensureDaemonReady', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'cm-auto-'));
  });
  after(() => rm(root, { recursive: true, force: true }));
  const base = (home: string) => ({ home: join(root, home), env: {}, serviceUnit: undefined, probeTimeoutMs: 200 });

  it('is up when a daemon answers on the socket', async () => {
    const paths = daemonPaths(join(root, 'up'));
    await ensureDaemonDir(paths);
    const server = createServer((_req, res) => res.end(JSON.stringify({ pid: 1, version: 'x' })));
    await new Promise<void>((resolve) => server.listen(paths.socket, resolve));
    try {
      const ready = await ensureDaemonReady(base('up'));
      assert.equal(ready.outcome, 'up');
      assert.equal(ready.running?.version, 'x');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('is down under the recursion guard or the opt-out, and removes a stale socket', async () => {
    const paths = daemonPaths(join(root, 'guard'));
    await ensureDaemonDir(paths);
    await writeFile(paths.socket, 'stale');
    assert.equal((await ensureDaemonReady({ ...base('guard'), env: { [GUARD_ENV]: '1' } })).outcome, 'down');
    await assert.rejects(access(paths.socket));
    assert.equal((await ensureDaemonReady({ ...base('guard'), env: { [OPT_OUT_ENV]: '1' } })).outcome, 'down');
  });

  it('waits for a service-managed daemon instead of spawning one', async () => {
    const unit = join(root, 'claudemesh-daemon.service');
    await writeFile(unit, '[Service]\n');
    const result = await ensureDaemonReady({ ...base('service'), serviceUnit: unit, serviceWaitMs: 100 });
    assert.equal(result.outcome, 'service-not-ready');
  });

  it('reports spawn-failed when the daemon exits at once, then suppresses retries for a while', async () => {
    // No config in this home: the spawned daemon exits 2 (no mesh to connect to).
    const home = 'nomesh';
    const failed = await ensureDaemonReady({ ...base(home), spawnWaitMs: 10_000 });
    assert.equal(failed.outcome, 'spawn-failed');
    assert.match(failed.reason ?? '', /exited with 2/);
    await access(daemonPaths(join(root, home)).spawnFailure);
    assert.equal((await ensureDaemonReady(base(home))).outcome, 'spawn-suppressed');
  });
});
