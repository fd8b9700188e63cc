// Faults an operator meets, against real broker processes: a broker killed (SIGKILL) with
// deliveries claimed and restarted in the same place; an instance that dies while another
// runs on the same database; a database that stops answering (a table locked); a broker that
// is not scheduled while a restart's worth of daemons connect.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { LISTEN_BACKLOG } from '../lib/broker-start.ts';
import { createLogger } from '../lib/log.ts';
import { ADVISORY_LOCK_KEY, createDatabase, migrate } from '../lib/broker/db.ts';
import { brokerEnv, startBroker } from './helpers/broker-process.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { seedMesh, TestPeer } from './helpers/peer.ts';
import type { Frame, SeededMesh } from './helpers/peer.ts';
import { freePort } from './helpers/ports.ts';
import { waitUntil } from './helpers/wait.ts';

const MESSAGES = 30;
// more than Node's default listen backlog (511)
const STORM_SOCKETS = 1_000;
const CONNECT_WAIT_MS = 700;
const quiet = createLogger({ write: () => {} });

describe('broker faults', () => {
  let database: TestDatabase;
  let mesh: SeededMesh;
  let pool: pg.Pool;
  before(async () => {
    database = await createTestDatabase('broker_faults');
    const setup = createDatabase({ url: database.url, log: quiet });
    await migrate(setup.pool, quiet);
    await setup.close();
    pool = new pg.Pool({ connectionString: database.url, max: 2 });
    mesh = await seedMesh(pool, 2);
  });
  after(async () => {
    await pool.end();
    await database.drop();
  });

  it('a broker killed with claimed deliveries and restarted in the same place pushes them at once, not after the claim', async () => {
    const port = String(await freePort());
    const env = brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: port });
    const first = await startBroker(env);
    const wsUrl = `ws://127.0.0.1:${port}/ws`;
    const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
    const receiver = await TestPeer.connect(wsUrl, { meshId: mesh.meshId, member: bob });
    const sender = await TestPeer.connect(wsUrl, { meshId: mesh.meshId, member: alice });
    const acks = await Promise.all(Array.from({ length: MESSAGES }, (_, i) => sender.send(bob.publicKey, [bob.publicKey], `m${i}`)));
    assert.ok(acks.every((ack: Frame) => ack.queued === true));
    await waitUntil('every message pushed (and so claimed) once', () => receiver.pushes().length === MESSAGES);
    // bob never acked: each delivery is claimed by the first broker for 30 s.
    await first.stop('SIGKILL');
    const second = await startBroker(env);
    try {
      assert.equal(second.instanceId, first.instanceId, 'same host and port: the same instance');
      const again = await TestPeer.connect(wsUrl, { meshId: mesh.meshId, member: bob });
      const started = Date.now();
      await waitUntil('every acked message pushed again after the restart', () => new Set(again.pushes().map((push) => push.messageId)).size === MESSAGES, { timeoutMs: 10_000 });
      assert.ok(Date.now() - started < 10_000, 'well inside the 30 s claim');
      again.clientAck(again.pushes().map((push) => String(push.messageId)));
      await waitUntil('delivered', async () => (await pool.query("SELECT count(*)::int AS n FROM deliveries WHERE state = 'delivered'")).rows[0]?.n === MESSAGES);
      await again.close();
    } finally {
      await second.stop('SIGTERM');
    }
  });

  it('another instance ends the presences and releases the claims of an instance that died', async () => {
    const a = await startBroker(brokerEnv({ DATABASE_URL: database.url, BROKER_INSTANCE_ID: 'dies' }));
    const b = await startBroker(brokerEnv({ DATABASE_URL: database.url, BROKER_INSTANCE_ID: 'lives' }));
    try {
      const peer = await TestPeer.connect(`ws://127.0.0.1:${a.port}/ws`, { meshId: mesh.meshId, member: mesh.members[1]! });
      assert.equal(peer.ack!.type, 'hello_ack');
      await a.stop('SIGKILL');
      // Make the dead one's heartbeat old, as the passing of three beats would.
      await pool.query("UPDATE instances SET seen_at = now() - interval '1 hour' WHERE id = 'dies'");
      await waitUntil('the dead instance reaped by the live one', async () => (await pool.query("SELECT count(*)::int AS n FROM instances WHERE id = 'dies'")).rows[0]?.n === 0, { timeoutMs: 15_000, pollMs: 100 });
      const { rows } = await pool.query("SELECT count(*)::int AS n FROM presences WHERE instance_id = 'dies' AND (disconnected_at IS NULL OR lease_until > now())");
      assert.equal(rows[0]?.n, 0, 'its presences ended');
      await b.waitForLog('dead broker instances reaped');
    } finally {
      await b.stop('SIGTERM');
    }
  });

  it('answers a send that waits on a locked database with a retryable code, inside the statement timeout', async () => {
    const broker = await startBroker(brokerEnv({ DATABASE_URL: database.url, DB_STATEMENT_TIMEOUT_MS: '300' }));
    const locker = new pg.Client({ connectionString: database.url });
    await locker.connect();
    try {
      const [alice, bob] = [mesh.members[0]!, mesh.members[1]!];
      const sender = await TestPeer.connect(`ws://127.0.0.1:${broker.port}/ws`, { meshId: mesh.meshId, member: alice });
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE');
      const started = Date.now();
      const ack = await sender.send(bob.publicKey, [bob.publicKey], 'frozen');
      const waited = Date.now() - started;
      assert.equal(ack.queued, false);
      assert.equal(ack.code, 'CM_ERR_DB_UNAVAILABLE');
      assert.ok(waited < 3_000, `answered after ${waited} ms`);
      await locker.query('ROLLBACK');
      const retried = await sender.send(bob.publicKey, [bob.publicKey], 'thawed');
      assert.equal(retried.queued, true, 'taken again once the database answers');
      assert.equal(broker.child.exitCode, null);
      await sender.close();
    } finally {
      await locker.end();
      await broker.stop('SIGTERM');
    }
  });

  it('a broker that is not scheduled keeps the connections of a restart queued in the kernel instead of dropping them', async () => {
    // The kernel caps the backlog at net.core.somaxconn; past it, new handshakes are dropped and
    // each client waits a second before it tries again.
    const room = Math.min(LISTEN_BACKLOG, Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8')));
    const sockets = Math.min(STORM_SOCKETS, room);
    const broker = await startBroker(brokerEnv({ DATABASE_URL: database.url }));
    const opened: Socket[] = [];
    try {
      // a frozen event loop, as in the first seconds after a restart: nothing is accepted
      process.kill(broker.child.pid!, 'SIGSTOP');
      const connected = await Promise.all(Array.from({ length: sockets }, () => new Promise<boolean>((resolve) => {
        const socket = connect(broker.port, '127.0.0.1');
        opened.push(socket);
        const timer = setTimeout(() => resolve(false), CONNECT_WAIT_MS);
        socket.once('connect', () => {
          clearTimeout(timer);
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      })));
      assert.equal(connected.filter(Boolean).length, sockets, `all ${sockets} handshakes completed while the broker was stopped`);
    } finally {
      process.kill(broker.child.pid!, 'SIGCONT');
      for (const socket of opened) socket.destroy();
      await broker.stop('SIGTERM');
    }
  });

  it('a stop signal while the start waits on the migrations lock ends as a stop: exit 0, no "start failed"', async () => {
    // another broker migrating the same database holds the lock
    const holder = await pool.connect();
    await holder.query('SELECT pg_advisory_lock($1)', [ADVISORY_LOCK_KEY]);
    const port = await freePort();
    const child = spawn(process.execPath, ['broker.ts'], { cwd: new URL('../', import.meta.url).pathname, env: brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(port) }), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitUntil('the start to wait on the migrations lock', async () => {
        const health = await fetch(`http://127.0.0.1:${port}/health`).then((response) => response.json() as Promise<{ step?: string }>).catch(() => undefined);
        return health?.step === 'applying migrations';
      });
      child.kill('SIGTERM');
      const code = await exited;
      const messages = stderr.trim().split('\n').map((line) => (JSON.parse(line) as { msg: string }).msg);
      assert.equal(code, 0, stderr);
      assert.ok(!messages.includes('start failed'), stderr);
      assert.equal(messages.at(-1), 'shutdown complete');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await holder.query('SELECT pg_advisory_unlock($1)', [ADVISORY_LOCK_KEY]);
      holder.release();
    }
  });
});
