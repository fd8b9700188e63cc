// The image's facts, read from the Dockerfile (building it needs Docker, which tests do not
// assume): a non-root user, a health check that really answers, production dependencies
// only, the Node flags of `npm start`, every file the broker reads copied in; and
// deploy/compose.yaml running that image, on that port, with that health check.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../lib/broker/config.ts';
import { startTestBroker } from './helpers/broker.ts';
import type { TestBroker } from './helpers/broker.ts';
import { freePort } from './helpers/ports.ts';

const ROOT = resolve(new URL('../', import.meta.url).pathname);
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const PKG = JSON.parse(read('package.json')) as { scripts: Record<string, string>; dependencies: Record<string, string> };
const START = PKG.scripts.start?.split(/\s+/) ?? [];

interface Instruction { keyword: string; args: string }
/** The instructions of the last stage, continuation lines joined. */
function finalStage(text: string): { all: Instruction[]; final: Instruction[] } {
  const all = text.replace(/\\\n/g, ' ').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => ({ keyword: line.split(/\s+/, 1)[0]?.toUpperCase() ?? '', args: line.slice(line.indexOf(' ') + 1).trim() }));
  const lastFrom = all.map((each) => each.keyword).lastIndexOf('FROM');
  return { all, final: all.slice(lastFrom) };
}
const { all, final } = finalStage(read('Dockerfile'));
const only = (keyword: string) => final.filter((each) => each.keyword === keyword);
const envOf = (name: string) => only('ENV').map((each) => new RegExp(`\\b${name}=(\\S+)`).exec(each.args)?.[1]).find((value) => value !== undefined);

/** Files the broker reads from broker.ts on (imports that survive type stripping, and
 * `new URL('…', import.meta.url)` that exist here), and the packages it imports. */
function runtimeReach(entry: string): { files: Set<string>; packages: Map<string, 'static' | 'dynamic'> } {
  const files = new Set<string>();
  const packages = new Map<string, 'static' | 'dynamic'>();
  const visit = (path: string): void => {
    if (files.has(path)) return;
    files.add(path);
    if (!path.endsWith('.ts')) return;
    const text = readFileSync(path, 'utf8');
    const found: Array<[string, 'static' | 'dynamic']> = [];
    // an import clause holds names, braces, commas and `*` only: the match cannot run on into code
    for (const match of text.matchAll(/^(?:import|export)\s+(type\s+)?(?:[\w\s{},*$]+?\sfrom\s+)?'([^']+)';/gm)) if (match[1] === undefined) found.push([match[2] ?? '', 'static']);
    for (const match of text.matchAll(/import\(\s*'([^']+)'\s*\)/g)) found.push([match[1] ?? '', 'dynamic']);
    for (const [specifier, how] of found) {
      if (specifier.startsWith('.')) visit(resolve(dirname(path), specifier));
      else if (!specifier.startsWith('node:')) {
        const name = specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/');
        if (packages.get(name) !== 'static') packages.set(name, how);
      }
    }
    for (const match of text.matchAll(/new URL\(([^;]*?),\s*import\.meta\.url\)/g)) {
      for (const literal of (match[1] ?? '').matchAll(/'([^']+)'/g)) {
        const target = resolve(dirname(path), literal[1] ?? '');
        // the repository's own root is a working directory (git), not a file read
        if (target.startsWith(`${ROOT}/`) && existsSync(target)) files.add(target);
      }
    }
  };
  visit(join(ROOT, entry));
  return { files, packages };
}

