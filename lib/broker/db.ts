// Everything the broker knows about its Postgres (the embedded cluster, used when
// DATABASE_URL is unset, is lib/embedded-pg.ts): migrations, the pool and its health, the
// named queries with their row types, and the one way to hold a client (withClient /
// transaction). A transient database failure never ends the process: /health turns 503 and
// the pool reconnects by itself.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { cmError, isCmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Kind, Priority, Role, Status } from '../protocol.ts';

const POOL_MAX = 8;
const CONNECT_TIMEOUT_MS = 2_000;
const PING_TIMEOUT_MS = 2_000;
const STATEMENT_TIMEOUT_MS = 5_000;
const MONITOR_INTERVAL_MS = 2_000;
const MIGRATIONS_DIR = new URL('../../sql/', import.meta.url).pathname;
const QUERIES_FILE = new URL('../../sql/queries/broker.sql', import.meta.url);
const MIGRATION_FILE = /^(\d{3})_([a-z0-9_]+)\.sql$/;
export const ADVISORY_LOCK_KEY = 0x636d657368; // "cmesh": shared by every claudemesh broker
// While another broker migrates, ours asks for the lock this often rather than blocking on it,
// so that a stop signal meanwhile is not held up by a session waiting in Postgres.
const MIGRATION_LOCK_POLL_MS = 200;

// ---- named queries: the row type each returns; the SQL lives in sql/queries/broker.sql ----

const rows = <T>(): T => undefined as T;
const QUERY_ROWS = {
  members_for_hello: rows<{ n: number; id: string; name: string; role: Role; left: boolean; banned: boolean; mesh_name: string; elsewhere: number; member_elsewhere: number }>(),
  names_in_use: rows<{ n: number }>(),
  presence_connect: rows<{ mesh_id: string; key: string; fresh: boolean; connected_elsewhere: string | null }>(),
  presence_disconnect: rows<never>(),
  presence_gone: rows<never>(),
  presence_orphan_instance: rows<never>(),
  presence_expire_orphans: rows<{ mesh_id: string; key: string; name: string; kind: Kind; member_key: string; role: Role; current: boolean }>(),
  roster_members: rows<{ id: string; key: string; name: string; role: Role }>(),
  roster_presences: rows<{
    key: string; kind: Kind; member_id: string; name: string; status: Status; status_source: 'hook' | 'manual' | 'inferred'; summary: string;
    groups: string[]; connected_at: Date; online: boolean;
  }>(),
  set_status: rows<{ status: Status }>(),
  status_ttl_sweep: rows<{ mesh_id: string; key: string }>(),
  set_summary: rows<never>(),
  join_group: rows<{ groups: string[] }>(),
  leave_group: rows<{ groups: string[] }>(),
  insert_deliveries: rows<{ message_id: string | null; recipient_key: string; queued_at: Date }>(),
  delete_deliveries: rows<never>(),
  legacy_rows: rows<{ found: boolean }>(),
  existing_messages: rows<{ id: string; mesh_id: string; sender_key: string; client_message_id: string; fingerprint: string; recipients: number }>(),
  claim_queued: rows<{
    id: string; message_id: string; priority: Priority; nonce: Buffer; ciphertext: Buffer; sender_key: string; sender_member_key: string;
    created_at: Date; client_message_id: string; hops: number; target: string;
  }>(),
  keys_with_queued: rows<{ mesh_id: string; key: string }>(),
  release_claims: rows<never>(),
  ack_deliveries: rows<never>(),
  commit_without_flush: rows<never>(),
  mark_deliveries: rows<never>(),
  message_status: rows<{
    id: string; target: string; priority: Priority; created_at: Date; expires_at: Date; client_message_id: string; recipient_key: string;
    state: 'queued' | 'delivered' | 'surfaced' | 'read' | 'expired'; queued_at: Date; delivered_at: Date | null; surfaced_at: Date | null;
    read_at: Date | null; expired_at: Date | null; pushes: number;
  }>(),
  pending_recipients: rows<{ mesh_id: string; recipient_key: string; urgent: boolean }>(),
  expire_deliveries: rows<never>(),
  purge_messages: rows<never>(),
  purge_presences: rows<never>(),
  queue_depth: rows<{ depth: string }>(),
  current_member: rows<{ id: string; name: string; role: Role; key: string; mesh_name: string; owner_key: string }>(),
  mesh_insert: rows<never>(),
  owner_insert: rows<never>(),
  invite_insert: rows<never>(),
  invite_by_id: rows<{ mesh_id: string; signature: string }>(),
  invite_revoke: rows<{ revoked_at: Date }>(),
  mesh_lock: rows<{ name: string; owner_key: string }>(),
  invite_lock: rows<{ signature: string; role: Role; expires_at: Date; revoked_at: Date | null; inviter_key: string; inviter_role: Role; inviter_current: boolean }>(),
  member_by_key: rows<{ id: string; name: string; key: string; role: Role; left_at: Date | null; banned_at: Date | null; invite_id: string | null }>(),
  name_taken: rows<{ taken: number }>(),
  invite_use: rows<{ uses: number }>(),
  member_insert: rows<never>(),
  member_readmit: rows<never>(),
  members_current: rows<{ name: string; key: string; role: Role; joined_at: Date }>(),
  member_leave: rows<never>(),
  member_ban: rows<never>(),
  member_unban: rows<never>(),
  bans: rows<{ name: string; key: string; role: Role; banned_at: Date; banned_by_name: string | null }>(),
  replay_first_use: rows<{ first: number }>(),
  instance_beat: rows<never>(),
  instance_gone: rows<never>(),
  release_instance_claims: rows<never>(),
  notify: rows<never>(),
  analyze_deliveries: rows<never>(),
  reap_instances: rows<{ instances: number; claims: number; presences: number }>(),
};
type QueryName = keyof typeof QUERY_ROWS;
export type Row<N extends QueryName> = (typeof QUERY_ROWS)[N];
type Queryable = pg.Pool | pg.PoolClient;

