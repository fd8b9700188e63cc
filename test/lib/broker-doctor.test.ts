// `node broker.ts doctor` and `validate`, run as an operator runs them: real processes, a
// real database, real ports. Exit 0/1/2, JSON on stdout even on failure, no stack traces.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createDatabase, migrate } from '../../lib/broker/db.ts';
import { createLogger } from '../../lib/log.ts';
import { brokerEnv } from '../helpers/broker-process.ts';
import { startTestBroker } from '../helpers/broker.ts';
import { createTestDatabase } from '../helpers/db.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { freePort, takenPort } from '../helpers/ports.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const quiet = createLogger({ write: () => {} });

interface Check { name: string; ok: boolean; detail: string; hint: string }
interface Run { code: number | null; stdout: string; stderr: string }

function run(args: string[], env: NodeJS.ProcessEnv, options: { closeStdout?: boolean } = {}): Promise<Run> {
  const child = spawn(process.execPath, ['broker.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  if (options.closeStdout === true) child.stdout.destroy();
  else child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

async function checks(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; ok: boolean; byName: Map<string, Check>; stderr: string }> {
  const result = await run([...args, '--json'], env);
  const report = JSON.parse(result.stdout) as { ok: boolean; checks: Check[] };
  return { code: result.code, ok: report.ok, byName: new Map(report.checks.map((check) => [check.name, check])), stderr: result.stderr };
}

describe('node broker.ts validate', () => {
  it('checks the configuration alone and makes nothing', async () => {
    const dataDir = join(tmpdir(), `cm-validate-${process.pid}`, 'data');
    const result = await run(['validate'], brokerEnv({ BROKER_DATA_DIR: dataDir, BROKER_PORT: '7900' }));
    assert.equal(result.code, 0);
    assert.match(result.stdout, new RegExp(`^ok {4}config {2}listens on 127\\.0\\.0\\.1:7900; database: embedded Postgres under ${dataDir} \\(port 7901\\)\\n$`));
    assert.equal(result.stderr, '');
    assert.equal(existsSync(join(dataDir, '..')), false, 'no side effects');
  });

  it('reports every problem in one failed check, as JSON on stdout, exit 1', async () => {
    const result = await checks(['validate'], brokerEnv({ BROKER_HOST: '999.1.1.1', BROKER_PORT: 'abc' }));
    assert.equal(result.code, 1);
    assert.equal(result.ok, false);
    const config = result.byName.get('config');
    assert.equal(config?.ok, false);
    assert.match(config?.detail ?? '', /BROKER_HOST=999\.1\.1\.1: is not an IPv4 address.*BROKER_PORT=abc/);
    assert.match(config?.hint ?? '', /BROKER_HOST=127\.0\.0\.1 BROKER_PORT=7900/);
    assert.equal(result.byName.size, 1);
  });
});

describe('node broker.ts doctor', () => {
  let database: TestDatabase;
  before(async () => {
    database = await createTestDatabase('doctor');
  });
  after(() => database.drop());

  it('passes on a reachable database and a free port, telling pending migrations from applied ones', async () => {
    const env = brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(await freePort()) });
    const fresh = await checks(['doctor'], env);
    assert.deepEqual([...fresh.byName.keys()], ['config', 'port', 'database', 'migrations']);
    assert.equal(fresh.code, 0, JSON.stringify([...fresh.byName.values()]));
    assert.match(fresh.byName.get('port')?.detail ?? '', /is free/);
    assert.match(fresh.byName.get('database')?.detail ?? '', /connected to postgres:\/\/.*\(PostgreSQL \d+/);
    assert.match(fresh.byName.get('migrations')?.detail ?? '', /^0 of \d+ applied.*pending .*001_initial\.sql/);

    const db = createDatabase({ url: database.url, log: quiet });
    await migrate(db.pool, quiet);
    await db.close();
    const migrated = await checks(['doctor'], env);
    assert.equal(migrated.code, 0);
    assert.match(migrated.byName.get('migrations')?.detail ?? '', /^all \d+ applied, checksums match$/);

    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    await admin.query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1");
    await admin.end();
    const edited = await checks(['doctor'], env);
    assert.equal(edited.code, 1);
    assert.equal(edited.byName.get('migrations')?.ok, false);
    assert.match(edited.byName.get('migrations')?.detail ?? '', /001_initial\.sql/);
    const human = await run(['doctor'], env);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /^FAIL {2}migrations {2}applied migrations changed since: 001_initial\.sql\n {6}.* hint: never edit an applied migration/m);
  });

  it('fails the database check on a wrong password, with the fix, and no stack trace', async () => {
    const url = new URL(database.url);
    url.password = 'wrong';
    const result = await checks(['doctor'], brokerEnv({ DATABASE_URL: url.toString(), BROKER_PORT: String(await freePort()) }));
    assert.equal(result.code, 1);
    assert.equal(result.byName.get('database')?.ok, false);
    assert.match(result.byName.get('database')?.detail ?? '', /password authentication failed .*\(28P01\)/);
    assert.match(result.byName.get('database')?.hint ?? '', /password for user/);
    assert.equal(result.byName.get('migrations')?.ok, false);
    assert.equal(result.stderr, '');
  });

  it('takes a port held by a healthy broker as fine, saying so; another holder fails, named', async () => {
    const broker = await startTestBroker('doctor_port');
    try {
      const port = new URL(broker.baseUrl).port;
      const held = await checks(['doctor'], brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: port }));
      assert.equal(held.byName.get('port')?.ok, true);
      assert.match(held.byName.get('port')?.detail ?? '', new RegExp(`127\\.0\\.0\\.1:${port} is held by a healthy claudemesh broker, version 0\\.0\\.0-test \\(pid ${process.pid} `));
    } finally {
      await broker.close();
    }
    const { port, release } = await takenPort();
    try {
      const taken = await checks(['doctor'], brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(port) }));
      assert.equal(taken.code, 1);
      assert.match(taken.byName.get('port')?.detail ?? '', new RegExp(`is in use by pid ${process.pid} `));
    } finally {
      await release();
    }
  });

  it('with the embedded Postgres: checks the data dir and its port, and starts nothing', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'cm-doctor-'));
    try {
      const env = brokerEnv({ BROKER_DATA_DIR: join(parent, 'data'), BROKER_PORT: String(await freePort()), EMBEDDED_PG_PORT: String(await freePort()) });
      delete env.DATABASE_URL;
      const result = await checks(['doctor'], env);
      assert.equal(result.code, 0);
      assert.deepEqual([...result.byName.keys()], ['config', 'port', 'data-dir', 'embedded-port', 'database', 'migrations']);
      assert.match(result.byName.get('data-dir')?.detail ?? '', /does not exist yet/);
      assert.match(result.byName.get('database')?.detail ?? '', /not running/);
      assert.equal(existsSync(join(parent, 'data')), false, 'nothing made');
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('exits 2 on bad usage, and survives a reader that goes away (doctor | head -1)', async () => {
    for (const args of [['doctr'], ['doctor', '--verbose'], ['validate', 'extra']]) {
      const result = await run(args, brokerEnv({}));
      assert.equal(result.code, 2, args.join(' '));
      assert.match(result.stderr, /usage: node broker\.ts/);
    }
    const usage = await run(['doctr', '--json'], brokerEnv({}));
    assert.equal((JSON.parse(usage.stdout) as { error: { code: string } }).error.code, 'CM_ERR_USAGE');
    const gone = await run(['doctor'], brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(await freePort()) }), { closeStdout: true });
    assert.ok(gone.code === 0 || gone.code === 1, `exit ${gone.code}`);
    assert.equal(gone.stderr, '', 'no EPIPE crash');
  });
});