describe('Dockerfile', () => {
  it('runs the broker as a non-root user', () => {
    const users = only('USER').map((each) => each.args);
    assert.ok(users.length > 0, 'the final stage sets USER');
    assert.ok(!['root', '0', '0:0'].includes(users.at(-1) ?? 'root'), `USER ${users.at(-1)} is root`);
    assert.ok(final.findIndex((each) => each.keyword === 'USER') < final.findIndex((each) => each.keyword === 'CMD'));
  });

  it('starts Node with the flags of `npm start`', () => {
    assert.equal(START[0], 'node');
    assert.equal(START.at(-1), 'broker.ts');
    const cmd = only('CMD').at(-1)?.args ?? '';
    assert.match(cmd, /^\[.*\]$/, 'CMD is in exec form, so that the broker gets SIGTERM itself');
    assert.deepEqual(JSON.parse(cmd), START);
  });

  it('installs production dependencies only, and everything the broker imports is one', () => {
    const installs = all.filter((each) => each.keyword === 'RUN' && /\bnpm (ci|install|i)\b/.test(each.args));
    assert.ok(installs.length > 0);
    for (const each of installs) assert.match(each.args, /--omit=dev\b/, `an install without --omit=dev: ${each.args}`);
    const removed = [...all.filter((each) => each.keyword === 'RUN').map((each) => each.args).join(' ').matchAll(/node_modules\/(@[\w.-]+(?:\/[\w.-]+)?|[\w.-]+)/g)].map((match) => match[1] ?? '');
    for (const [name, how] of runtimeReach('broker.ts').packages) {
      assert.ok(name in PKG.dependencies, `the broker imports ${name}, which is not a production dependency`);
      if (how === 'static') assert.ok(!removed.some((gone) => name === gone || name.startsWith(`${gone}/`)), `the image removes ${name}, which the broker imports at start`);
    }
  });

  it('copies every file the broker reads at runtime, where it reads it', () => {
    const copied = only('COPY').filter((each) => !each.args.startsWith('--from')).flatMap((each) => {
      const words = each.args.split(/\s+/);
      const destination = (words.at(-1) ?? '').replace(/^(\.\/|\/app\/?)/, '').replace(/\/$/, '');
      return words.slice(0, -1).map((source) => {
        assert.ok(destination === '' || destination === source, `COPY ${source} lands at ${destination}, not at its own path`);
        return source;
      });
    });
    const { files } = runtimeReach('broker.ts');
    assert.ok(files.size > 15, 'the walk reached the broker\'s files');
    const missing = [...files].map((path) => relative(ROOT, path)).filter((path) => !copied.some((source) => path === source || path.startsWith(`${source}/`)));
    assert.deepEqual(missing, [], 'read at runtime but not copied into the image');
  });

  it('has a lock naming every package of the production install (npm ci refuses a lock that lacks one)', () => {
    const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, Record<string, any>> };
    const missing = new Set<string>();
    const seen = new Set<string>();
    const parentOf = (location: string) => location.slice(0, Math.max(0, location.lastIndexOf('/node_modules/')));
    // Node's resolution: the nearest node_modules/<name> from the package's own folder up.
    const locate = (from: string, name: string): string | undefined => {
      for (let base = from; ; base = parentOf(base)) {
        const candidate = base === '' ? `node_modules/${name}` : `${base}/node_modules/${name}`;
        if (candidate in lock.packages) return candidate;
        if (base === '') return undefined;
      }
    };
    const visit = (at: string, deps: Record<string, string>): void => {
      for (const name of Object.keys(deps)) {
        const location = locate(at, name);
        if (location === undefined) missing.add(`${name} (needed by ${at || 'package.json'})`);
        else if (!seen.has(location)) {
          seen.add(location);
          const entry = lock.packages[location] ?? {};
          const optionalPeers = Object.keys(entry.peerDependenciesMeta ?? {}).filter((peer) => entry.peerDependenciesMeta[peer]?.optional === true);
          const peers = Object.fromEntries(Object.entries(entry.peerDependencies ?? {}).filter(([peer]) => !optionalPeers.includes(peer)));
          visit(location, { ...entry.dependencies, ...entry.optionalDependencies, ...peers });
        }
      }
    };
    visit('', lock.packages['']?.dependencies ?? {});
    assert.ok(seen.size > 10);
    assert.deepEqual([...missing], []);
  });

  describe('HEALTHCHECK', () => {
    let broker: TestBroker;
    before(async () => {
      broker = await startTestBroker('dockerfile-health');
    });
    after(async () => broker.close());
    const command = (only('HEALTHCHECK').at(-1)?.args ?? '').replace(/^.*?\bCMD\s+/, '');
    const run = (port: number) => new Promise<number>((done) => {
      // shell form, as Docker runs it; `node` is the project's Node here, the image's there
      execFile('sh', ['-c', command], { env: { PATH: `${join(ROOT, 'node_modules/.bin')}:${process.env.PATH}`, BROKER_PORT: String(port) } }, (error) => done(error === null ? 0 : Number(error.code)));
    });

    it('asks GET /health on the port the image sets', () => {
      assert.match(command, /\/health\b/);
      assert.equal(envOf('BROKER_PORT'), /BROKER_PORT\|\|(\d+)/.exec(command.replace(/\s/g, ''))?.[1], 'the fallback port is the image\'s BROKER_PORT');
      assert.equal(envOf('BROKER_HOST'), '0.0.0.0', 'the broker listens beyond the container\'s loopback');
    });

    it('passes against a healthy broker and fails where none answers', async () => {
      assert.equal(await run(Number(new URL(broker.baseUrl).port)), 0);
      assert.equal(await run(await freePort()), 1);
    });
  });
});

