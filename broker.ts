// claudemesh broker entry: config → database → migrations → HTTP + WebSocket → signals.
// Run: `node broker.ts` (Node ≥ 22.18), or `npm start`.

import pg from 'pg';
import { loadConfig, redactUrl } from './lib/config.ts';
import type { BrokerConfig } from './lib/config.ts';
import { embeddedPostgres } from './lib/embedded-pg.ts';
import type { EmbeddedPostgresHandle } from './lib/embedded-pg.ts';
import { isCmError } from './lib/errors.ts';
import { createLogger } from './lib/log.ts';
import type { Logger } from './lib/log.ts';
import { createDatabase } from './lib/broker/db.ts';
import type { Database } from './lib/broker/db.ts';
import { migrate } from './lib/broker/migrate.ts';
import { createBroker, SHUTDOWN_TIMEOUT_MS } from './lib/broker/server.ts';
import type { Broker } from './lib/broker/server.ts';
import { resolveGitSha, VERSION } from './lib/version.ts';

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_BAD_CONFIG = 2;
const EMBEDDED_DATABASE = 'claudemesh';
// Hard bound on the whole shutdown, above the broker's own budget for its steps.
const SHUTDOWN_HARD_LIMIT_MS = SHUTDOWN_TIMEOUT_MS + 1_000;
const DB_WAIT_BACKOFF_MS = [250, 500, 1_000, 2_000, 5_000] as const;

let stopping = false;

async function openEmbedded(config: BrokerConfig, log: Logger): Promise<{ handle: EmbeddedPostgresHandle; url: string }> {
  const pgLog = log.child({ component: 'postgres' });
  const handle = await embeddedPostgres({ baseDir: config.dataDir, port: config.embeddedPgPort, onLog: (line) => pgLog.debug(line) });
  await handle.start();
  const admin = new pg.Client({ connectionString: handle.url });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [EMBEDDED_DATABASE]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${EMBEDDED_DATABASE}`);
  } finally {
    await admin.end();
  }
  const url = handle.url.replace(/\/postgres$/, `/${EMBEDDED_DATABASE}`);
  log.info('embedded postgres', {
    dataDir: handle.dataDir,
    port: handle.port,
    hint: 'data lives in this directory; set DATABASE_URL=postgres://user:pass@host:5432/db to use your own Postgres instead',
  });
  return { handle, url };
}

/** Wait until the database answers, retrying with backoff; a slow Postgres is not fatal. */
async function waitForDatabase(db: Database, log: Logger): Promise<boolean> {
  for (let attempt = 0; !stopping; attempt += 1) {
    if (await db.ping()) return true;
    const delay = DB_WAIT_BACKOFF_MS[Math.min(attempt, DB_WAIT_BACKOFF_MS.length - 1)] ?? 5_000;
    log.warn('waiting for database', { attempt: attempt + 1, retryInMs: delay });
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  return false;
}

async function main(): Promise<void> {
  const result = loadConfig(process.env);
  if (!result.ok) {
    const log = createLogger();
    for (const problem of result.problems) log.error('config problem', { ...problem });
    log.error('config invalid', { code: 'CM_ERR_CONFIG_INVALID', problems: result.problems.length, hint: 'fix every variable listed above and start again' });
    process.exit(EXIT_BAD_CONFIG);
  }
  const { config } = result;
  const log = createLogger({ level: config.logLevel });
  const gitSha = resolveGitSha(config.gitSha);

  let embedded: EmbeddedPostgresHandle | undefined;
  let db: Database | undefined;
  let broker: Broker | undefined;

  async function stop(reason: string, code: number): Promise<never> {
    if (stopping) return new Promise<never>(() => {});
    stopping = true;
    const hardLimit = setTimeout(() => {
      log.error('shutdown timed out', { limitMs: SHUTDOWN_HARD_LIMIT_MS });
      process.exit(EXIT_FAILURE);
    }, SHUTDOWN_HARD_LIMIT_MS);
    hardLimit.unref();
    log.info('shutdown signal', { reason });
    try {
      if (broker !== undefined) await broker.close();
      else await db?.close();
      await embedded?.stop();
    } catch (error) {
      log.error('shutdown step failed', { error });
    }
    log.info('shutdown complete', { exitCode: code });
    process.exit(code);
  }

  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void stop(signal, EXIT_OK));
  process.on('uncaughtException', (error) => {
    log.error('uncaught exception', { error: { message: error.message, stack: error.stack } });
    void stop('uncaughtException', EXIT_FAILURE);
  });
  process.on('unhandledRejection', (error) => {
    log.error('unhandled rejection', { error });
    void stop('unhandledRejection', EXIT_FAILURE);
  });

  try {
    let url = config.databaseUrl;
    if (url === undefined) {
      const opened = await openEmbedded(config, log);
      embedded = opened.handle;
      url = opened.url;
    }
    db = createDatabase({ url, log });
    if (!(await waitForDatabase(db, log))) return;
    await migrate(db.pool, log);
    broker = createBroker({ config, db, log, version: VERSION, gitSha });
    const address = await broker.listen();
    log.info('broker listening', {
      url: `http://${address.address}:${address.port}`,
      ws: `ws://${address.address}:${address.port}/ws`,
      version: VERSION,
      gitSha,
      instanceId: broker.instanceId,
      database: config.databaseUrl === undefined ? `embedded (${embedded?.dataDir})` : redactUrl(config.databaseUrl),
      nodeEnv: config.nodeEnv,
    });
  } catch (error) {
    if (isCmError(error)) log.error('start failed', { code: error.code, error: error.message, hint: error.hint });
    else log.error('start failed', { error });
    await stop('start failed', EXIT_FAILURE);
  }
}

await main();
