// The claudemesh broker: config → port → database → migrations → HTTP + WebSocket → signals.
// Run: `node broker.ts` (Node ≥ 22.18), or `npm start`; `node broker.ts doctor|validate`
// checks without starting (lib/broker-doctor.ts). Imported (by tests and benchmarks),
// it only defines createBroker, the composition root: the one place where the parts are
// made and given the context they share. How the parts fit: docs/architecture.md.

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type pg from 'pg';
import type { WebSocket } from 'ws';
import { diagnoseDb, LISTEN_BACKLOG, openGate } from './lib/broker-start.ts';
import type { StartGate } from './lib/broker-start.ts';
import { embeddedPostgres } from './lib/embedded-pg.ts';
import type { EmbeddedPostgres } from './lib/embedded-pg.ts';
import { cmError, isCmError } from './lib/errors.ts';
import { createLogger } from './lib/log.ts';
import type { Logger } from './lib/log.ts';
import { CLOSES } from './lib/protocol.ts';
import { resolveGitSha, VERSION } from './lib/version.ts';
import { loadConfig, redactUrl } from './lib/broker/config.ts';
import type { BrokerConfig } from './lib/broker/config.ts';
import { createUpgrade, HELLO_TIMEOUT_MS, serveConnection, unsentBytes } from './lib/broker/connection.ts';
import { createDatabase, migrate, query } from './lib/broker/db.ts';
import type { Database } from './lib/broker/db.ts';
import { CLAIM_MS, Delivery, REDELIVERY_TICK_MS, SWEEP_INTERVAL_MS } from './lib/broker/delivery.ts';
import { createHttpHandler, hookRoute } from './lib/broker/http.ts';
import type { HealthReport } from './lib/broker/http.ts';
import { Hub, LEASE_MS, PING_INTERVAL_MS, PONG_TIMEOUT_MS } from './lib/broker/hub.ts';
import { membershipRoutes } from './lib/broker/membership.ts';
import { createBrokerMetrics } from './lib/broker/metrics.ts';
import type { BrokerMetrics } from './lib/broker/metrics.ts';
import { INSTANCE_BEAT_MS, Presence, TTL_SWEEP_INTERVAL_MS } from './lib/broker/presence.ts';
import { SEND_GATHER_MS, Sender } from './lib/broker/send.ts';

const SHUTDOWN_TIMEOUT_MS = 4_000;
const SHUTDOWN_HARD_LIMIT_MS = SHUTDOWN_TIMEOUT_MS + 1_000;
const QUEUE_DEPTH_INTERVAL_MS = 5_000;
const CLOSE_BATCH_SIZE = 200;
const CLOSE_BATCH_JITTER_MS = 25;
// How long a socket gets to answer our close frame before it is terminated.
const CLOSE_HANDSHAKE_MS = 1_000;
const DB_WAIT_BACKOFF_MS = [250, 500, 1_000, 2_000, 5_000] as const;
const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_BAD_CONFIG = 2;

/** Every timer of the broker, injectable so that tests run in milliseconds. */
const DEFAULT_TIMINGS = {
  helloTimeoutMs: HELLO_TIMEOUT_MS,
  leaseMs: LEASE_MS,
  pingIntervalMs: PING_INTERVAL_MS,
  pongTimeoutMs: PONG_TIMEOUT_MS,
  claimMs: CLAIM_MS,
  redeliveryTickMs: REDELIVERY_TICK_MS,
  sweepIntervalMs: SWEEP_INTERVAL_MS,
  ttlSweepIntervalMs: TTL_SWEEP_INTERVAL_MS,
  queueDepthIntervalMs: QUEUE_DEPTH_INTERVAL_MS,
  instanceBeatMs: INSTANCE_BEAT_MS,
  sendGatherMs: SEND_GATHER_MS,
};
export type Timings = typeof DEFAULT_TIMINGS;

