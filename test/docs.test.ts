// Keeps docs/protocol.md in step with the source: every frame type in both directions with
// every field (from the shapes in lib/protocol.ts), every row of the close-code table
// (CLOSES), and every HTTP route the broker serves (from its route entries).

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Context } from '../broker.ts';
import { createLogger } from '../lib/log.ts';
import { CLIENT_FRAME_TYPES, CLOSES, frameFields, SERVER_FRAME_TYPES } from '../lib/protocol.ts';
import { loadConfig } from '../lib/broker/config.ts';
import { membershipRoutes } from '../lib/broker/membership.ts';
import { hookRoute } from '../lib/broker/http.ts';
import { WS_PATH } from '../lib/broker/connection.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const doc = async (file: string) => readFile(join(ROOT, 'docs', file), 'utf8');

/** The table row of a frame type: its cells after the type cell. */
function rowOf(text: string, section: string, type: string): string {
  const part = text.slice(text.indexOf(section));
  const row = part.split('\n').find((line) => line.startsWith('| ') && line.includes(`\`${type}\``));
  assert.ok(row !== undefined, `frame type "${type}" has no row under "${section}" in docs/protocol.md`);
  return row;
}

describe('docs/protocol.md', () => {
  it('documents every frame type in both directions with every field', async () => {
    const text = await doc('protocol.md');
    for (const [types, section, direction] of [[CLIENT_FRAME_TYPES, '### Client → broker', 'client'], [SERVER_FRAME_TYPES, '### Broker → client', 'server']] as const) {
      for (const type of types) {
        const row = rowOf(text, section, type);
        for (const field of frameFields(type, direction).filter((name) => name !== 'id')) {
          assert.match(row, new RegExp(`\\b${field}\\b`), `field "${field}" of ${direction} frame "${type}" is missing from its row`);
        }
      }
    }
  });

  it('has exactly the close-code table of lib/protocol.ts', async () => {
    const text = await doc('protocol.md');
    const table = text.slice(text.indexOf('### Close codes')).split('\n').filter((line) => /^\| \d{4} \|/.test(line));
    const documented = table.map((line) => line.split('|').slice(1, 4).map((cell) => cell.trim()).join(' '));
    const source = Object.values(CLOSES).map((close) => `${close.code} \`${close.reason}\` ${close.terminal ? 'yes' : 'no'}`);
    assert.deepEqual(documented.sort(), source.sort());
  });

  it('documents every HTTP route path', async () => {
    const text = (await doc('protocol.md')) + (await doc('cli.md'));
    const result = loadConfig({ BROKER_PORT: '0', DATABASE_URL: 'postgres://x@127.0.0.1/x', NODE_ENV: 'test' });
    assert.ok(result.ok);
    const ctx = { config: result.config, log: createLogger({ write: () => {} }), now: Date.now } as unknown as Context;
    const paths = ['/health', '/metrics', WS_PATH, hookRoute(ctx).path, ...membershipRoutes(ctx).map((route) => route.path)];
    assert.ok(paths.length > 10);
    for (const path of paths) assert.ok(text.includes(path), `route ${path} is missing from docs/protocol.md (or docs/cli.md)`);
  });
});
