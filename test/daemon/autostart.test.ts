import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureDaemonReady, GUARD_ENV, OPT_OUT_ENV } from '../../daemon/autostart.ts';
import { daemonPaths, ensureDaemonDir } from '../../daemon/paths.ts';
import { writeConfig } from '../../lib/client-config.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import type { CmError } from '../../lib/errors.ts';

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

  it('never removes a socket something listens on, even with no pid file (a daemon still starting)', async () => {
    const paths = daemonPaths(join(root, 'slow'));
    await ensureDaemonDir(paths);
    // Listens, but does not answer the probe in time: the daemon is busy or still starting.
    const server = createServer(() => {});
    await new Promise<void>((resolve) => server.listen(paths.socket, resolve));
    try {
      assert.equal((await ensureDaemonReady({ ...base('slow'), env: { [OPT_OUT_ENV]: '1' } })).outcome, 'down');
      await access(paths.socket);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('waits for a service-managed daemon instead of spawning one', async () => {
    const unit = join(root, 'claudemesh-daemon.service');
    await writeFile(unit, '[Service]\n');
    const result = await ensureDaemonReady({ ...base('service'), serviceUnit: unit, serviceWaitMs: 100 });
    assert.equal(result.outcome, 'service-not-ready');
  });

  it('says the real reason instead of spawning: no mesh, or a broken config', async () => {
    await assert.rejects(ensureDaemonReady({ ...base('nomesh'), spawnWaitMs: 10_000 }), (error: CmError) => {
      assert.equal(error.code, 'CM_ERR_MESH_UNKNOWN');
      assert.match(error.message, /holds no mesh/);
      assert.match(error.hint, /claudemesh new NAME, or claudemesh join <token>/);
      return true;
    });
    await mkdir(join(root, 'broken'), { recursive: true });
    await writeFile(join(root, 'broken', 'config.json'), '{"version": 1,\n "meshes": [,]}\n');
    await assert.rejects(ensureDaemonReady(base('broken')), (error: CmError) => error.code === 'CM_ERR_CLIENT_CONFIG' && /config\.json.*not JSON/.test(error.message));
    await assert.rejects(access(daemonPaths(join(root, 'broken')).spawnFailure), 'nothing was spawned, nothing is suppressed');
  });

  it('reports the daemon’s own error when it exits at once, suppresses retries, and retries at once after the config changed', async () => {
    const home = join(root, 'newer-db');
    const keys = generateKeyPair();
    const config = {
      version: 1 as const, meshes: [{
        meshId: 'Mesh_id_0001', name: 'team', brokerUrl: 'http://127.0.0.1:9', role: 'owner' as const, memberName: 'me', publicKey: keys.publicKey,
        secretKey: keys.secretKey.toString('hex'), ownerPubkey: null, createdAt: '', status: 'active' as const,
      }],
    };
    await writeConfig(home, config);
    const paths = daemonPaths(home);
    await ensureDaemonDir(paths);
    const db = new Database(paths.inbox);
    db.pragma('user_version = 99');
    db.close();
    const failed = await ensureDaemonReady({ ...base('newer-db'), spawnWaitMs: 10_000 });
    assert.equal(failed.outcome, 'spawn-failed');
    assert.match(failed.reason ?? '', /exited with \d+: CM_ERR_DAEMON_DB_VERSION: .*inbox\.db has schema version 99/);
    await access(paths.spawnFailure);
    const suppressed = await ensureDaemonReady(base('newer-db'));
    assert.equal(suppressed.outcome, 'spawn-suppressed');
    assert.match(suppressed.reason ?? '', /CM_ERR_DAEMON_DB_VERSION/);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await writeConfig(home, config);
    const retried = await ensureDaemonReady({ ...base('newer-db'), spawnWaitMs: 10_000 });
    assert.equal(retried.outcome, 'spawn-failed', 'the config changed after the failure: tried again at once');
  });
});
