// The broker before it is ready: a bound port that answers /health "starting" (with the last
// database error) and refuses everything else as retryable; a bind that fails says who holds
// the port; database errors, taken from a real Postgres, read as the operator's next step.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { WebSocket } from 'ws';
import { diagnoseDb, openGate } from '../../lib/broker-start.ts';
import { isCmError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/log.ts';
import { createTestDatabase } from '../helpers/db.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { freePort, takenPort } from '../helpers/ports.ts';

const quiet = createLogger({ write: () => {} });
const gateOptions = (port: number) => ({ host: '127.0.0.1', port, version: '9.9.9-test', gitSha: 'abc1234', log: quiet });

/** The error a real connection attempt to `url` fails with. */
async function connectError(url: string): Promise<unknown> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    return error;
  } finally {
    await client.end().catch(() => undefined);
  }
  assert.fail(`${url} accepted the connection`);
}

function withUrl(url: string, change: (parsed: URL) => void): string {
  const parsed = new URL(url);
  change(parsed);
  return parsed.toString();
}

describe('diagnoseDb', () => {
  let database: TestDatabase;
  before(async () => {
    database = await createTestDatabase('diagnose');
  });
  after(() => database.drop());

  it('a wrong password is fatal, and the hint says which user and where to fix it', async () => {
    const url = withUrl(database.url, (parsed) => {
      parsed.password = 'certainly-wrong';
    });
    const problem = diagnoseDb(await connectError(url), url);
    assert.equal(problem.code, '28P01');
    assert.equal(problem.fatal, true);
    assert.match(problem.message, /password authentication failed/);
    assert.match(problem.hint, new RegExp(`user "${new URL(url).username}"`));
    assert.doesNotMatch(problem.hint, /certainly-wrong/, 'the wrong password is never repeated');
  });

  it('a missing database is fatal, and the hint names it', async () => {
    const url = withUrl(database.url, (parsed) => {
      parsed.pathname = '/cm_no_such_database';
    });
    const problem = diagnoseDb(await connectError(url), url);
    assert.equal(problem.code, '3D000');
    assert.equal(problem.fatal, true);
    assert.match(problem.hint, /CREATE DATABASE cm_no_such_database/);
  });

  it('nothing listening is transient, and the hint names host and port', async () => {
    const port = await freePort();
    const url = `postgres://u:p@127.0.0.1:${port}/db`;
    const problem = diagnoseDb(await connectError(url), url);
    assert.equal(problem.code, 'ECONNREFUSED');
    assert.equal(problem.fatal, false);
    assert.match(problem.hint, new RegExp(`127\\.0\\.0\\.1:${port}`));
  });

  it('a refused role (28000) is fatal; a timeout, a starting Postgres and the unknown are not', () => {
    const url = 'postgres://bob@db.example:6543/mesh';
    const role = diagnoseDb(Object.assign(new Error('no pg_hba.conf entry for host'), { code: '28000' }), url);
    assert.equal(role.fatal, true);
    assert.match(role.hint, /pg_hba\.conf/);
    assert.match(role.hint, /"bob"/);
    const timeout = diagnoseDb(new Error('no answer within 2000 ms'), url);
    assert.deepEqual([timeout.code, timeout.fatal], ['ETIMEDOUT', false]);
    assert.match(timeout.hint, /db\.example:6543/);
    assert.equal(diagnoseDb(Object.assign(new Error('the database system is starting up'), { code: '57P03' }), url).fatal, false);
    const unknown = diagnoseDb('something odd', url);
    assert.deepEqual([unknown.code, unknown.fatal], ['UNKNOWN', false]);
  });
});

describe('openGate', () => {
  it('answers /health 503 "starting" with the last error, refuses routes and upgrades as retryable, then steps aside for the broker', async () => {
    const port = await freePort();
    const gate = await openGate(gateOptions(port));
    const base = `http://127.0.0.1:${port}`;
    try {
      const first = await fetch(`${base}/health`);
      assert.equal(first.status, 503);
      const { uptime, ...report } = (await first.json()) as Record<string, unknown>;
      assert.deepEqual(report, { status: 'starting', db: 'down', step: 'starting', version: '9.9.9-test', gitSha: 'abc1234' });
      assert.equal(typeof uptime, 'number');

      gate.waiting('waiting for the database', { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:1', hint: 'start Postgres', fatal: false });
      const health = (await (await fetch(`${base}/health`)).json()) as Record<string, unknown>;
      assert.equal(health.step, 'waiting for the database');
      assert.deepEqual(health.error, { code: 'ECONNREFUSED', hint: 'start Postgres' }, 'code and hint, never the raw message');

      const route = await fetch(`${base}/mesh/create`, { method: 'POST', body: '{}' });
      assert.equal(route.status, 503);
      assert.equal(route.headers.get('retry-after'), '2');
      const body = (await route.json()) as { code: string; message: string };
      assert.equal(body.code, 'CM_ERR_DB_UNAVAILABLE');
      assert.match(body.message, /starting \(waiting for the database\)/);

      const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`);
      socket.on('error', () => undefined);
      const [, response] = (await once(socket, 'unexpected-response')) as [unknown, { statusCode: number; headers: Record<string, string> }];
      assert.equal(response.statusCode, 503);
      assert.equal(response.headers['retry-after'], '2');

      const { server } = gate;
      assert.equal(server.listening, true);
      server.on('request', (_request, reply) => reply.end('mine now'));
      assert.deepEqual(['request', 'upgrade', 'clientError'].map((event) => server.listenerCount(event)), [1, 0, 0], 'the gate stepped aside as the broker came');
      assert.equal(await (await fetch(`${base}/health`)).text(), 'mine now');
    } finally {
      await gate.close();
    }
  });

  it('says which port clashed and who holds it: a process, or another claudemesh broker', async () => {
    const { port, release } = await takenPort();
    try {
      const error = await openGate(gateOptions(port)).then(() => assert.fail('bound a taken port'), (failure: unknown) => failure);
      assert.ok(isCmError(error));
      assert.equal(error.code, 'CM_ERR_PORT_IN_USE');
      assert.match(error.message, new RegExp(`BROKER_PORT ${port} on 127\\.0\\.0\\.1 is already in use by pid ${process.pid} \\(`));
      assert.match(error.hint, /BROKER_PORT/);
    } finally {
      await release();
    }
    const taken = await freePort();
    const first = await openGate(gateOptions(taken));
    const again = await openGate(gateOptions(taken)).then(() => undefined, (failure: unknown) => failure);
    await first.close();
    assert.ok(isCmError(again));
    assert.equal(again.code, 'CM_ERR_PORT_IN_USE');
    assert.match(again.message, /another claudemesh broker \(version 9\.9\.9-test, status starting\)/);
  });

  it('refuses an address this machine does not have, naming BROKER_HOST', async () => {
    const error = await openGate({ ...gateOptions(0), host: '192.0.2.1' }).then(() => undefined, (failure: unknown) => failure);
    assert.ok(isCmError(error));
    assert.equal(error.code, 'CM_ERR_LISTEN_FAILED');
    assert.match(error.message, /BROKER_HOST 192\.0\.2\.1 is not an address of this machine/);
  });
});
