// The operating docs (deploy, troubleshooting, scaling) against the tree they describe, so
// that they cannot rot: every file they name exists, every `just` recipe, npm script,
// claudemesh verb and option they tell someone to run is real, every variable and constant
// they name is in the source, every function they place in a file is there; and
// troubleshooting.md names only error codes, log messages and closes the code has — every
// close of lib/protocol.ts among them.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_CODES } from '../lib/errors.ts';
import { CLOSES } from '../lib/protocol.ts';
import { VERBS } from '../lib/cli/main.ts';

const ROOT = resolve(new URL('../', import.meta.url).pathname);
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const DOCS = ['docs/deploy.md', 'docs/troubleshooting.md', 'docs/scaling.md'];
const SOURCE_ROOTS = ['broker.ts', 'cli.ts', 'lib', 'daemon', 'sql', 'bench', 'deploy', 'Dockerfile', 'justfile'];
// Names that belong to other programs: Node's, nginx's and Postgres's own settings.
const OUTSIDE_NAMES = new Set(['NODE_EXTRA_CA_CERTS', 'SELF_SIGNED_CERT_IN_CHAIN', 'error_log']);
// The daemon's link events are `link_<state>` (daemon/broker-link.ts names the states).
const LINK_STATES = /type LinkState = ([^;]+);/.exec(readFileSync(new URL('../daemon/broker-link.ts', import.meta.url), 'utf8'))?.[1] ?? '';

function filesUnder(path: string): string[] {
  const full = join(ROOT, path);
  if (!statSync(full).isDirectory()) return [path];
  return readdirSync(full).flatMap((entry) => filesUnder(join(path, entry)));
}
const SOURCE = new Map(SOURCE_ROOTS.flatMap(filesUnder).filter((path) => !path.endsWith('errors.ts')).map((path) => [path, read(path)]));
const inSource = (text: string) => [...SOURCE.values()].some((body) => body.includes(text));
const IGNORED = read('.gitignore').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));

