// Readability rules the whole tree keeps, checked here so they stay true:
//   - every exported name is imported by some other file (dead exports are deleted, not kept
//     "for later"); names imported only by tests count — a test is a user;
//   - comments cite only files in the repo, never documents a reader of the repo does not have.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = resolve(new URL('../', import.meta.url).pathname);
const SKIP = new Set(['node_modules', '.git', 'data', '.claudemesh-data', '.cache']);

function files(dir: string, out: string[] = []): string[] {
  for (const entry of readdirSync(dir)) {
    if (SKIP.has(entry)) continue;
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) files(path, out);
    else if (/\.(ts|sql)$/.test(entry) && !entry.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

const ALL = files(ROOT);
const SOURCES = ALL.filter((path) => path.endsWith('.ts'));
const TEXT = new Map(ALL.map((path) => [path, readFileSync(path, 'utf8')]));

/** Names a file exports: declarations and `export { … }` lists. */
function exportsOf(text: string): string[] {
  const names = [...text.matchAll(/^export\s+(?:declare\s+)?(?:async\s+)?(?:function\*?|class|const|let|interface|type|enum)\s+([A-Za-z_$][\w$]*)/gm)].map((match) => match[1] ?? '');
  for (const list of text.matchAll(/^export\s+(?:type\s+)?\{([^}]*)\}/gm)) {
    for (const part of (list[1] ?? '').split(',')) names.push(part.trim().split(/\s+as\s+/).pop() ?? '');
  }
  return names.filter((name) => name !== '');
}

/** For each file, the names other files import from it. */
function importedNames(): Map<string, Set<string>> {
  const imported = new Map<string, Set<string>>();
  for (const path of SOURCES) {
    const text = TEXT.get(path) ?? '';
    for (const match of text.matchAll(/import\s+(?:type\s+)?(?:([\w$]+)\s*,?\s*)?(?:\{([^}]*)\}|\*\s+as\s+[\w$]+)?\s*from\s+'(\.[^']+)'/g)) {
      const target = resolve(dirname(path), match[3] ?? '');
      const set = imported.get(target) ?? new Set<string>();
      for (const part of (match[2] ?? '').split(',')) set.add(part.trim().replace(/^type\s+/, '').split(/\s+as\s+/)[0] ?? '');
      if (match[1] !== undefined) set.add('default');
      imported.set(target, set);
    }
    // `export … from` re-exports and dynamic imports count as uses too
    for (const match of text.matchAll(/import\('(\.[^']+)'\)/g)) imported.set(resolve(dirname(path), match[1] ?? ''), new Set(['*']));
  }
  return imported;
}

describe('the tree', () => {
  it('exports nothing that no other file imports', () => {
    const imported = importedNames();
    const dead: string[] = [];
    for (const path of SOURCES) {
      const users = imported.get(path) ?? new Set<string>();
      if (users.has('*')) continue;
      for (const name of exportsOf(TEXT.get(path) ?? '')) if (!users.has(name)) dead.push(`${relative(ROOT, path)}: ${name}`);
    }
    assert.deepEqual(dead, [], 'exported but never imported: un-export or delete them');
  });

  it('cites no document outside the repo in code or SQL', () => {
    const citing: string[] = [];
    for (const [path, text] of TEXT) {
      if (path === new URL(import.meta.url).pathname) continue;
      text.split('\n').forEach((line, index) => {
        if (/original-(client|broker)|DESIGN\s*§|\.\.\/shared\/|\bissue \d+|\blesson \d+/i.test(line)) citing.push(`${relative(ROOT, path)}:${index + 1}: ${line.trim()}`);
      });
    }
    assert.deepEqual(citing, []);
  });
});
