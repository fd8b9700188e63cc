// The broker as an operator runs it: a real child process, real signals, real exit codes.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { lintExposition } from './helpers/prom-lint.ts';
import { brokerEnv, runBroker, startBroker } from './helpers/broker-process.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { freePort } from './helpers/ports.ts';

const SHUTDOWN_LIMIT_MS = 5_000;

describe('node broker.ts', () => {
  let database: TestDatabase;
  before(async () => {
    database = await createTestDatabase('broker_process');
  });
  after(() => database.drop());

  it('serves /health and /metrics, and exits 0 on SIGTERM after closing sockets 1012', async () => {
    const broker = await startBroker(brokerEnv({ DATABASE_URL: database.url }));
    const health = await fetch(`${broker.baseUrl}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, 'ok');
    assert.deepEqual(lintExposition(await (await fetch(`${broker.baseUrl}/metrics`)).text()), []);

    const client = new WebSocket(`ws://127.0.0.1:${broker.port}/ws`);
    await new Promise((resolve, reject) => {
      client.once('open', resolve);
      client.once('error', reject);
    });
    const closeCode = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)));
    const { code, ms } = await broker.stop('SIGTERM');
    assert.equal(code, 0);
    assert.ok(ms < SHUTDOWN_LIMIT_MS, `exited in ${ms} ms`);
    assert.equal(await closeCode, 1012);
    const messages = broker.logs.map((line) => line.msg);
    for (const msg of ['db healthy', 'broker listening', 'shutdown signal', 'shutdown complete']) assert.ok(messages.includes(msg), `logged "${msg}"`);
    for (const line of broker.logs) {
      assert.equal(typeof line.time, 'string');
      assert.ok(['debug', 'info', 'warn', 'error'].includes(line.level), `JSON log line: ${JSON.stringify(line)}`);
    }
  });

  it('exits 0 on SIGINT, also when started with --experimental-strip-types', async () => {
    const broker = await startBroker(brokerEnv({ DATABASE_URL: database.url }), ['--experimental-strip-types']);
    const { code } = await broker.stop('SIGINT');
    assert.equal(code, 0);
  });

  it('reports every configuration problem at once and exits 2', async () => {
    const result = await runBroker(brokerEnv({ DATABASE_URL: 'mysql://x', BROKER_PORT: 'abc', STATUS_TTL_SECONDS: '0', NODE_ENV: 'prod' }));
    assert.equal(result.code, 2);
    const problems = result.logs.filter((line) => line.msg === 'config problem');
    assert.deepEqual(problems.map((line) => line.variable).sort(), ['BROKER_PORT', 'DATABASE_URL', 'NODE_ENV', 'STATUS_TTL_SECONDS']);
    for (const problem of problems) {
      assert.equal(typeof problem.received, 'string');
      assert.match(String(problem.fix), /^[A-Z_]+=/);
    }
    assert.ok(result.logs.some((line) => line.msg === 'config invalid' && line.code === 'CM_ERR_CONFIG_INVALID'));
    assert.ok(!result.logs.some((line) => line.msg === 'broker listening'), 'never starts half-configured');
  });
});

describe('node broker.ts without DATABASE_URL', () => {
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'cm-broker-embedded-'));
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  // Only root hands the cluster to the `postgres` user; as a plain user there is nothing to check.
  it('as root under a directory others cannot enter, stops with one line naming it, no uncaught exception', { skip: process.getuid?.() === 0 ? false : 'runs as root only' }, async () => {
    const locked = await mkdtemp(join(tmpdir(), 'cm-locked-'));
    await chmod(locked, 0o700);
    try {
      const result = await runBroker(brokerEnv({ BROKER_DATA_DIR: join(locked, 'data'), EMBEDDED_PG_PORT: String(await freePort()), DATABASE_URL: '' }));
      assert.equal(result.code, 1);
      const failed = result.logs.find((line) => line.msg === 'start failed');
      assert.equal(failed?.code, 'CM_ERR_EMBEDDED_PG_START');
      assert.match(String(failed?.error), new RegExp(`cannot enter ${locked}`));
      assert.equal(result.logs.filter((line) => line.msg === 'uncaught exception').length, 0);
    } finally {
      await rm(locked, { recursive: true, force: true });
    }
  });

  it('runs on an embedded Postgres kept under BROKER_DATA_DIR, stops it on exit, and keeps the data', async () => {
    const env = brokerEnv({ BROKER_DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(await freePort()) });
    delete env.DATABASE_URL;
    const first = await startBroker(env);
    const where = first.logs.find((line) => line.msg === 'embedded postgres');
    assert.equal(where?.dataDir, join(dataDir, 'postgres'));
    assert.match(String(where?.hint), /DATABASE_URL/);
    assert.ok(first.logs.some((line) => line.msg === 'migration applied'));
    assert.equal((await fetch(`${first.baseUrl}/health`)).status, 200);
    assert.equal((await first.stop('SIGTERM')).code, 0);
    assert.equal(existsSync(join(dataDir, 'postgres', 'postmaster.pid')), false, 'Postgres stopped with the broker');

    const second = await startBroker(env);
    assert.ok(!second.logs.some((line) => line.msg === 'migration applied'), 'schema kept from the first run');
    assert.equal((await second.stop('SIGTERM')).code, 0);
  });
});
