// The test command: one real Postgres for the whole run (embedded, on a free port, in a
// temporary directory — or DATABASE_URL when set), then node's test runner over test/.
// Each test file makes its own database from CM_TEST_DATABASE_URL (test/helpers/db.ts).
// Usage: node test/run.ts [test files or globs…]

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { embeddedPostgres } from '../lib/embedded-pg.ts';
import type { EmbeddedPostgres } from '../lib/embedded-pg.ts';
import { BINARY_RELOCATION } from './helpers/db.ts';
import { freePort } from './helpers/ports.ts';

const DEFAULT_PATTERNS = ['test/**/*.test.ts'];
const TEST_CONCURRENCY = '2';
// A test that waits for something that never comes fails after this instead of holding CI.
const TEST_TIMEOUT_MS = '120000';
const ROOT = new URL('../', import.meta.url).pathname;

let cluster: EmbeddedPostgres | undefined;
let baseDir: string | undefined;
let adminUrl = process.env.DATABASE_URL;

async function cleanup(): Promise<void> {
  await cluster?.stop().catch(() => {});
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true }).catch(() => {});
}

if (adminUrl === undefined || adminUrl === '') {
  baseDir = await mkdtemp(join(tmpdir(), 'claudemesh-test-pg-'));
  const started = Date.now();
  // As root in a clone others cannot enter (under /root, say), the postgres user cannot
  // reach the binaries in node_modules: a copy is kept where it can (reused by later runs).
  // The cluster itself is in the temporary directory, which it can reach.
  cluster = await embeddedPostgres({ baseDir, port: await freePort(), relocation: BINARY_RELOCATION });
  await cluster.start();
  adminUrl = cluster.url;
  process.stderr.write(`test run: embedded Postgres on port ${cluster.port} ready in ${Date.now() - started} ms\n`);
} else {
  process.stderr.write('test run: using DATABASE_URL\n');
}

const patterns = process.argv.slice(2);
const child = spawn(
  process.execPath,
  ['--test', `--test-concurrency=${TEST_CONCURRENCY}`, `--test-timeout=${TEST_TIMEOUT_MS}`, ...(patterns.length > 0 ? patterns : DEFAULT_PATTERNS)],
  { cwd: ROOT, stdio: 'inherit', env: { ...process.env, CM_TEST_DATABASE_URL: adminUrl } },
);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => child.kill(signal));
}
const code = await new Promise<number>((resolve) => {
  child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal === null ? 1 : 128)));
});
await cleanup();
process.exit(code);
