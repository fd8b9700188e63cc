// A Postgres that restarts or kills our backends must never end the broker. This file
// runs its own embedded cluster, since stopping the run's shared one would break the test
// files beside it. The in-process tests fail on the old code with an unhandled 'error'
// event (a checked-out pg client had no listener); the process test with an exited broker.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { embeddedPostgres } from '../../../lib/embedded-pg.ts';
import type { EmbeddedPostgres } from '../../../lib/embedded-pg.ts';
import { callBroker } from '../../../lib/broker-client.ts';
import { generateKeyPair } from '../../../lib/crypto.ts';
import { createLogger } from '../../../lib/log.ts';
import { createDatabase, transaction, withClient } from '../../../lib/broker/db.ts';
import { migrate } from '../../../lib/broker/db.ts';
import { brokerEnv, startBroker } from '../../helpers/broker-process.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';
import type { Frame } from '../../helpers/peer.ts';
import { freePort } from '../../helpers/ports.ts';
import { waitUntil } from '../../helpers/wait.ts';
import { BINARY_RELOCATION } from '../../helpers/db.ts';

const SEND_INTERVAL_MS = 5; // about 200 sends a second, the rate of the outside report
const OUTAGE_MS = 1_500;
const quiet = createLogger({ write: () => {} });

async function terminateOthers(adminUrl: string, database: string): Promise<number> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const { rows } = await admin.query(
      'SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [database],
    );
    return rows.length;
  } finally {
    await admin.end();
  }
}

describe('Postgres restarting under the broker', () => {
  let baseDir: string;
  let cluster: EmbeddedPostgres;
  const urlOf = (database: string) => cluster.url.replace(/\/postgres$/, `/${database}`);

  before(async () => {
    baseDir = await mkdtemp(join(tmpdir(), 'cm-restart-pg-'));
    cluster = await embeddedPostgres({ baseDir, port: await freePort(), relocation: BINARY_RELOCATION });
    await cluster.start();
    const admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
    await admin.query('CREATE DATABASE restart_tx');
    await admin.query('CREATE DATABASE restart_broker');
    await admin.end();
  });
  after(async () => {
    await cluster.stop();
    await rm(baseDir, { recursive: true, force: true });
  });

  it('a backend killed inside a transaction rejects it and leaves the pool usable', async () => {
    const db = createDatabase({ url: urlOf('restart_tx'), log: quiet });
    try {
      const failed = transaction(db.pool, async (client) => {
        await client.query('SELECT 1');
        await terminateOthers(cluster.url, 'restart_tx');
        // The FATAL arrives between two queries: the moment the old code had no listener.
        await sleep(200);
        await client.query('SELECT 2');
      });
      await assert.rejects(failed);
      const during = withClient(db.pool, async () => {
        await terminateOthers(cluster.url, 'restart_tx');
        await sleep(200);
      });
      await during; // work that never touches the dead client again still completes
      assert.equal((await db.pool.query('SELECT 41 + 1 AS n')).rows[0]?.n, 42);
      assert.equal(await transaction(db.pool, async (client) => (await client.query('SELECT 7 AS n')).rows[0]?.n), 7);
    } finally {
      await db.close();
    }
  });

  it('keeps the broker up through a Postgres stop and start under traffic, and loses no acked message', async () => {
    const databaseUrl = urlOf('restart_broker');
    const setup = createDatabase({ url: databaseUrl, log: quiet });
    await migrate(setup.pool, quiet);
    const mesh = await seedMesh(setup.pool, 2);
    await setup.close();
    const broker = await startBroker(brokerEnv({ DATABASE_URL: databaseUrl, SEND_RATE_PER_SECOND: '10000', LOOP_GUARD_RATE_PER_SECOND: '10000', LOOP_GUARD_BURST: '100000' }));
    const wsUrl = `ws://127.0.0.1:${broker.port}/ws`;
    const [owner, other] = mesh.members;
    assert.ok(owner !== undefined && other !== undefined);
    const sender = await TestPeer.connect(wsUrl, { meshId: mesh.meshId, member: owner });
    const receiver = await TestPeer.connect(wsUrl, { meshId: mesh.meshId, member: other });
    const acks: Frame[] = [];
    let sending = true;
    const traffic = (async () => {
      while (sending) {
        if (sender.socket.readyState !== sender.socket.OPEN) break;
        void sender.send(receiver.key, [receiver.key], 'tick', { hops: 0 }).then((ack) => acks.push(ack), () => {});
        await sleep(SEND_INTERVAL_MS);
      }
    })();
    try {
      await sleep(300);
      await cluster.stop();
      await sleep(OUTAGE_MS);
      assert.equal(broker.child.exitCode, null, 'the broker is still running while Postgres is down');
      await waitUntil('a send refused as database unavailable', () => acks.some((ack) => ack.queued === false && ack.code === 'CM_ERR_DB_UNAVAILABLE'));
      // The signed HTTP routes say the same: an outage to retry (503), not a bug (500).
      await assert.rejects(
        callBroker({ brokerUrl: broker.baseUrl, method: 'POST', path: '/mesh/create', identity: generateKeyPair(), body: { name: 'during-outage', ownerName: 'owner' } }),
        { code: 'CM_ERR_DB_UNAVAILABLE', status: 503 },
      );
      await cluster.start();
      const before = acks.length;
      await waitUntil('sends acked again after Postgres returned', () => acks.slice(before).some((ack) => ack.queued === true), { timeoutMs: 15_000 });
      await terminateOthers(cluster.url, 'restart_broker');
      await waitUntil('sends acked again after its backends were killed', () => acks.slice(before).filter((ack) => ack.queued === true).length > 20, { timeoutMs: 15_000 });
      sending = false;
      await traffic;
      await sleep(300);
      assert.equal(broker.child.exitCode, null, 'the broker survived both faults');
      assert.equal(broker.logs.filter((line) => line.msg === 'uncaught exception').length, 0);

      const acked = acks.filter((ack) => ack.queued === true).map((ack) => String(ack.messageId));
      const check = new pg.Client({ connectionString: databaseUrl });
      await check.connect();
      try {
        const { rows } = await check.query('SELECT count(DISTINCT message_id)::int AS n FROM deliveries WHERE message_id = ANY($1::uuid[])', [acked]);
        assert.equal(rows[0]?.n, new Set(acked).size, 'every acked message is stored');
      } finally {
        await check.end();
      }
    } finally {
      sending = false;
      await traffic;
      await sender.close().catch(() => {});
      await receiver.close().catch(() => {});
      const { code } = await broker.stop('SIGTERM');
      assert.equal(code, 0);
    }
  });
});
