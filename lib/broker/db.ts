// The broker's Postgres pool and its health. A transient database failure never ends the
// process: idle-client errors are logged, /health turns 503, and the pool reconnects by
// itself once Postgres answers again (pg discards broken clients and opens new ones).

import pg from 'pg';
import type { Logger } from '../log.ts';

export const POOL_MAX = 8;
const CONNECT_TIMEOUT_MS = 2_000;
const PING_TIMEOUT_MS = 2_000;
export const DB_MONITOR_INTERVAL_MS = 2_000;

/**
 * Run `work` on one checked-out client. While a client is out of the pool, pg-pool takes
 * its own 'error' listener off it, so a backend that dies between two queries (Postgres
 * restarting, `pg_terminate_backend`, a reset socket) would emit an unhandled 'error' and
 * end the process. Ours stays on until the client is back in the pool; a client that saw
 * an error or whose work failed is destroyed, never pooled again.
 */
export async function withClient<T>(pool: pg.Pool, work: (client: pg.PoolClient, discard: () => void) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: unknown;
  const onError = (error: unknown): void => {
    broken ??= error;
  };
  const discard = (): void => onError(new Error('discarded by its user'));
  client.on('error', onError);
  let failed = true;
  try {
    const result = await work(client, discard);
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

export interface DatabaseOptions {
  url: string;
  log: Logger;
  onHealthChange?: (healthy: boolean) => void;
  monitorIntervalMs?: number;
}

export interface Database {
  readonly pool: pg.Pool;
  /** last known health (updated by every ping) */
  readonly healthy: boolean;
  /** one `SELECT 1` with a timeout; concurrent callers share the ping in flight */
  ping(): Promise<boolean>;
  startMonitor(): void;
  close(): Promise<void>;
}

export function createDatabase(options: DatabaseOptions): Database {
  const { log } = options;
  const pool = new pg.Pool({
    connectionString: options.url,
    max: POOL_MAX,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    // Acknowledged means durable: never let a session be configured otherwise (DESIGN §5).
    options: '-c synchronous_commit=on',
  });
  // Without a listener, an idle client's error (e.g. Postgres restarting) would crash us.
  pool.on('error', (error) => log.warn('db idle client error', { error }));

  let healthy = false;
  let known = false;
  let inFlight: Promise<boolean> | undefined;
  let monitor: NodeJS.Timeout | undefined;
  let closed = false;

  function record(next: boolean, error?: unknown): void {
    if (known && next === healthy) return;
    known = true;
    healthy = next;
    if (next) log.info('db healthy');
    else log.error('db ping failed', { error });
    options.onHealthChange?.(next);
  }

  async function pingOnce(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS);
    });
    try {
      await Promise.race([pool.query('SELECT 1'), timeout]);
      record(true);
      return true;
    } catch (error) {
      record(false, error);
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    pool,
    get healthy() {
      return healthy;
    },
    ping() {
      if (closed) return Promise.resolve(false);
      if (inFlight === undefined) {
        inFlight = pingOnce().finally(() => {
          inFlight = undefined;
        });
      }
      return inFlight;
    },
    startMonitor() {
      if (monitor !== undefined || closed) return;
      void this.ping();
      monitor = setInterval(() => void this.ping(), options.monitorIntervalMs ?? DB_MONITOR_INTERVAL_MS);
      monitor.unref();
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(monitor);
      await inFlight?.catch(() => {});
      await pool.end();
    },
  };
}
