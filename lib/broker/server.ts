// The broker process minus its entry point: HTTP + WebSocket on one port, the database
// health monitor and sweepers, and a graceful, idempotent, bounded shutdown.

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WebSocket } from 'ws';
import type { BrokerConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { Database } from './db.ts';
import { ReplayGuard } from '../replay-guard.ts';
import { createHttpHandler } from './http.ts';
import type { HealthReport } from './http.ts';
import { createMembershipRoutes } from './membership.ts';
import { createBrokerMetrics } from './metrics.ts';
import type { BrokerMetrics } from './metrics.ts';
import { createRuntime } from './runtime.ts';
import type { Runtime, Timings } from './runtime.ts';
import { query } from './sql.ts';
import { createUpgradeHandler } from './upgrade.ts';

export const SHUTDOWN_TIMEOUT_MS = 4_000;
const QUEUE_DEPTH_INTERVAL_MS = 5_000;
const CLOSE_BATCH_SIZE = 200;
const CLOSE_BATCH_JITTER_MS = 25;
// How long a socket gets to answer our close frame before it is terminated.
const CLOSE_HANDSHAKE_MS = 1_000;
export const CLOSE_GOING_AWAY = 1001;


export interface BrokerOptions {
  config: BrokerConfig;
  db: Database;
  log: Logger;
  version: string;
  gitSha: string;
  instanceId?: string;
  now?: () => number;
  queueDepthIntervalMs?: number;
  timings?: Timings;
}

export interface Broker {
  readonly instanceId: string;
  readonly metrics: BrokerMetrics;
  /** the messaging core (hub, delivery, presence), for sweeps and inspection */
  readonly runtime: Runtime;
  listen(): Promise<AddressInfo>;
  /** Stop accepting, close sockets 1001, release presences, end the pool. Safe to call twice. */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/** Wait for `work`, but never past `deadline`; a late or failed step does not block shutdown. */
async function until<T>(work: Promise<T>, deadline: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function createBroker(options: BrokerOptions): Broker {
  const { config, db, log } = options;
  const instanceId = options.instanceId ?? randomUUID();
  const startedAt = Date.now();
  const sockets = new Set<WebSocket>();
  let draining = false;
  let closing: Promise<void> | undefined;

  const now = options.now ?? Date.now;
  const replay = new ReplayGuard({ now });
  const metrics = createBrokerMetrics({ liveConnections: () => sockets.size, dbHealthy: () => db.healthy });
  const runtime = createRuntime({
    pool: db.pool, log, config, metrics, replay, instanceId, now,
    ...(options.timings === undefined ? {} : { timings: options.timings }),
  });

  async function health(): Promise<HealthReport> {
    const up = await db.ping();
    const report: HealthReport = {
      status: draining ? 'draining' : up ? 'ok' : 'degraded',
      db: up ? 'up' : 'down',
      version: options.version,
      gitSha: options.gitSha,
      uptime: Math.round((Date.now() - startedAt) / 1000),
    };
    return report;
  }

  const httpServer = createServer(
    createHttpHandler({
      log,
      metrics,
      health,
      extraRoutes: [
        runtime.hookRoute,
        ...createMembershipRoutes({ pool: db.pool, log, config, replay, events: runtime.membershipEvents, now }),
      ],
    }),
  );
  // A client error (malformed request line, oversized headers) answers 400 and never throws.
  httpServer.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  const upgrade = createUpgradeHandler({
    maxPayload: config.maxMessageBytes,
    metrics,
    isDraining: () => draining,
    onConnection: (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      // `ws` reports protocol violations (oversized or malformed frames) here and closes
      // the socket itself with 1009/1002; we only keep the process alive.
      socket.on('error', (error) => log.debug('socket error', { error }));
      runtime.onConnection(socket);
    },
  });
  httpServer.on('upgrade', upgrade.handle);

  db.startMonitor();
  const queueDepthTimer = setInterval(() => {
    if (!db.healthy) return;
    db.pool
      .query<{ depth: string }>(query('queue_depth', []))
      .then((result) => metrics.queueDepth.set(Number(result.rows[0]?.depth ?? 0)))
      .catch((error: unknown) => log.debug('queue depth query failed', { error }));
  }, options.queueDepthIntervalMs ?? QUEUE_DEPTH_INTERVAL_MS);
  queueDepthTimer.unref();

  async function closeSockets(deadline: number): Promise<void> {
    const all = [...sockets];
    const closed = all.map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    // Jittered batches: a thousand clients told to go away at the same instant would all
    // reconnect (to the next instance) at the same instant.
    for (let start = 0; start < all.length; start += CLOSE_BATCH_SIZE) {
      for (const socket of all.slice(start, start + CLOSE_BATCH_SIZE)) socket.close(CLOSE_GOING_AWAY, 'server shutting down');
      if (start + CLOSE_BATCH_SIZE < all.length) await sleep(Math.random() * CLOSE_BATCH_JITTER_MS);
    }
    await until(Promise.all(closed), Math.min(deadline, Date.now() + CLOSE_HANDSHAKE_MS));
    for (const socket of sockets) socket.terminate();
  }

  async function shutdown(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    draining = true;
    clearInterval(queueDepthTimer);
    log.info('shutdown started', { connections: sockets.size, instanceId });
    const httpClosed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
    httpServer.closeIdleConnections();
    await closeSockets(deadline);
    await until(runtime.close(), deadline);
    const marked = await until(
      db.pool.query(query('presence_leave_instance', [instanceId])).then(
        (result) => result.rowCount ?? 0,
        (error: unknown) => {
          log.warn('could not release presences at shutdown', { error });
          return 0;
        },
      ),
      deadline,
    );
    httpServer.closeAllConnections();
    await until(httpClosed, deadline);
    await until(db.close(), deadline);
    upgrade.wss.close();
    metrics.stop();
    log.info('broker closed', { presencesReleased: marked ?? 0 });
  }

  return {
    instanceId,
    metrics,
    runtime,
    listen() {
      return new Promise((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(config.port, config.host, () => {
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