describe('deploy/compose.yaml', () => {
  const compose = read('deploy/compose.yaml');
  const image = /-t (\S+) \.$/m.exec(read('justfile'))?.[1];

  it('runs the image `just docker` builds, built from this Dockerfile', () => {
    assert.ok(image !== undefined, 'the justfile tags the image');
    const images = [...compose.matchAll(/^\s*image: (\S+)$/gm)].map((match) => match[1]);
    assert.ok(images.includes(image), `compose runs ${image}`);
    const context = /context: (\S+)/.exec(compose)?.[1] ?? '';
    assert.ok(existsSync(join(ROOT, 'deploy', context, 'Dockerfile')), 'the build context holds the Dockerfile');
  });

  it('publishes the port the image listens on and keeps the image\'s health check', () => {
    const ports = [...compose.matchAll(/- "(?:[\d.]+:)?\d+:(\d+)"/g)].map((match) => match[1]);
    assert.ok(ports.length >= 2);
    for (const port of ports) assert.equal(port, envOf('BROKER_PORT'));
    assert.ok(only('EXPOSE').some((each) => each.args === envOf('BROKER_PORT')));
    // The only health check in the file is Postgres's: the brokers keep the image's (GET /health).
    assert.deepEqual([...compose.matchAll(/healthcheck:\s*\n\s*test: \[([^\]]*)\]/g)].map((match) => match[1]?.split(',')[1]?.trim()), ['"pg_isready"']);
  });

  it('gives the broker an environment it accepts, on the database the Postgres service makes', () => {
    const env = Object.fromEntries([...compose.matchAll(/^\s+([A-Z_]+): (.+)$/gm)].map((match) => [match[1], (match[2] ?? '').replace(/^"|"$/g, '')]));
    const sample = (value: string) => value.replace(/\$\{[A-Z_]+(:[?-][^}]*)?\}/g, 'abc123');
    const url = new URL(sample(env.DATABASE_URL ?? ''));
    assert.equal(url.hostname, 'postgres', 'the host is the Postgres service');
    assert.equal(url.username, env.POSTGRES_USER);
    assert.equal(url.pathname.slice(1), env.POSTGRES_DB);
    const brokerEnv = Object.fromEntries(['DATABASE_URL', 'TRUST_PROXY', 'BROKER_ADMIN_TOKEN'].map((name) => [name, sample(env[name] ?? '').replace(/^abc123$/, 'x'.repeat(32))]));
    const result = loadConfig(brokerEnv);
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.config.trustProxy, true);
  });
});
