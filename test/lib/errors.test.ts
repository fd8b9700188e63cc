import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CmError, cmError, ERROR_CODES, isCmError } from '../../lib/errors.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const SOURCE_DIRS = ['lib', 'daemon'];
const SOURCE_FILES = ['broker.ts', 'cli.ts'];
const CODE_PATTERN = /CM_ERR_[A-Z0-9_]+/g;

async function sourceFiles(): Promise<string[]> {
  const files: string[] = [];
  for (const file of SOURCE_FILES) files.push(join(ROOT, file));
  for (const dir of SOURCE_DIRS) {
    const entries = await readdir(join(ROOT, dir), { recursive: true }).catch(() => [] as string[]);
    for (const entry of entries) if (entry.endsWith('.ts')) files.push(join(ROOT, dir, entry));
  }
  return files;
}

describe('cmError', () => {
  it('gives the error its code, hint, status and message', () => {
    const error = cmError('CM_ERR_PAYLOAD_TOO_LARGE', 'body of 70000 bytes is over 65536', { details: { received: 70_000 } });
    assert.ok(error instanceof CmError);
    assert.ok(isCmError(error));
    assert.equal(error.code, 'CM_ERR_PAYLOAD_TOO_LARGE');
    assert.equal(error.status, 413);
    assert.equal(error.hint, ERROR_CODES.CM_ERR_PAYLOAD_TOO_LARGE.hint);
    assert.deepEqual(error.toJSON(), {
      code: 'CM_ERR_PAYLOAD_TOO_LARGE',
      message: 'body of 70000 bytes is over 65536',
      hint: ERROR_CODES.CM_ERR_PAYLOAD_TOO_LARGE.hint,
      details: { received: 70_000 },
    });
  });

  it('lets the caller replace the hint and keeps the cause', () => {
    const cause = new Error('boom');
    const error = cmError('CM_ERR_INTERNAL', 'x failed', { hint: 'do y', cause });
    assert.equal(error.hint, 'do y');
    assert.equal(error.cause, cause);
    assert.equal(isCmError(cause), false);
  });

  it('starts the stack at the caller, not inside the factory', () => {
    function raiseHere(): CmError {
      return cmError('CM_ERR_INTERNAL', 'x');
    }
    const frames = (raiseHere().stack ?? '').split('\n').slice(1);
    assert.match(frames[0] ?? '', /raiseHere/);
    assert.doesNotMatch(frames.join('\n'), /at cmError/);
  });
});

describe('docs/errors.md', () => {
  it('lists every code the source uses, and only those', async () => {
    const doc = await readFile(join(ROOT, 'docs/errors.md'), 'utf8');
    const documented = new Set(doc.match(CODE_PATTERN) ?? []);
    const used = new Map<string, string>();
    for (const file of await sourceFiles()) {
      const text = await readFile(file, 'utf8').catch(() => '');
      for (const code of text.match(CODE_PATTERN) ?? []) used.set(code, file);
    }
    for (const code of Object.keys(ERROR_CODES)) used.set(code, 'lib/errors.ts');
    const missing = [...used.keys()].filter((code) => !documented.has(code));
    assert.deepEqual(missing, [], `codes used in the source but missing from docs/errors.md: ${missing.map((c) => `${c} (${used.get(c)})`).join(', ')}`);
    const stale = [...documented].filter((code) => !(code in ERROR_CODES));
    assert.deepEqual(stale, [], `codes in docs/errors.md that lib/errors.ts does not define: ${stale.join(', ')}`);
  });
});