/** Blocks of a queries file: "-- name: <name>" then SQL; comment lines are dropped. */
export function parseQueries(text: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const block of text.split(/^-- name: /m).slice(1)) {
    const [name = '', ...lines] = block.split('\n');
    found.set(name.trim(), lines.filter((line) => !line.trimStart().startsWith('--')).join('\n').trim().replace(/;$/, ''));
  }
  return found;
}

/** Every query the code names, from a queries file's text; anything missing or extra throws. */
export function loadQueries(text: string): ReadonlyMap<string, string> {
  const found = parseQueries(text);
  for (const name of Object.keys(QUERY_ROWS)) {
    if (!found.get(name)) throw cmError('CM_ERR_QUERY_MISSING', `sql/queries/broker.sql has no query named "${name}"`, { hint: `restore the block "-- name: ${name}"` });
  }
  for (const name of found.keys()) {
    if (!Object.hasOwn(QUERY_ROWS, name)) throw cmError('CM_ERR_QUERY_MISSING', `sql/queries/broker.sql has a query "${name}" that no code uses`, { hint: 'remove it, or give it a row type in lib/broker/db.ts' });
  }
  return found;
}

// Read at import: a broker whose queries are broken must not start at all.
const SQL = loadQueries(readFileSync(QUERIES_FILE, 'utf8'));

/** Run a named query (prepared once per connection under a stable name), typed by its rows. */
export async function query<N extends QueryName>(db: Queryable, name: N, values: unknown[]): Promise<pg.QueryResult<Row<N> & pg.QueryResultRow>> {
  return db.query<Row<N> & pg.QueryResultRow>({ name: `cm_${name}`, text: SQL.get(name) ?? '', values, types: sameTimes() });
}

// An element that needs no quotes in an array literal: no braces, commas, quotes,
// backslashes or blanks, and not the word NULL.
const BARE_ELEMENT = /^[A-Za-z0-9_\-@*/.:+=]+$/;

/**
 * A Postgres array literal for a text-typed array parameter (`$1::text[]`, `::uuid[]`,
 * `::int[]`…). pg's own encoder quotes and escapes every element with two regular
 * expressions; the hot insert passes hundreds of thousands of keys, ids and base64 strings
 * that need none of it, so only the elements that do are quoted.
 */
export function arrayLiteral(values: ReadonlyArray<string | number | boolean>, checked = false): string {
  // Values whose shape lib/protocol.ts has already checked (hex keys, uuids, base64, mesh ids,
  // targets, numbers and booleans: see BARE_ELEMENT) need no look at all.
  if (checked) return `{${values.join(',')}}`;
  let out = '{';
  for (let index = 0; index < values.length; index += 1) {
    const value = values[index];
    const text = String(value);
    if (index > 0) out += ',';
    out += typeof value !== 'string' || (BARE_ELEMENT.test(text) && text.toUpperCase() !== 'NULL') ? text : `"${text.replace(/[\\"]/g, '\\$&')}"`;
  }
  return `${out}}`;
}