/** Code of a markdown text: fenced blocks, and the `spans` outside them. */
function codeOf(markdown: string): { blocks: string[]; spans: string[] } {
  const blocks = [...markdown.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((match) => match[1] ?? '');
  const prose = markdown.replace(/```[a-z]*\n[\s\S]*?```/g, '');
  return { blocks, spans: [...prose.matchAll(/`([^`\n]+)`/g)].map((match) => match[1] ?? '') };
}
const CODE = new Map(DOCS.map((doc) => [doc, codeOf(read(doc))]));
const allCode = (doc: string) => [...(CODE.get(doc)?.blocks ?? []), ...(CODE.get(doc)?.spans ?? [])];
/** The commands a doc tells someone to run: spans, and each command of a block's lines. */
const commands = (doc: string) => [...(CODE.get(doc)?.spans ?? []), ...(CODE.get(doc)?.blocks ?? []).flatMap((block) => block.split(/\n|&&|;|\|\||\(|\)/))]
  .map((command) => command.trim());

describe('docs/deploy.md, docs/troubleshooting.md, docs/scaling.md', () => {
  it('name only files that exist (or that git ignores: made by running something)', () => {
    const missing: string[] = [];
    for (const doc of DOCS) {
      const text = read(doc);
      const named = [...text.matchAll(/(?:^|[\s(`'"])((?:deploy|lib|docs|test|sql|bench|daemon|bin)\/[\w./-]*[\w/]|(?:broker|cli)\.ts|Dockerfile|justfile|package(?:-lock)?\.json|README\.md)/gm)]
        .map((match) => match[1] ?? '');
      const linked = [...text.matchAll(/\]\(([\w.-]+\.md)(?:#[\w-]+)?\)/g)].map((match) => `docs/${match[1]}`);
      for (const path of [...named, ...linked]) {
        if (IGNORED.some((ignored) => path.startsWith(ignored) || `${path}/` === ignored)) continue;
        if (!existsSync(join(ROOT, path))) missing.push(`${doc}: ${path}`);
      }
    }
    assert.deepEqual(missing, []);
  });

  it('tell operators to run only recipes, scripts, verbs and options that exist', async () => {
    const recipes = new Set([...read('justfile').matchAll(/^([a-z][\w-]*)(?: [^:=]*)?:(?!=)/gm)].map((match) => match[1]));
    const scripts = Object.keys((JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts);
    const problems: string[] = [];
    const run = DOCS.flatMap(commands).filter((command) => /^(just|npm|claudemesh) /.test(command));
    assert.ok(run.length > 30, 'the docs tell operators to run commands');
    for (const doc of DOCS) {
      for (const command of commands(doc)) {
        const just = /^just ([a-z][\w-]*)/.exec(command)?.[1];
        if (just !== undefined && !recipes.has(just)) problems.push(`${doc}: just ${just}`);
        const npm = /^npm (?:run )?([a-z]+)/.exec(command)?.[1];
        if (npm !== undefined && !['install', 'ci', 'pkg', 'link', 'pack', 'view'].includes(npm) && !scripts.includes(npm)) problems.push(`${doc}: npm ${npm}`);
        for (const match of command.matchAll(/^claudemesh ([a-z][\w-]*)(.*)/g)) {
          const verb = await VERBS.get(match[1] ?? '')?.();
          if (verb === undefined) {
            problems.push(`${doc}: claudemesh ${match[1]}`);
            continue;
          }
          for (const option of (match[2] ?? '').matchAll(/--([a-z][\w-]*)/g)) {
            const name = option[1] ?? '';
            if (!(name in verb.options) && !['json', 'help'].includes(name)) problems.push(`${doc}: claudemesh ${match[1]} --${name}`);
          }
        }
      }
    }
    assert.deepEqual(problems, []);
  });

  it('name only variables and constants the source has; deploy.md sets only variables the broker or Compose reads', () => {
    const config = read('lib/broker/config.ts');
    const compose = read('deploy/compose.yaml');
    const problems: string[] = [];
    for (const doc of DOCS) {
      for (const code of allCode(doc)) {
        for (const [name] of code.matchAll(/\b(?!CM_ERR_)[A-Z][A-Z0-9]*_[A-Z0-9_]+\b/g)) {
          if (!OUTSIDE_NAMES.has(name) && !inSource(name)) problems.push(`${doc}: ${name}`);
        }
        for (const match of doc === 'docs/deploy.md' ? code.matchAll(/(?:^|\s)([A-Z][A-Z0-9_]+)=/gm) : []) {
          const name = match[1] ?? '';
          if (!config.includes(`'${name}'`) && !config.includes(`.${name}`) && !compose.includes(`${name}:`)) problems.push(`${doc}: sets ${name}, which neither the broker nor compose.yaml reads`);
        }
      }
    }
    assert.deepEqual(problems, []);
  });

  it('place each function they name in the file that has it', () => {
    const problems: string[] = [];
    for (const doc of DOCS) {
      const text = read(doc).replace(/\n/g, ' ');
      const pairs: Array<[string, string]> = [];
      // `file` (`a`, `b`, …) and `name` in `file`
      for (const match of text.matchAll(/`([\w/.-]+\.ts)` \(([^)]*)\)/g)) for (const name of (match[2] ?? '').matchAll(/`([\w#.]+)`/g)) pairs.push([match[1] ?? '', name[1] ?? '']);
      for (const match of text.matchAll(/`([\w#.]+)` in `([\w/.-]+\.ts)`/g)) pairs.push([match[2] ?? '', match[1] ?? '']);
      assert.ok(doc !== 'docs/scaling.md' || pairs.length > 20, 'scaling.md names the functions a change would touch');
      for (const [file, name] of pairs) {
        const last = name.split('.').at(-1) ?? '';
        const body = existsSync(join(ROOT, file)) ? read(file) : '';
        if (!new RegExp(`(^|[^\\w#])${last}\\b`, 'm').test(body)) problems.push(`${doc}: ${name} is not in ${file}`);
      }
    }
    assert.deepEqual(problems, []);
  });
});

describe('docs/troubleshooting.md', () => {
  const text = read('docs/troubleshooting.md');

  it('names only error codes the code raises', () => {
    const codes = new Set([...text.matchAll(/CM_ERR_[A-Z0-9_]+/g)].map((match) => match[0]));
    assert.ok(codes.size > 20);
    for (const code of codes) {
      assert.ok(code in ERROR_CODES, `${code} is not in lib/errors.ts`);
      assert.ok(inSource(`'${code}'`), `${code} is raised nowhere`);
    }
  });

  it('quotes only log messages the broker logs', () => {
    const messages = [...text.matchAll(/"msg":"([^"]+)"/g)].map((match) => match[1] ?? '');
    assert.ok(messages.length > 8);
    for (const message of messages) {
      const call = new RegExp(`\\.(debug|info|warn|error)\\(\\s*'${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'`);
      assert.ok([...SOURCE.values()].some((body) => call.test(body)), `no log call says "${message}"`);
    }
  });

  it('has a row for every close of lib/protocol.ts, and no other', () => {
    const rows = [...text.matchAll(/^\| (\d{4}) `([^`]+)` \|/gm)].map((match) => `${match[1]} ${match[2]}`);
    const closes = Object.values(CLOSES).map((close) => `${close.code} ${close.reason}`);
    assert.deepEqual([...new Set(rows)].sort(), [...new Set(closes)].sort());
  });

  it('names only event kinds and settings that exist', () => {
    const names = allCode('docs/troubleshooting.md').filter((span) => /^[a-z]+(_[a-z0-9]+)+$/.test(span));
    assert.ok(names.includes('link_retry'));
    for (const name of names) {
      const event = name.startsWith('link_') && LINK_STATES.includes(`'${name.slice('link_'.length)}'`);
      assert.ok(OUTSIDE_NAMES.has(name) || event || inSource(name), `${name} is named but exists nowhere`);
    }
  });
});

describe('README.md', () => {
  it('links the operating docs', () => {
    const readme = read('README.md');
    for (const doc of DOCS) assert.ok(readme.includes(`](${doc})`), `README.md does not link ${doc}`);
  });
});
