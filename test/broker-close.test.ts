import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { startTestBroker } from './helpers/broker.ts';

const PUBKEY_A = 'a'.repeat(64);
const PUBKEY_B = 'b'.repeat(64);
const PUBKEY_C = 'c'.repeat(64);

describe('broker.close', () => {
  it('closes sockets 1012, releases only its own presences, and is safe to call twice', async () => {
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
    // A socket of this instance that closed a moment ago: its lease must end with the broker.
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

    const rows = await reader.query(`SELECT key, disconnected_at IS NOT NULL AS gone, coalesce(lease_until <= now(), false) AS lease_over FROM presences ORDER BY key`);
    assert.deepEqual(rows.rows, [
      { key: PUBKEY_A, gone: true, lease_over: true },
      { key: PUBKEY_B, gone: false, lease_over: false },
      { key: PUBKEY_C, gone: true, lease_over: true },
    ]);
    await assert.rejects(fetch(`${t.baseUrl}/health`), 'HTTP is closed');
    await reader.end();
    await t.database.drop();
  });
});
