import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseQueries, query, SQL } from '../../../lib/broker/sql.ts';

describe('named queries', () => {
  it('splits a file on "-- name:" lines and drops comment lines', () => {
    const parsed = parseQueries('-- header\n\n-- name: one\n-- why\nSELECT 1;\n\n-- name: two\nSELECT\n  2;\n');
    assert.deepEqual([...parsed.entries()], [['one', 'SELECT 1'], ['two', 'SELECT\n  2']]);
  });

  it('loads every query the code names, as a prepared statement config', () => {
    assert.ok(Object.keys(SQL).length >= 20);
    for (const text of Object.values(SQL)) assert.doesNotMatch(text, /;\s*$/);
    const config = query('drain', [1]);
    assert.equal(config.name, 'cm_drain');
    assert.match(config.text, /FOR UPDATE SKIP LOCKED/);
  });
});
