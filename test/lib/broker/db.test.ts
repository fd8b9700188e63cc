// Database outage under a running broker. This file starts a second, private embedded
// cluster: stopping the run's shared Postgres would break the test files running beside it.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { embeddedPostgres } from '../../../lib/embedded-pg.ts';
import type { EmbeddedPostgres } from '../../../lib/embedded-pg.ts';
import { createLogger } from '../../../lib/log.ts';
import { createDatabase } from '../../../lib/broker/db.ts';
import { brokerEnv, startBroker } from '../../helpers/broker-process.ts';
import { BINARY_RELOCATION, createTestDatabase } from '../../helpers/db.ts';
import { freePort } from '../../helpers/ports.ts';

const POLL_MS = 100;
const RECOVERY_LIMIT_MS = 20_000;

async function pollHealth(baseUrl: string, status: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + RECOVERY_LIMIT_MS;
  let last: Record<string, unknown> = {};
  while (Date.now() < deadline) {
    const response = await fetch(`${baseUrl}/health`);
    last = (await response.json()) as Record<string, unknown>;
    if (response.status === status) return last;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`/health did not answer ${status} within ${RECOVERY_LIMIT_MS} ms; last body ${JSON.stringify(last)}`);
}

describe('broker with Postgres going away', () => {
  let baseDir: string;
  let cluster: EmbeddedPostgres;

  before(async () => {
    baseDir = await mkdtemp(join(tmpdir(), 'cm-outage-pg-'));
    cluster = await embeddedPostgres({ baseDir, port: await freePort(), relocation: BINARY_RELOCATION });
    await cluster.start();
  });
  after(async () => {
    await cluster.stop();
    await rm(baseDir, { recursive: true, force: true });
  });

  it('turns /health to 503 while Postgres is down and back to 200 by itself', async () => {
    const databaseUrl = cluster.url.replace(/\/postgres$/, '/outage');
    const admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
    await admin.query('CREATE DATABASE outage');
    await admin.end();

    const broker = await startBroker(brokerEnv({ DATABASE_URL: databaseUrl }));
    try {
      assert.equal((await pollHealth(broker.baseUrl, 200)).db, 'up');

      await cluster.stop();
      const down = await pollHealth(broker.baseUrl, 503);
      assert.equal(down.status, 'degraded');
      assert.equal(down.db, 'down');
      assert.equal(typeof down.version, 'string');
      assert.match(await (await fetch(`${broker.baseUrl}/metrics`)).text(), /^broker_db_healthy 0$/m);
      await broker.waitForLog('db ping failed');
      assert.equal(broker.child.exitCode, null, 'the broker keeps running');

      await cluster.start();
      const up = await pollHealth(broker.baseUrl, 200);
      assert.equal(up.status, 'ok');
      assert.match(await (await fetch(`${broker.baseUrl}/metrics`)).text(), /^broker_db_healthy 1$/m);
      const healthyLines = broker.logs.filter((line) => line.msg === 'db healthy');
      assert.ok(healthyLines.length >= 2, 'logged healthy at start and again on recovery');
    } finally {
      const { code } = await broker.stop('SIGTERM');
      assert.equal(code, 0);
    }
  });
});

describe('createDatabase', () => {
  it('shares one ping among concurrent callers and reports health', async () => {
    const database = await createTestDatabase('db_ping');
    const changes: boolean[] = [];
    const db = createDatabase({ url: database.url, log: createLogger({ write: () => {} }), onHealthChange: (healthy) => changes.push(healthy) });
    try {
      const first = db.ping();
      const second = db.ping();
      assert.equal(first, second);
      assert.equal(await first, true);
      assert.equal(db.healthy, true);
      assert.deepEqual(changes, [true]);
    } finally {
      await db.close();
      await db.close();
      assert.equal(await db.ping(), false, 'a closed database never pings');
      await database.drop();
    }
  });

  it('reports an unreachable database as down without throwing', async () => {
    const port = await freePort();
    const db = createDatabase({ url: `postgres://nobody:x@127.0.0.1:${port}/none`, log: createLogger({ write: () => {} }) });
    assert.equal(await db.ping(), false);
    assert.equal(db.healthy, false);
    await db.close();
  });
});
