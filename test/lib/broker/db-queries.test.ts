import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { loadQueries, parseQueries } from '../../../lib/broker/db.ts';

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