/**
 * Type parsers for one statement: a timestamp text equal to the one before is not parsed
 * again, and its rows share one Date (nothing here changes a Date in place). An insert's
 * `now()` is the same for every row of its transaction, so the hot insert parses one time per
 * batch, not one per row (pg's date parsing was a measurable part of a burst,
 * docs/benchmarks.md); elsewhere it costs one comparison per timestamp.
 */
function sameTimes(): pg.CustomTypesConfig {
  let last: { text: string; date: Date } | undefined;
  const parseTime = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ, 'text');
  return {
    getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
      if (oid !== pg.types.builtins.TIMESTAMPTZ || format === 'binary') return pg.types.getTypeParser(oid, format);
      return (text: string) => {
        if (last?.text !== text) last = { text, date: parseTime(text) as Date };
        return last.date;
      };
    }) as pg.CustomTypesConfig['getTypeParser'],
  };
}

// ---- holding a client ---------------------------------------------------------------------

/**
 * Run `work` on one checked-out client. While a client is out of the pool, pg-pool takes
 * its own 'error' listener off it, so a backend that dies between two queries (Postgres
 * restarting, `pg_terminate_backend`, a reset socket) would emit an unhandled 'error' and
 * end the process. Ours stays on until the client is back in the pool; a client that saw
 * an error, whose work failed, or that `discard` marks is destroyed, never pooled again.
 */
export async function withClient<T>(pool: pg.Pool, work: (client: pg.PoolClient, discard: () => void) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: unknown;
  const onError = (error: unknown): void => {
    broken ??= error;
  };
  client.on('error', onError);
  let failed = true;
  try {
    const result = await work(client, () => onError(new Error('discarded by its user')));
    failed = false;
    return result;
  } finally {
    // release() puts pg-pool's listener back before anything else, so ours can go after.
    client.release(failed || broken !== undefined ? true : undefined);
    client.off('error', onError);
  }
}

/** Run `work` in one transaction: COMMIT on success; any throw rolls back and is rethrown. */
export function transaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query('BEGIN');
    try {
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  });
}

/**
 * The error a client sees for a failure that is not one of ours: the database being away is
 * CM_ERR_DB_UNAVAILABLE (retry), anything else is a bug and says so (CM_ERR_INTERNAL).
 */
export function failureOf(error: unknown, what: string): CmError {
  if (isCmError(error)) return error;
  const code = (error as { code?: unknown } | null)?.code;
  // connection errors (E…), operator intervention and cancelled statements (57…: restart,
  // statement_timeout), connection exceptions (08…), resources (53…), lock timeouts (55P03)
  const fromDatabase = error instanceof pg.DatabaseError || (typeof code === 'string' && /^(E[A-Z]+|57\w{3}|08\w{3}|53\w{3}|55P03)$/.test(code))
    || /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/.test(String((error as Error | null)?.message));
  return fromDatabase
    ? cmError('CM_ERR_DB_UNAVAILABLE', `${what} could not be completed: the database did not answer; retry it`, { cause: error })
    : cmError('CM_ERR_INTERNAL', `${what} failed unexpectedly`, { cause: error });
}

/** Postgres unique_violation */
export function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '23505';
}

// ---- the pool and its health ------------------------------------------------------------

export interface Database {
  readonly pool: pg.Pool;
  /** last known health (updated by every ping) */
  readonly healthy: boolean;
  /** why the last failed ping failed (undefined once a ping succeeds) */
  readonly lastError: unknown;
  /** one `SELECT 1` with a timeout; concurrent callers share the ping in flight */
  ping(): Promise<boolean>;
  startMonitor(): void;
  close(): Promise<void>;
}

