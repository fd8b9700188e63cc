import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createLogger } from '../../../lib/log.ts';
import { migrate, query, readMigrations } from '../../../lib/broker/db.ts';
import { messageIdOf } from '../../../lib/broker/send-checks.ts';
import { createTestDatabase } from '../../helpers/db.ts';
import type { TestDatabase } from '../../helpers/db.ts';

const quiet = createLogger({ write: () => {} });

async function sqlDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cm-migrations-'));
  for (const [name, sql] of Object.entries(files)) await writeFile(join(dir, name), sql);
  return dir;
}

describe('migrate', () => {
  let database: TestDatabase;
  let pool: pg.Pool;
  const dirs: string[] = [];

  /** A folder with the shipped migrations numbered up to `last`: the schema an older release left. */
  async function shippedUpTo(last: number): Promise<string> {
    const shipped = new URL('../../../sql/', import.meta.url).pathname;
    const dir = await mkdtemp(join(tmpdir(), 'cm-migrations-'));
    dirs.push(dir);
    for (const name of await readdir(shipped)) {
      if (/^\d{3}_.*\.sql$/.test(name) && Number(name.slice(0, 3)) <= last) await copyFile(join(shipped, name), join(dir, name));
    }
    return dir;
  }

  before(async () => {
    database = await createTestDatabase('migrate');
    pool = new pg.Pool({ connectionString: database.url, max: 4 });
  });
  after(async () => {
    await pool.end();
    await database.drop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('applies the shipped schema, then nothing on the second run', async () => {
    const first = await migrate(pool, quiet);
    assert.deepEqual(first.applied, ['001_initial.sql', '002_one_vocabulary.sql', '003_shared_state.sql', '004_orphan_leases.sql', '005_one_row_per_recipient.sql', '006_deliveries_fillfactor.sql', '007_deliveries_statistics.sql', '008_one_unique_index.sql', '009_deliveries_fewer_statistics.sql']);
    const second = await migrate(pool, quiet);
    assert.deepEqual(second.applied, []);
    assert.equal(second.alreadyApplied, first.applied.length);
    const { rows } = await pool.query('SELECT version, name, checksum FROM schema_migrations ORDER BY version');
    const shipped = await readMigrations();
    assert.deepEqual(rows, shipped.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum })));
    assert.match(String(rows[0]?.checksum), /^[0-9a-f]{64}$/);
  });

  it('creates the tables and the indexes the hot queries need', async () => {
    const tables = await pool.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`);
    assert.deepEqual(
      tables.rows.map((row) => row.tablename),
      ['deliveries', 'instances', 'invites', 'members', 'meshes', 'presences', 'replays', 'schema_migrations'],
    );
    const indexes = new Set((await pool.query(`SELECT indexname FROM pg_indexes WHERE schemaname = 'public'`)).rows.map((row) => row.indexname));
    for (const name of ['deliveries_pkey', 'deliveries_queued', 'deliveries_age', 'presences_mesh_live', 'presences_instance_live', 'members_current', 'replays_expiry']) {
      assert.ok(indexes.has(name), `index ${name} exists`);
    }
  });

  it('lets concurrent starts apply each migration exactly once', async () => {
    const dir = await sqlDir({ '001_a.sql': 'CREATE TABLE a (id int);', '002_b.sql': 'CREATE TABLE b (id int); SELECT pg_sleep(0.05);' });
    dirs.push(dir);
    const fresh = await createTestDatabase('migrate_race');
    const pools = [0, 1, 2].map(() => new pg.Pool({ connectionString: fresh.url, max: 1 }));
    try {
      const results = await Promise.all(pools.map((each) => migrate(each, quiet, dir)));
      assert.equal(results.reduce((sum, result) => sum + result.applied.length, 0), 2, 'two files applied once in total');
    } finally {
      for (const each of pools) await each.end();
      await fresh.drop();
    }
  });

  it('stops when an applied file has changed', async () => {
    const dir = await sqlDir({ '001_a.sql': 'CREATE TABLE changed_a (id int);' });
    dirs.push(dir);
    const fresh = await createTestDatabase('migrate_checksum');
    const own = new pg.Pool({ connectionString: fresh.url, max: 1 });
    try {
      await migrate(own, quiet, dir);
      await writeFile(join(dir, '001_a.sql'), 'CREATE TABLE changed_a (id bigint);');
      await assert.rejects(migrate(own, quiet, dir), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'CM_ERR_MIGRATION_CHECKSUM');
        assert.match(error.message, /001_a\.sql/);
        return true;
      });
    } finally {
      await own.end();
      await fresh.drop();
    }
  });

  it('rolls a failing migration back and names it', async () => {
    const dir = await sqlDir({ '001_ok.sql': 'CREATE TABLE ok (id int);', '002_bad.sql': 'CREATE TABLE half (id int); SELECT * FROM missing_table;' });
    dirs.push(dir);
    const fresh = await createTestDatabase('migrate_fail');
    const own = new pg.Pool({ connectionString: fresh.url, max: 1 });
    try {
      await assert.rejects(migrate(own, quiet, dir), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'CM_ERR_MIGRATION_FAILED');
        assert.match(error.message, /002_bad\.sql.*missing_table/);
        return true;
      });
      const half = await own.query(`SELECT to_regclass('half') AS t, to_regclass('ok') AS o`);
      assert.equal(half.rows[0]?.t, null, 'the failed file left nothing behind');
      assert.equal(half.rows[0]?.o, 'ok', 'the earlier file stays applied');
      const versions = await own.query('SELECT version FROM schema_migrations');
      assert.deepEqual(versions.rows, [{ version: 1 }]);
    } finally {
      await own.end();
      await fresh.drop();
    }
  });

  it('refuses badly named or clashing files, and unknown applied versions', async () => {
    const badName = await sqlDir({ '1_short.sql': 'SELECT 1;' });
    const clash = await sqlDir({ '001_a.sql': 'SELECT 1;', '001_b.sql': 'SELECT 1;' });
    dirs.push(badName, clash);
    await assert.rejects(readMigrations(badName), { code: 'CM_ERR_MIGRATION_NAME' });
    await assert.rejects(readMigrations(clash), { code: 'CM_ERR_MIGRATION_NAME' });
    const older = await sqlDir({});
    dirs.push(older);
    await assert.rejects(migrate(pool, quiet, older), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'CM_ERR_MIGRATION_NAME');
      assert.match(error.message, /migration 1 \(initial\)/);
      return true;
    });
  });
  it('keeps messages stored before 005 as legacy rows, and still knows their retries', async () => {
    const before = await shippedUpTo(4);
    const fresh = await createTestDatabase('migrate_005');
    const own = new pg.Pool({ connectionString: fresh.url, max: 2 });
    const [owner, sender] = ['a'.repeat(64), 'b'.repeat(64)];
    try {
      await migrate(own, quiet, before);
      await own.query(`INSERT INTO meshes (id, name, owner_key) VALUES ('mesh-005x', 'm', $1)`, [owner]);
      const member = await own.query(`INSERT INTO members (mesh_id, key, name, role) VALUES ('mesh-005x', $1, 'bob', 'member') RETURNING id`, [sender]);
      const legacyId = '11111111-2222-4333-8444-555555555555';
      await own.query(`INSERT INTO messages (id, mesh_id, sender_member_id, sender_key, sender_member_key, client_message_id, fingerprint, target, priority, expires_at)
        VALUES ($1, 'mesh-005x', $2, $3, $3, 'cm-1', 'fp-1', $4, 'now', now() + interval '1 day')`, [legacyId, member.rows[0]?.id, sender, owner]);
      await own.query(`INSERT INTO deliveries (message_id, mesh_id, recipient_key, priority, nonce, ciphertext, expires_at)
        VALUES ($1, 'mesh-005x', $2, 'now', '\\x00', '\\x01', now() + interval '1 day')`, [legacyId, owner]);

      assert.deepEqual((await migrate(own, quiet)).applied, ['005_one_row_per_recipient.sql', '006_deliveries_fillfactor.sql', '007_deliveries_statistics.sql', '008_one_unique_index.sql', '009_deliveries_fewer_statistics.sql']);
      const options = await own.query(`SELECT reloptions FROM pg_class WHERE relname = 'deliveries'`);
      assert.deepEqual(options.rows[0]?.reloptions, ['fillfactor=80'], 'pages keep room for the ack to update a row in place');
      const unanalyzed = await own.query(`SELECT attname FROM pg_attribute WHERE attrelid = 'deliveries'::regclass AND attstattarget = 0 ORDER BY attname`);
      assert.deepEqual(
        unanalyzed.rows.map((row) => row.attname),
        ['ciphertext', 'claimed_by', 'client_message_id', 'delivered_at', 'expired_at', 'fingerprint', 'hops', 'nonce', 'pushes', 'read_at', 'sender_key', 'sender_member_key', 'slot', 'surfaced_at', 'target'],
        'ANALYZE skips what no plan needs',
      );
      const { rows } = await own.query('SELECT message_id, sender_key, client_message_id, fingerprint, target, legacy FROM deliveries');
      assert.deepEqual(rows, [{ message_id: legacyId, sender_key: sender, client_message_id: 'cm-1', fingerprint: 'fp-1', target: owner, legacy: true }]);

      // A retry of cm-1 after the upgrade derives a new id: the legacy row is found by client id.
      assert.equal((await query(own, 'legacy_rows', [])).rows[0]?.found, true);
      const found = await query(own, 'existing_messages', [[messageIdOf('mesh-005x', sender, 'cm-1')], ['mesh-005x'], [sender], ['cm-1']]);
      assert.deepEqual(found.rows.map((row) => [row.id, row.fingerprint, row.recipients]), [[legacyId, 'fp-1', 1]]);
    } finally {
      await own.end();
      await fresh.drop();
    }
  });

  it('keeps rows stored before 008 under one key, which still turns away a retry with other recipients', async () => {
    const before = await shippedUpTo(7);
    const fresh = await createTestDatabase('migrate_008');
    const own = new pg.Pool({ connectionString: fresh.url, max: 2 });
    const [sender, bob, carol] = ['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64)];
    const [direct, wide] = ['11111111-2222-4333-8444-000000000001', '11111111-2222-4333-8444-000000000002'];
    const row = (id: string, recipient: string, first: boolean) => own.query(`INSERT INTO deliveries (message_id, mesh_id, sender_key, sender_member_key, client_message_id, fingerprint, target, priority, hops,
        recipient_key, nonce, ciphertext, first_row, expires_at) VALUES ($1::uuid, 'mesh-008x', $2, $2, $1::text, 'fp', '*', 'now', 0, $3, '\\x00', '\\x01', $4, now() + interval '1 day')
        ON CONFLICT DO NOTHING`, [id, sender, recipient, first]);
    try {
      await migrate(own, quiet, before);
      await row(direct, bob, true);
      await row(wide, bob, true);
      await row(wide, carol, false);
      assert.deepEqual((await migrate(own, quiet)).applied, ['008_one_unique_index.sql', '009_deliveries_fewer_statistics.sql']);
      const keys = await own.query(`SELECT message_id, recipient_key, slot FROM deliveries ORDER BY message_id, slot`);
      assert.deepEqual(keys.rows, [
        { message_id: direct, recipient_key: bob, slot: '' },
        { message_id: wide, recipient_key: bob, slot: '' },
        { message_id: wide, recipient_key: carol, slot: carol },
      ]);
      const indexes = (await own.query(`SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'deliveries' AND indexdef LIKE 'CREATE UNIQUE%'`)).rows;
      assert.deepEqual(indexes.map((index) => index.indexname), ['deliveries_pkey'], 'one unique b-tree');
      assert.match(String(indexes[0]?.indexdef), /\(message_id, slot\)/);
      // A retry of the direct message to carol: its first row meets the stored one.
      assert.equal((await row(direct, carol, true)).rowCount, 0);
      // A retry of the wide message: each of its rows meets its stored twin.
      assert.equal((await row(wide, carol, true)).rowCount, 0);
      assert.equal((await row(wide, carol, false)).rowCount, 0);
    } finally {
      await own.end();
      await fresh.drop();
    }
  });
});
