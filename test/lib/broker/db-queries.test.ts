import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { arrayLiteral, loadQueries, parseQueries } from '../../../lib/broker/db.ts';
import { createTestDatabase } from '../../helpers/db.ts';
import type { TestDatabase } from '../../helpers/db.ts';

const FILE = readFileSync(new URL('../../../sql/queries/broker.sql', import.meta.url), 'utf8');

describe('named queries', () => {
  it('splits a file on "-- name:" lines and drops comment lines', () => {
    const parsed = parseQueries('-- header\n\n-- name: one\n-- why\nSELECT 1;\n\n-- name: two\nSELECT\n  2;\n');
    assert.deepEqual([...parsed.entries()], [['one', 'SELECT 1'], ['two', 'SELECT\n  2']]);
  });

  it('loads the real file: every query the code names, none that it does not', () => {
    const queries = loadQueries(FILE);
    assert.equal(queries.size, parseQueries(FILE).size);
    assert.match(queries.get('claim_queued') ?? '', /FOR UPDATE SKIP LOCKED/);
    for (const text of queries.values()) assert.doesNotMatch(text, /;\s*$/);
  });

  it('refuses a file with a query missing, and one with a query no code names', () => {
    const missing = FILE.replace('-- name: claim_queued', '-- name: claim_queued_renamed');
    assert.throws(() => loadQueries(missing), (error: Error & { code?: string }) => error.code === 'CM_ERR_QUERY_MISSING' && /claim_queued/.test(error.message));
    assert.throws(() => loadQueries(`${FILE}\n-- name: stray\nSELECT 1;\n`), (error: Error & { code?: string }) => error.code === 'CM_ERR_QUERY_MISSING' && /stray/.test(error.message));
  });
});

describe('arrayLiteral', () => {
  let database: TestDatabase;
  let client: pg.Client;
  before(async () => {
    database = await createTestDatabase('array_literal');
    client = new pg.Client({ connectionString: database.url });
    await client.connect();
  });
  after(async () => {
    await client.end();
    await database.drop();
  });

  it('reads back exactly what it was given, whatever the characters', async () => {
    const texts = ['plain', '', 'NULL', 'null', 'with space', 'a,b', '{braces}', 'say "hi"', 'back\\slash\\', 'tab\there', 'line\nbreak', 'ünïcødé ✓', '@team/backend', '*', 'q+/==', ' lead', 'trail '];
    const { rows } = await client.query('SELECT $1::text[] AS texts, $2::int[] AS numbers, $3::bool[] AS flags, $4::uuid[] AS ids', [
      arrayLiteral(texts), arrayLiteral([0, 7, -3]), arrayLiteral([true, false]), arrayLiteral(['11111111-2222-4333-8444-555555555555']),
    ]);
    assert.deepEqual(rows[0], { texts, numbers: [0, 7, -3], flags: [true, false], ids: ['11111111-2222-4333-8444-555555555555'] });
    assert.deepEqual((await client.query('SELECT $1::text[] AS empty', [arrayLiteral([])])).rows[0], { empty: [] });
  });

  it('passes checked values (keys, ids, base64, targets, numbers, flags) as they are, and they read back the same', async () => {
    const checked = ['a'.repeat(64), 'mesh_12345678', 'q+/AZaz09==', '@team/backend', '*', 'now'];
    assert.equal(arrayLiteral(checked, true), `{${checked.join(',')}}`);
    const { rows } = await client.query('SELECT $1::text[] AS texts, $2::smallint[] AS hops, $3::bool[] AS flags', [
      arrayLiteral(checked, true), arrayLiteral([0, 255], true), arrayLiteral([false, true], true),
    ]);
    assert.deepEqual(rows[0], { texts: checked, hops: [0, 255], flags: [false, true] });
    assert.deepEqual((await client.query('SELECT $1::text[] AS empty', [arrayLiteral([], true)])).rows[0], { empty: [] });
  });
});