export function createDatabase(options: { url: string; log: Logger; statementTimeoutMs?: number; onHealthChange?: (healthy: boolean) => void; monitorIntervalMs?: number }): Database {
  const { log } = options;
  // Acknowledged means durable: no session of ours may run with synchronous_commit off. A
  // statement stuck behind a frozen database is cancelled and answered as retryable.
  const timeout = options.statementTimeoutMs ?? STATEMENT_TIMEOUT_MS;
  const pool = new pg.Pool({
    connectionString: options.url, max: POOL_MAX, connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    options: `-c synchronous_commit=on -c statement_timeout=${timeout} -c lock_timeout=${timeout}`,
  });
  pool.on('error', (error) => log.warn('db idle client error', { error }));
  let healthy = false;
  let known = false;
  let inFlight: Promise<boolean> | undefined;
  let monitor: NodeJS.Timeout | undefined;
  let closed = false;

  let lastError: unknown;
  function record(next: boolean, error?: unknown): boolean {
    lastError = error;
    if (!known || next !== healthy) {
      // A database that never answered yet is the start's to report (every retry line says why).
      if (next) log.info('db healthy');
      else if (known) log.error('db ping failed', { error });
      known = true;
      healthy = next;
      options.onHealthChange?.(next);
    }
    return next;
  }
  async function pingOnce(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS);
    });
    try {
      await Promise.race([pool.query('SELECT 1'), timeout]);
      return record(true);
    } catch (error) {
      return record(false, error);
    } finally {
      clearTimeout(timer);
    }
  }
  const database: Database = {
    pool,
    get healthy() {
      return healthy;
    },
    get lastError() {
      return lastError;
    },
    ping() {
      if (closed) return Promise.resolve(false);
      inFlight ??= pingOnce().finally(() => {
        inFlight = undefined;
      });
      return inFlight;
    },
    startMonitor() {
      if (monitor !== undefined || closed) return;
      void database.ping();
      monitor = setInterval(() => void database.ping(), options.monitorIntervalMs ?? MONITOR_INTERVAL_MS);
      monitor.unref();
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(monitor);
      await inFlight?.catch(() => undefined);
      await pool.end();
    },
  };
  return database;
}

// ---- migrations ---------------------------------------------------------------------------

interface Migration { version: number; name: string; file: string; sql: string; checksum: string }

export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const migrations: Migration[] = [];
  const seen = new Map<number, string>();
  for (const file of (await readdir(dir)).filter((entry) => entry.endsWith('.sql')).sort()) {
    const match = MIGRATION_FILE.exec(file);
    if (match === null) throw cmError('CM_ERR_MIGRATION_NAME', `migration file name "${file}" in ${dir} does not match NNN_description.sql`);
    const version = Number(match[1]);
    const clash = seen.get(version);
    if (clash !== undefined) throw cmError('CM_ERR_MIGRATION_NAME', `migrations "${clash}" and "${file}" share the number ${match[1]}`);
    seen.set(version, file);
    const sql = await readFile(join(dir, file), 'utf8');
    migrations.push({ version, name: match[2] ?? '', file, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return migrations;
}

/**
 * Apply every pending migration, each in its own transaction, under an advisory lock so
 * that brokers starting together never race. An applied file whose checksum changed stops
 * the start: the database would no longer be what the source says it is.
 */
export async function migrate(pool: pg.Pool, log: Logger, dir: string = MIGRATIONS_DIR, stop?: AbortSignal): Promise<{ applied: string[]; alreadyApplied: number }> {
  const migrations = await readMigrations(dir);
  return withClient(pool, async (client, discard) => {
    // A migration may take long, and so may waiting for another broker's: no timeouts on
    // this session, which is therefore never pooled again.
    discard();
    await client.query('SET statement_timeout = 0; SET lock_timeout = 0');
    while ((await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [ADVISORY_LOCK_KEY])).rows[0]?.locked !== true) {
      await sleep(MIGRATION_LOCK_POLL_MS, undefined, { signal: stop });
    }
    try {
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      const { rows: applied } = await client.query<{ version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM schema_migrations ORDER BY version');
      const known = new Map(migrations.map((migration) => [migration.version, migration]));
      for (const row of applied) {
        const migration = known.get(row.version);
        if (migration === undefined) {
          throw cmError('CM_ERR_MIGRATION_NAME', `the database has migration ${row.version} (${row.name}) that ${dir} does not have`, { hint: 'this broker is older than the database schema: run the newer broker version' });
        }
        if (migration.checksum !== row.checksum) {
          throw cmError('CM_ERR_MIGRATION_CHECKSUM', `applied migration ${migration.file} has changed: recorded sha256 ${row.checksum.slice(0, 12)}…, file now ${migration.checksum.slice(0, 12)}…`);
        }
      }
      const done: string[] = [];
      for (const migration of migrations.filter((entry) => !applied.some((row) => row.version === entry.version))) {
        try {
          await client.query('BEGIN');
          await client.query(migration.sql);
          await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [migration.version, migration.name, migration.checksum]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw cmError('CM_ERR_MIGRATION_FAILED', `migration ${migration.file} failed: ${(error as Error).message}`, { cause: error });
        }
        log.info('migration applied', { file: migration.file });
        done.push(migration.file);
      }
      return { applied: done, alreadyApplied: applied.length };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [ADVISORY_LOCK_KEY]).catch(() => undefined);
    }
  });
}
