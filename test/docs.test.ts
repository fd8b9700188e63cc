// Keeps docs/protocol.md in step with the source: every client frame type, every server
// frame type, every close code and every HTTP route the code defines must be documented.

import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CLIENT_FRAME_TYPES } from '../lib/protocol.ts';

const ROOT = new URL('../', import.meta.url).pathname;

async function brokerSources(): Promise<string> {
  const dir = join(ROOT, 'lib/broker');
  const files = (await readdir(dir)).filter((file) => file.endsWith('.ts'));
  const texts = await Promise.all(files.map((file) => readFile(join(dir, file), 'utf8')));
  return texts.join('\n');
}

describe('docs/protocol.md', () => {
  it('documents every frame type the broker reads or writes', async () => {
    const doc = await readFile(join(ROOT, 'docs/protocol.md'), 'utf8');
    const source = await brokerSources();
    const written = new Set([...source.matchAll(/type: '([a-z_]+)'/g)].map((match) => match[1] ?? ''));
    for (const type of [...CLIENT_FRAME_TYPES, ...written]) {
      assert.ok(doc.includes(`\`${type}\``), `frame type "${type}" is missing from docs/protocol.md`);
    }
  });

  it('documents every close code and reason the broker uses', async () => {
    const doc = await readFile(join(ROOT, 'docs/protocol.md'), 'utf8');
    const source = await brokerSources();
    const codes = new Set<string>();
    for (const match of source.matchAll(/\b(?:CLOSE_[A-Z_]+ = |close\()(\d{4})/g)) codes.add(match[1] ?? '');
    for (const match of source.matchAll(/memberRemoved\([^)]*?, (\d{4}),/g)) codes.add(match[1] ?? '');
    assert.ok(codes.has('1001') && codes.has('1008') && codes.has('4002'), `found close codes ${[...codes].join(', ')}`);
    for (const code of codes) assert.match(doc, new RegExp(`^\\| ${code} \\|`, 'm'), `close code ${code} is missing from the close-code table`);
    const reasons = new Set([...source.matchAll(/close\([A-Z_0-9.]+, '([a-z_ ]+)'\)/g)].map((match) => match[1] ?? ''));
    for (const reason of reasons) assert.ok(doc.includes(`\`${reason}\``), `close reason "${reason}" is missing`);
  });

  it('documents every HTTP route path', async () => {
    const doc = await readFile(join(ROOT, 'docs/protocol.md'), 'utf8') + await readFile(join(ROOT, 'docs/cli.md'), 'utf8').catch(() => '');
    const source = await brokerSources();
    const paths = new Set([...source.matchAll(/path: '(\/[a-z/_-]*)'/g), ...source.matchAll(/_PATH = '(\/[a-z/_-]*)'/g)].map((match) => match[1] ?? ''));
    assert.ok(paths.has('/health') && paths.has('/hook/set-status'));
    for (const path of paths) assert.ok(doc.includes(path), `route ${path} is missing from docs/protocol.md (or docs/cli.md)`);
  });
});

describe('packaging', () => {
  it('runs the broker with the same Node flags in npm start and in the Docker image', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
    const start = pkg.scripts.start.split(/\s+/);
    assert.equal(start[0], 'node');
    assert.equal(start.at(-1), 'broker.ts');
    const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)?.[1];
    assert.ok(cmd !== undefined, 'Dockerfile has an exec-form CMD');
    assert.deepEqual(JSON.parse(cmd), start);
  });
});
