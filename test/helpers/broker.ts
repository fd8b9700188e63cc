// An in-process broker on its own fresh database, for tests that drive HTTP and sockets.

import { loadConfig } from '../../lib/broker/config.ts';
import type { BrokerConfig } from '../../lib/broker/config.ts';
import { createLogger } from '../../lib/log.ts';
import type { Logger } from '../../lib/log.ts';
import { createDatabase } from '../../lib/broker/db.ts';
import type { Database } from '../../lib/broker/db.ts';
import { migrate } from '../../lib/broker/db.ts';
import { createBroker } from '../../broker.ts';
import type { Broker } from '../../broker.ts';
import type { Timings } from '../../broker.ts';
import { createTestDatabase } from './db.ts';
import type { TestDatabase } from './db.ts';

export interface TestBroker {
  broker: Broker;
  config: BrokerConfig;
  db: Database;
  database: TestDatabase;
  baseUrl: string;
  wsUrl: string;
  logs: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

interface TestBrokerOptions {
  env?: Record<string, string>;
  now?: () => number;
  log?: Logger;
  timings?: Partial<Timings>;
  /** share this database (a second instance); the first broker's close drops it */
  database?: TestDatabase;
  instanceId?: string;
}

export async function startTestBroker(label: string, options: TestBrokerOptions = {}): Promise<TestBroker> {
  const shared = options.database;
  const database = shared ?? (await createTestDatabase(label));
  const result = loadConfig({ BROKER_PORT: '0', DATABASE_URL: database.url, NODE_ENV: 'test', ...options.env });
  if (!result.ok) throw new Error(`test config invalid: ${JSON.stringify(result.problems)}`);
  const logs: Array<Record<string, unknown>> = [];
  const log = options.log ?? createLogger({ level: 'debug', write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const db = createDatabase({ url: database.url, log });
  await migrate(db.pool, log);
  const broker = createBroker({
    config: result.config,
    db,
    log,
    version: '0.0.0-test',
    gitSha: 'abc1234',
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.instanceId === undefined ? {} : { instanceId: options.instanceId }),
    ...(options.timings === undefined ? {} : { timings: options.timings }),
  });
  const address = await broker.listen();
  return {
    broker,
    config: result.config,
    db,
    database,
    logs,
    baseUrl: `http://127.0.0.1:${address.port}`,
    wsUrl: `ws://127.0.0.1:${address.port}/ws`,
    async close() {
      await broker.close({ timeoutMs: 2_000 });
      if (shared === undefined) await database.drop();
    },
  };
}
