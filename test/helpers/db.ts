// A fresh database per test file, made on the run's Postgres (test/run.ts sets
// CM_TEST_DATABASE_URL) and dropped when the file is done.

import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const DRAIN_ATTEMPTS = 100;
const DRAIN_POLL_MS = 20;

/**
 * Where a test's own embedded cluster keeps its copy of the Postgres binaries when root runs
 * the suite from a clone the postgres user cannot enter (under /root, say); elsewhere it is
 * not used. The clusters themselves stay in each test's temporary directory.
 */
export const BINARY_RELOCATION = { dir: process.env.EMBEDDED_PG_RELOCATE_DIR || join(tmpdir(), 'claudemesh-pg-binaries'), cluster: false };

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

function adminUrl(): string {
  const url = process.env.CM_TEST_DATABASE_URL;
  if (url === undefined || url === '') {
    throw new Error('CM_TEST_DATABASE_URL is not set: run tests with `npm test` or `node test/run.ts [files]`');
  }
  return url;
}

function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const name = `cm_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase().slice(0, 30)}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return {
    name,
    url: withDatabase(adminUrl(), name),
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl() });
      await client.connect();
      try {
        // pg's Pool.end() resolves before its backends have gone; a forced drop while one
        // is still closing would hand that client an error it has no listener for.
        for (let attempt = 0; attempt < DRAIN_ATTEMPTS; attempt += 1) {
          const { rows } = await client.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
          if (rows[0]?.n === 0) break;
          await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
        }
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}
