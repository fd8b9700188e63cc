// The embedded Postgres, real clusters in temporary directories: one process per data dir,
// a port clash told before a cluster is made, a Postgres of another broker never touched,
// and — as root — a cluster kept where the postgres user can reach it, found again later.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { embeddedPostgres } from '../../lib/embedded-pg.ts';
import { isCmError } from '../../lib/errors.ts';
import { freePort, takenPort } from '../helpers/ports.ts';
import { BINARY_RELOCATION } from '../helpers/db.ts';

const asRoot = process.getuid?.() === 0;
const made: string[] = [];

async function tempDir(prefix: string, mode = 0o755): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, mode);
  made.push(dir);
  return dir;
}

async function rejection(work: Promise<unknown>): Promise<{ code: string; message: string; hint: string }> {
  const error = await work.then(() => assert.fail('expected a refusal'), (failure: unknown) => failure);
  assert.ok(isCmError(error), `a CmError, not ${String(error)}`);
  return error;
}

async function sql(url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

describe('embeddedPostgres', () => {
  after(async () => {
    for (const dir of made) await rm(dir, { recursive: true, force: true });
  });

  it('lets one process at a time use a data dir, naming the holder', async () => {
    const baseDir = join(await tempDir('cm-epg-lock-'), 'data');
    const port = await freePort();
    const first = await embeddedPostgres({ baseDir, port, relocation: BINARY_RELOCATION });
    const refused = await rejection(embeddedPostgres({ baseDir, port, relocation: BINARY_RELOCATION }));
    assert.equal(refused.code, 'CM_ERR_DATA_DIR_IN_USE');
    assert.match(refused.message, new RegExp(`in use by another broker: pid ${process.pid} `));
    await first.stop();
    assert.equal(existsSync(join(baseDir, 'cluster.lock')), false, 'stop releases the data dir');
    const next = await embeddedPostgres({ baseDir, port, relocation: BINARY_RELOCATION });
    await next.stop();
  });

  it('tells a taken port before making a cluster for nothing', async () => {
    const { port, release } = await takenPort();
    const baseDir = join(await tempDir('cm-epg-port-'), 'data');
    try {
      const refused = await rejection(embeddedPostgres({ baseDir, port, relocation: BINARY_RELOCATION }));
      assert.equal(refused.code, 'CM_ERR_PORT_IN_USE');
      assert.match(refused.message, new RegExp(`port ${port} \\(EMBEDDED_PG_PORT\\) is in use by pid ${process.pid} `));
      assert.match(refused.hint, /EMBEDDED_PG_PORT/);
    } finally {
      await release();
    }
    assert.equal(existsSync(join(baseDir, 'postgres', 'PG_VERSION')), false, 'no cluster was made');
    assert.equal(existsSync(join(baseDir, 'cluster.lock')), false, 'the data dir was released');
  });

  it('never touches a Postgres that another live broker started on the cluster', async () => {
    const baseDir = join(await tempDir('cm-epg-other-'), 'data');
    const running = await embeddedPostgres({ baseDir, port: await freePort(), relocation: BINARY_RELOCATION });
    await running.start();
    try {
      // a broker from before the data dir lock: its Postgres runs, but no lock says so
      await rm(join(baseDir, 'cluster.lock'));
      const second = await embeddedPostgres({ baseDir, port: await freePort(), relocation: BINARY_RELOCATION });
      const refused = await rejection(second.start());
      await second.stop();
      assert.equal(refused.code, 'CM_ERR_DATA_DIR_IN_USE');
      assert.match(refused.message, new RegExp(`run by Postgres pid \\d+, started by pid ${process.pid} `));
      assert.equal((await sql(running.url, 'SELECT 1 AS up')).rows[0]?.up, 1, 'the first Postgres still answers');
    } finally {
      await running.stop();
    }
  });

  it('as root under a directory others cannot enter, keeps the cluster where the postgres user can reach it, and finds it again', { skip: asRoot ? false : 'runs as root only' }, async () => {
    const locked = await tempDir('cm-epg-locked-', 0o700);
    const baseDir = join(locked, 'data');
    const shared = join(await tempDir('cm-epg-shared-'), 'var-lib');
    const port = await freePort();
    const first = await embeddedPostgres({ baseDir, port, relocation: { dir: shared, cluster: true } });
    assert.ok(first.dataDir.startsWith(`${shared}/`), `cluster in ${first.dataDir}`);
    assert.match(first.notes.join('\n'), new RegExp(`cluster kept in ${first.dataDir} .*cannot enter ${locked} \\(mode 700`));
    assert.equal((await readFile(join(baseDir, 'postgres-location'), 'utf8')).trim(), first.dataDir);
    await first.start();
    await sql(await first.brokerDatabaseUrl(), 'CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)');
    await first.stop();

    const again = await embeddedPostgres({ baseDir, port, relocation: { dir: shared, cluster: true } });
    assert.equal(again.dataDir, first.dataDir);
    await again.start();
    try {
      assert.equal((await sql(await again.brokerDatabaseUrl(), 'SELECT n FROM kept')).rows[0]?.n, 42, 'same cluster, data kept');
    } finally {
      await again.stop();
    }

    // The clone deleted and made again at the same path: the cluster outside it is still there,
    // but its password went with the old data dir.
    await rm(baseDir, { recursive: true });
    const orphaned = await rejection(embeddedPostgres({ baseDir, port, relocation: { dir: shared, cluster: true } }));
    assert.equal(orphaned.code, 'CM_ERR_EMBEDDED_PG_START');
    assert.match(orphaned.message, new RegExp(`cluster ${first.dataDir} of ${baseDir} exists, but its password file`));
    assert.match(orphaned.hint, new RegExp(`remove ${first.dataDir} to start with an empty database`));
  });

  it('as root, keeps an operator-chosen data dir it cannot use, and stops with what to change', { skip: asRoot ? false : 'runs as root only' }, async () => {
    const locked = await tempDir('cm-epg-chosen-', 0o700);
    const shared = join(await tempDir('cm-epg-shared-'), 'var-lib');
    const refused = await rejection(embeddedPostgres({ baseDir: join(locked, 'data'), port: await freePort(), relocation: { dir: shared, cluster: false } }));
    assert.equal(refused.code, 'CM_ERR_EMBEDDED_PG_START');
    assert.match(refused.message, new RegExp(`BROKER_DATA_DIR ${locked}/data is out of reach .*cannot enter ${locked}`));
    assert.match(refused.hint, /BROKER_DATA_DIR/);
    assert.deepEqual(await readdir(join(locked, 'data')), [], 'nothing made there, and the data dir released');
    assert.equal(existsSync(shared), false, 'nothing made elsewhere');
  });
});
