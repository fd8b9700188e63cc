// The package as a user installs it: `npm pack` (prepack compiles to dist/ with
// tsconfig.build.json), `npm install -g` of the tarball into a temporary prefix, then the
// installed `claudemesh` bin: --version, --help, and a mesh made and a message sent and
// received against a real broker — with the daemon the installed bin starts by itself,
// from the compiled code. Dependencies come from npm's cache when it has them.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { readPidFile } from '../daemon/lock.ts';
import { daemonPaths } from '../daemon/paths.ts';
import { brokerEnv, startBroker } from './helpers/broker-process.ts';
import type { BrokerProcess } from './helpers/broker-process.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { waitUntil } from './helpers/wait.ts';

const run = promisify(execFile);
const ROOT = new URL('../', import.meta.url).pathname;
// Compiling and installing take tens of seconds on a busy 2-core machine.
const PACKAGE_TIMEOUT_MS = 400_000;
const COMMAND_TIMEOUT_MS = 240_000;

let scratch: string;
let database: TestDatabase;
let broker: BrokerProcess;
let bin: string;

function env(person: string): NodeJS.ProcessEnv {
  // The Node running the tests first on PATH: the installed bin's `#!/usr/bin/env node` finds it.
  const out: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, CLAUDEMESH_HOME: join(scratch, person) };
  delete out.NODE_TEST_CONTEXT;
  return out;
}

async function claudemesh(person: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(bin, args, { env: env(person), timeout: COMMAND_TIMEOUT_MS });
}

describe('the npm package', { timeout: PACKAGE_TIMEOUT_MS }, () => {
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-package-'));
    database = await createTestDatabase('package');
    broker = await startBroker(brokerEnv({ DATABASE_URL: database.url }));
  });

  after(async () => {
    for (const person of ['alice', 'bob']) {
      const pid = await readPidFile(daemonPaths(join(scratch, person)).pid).catch(() => undefined);
      try {
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await broker.stop();
    await database.drop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('packs compiled JavaScript only, installs, and its bin sends a message through a real broker', async () => {
    const packed = await run('npm', ['pack', '--json', '--pack-destination', scratch], { cwd: ROOT, env: env('packer'), timeout: COMMAND_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 });
    const [manifest] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = (manifest?.files ?? []).map((file) => file.path);
    assert.ok(files.includes('dist/cli.js') && files.includes('bin/claudemesh.js'), files.join(' '));
    assert.deepEqual(files.filter((path) => /^(test|bench|\.ci|sql|lib|daemon)\//.test(path) || path.endsWith('.ts')), [], 'no sources, tests or benchmarks');
    const prefix = join(scratch, 'prefix');
    await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(scratch, manifest?.filename ?? '')], { env: env('packer'), timeout: COMMAND_TIMEOUT_MS });
    bin = join(prefix, 'bin', 'claudemesh');
    const version = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')).version as string;
    assert.equal((await claudemesh('alice', ['--version'])).stdout, `${version}\n`);
    assert.match((await claudemesh('alice', ['--help'])).stdout, /^usage: claudemesh <verb> \[options\]/);

    await claudemesh('alice', ['new', 'team', '--broker', broker.baseUrl, '--name', 'alice']);
    const token = (await claudemesh('alice', ['invite'])).stdout.trim();
    await claudemesh('bob', ['join', token, '--name', 'bob']);
    const sent = await claudemesh('alice', ['send', 'bob', 'from', 'the', 'installed', 'package', '--json']);
    assert.equal(JSON.parse(sent.stdout).resolved, true);
    await waitUntil('bob receives it', async () => {
      const inbox = JSON.parse((await claudemesh('bob', ['inbox', '--peek', '--json'])).stdout) as { items: Array<{ body: string }> };
      return inbox.items.some((item) => item.body === 'from the installed package');
    }, { timeoutMs: 30_000, pollMs: 200 });
    const status = JSON.parse((await claudemesh('alice', ['daemon', 'status', '--json'])).stdout) as { pid: number };
    const command = await readFile(`/proc/${status.pid}/cmdline`, 'utf8').catch(() => '');
    if (command !== '') assert.match(command, /dist\/cli\.js\0daemon\0up\0--foreground/, 'the daemon runs the compiled code');

    // A Node too old for the compiled code (this machine's system Node, where it is one) gets
    // the sentence that says so, not a SyntaxError from deep inside.
    const installed = join(prefix, 'lib', 'node_modules', 'claudemesh', 'bin', 'claudemesh.js');
    for (const old of ['/usr/bin/node', '/usr/local/bin/node']) {
      const version = await run(old, ['-p', 'process.versions.node']).then((out) => out.stdout.trim(), () => '');
      const [major = 0, minor = 0] = version.split('.').map(Number);
      if (version === '' || major > 22 || (major === 22 && minor >= 18)) continue;
      const refused = await run(old, [installed, '--version'], { env: env('alice') }).then(() => undefined, (error: { code?: number; stderr?: string }) => error);
      assert.equal(refused?.code, 2, `Node ${version} is refused with exit 2`);
      assert.match(refused?.stderr ?? '', /claudemesh needs Node 22\.18 or newer, this is v/);
    }
  });
});
