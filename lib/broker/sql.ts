// Loads sql/queries/broker.sql: blocks that start with "-- name: <name>". The names the code uses
// are listed here; a missing or unknown block stops the start with a clear message.

import { readFileSync } from 'node:fs';
import { cmError } from '../errors.ts';

const QUERIES_FILE = new URL('../../sql/queries/broker.sql', import.meta.url);
const NAMES = [
  'member_for_hello', 'presence_connect', 'presence_disconnect', 'presence_gone', 'presence_leave_instance', 'roster_members',
  'roster_presences', 'set_status', 'status_ttl_sweep', 'set_summary', 'join_group', 'leave_group', 'insert_messages',
  'existing_messages', 'insert_deliveries', 'drain', 'release_leases', 'ack_deliveries', 'mark_deliveries',
  'message_status', 'pending_recipients', 'expire_deliveries', 'purge_messages', 'purge_presences', 'queue_depth',
] as const;
export type QueryName = (typeof NAMES)[number];

export function parseQueries(text: string): Map<string, string> {
  const queries = new Map<string, string>();
  let name: string | undefined;
  let lines: string[] = [];
  const finish = (): void => {
    if (name !== undefined) queries.set(name, lines.filter((line) => !line.trimStart().startsWith('--')).join('\n').trim().replace(/;$/, ''));
  };
  for (const line of text.split('\n')) {
    const match = /^-- name: ([a-z_]+)\s*$/.exec(line);
    if (match !== null) {
      finish();
      name = match[1];
      lines = [];
    } else lines.push(line);
  }
  finish();
  return queries;
}

function load(): Readonly<Record<QueryName, string>> {
  const parsed = parseQueries(readFileSync(QUERIES_FILE, 'utf8'));
  const out = Object.create(null) as Record<QueryName, string>;
  for (const name of NAMES) {
    const text = parsed.get(name);
    if (text === undefined || text === '') throw cmError('CM_ERR_MIGRATION_NAME', `sql/queries/broker.sql has no query named "${name}"`, { hint: 'restore the query block "-- name: ' + name + '"' });
    out[name] = text;
  }
  for (const name of parsed.keys()) {
    if (!(NAMES as readonly string[]).includes(name)) throw cmError('CM_ERR_MIGRATION_NAME', `sql/queries/broker.sql has a query "${name}" that no code uses`, { hint: 'remove it or add it to lib/broker/sql.ts' });
  }
  return out;
}

/** The named queries, as pg query configs with a stable name (prepared once per connection). */
export const SQL: Readonly<Record<QueryName, string>> = load();

export function query(name: QueryName, values: unknown[]): { name: string; text: string; values: unknown[] } {
  return { name: `cm_${name}`, text: SQL[name], values };
}
