// Migrations: numbered files in sql/ (NNN_description.sql), applied in order at start,
// each in its own transaction, under a Postgres advisory lock so that two brokers starting
// on one database never race. Each applied file is recorded with its sha256; a changed
// file that was already applied stops the start — the database would no longer match
// what the source says it is.

import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { cmError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { withClient } from './db.ts';

export const MIGRATIONS_DIR = new URL('../../sql/', import.meta.url).pathname;
const MIGRATION_FILE = /^(\d{3})_([a-z0-9_]+)\.sql$/;
// Arbitrary constant shared by every claudemesh broker: "cmesh" in ASCII.
const ADVISORY_LOCK_KEY = 0x636d657368;

export interface Migration {
  version: number;
  name: string;
  file: string;
  sql: string;
  checksum: string;
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: number;
}

export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((file) => file.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  const seen = new Map<number, string>();
  for (const file of files) {
    const match = MIGRATION_FILE.exec(file);
    if (match === null) {
      throw cmError('CM_ERR_MIGRATION_NAME', `migration file name "${file}" in ${dir} does not match NNN_description.sql`);
    }
    const version = Number(match[1]);
    const clash = seen.get(version);
    if (clash !== undefined) {
      throw cmError('CM_ERR_MIGRATION_NAME', `migrations "${clash}" and "${file}" share the number ${match[1]}`);
    }
    seen.set(version, file);
    const sql = await readFile(join(dir, file), 'utf8');
    const checksum = createHash('sha256').update(sql).digest('hex');
    migrations.push({ version, name: match[2] ?? '', file, sql, checksum });
  }
  return migrations;
}

/** Apply every pending migration; safe to run concurrently from several processes. */
export async function migrate(pool: pg.Pool, log: Logger, dir: string = MIGRATIONS_DIR): Promise<MigrateResult> {
  const migrations = await readMigrations(dir);
  return withClient(pool, async (client, discard) => {
    try {
      await client.query('SELECT pg_advisory_lock($1)', [ADVISORY_LOCK_KEY]);
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
      const { rows } = await client.query<{ version: number; name: string; checksum: string }>(
        'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
      );
      const known = new Map(migrations.map((migration) => [migration.version, migration]));
      for (const row of rows) {
        const migration = known.get(row.version);
        if (migration === undefined) {
          throw cmError('CM_ERR_MIGRATION_NAME', `the database has migration ${row.version} (${row.name}) that ${dir} does not have`, {
            hint: 'this broker is older than the database schema: run the newer broker version',
          });
        }
        if (migration.checksum !== row.checksum) {
          throw cmError('CM_ERR_MIGRATION_CHECKSUM', `applied migration ${migration.file} has changed: recorded sha256 ${row.checksum.slice(0, 12)}…, file now ${migration.checksum.slice(0, 12)}…`);
        }
      }
      const applied = new Set(rows.map((row) => row.version));
      const done: string[] = [];
      for (const migration of migrations) {
        if (applied.has(migration.version)) continue;
        try {
          await client.query('BEGIN');
          await client.query(migration.sql);
          await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
            migration.version,
            migration.name,
            migration.checksum,
          ]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {});
          throw cmError('CM_ERR_MIGRATION_FAILED', `migration ${migration.file} failed: ${(error as Error).message}`, { cause: error });
        }
        log.info('migration applied', { file: migration.file });
        done.push(migration.file);
      }
      return { applied: done, alreadyApplied: rows.length };
    } finally {
      // If the unlock fails the session may still hold the lock: destroy it rather than pool it.
      await client.query('SELECT pg_advisory_unlock($1)', [ADVISORY_LOCK_KEY]).catch(discard);
    }
  });
}