/** What every part of the broker is given: plain properties, made once in createBroker. */
export interface Context {
  readonly config: BrokerConfig;
  readonly log: Logger;
  readonly pool: pg.Pool;
  readonly metrics: BrokerMetrics;
  readonly instanceId: string;
  readonly now: () => number;
  readonly timings: Timings;
  readonly hub: Hub;
  readonly presence: Presence;
  readonly delivery: Delivery;
  readonly sender: Sender;
}

export interface Broker {
  readonly context: Context;
  listen(): Promise<AddressInfo>;
  /** Stop accepting, close sockets 1012, release presences, end the pool. Safe to call twice. */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

interface BrokerOptions {
  config: BrokerConfig;
  db: Database;
  log: Logger;
  version: string;
  gitSha: string;
  instanceId?: string;
  now?: () => number;
  timings?: Partial<Timings>;
  /** a server already bound (the process binds its port first); listen() serves on it once ready */
  server?: Server;
}

/** Wait for `work`, but never past `deadline`; a late or failed step does not block shutdown. */
async function until<T>(work: Promise<T>, deadline: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([work.catch(() => undefined), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Close every socket 1012 (service restart) in jittered batches — a thousand clients told to go at one instant
 * would all reconnect (to the next instance) at one instant — then terminate the slow ones. */
async function closeSockets(sockets: Set<WebSocket>, deadline: number): Promise<void> {
  const all = [...sockets];
  const closed = Promise.all(all.map((socket) => new Promise((resolve) => socket.once('close', resolve))));
  for (let start = 0; start < all.length; start += CLOSE_BATCH_SIZE) {
    for (const socket of all.slice(start, start + CLOSE_BATCH_SIZE)) socket.close(CLOSES.restart.code, CLOSES.restart.reason);
    if (start + CLOSE_BATCH_SIZE < all.length) await new Promise((resolve) => setTimeout(resolve, Math.random() * CLOSE_BATCH_JITTER_MS));
  }
  await until(closed, Math.min(deadline, Date.now() + CLOSE_HANDSHAKE_MS));
  for (const socket of sockets) socket.terminate();
}

/** Make every part once, in order; each gets the same context and uses the others at call time. */
function createContext(options: BrokerOptions, sockets: ReadonlySet<WebSocket>): Context {
  const { db } = options;
  const now = options.now ?? Date.now;
  // The object is complete before any socket or timer uses it.
  const ctx = {
    config: options.config, log: options.log, pool: db.pool, now, instanceId: options.instanceId ?? randomUUID(),
    timings: { ...DEFAULT_TIMINGS, ...options.timings },
    metrics: createBrokerMetrics({ liveConnections: () => sockets.size, unsent: () => unsentBytes(sockets), dbHealthy: () => db.healthy }),
  } as { -readonly [K in keyof Context]: Context[K] };
  ctx.hub = new Hub(ctx);
  ctx.presence = new Presence(ctx);
  ctx.delivery = new Delivery(ctx);
  ctx.sender = new Sender(ctx);
  return ctx;
}

export function createBroker(options: BrokerOptions): Broker {
  const { config, db, log } = options;
  const sockets = new Set<WebSocket>();
  const startedAt = Date.now();
  let draining = false;
  let closing: Promise<void> | undefined;
  const ctx = createContext(options, sockets);

  async function health(): Promise<HealthReport> {
    const up = await db.ping();
    return { status: draining ? 'draining' : up ? 'ok' : 'degraded', db: up ? 'up' : 'down', version: options.version, gitSha: options.gitSha, uptime: Math.round((Date.now() - startedAt) / 1000) };
  }
  const httpServer = options.server ?? createServer();
  const handleRequest = createHttpHandler({ log, metrics: ctx.metrics, health, routes: [hookRoute(ctx), ...membershipRoutes(ctx)] });
  // A malformed request line or oversized headers answer 400 and never throw.
  const handleClientError = (_error: Error, socket: Duplex): void => void (socket.writable ? socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n') : socket.destroy());
  const upgrade = createUpgrade(ctx, () => draining, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // `ws` reports protocol violations (oversized or malformed frames) here and closes the
    // socket itself with 1009/1002; we only keep the process alive.
    socket.on('error', (error) => log.debug('socket error', { error }));
    serveConnection(ctx, socket);
  });
  db.startMonitor();
  const queueDepthTimer = setInterval(() => {
    if (!db.healthy) return;
    query(db.pool, 'queue_depth', []).then((result) => ctx.metrics.queueDepth.set(Number(result.rows[0]?.depth ?? 0)), (error: unknown) => log.debug('queue depth query failed', { error }));
  }, ctx.timings.queueDepthIntervalMs);
  queueDepthTimer.unref();

  async function shutdown(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    draining = true;
    clearInterval(queueDepthTimer);
    log.info('shutdown started', { connections: sockets.size, instanceId: ctx.instanceId });
    const httpClosed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
    httpServer.closeIdleConnections();
    await closeSockets(sockets, deadline);
    ctx.hub.close();
    ctx.presence.close();
    await until(ctx.delivery.close(), deadline);
    const released = await until(ctx.presence.leaveInstance().catch((error: unknown) => {
      log.warn('could not release presences at shutdown', { error });
      return 0;
    }), deadline);
    httpServer.closeAllConnections();
    await until(httpClosed, deadline);
    await until(db.close(), deadline);
    upgrade.wss.close();
    ctx.metrics.stop();
    log.info('broker closed', { presencesReleased: released ?? 0 });
  }

  return {
    context: ctx,
    async listen() {
      await ctx.presence.startInstance();
      await ctx.hub.listen();
      // Served from here on; a server the process bound earlier answered "starting" until now.
      httpServer.on('request', handleRequest).on('clientError', handleClientError).on('upgrade', upgrade.handle);
      return new Promise((resolve, reject) => {
        if (httpServer.listening) return resolve(httpServer.address() as AddressInfo);
        httpServer.once('error', reject);
        httpServer.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG }, () => {
          httpServer.off('error', reject);
          resolve(httpServer.address() as AddressInfo);
        });
      });
    },
    close(closeOptions = {}) {
      closing ??= shutdown(closeOptions.timeoutMs ?? SHUTDOWN_TIMEOUT_MS);
      return closing;
    },
  };
}

// ---- the process ----------------------------------------------------------------------------

interface ProcessState { gate?: StartGate; embedded?: EmbeddedPostgres; db?: Database; broker?: Broker; stopped: AbortController }

/**
 * Wait until the database answers, retrying with backoff: a slow or restarting Postgres is
 * not fatal, and every retry line says why it failed and what to do. A database that
 * refuses us (wrong password, no such database or role) would refuse forever: that stops.
 */
async function waitForDatabase(db: Database, url: string, log: Logger, state: ProcessState): Promise<boolean> {
  for (let attempt = 0; !state.stopped.signal.aborted; attempt += 1) {
    if (await db.ping()) return true;
    const problem = diagnoseDb(db.lastError, url);
    state.gate?.waiting('waiting for the database', problem);
    if (problem.fatal) throw cmError('CM_ERR_DB_REJECTED', `the database refused the broker: ${problem.message} (${problem.code})`, { hint: problem.hint });
    const delay = DB_WAIT_BACKOFF_MS[Math.min(attempt, DB_WAIT_BACKOFF_MS.length - 1)] ?? 5_000;
    log.warn('waiting for database', { attempt: attempt + 1, retryInMs: delay, code: problem.code, error: problem.message, hint: problem.hint });
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  return false;
}

async function start(config: BrokerConfig, log: Logger, state: ProcessState): Promise<void> {
  const gitSha = resolveGitSha(config.gitSha);
  // The port first: a clash is told at once, and /health answers "starting" all along.
  state.gate = await openGate({ host: config.host, port: config.port, version: VERSION, gitSha, log });
  let url = config.databaseUrl;
  if (url === undefined) {
    state.gate.waiting('starting the embedded Postgres');
    const pgLog = log.child({ component: 'postgres' });
    state.embedded = await embeddedPostgres({
      baseDir: config.dataDir, port: config.embeddedPgPort, onLog: (line) => pgLog.debug(line), onNotice: (message) => log.warn(message),
      relocation: { dir: config.embeddedPgRelocateDir, cluster: !config.dataDirChosen },
    });
    await state.embedded.start();
    url = await state.embedded.brokerDatabaseUrl();
    log.info('embedded postgres', {
      dataDir: state.embedded.dataDir, port: state.embedded.port, ...(state.embedded.notes.length === 0 ? {} : { placement: state.embedded.notes }),
      hint: 'data lives in this directory; set DATABASE_URL=postgres://user:pass@host:5432/db to use your own Postgres instead',
    });
  }
  const db = createDatabase({ url, log, statementTimeoutMs: config.dbStatementTimeoutMs });
  state.db = db;
  state.gate.waiting('waiting for the database');
  if (!(await waitForDatabase(db, url, log, state))) return;
  state.gate.waiting('applying migrations');
  await migrate(db.pool, log, undefined, state.stopped.signal);
  // Stable per host and port: a broker killed and restarted in the same place is the same
  // instance and takes back at once what its former life held (port 0 means a fresh one).
  const instanceId = config.instanceId ?? (config.port === 0 ? undefined : `${hostname()}:${config.port}`);
  state.broker = createBroker({ config, db, log, version: VERSION, gitSha, server: state.gate.server, ...(instanceId === undefined ? {} : { instanceId }) });
  const address = await state.broker.listen();
  log.info('broker listening', {
    url: `http://${address.address}:${address.port}`, ws: `ws://${address.address}:${address.port}/ws`, version: VERSION, gitSha,
    instanceId: state.broker.context.instanceId, nodeEnv: config.nodeEnv,
    database: config.databaseUrl === undefined ? `embedded (${state.embedded?.dataDir})` : redactUrl(config.databaseUrl),
  });
}

async function main(): Promise<void> {
  const verb = process.argv[2];
  if (verb !== undefined) {
    const { runCommand } = await import('./lib/broker-doctor.ts');
    process.exit(await runCommand(process.argv.slice(2), process.env));
  }
  const result = loadConfig(process.env);
  if (!result.ok) {
    const log = createLogger();
    for (const problem of result.problems) log.error('config problem', { ...problem });
    log.error('config invalid', { code: 'CM_ERR_CONFIG_INVALID', problems: result.problems.length, hint: 'fix every variable listed above and start again' });
    process.exit(EXIT_BAD_CONFIG);
  }
  const { config } = result;
  const log = createLogger({ level: config.logLevel });
  const state: ProcessState = { stopped: new AbortController() };

  // After a failed start the `start failed` line is the last word: no shutdown chatter after it.
  async function stop(reason: string, code: number, quiet = false): Promise<void> {
    if (state.stopped.signal.aborted) return;
    state.stopped.abort();
    setTimeout(() => {
      log.error('shutdown timed out', { limitMs: SHUTDOWN_HARD_LIMIT_MS });
      process.exit(EXIT_FAILURE);
    }, SHUTDOWN_HARD_LIMIT_MS).unref();
    if (!quiet) log.info('shutdown signal', { reason });
    try {
      if (state.broker !== undefined) await state.broker.close();
      else {
        await state.gate?.close();
        await state.db?.close();
      }
      await state.embedded?.stop();
    } catch (error) {
      log.error('shutdown step failed', { error });
    }
    if (!quiet) log.info('shutdown complete', { exitCode: code });
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
    await start(config, log, state);
  } catch (error) {
    // A stop signal during the start closes what the start was using (the pool under a
    // migration, the embedded Postgres): what fails then is the stop at work, not the start.
    if (state.stopped.signal.aborted) return;
    if (isCmError(error)) log.error('start failed', { code: error.code, error: error.message, hint: error.hint });
    else log.error('start failed', { error });
    // A database that refuses the broker's credentials is a configuration to fix, like a bad variable.
    await stop('start failed', isCmError(error) && error.code === 'CM_ERR_DB_REJECTED' ? EXIT_BAD_CONFIG : EXIT_FAILURE, true);
  }
}

if (import.meta.main) await main();
