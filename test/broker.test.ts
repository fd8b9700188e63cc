// The broker as an operator runs it: a real child process, real signals, real exit codes.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { lintExposition } from './helpers/prom-lint.ts';
import { brokerEnv, runBroker, startBroker, startFailure } from './helpers/broker-process.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { freePort, takenPort } from './helpers/ports.ts';
import { waitUntil } from './helpers/wait.ts';
import { listeningPid } from '../lib/processes.ts';

const SHUTDOWN_LIMIT_MS = 5_000;
const RETRIES_MS = 1_000;

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

describe('node broker.ts: a start that never strands the operator', () => {
  let database: TestDatabase;
  before(async () => {
    database = await createTestDatabase('broker_start');
  });
  after(() => database.drop());

  it('exits 2 on a wrong password, at once, with the fix in one line', async () => {
    const url = new URL(database.url);
    url.password = 'wrong-password';
    const result = await runBroker(brokerEnv({ DATABASE_URL: url.toString() }));
    assert.equal(result.code, 2);
    const line = startFailure(result, 'CM_ERR_DB_REJECTED');
    assert.match(String(line.error), /password authentication failed .*\(28P01\)/);
    assert.match(String(line.hint), /password for user .* in DATABASE_URL/);
    assert.doesNotMatch(result.stderr, /wrong-password/, 'the password never reaches the log');
  });

  it('exits 2 on a database that does not exist', async () => {
    const url = new URL(database.url);
    url.pathname = '/cm_missing_database';
    const result = await runBroker(brokerEnv({ DATABASE_URL: url.toString() }));
    assert.equal(result.code, 2);
    assert.match(String(startFailure(result, 'CM_ERR_DB_REJECTED').hint), /CREATE DATABASE cm_missing_database/);
  });

  it('serves /health 503 with the cause while the database is unreachable, refuses sockets, and says why in every retry line', async () => {
    const port = await freePort();
    const env = brokerEnv({ DATABASE_URL: `postgres://u:p@127.0.0.1:${await freePort()}/db`, BROKER_PORT: String(port) });
    const child = runBroker(env, 20_000);
    const base = `http://127.0.0.1:${port}`;
    const health = await waitUntil('a "starting" /health naming the last error', async () => {
      const response = await fetch(`${base}/health`).catch(() => undefined);
      if (response === undefined) return undefined;
      const body = (await response.json()) as { status: string; error?: { code: string; hint: string } };
      return response.status === 503 && body.error !== undefined ? body : undefined;
    });
    assert.equal(health.status, 'starting');
    assert.equal(health.error?.code, 'ECONNREFUSED');
    assert.match(health.error?.hint ?? '', /nothing listens at 127\.0\.0\.1/);
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    socket.on('error', () => undefined);
    const [, refused] = (await once(socket, 'unexpected-response')) as [unknown, { statusCode: number }];
    assert.equal(refused.statusCode, 503);
    const route = await fetch(`${base}/mesh/join`, { method: 'POST', body: '{}' });
    assert.equal(route.status, 503);
    assert.equal(((await route.json()) as { code: string }).code, 'CM_ERR_DB_UNAVAILABLE');
    await sleep(RETRIES_MS); // the first retry comes 250 ms after the first line
    const pid = await waitUntil('the broker pid', () => listeningPid(port));
    process.kill(pid, 'SIGTERM');
    const result = await child;
    assert.equal(result.code, 0);
    const retries = result.logs.filter((line) => line.msg === 'waiting for database');
    assert.ok(retries.length >= 2, `${retries.length} retry lines`);
    for (const line of retries) {
      assert.equal(line.code, 'ECONNREFUSED');
      assert.match(String(line.error), /ECONNREFUSED/);
      assert.match(String(line.hint), /nothing listens at/);
    }
  });

  it('says which port clashed and who holds it, before any database work', async () => {
    const { port, release } = await takenPort();
    try {
      const result = await runBroker(brokerEnv({ BROKER_PORT: String(port), DATABASE_URL: `postgres://u:p@127.0.0.1:${await freePort()}/db` }));
      assert.equal(result.code, 1);
      const line = startFailure(result, 'CM_ERR_PORT_IN_USE');
      assert.match(String(line.error), new RegExp(`BROKER_PORT ${port} on 127\\.0\\.0\\.1 is already in use by pid ${process.pid} `));
      assert.ok(!result.logs.some((entry) => entry.msg === 'waiting for database'), 'the port is checked first');
    } finally {
      await release();
    }
  });

  it('refuses an invalid BROKER_HOST with the other config problems, exit 2', async () => {
    const result = await runBroker(brokerEnv({ BROKER_HOST: '999.1.1.1', LOG_LEVEL: 'loud', DATABASE_URL: database.url }));
    assert.equal(result.code, 2);
    const problems = result.logs.filter((line) => line.msg === 'config problem');
    assert.deepEqual(problems.map((line) => line.variable).sort(), ['BROKER_HOST', 'LOG_LEVEL']);
    assert.equal(problems.find((line) => line.variable === 'BROKER_HOST')?.received, '999.1.1.1');
  });
});
