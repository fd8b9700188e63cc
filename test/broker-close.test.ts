import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { startTestBroker } from './helpers/broker.ts';

const PUBKEY_A = 'a'.repeat(64);
const PUBKEY_B = 'b'.repeat(64);
const PUBKEY_C = 'c'.repeat(64);

describe('broker.close', () => {
  it('closes sockets 1012, hands only its own presences over to a lease with no instance, and is safe to call twice', async () => {
    const t = await startTestBroker('server_close');
    const { pool } = t.db;
    // Rows as a future hello would write them: one live presence on this instance, one on another.
    await pool.query(`INSERT INTO meshes (id, name, owner_key) VALUES ('mesh_0001', 'm', $1)`, [PUBKEY_A]);
    const member = await pool.query(`INSERT INTO members (mesh_id, key, name, role) VALUES ('mesh_0001', $1, 'owner', 'owner') RETURNING id`, [PUBKEY_A]);
    const memberId = member.rows[0]?.id;
    await pool.query(
      `INSERT INTO presences (mesh_id, member_id, key, kind, instance_id) VALUES ('mesh_0001', $1, $2, 'member', $3), ('mesh_0001', $1, $4, 'session', 'other-instance')`,
      [memberId, PUBKEY_A, t.broker.context.instanceId, PUBKEY_B],
    );
    // A socket of this instance that closed a moment ago: its lease runs on without the broker.
    await pool.query(
      `INSERT INTO presences (mesh_id, member_id, key, kind, instance_id, disconnected_at, lease_until) VALUES ('mesh_0001', $1, $2, 'session', $3, now(), now() + interval '90 seconds')`,
      [memberId, PUBKEY_C, t.broker.context.instanceId],
    );
    // Read back through a separate pool: the broker's own pool is ended by close().
    const pg = (await import('pg')).default;
    const reader = new pg.Pool({ connectionString: t.database.url, max: 1 });

    const client = new WebSocket(t.wsUrl);
    await new Promise((resolve) => client.once('open', resolve));
    const code = new Promise<number>((resolve) => client.once('close', (closeCode) => resolve(closeCode)));

    const first = t.broker.close({ timeoutMs: 2_000 });
    const second = t.broker.close({ timeoutMs: 2_000 });
    assert.equal(first, second, 'the second call returns the same shutdown');
    await first;
    assert.equal(await code, 1012);
    await t.broker.close();

    // A rolling restart: the live presence starts its lease and the closed one keeps its own,
    // both with no instance behind them, so a reconnect to any instance reattaches silently.
    const rows = await reader.query(`SELECT key, instance_id, disconnected_at IS NOT NULL AS disconnected,
      round(extract(epoch FROM lease_until - now())) AS lease_left FROM presences ORDER BY key`);
    assert.deepEqual(rows.rows.map((row) => ({ ...row, lease_left: row.lease_left === null ? null : Number(row.lease_left) > 80 })), [
      { key: PUBKEY_A, instance_id: null, disconnected: true, lease_left: true },
      { key: PUBKEY_B, instance_id: 'other-instance', disconnected: false, lease_left: null },
      { key: PUBKEY_C, instance_id: null, disconnected: true, lease_left: true },
    ]);
    await assert.rejects(fetch(`${t.baseUrl}/health`), 'HTTP is closed');
    await reader.end();
    await t.database.drop();
  });
});
