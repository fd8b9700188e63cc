// `just size`: how much an auditor reads for the broker — the files broker.ts imports,
// followed through relative imports, plus sql/ — with lines per file, longest first.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const ROOT = resolve(new URL('../', import.meta.url).pathname);
// Piped into head: a reader that went away ends the listing quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => process.exit(error.code === 'EPIPE' ? 0 : 1));
const IMPORT = /(?:from|import)\s*\(?\s*'(\.[^']+\.ts)'/g;

const seen = new Set<string>();
const stack = [join(ROOT, 'broker.ts')];
while (stack.length > 0) {
  const file = stack.pop() ?? '';
  if (seen.has(file)) continue;
  seen.add(file);
  for (const match of readFileSync(file, 'utf8').matchAll(IMPORT)) {
    const target = resolve(dirname(file), match[1] ?? '');
    if (existsSync(target)) stack.push(target);
  }
}
for (const entry of readdirSync(join(ROOT, 'sql'), { recursive: true, withFileTypes: true })) {
  if (entry.isFile() && entry.name.endsWith('.sql')) seen.add(join(entry.parentPath, entry.name));
}
const rows = [...seen].map((file) => ({ file: relative(ROOT, file), lines: readFileSync(file, 'utf8').split('\n').length - 1 }));
rows.sort((a, b) => b.lines - a.lines);
for (const row of rows) process.stdout.write(`${String(row.lines).padStart(5)}  ${row.file}\n`);
const total = rows.reduce((sum, row) => sum + row.lines, 0);
const broker = rows.filter((row) => row.file.startsWith('lib/broker/')).length;
process.stdout.write(`${rows.length} files, ${total} lines; lib/broker/ ${broker} files\n`);
