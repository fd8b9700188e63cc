// Secrets never leave the process that owns them: after a mesh is made, joined and used
// through the real CLI, daemons and broker, no secret key (nor its seed half) appears in the
// broker's log, a daemon's log or events, any IPC answer or any --json output.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '../lib/log.ts';
import { createDatabase, migrate } from '../lib/broker/db.ts';
import { brokerEnv, startBroker } from './helpers/broker-process.ts';
import type { BrokerProcess } from './helpers/broker-process.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { waitUntil } from './helpers/wait.ts';

const HOMES = ['alice', 'bob'] as const;

/** Every file under `dir`, as text (SQLite files included: their pages are scanned as bytes). */
async function texts(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out.set(path, (await readFile(path)).toString('latin1'));
  }
  return out;
}

describe('secrets stay home', () => {
  let scratch: string;
  let database: TestDatabase;
  let broker: BrokerProcess;
  const outputs: string[] = [];
  const env = (home: string) => ({ ...process.env, CLAUDEMESH_HOME: join(scratch, home), CLAUDEMESH_BROKER: broker.baseUrl });
  const cli = async (home: string, args: string[]) => {
    const run = await runCli(args, env(home));
    outputs.push(`${home} ${args.join(' ')}\n${run.stdout}\n${run.stderr}`);
    return run;
  };

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-secrets-'));
    database = await createTestDatabase('secrets');
    const quiet = createLogger({ write: () => {} });
    const setup = createDatabase({ url: database.url, log: quiet });
    await migrate(setup.pool, quiet);
    await setup.close();
    broker = await startBroker(brokerEnv({ DATABASE_URL: database.url, LOG_LEVEL: 'debug' }));
  });
  after(async () => {
    for (const home of HOMES) await runCli(['daemon', 'down'], env(home));
    await broker.stop('SIGTERM');
    await database.drop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('appear in no log, event, IPC answer or --json output', async () => {
    assert.equal((await cli('alice', ['new', 'team', '--name', 'alice', '--json'])).code, 0);
    const token = (await cli('alice', ['invite'])).stdout.trim();
    assert.equal((await cli('bob', ['join', token, '--name', 'bob', '--json'])).code, 0);
    const sent = await cli('alice', ['send', 'bob', 'the build is green', '--json']);
    assert.equal(sent.code, 0, sent.stderr);
    await waitUntil('bob got it', async () => ((await cli('bob', ['inbox', '--json', '--peek'])).json.items ?? []).length > 0, { timeoutMs: 15_000, pollMs: 200 });
    for (const home of HOMES) {
      for (const args of [['list', '--json'], ['peer', 'list', '--json'], ['inbox', '--json', '--peek'], ['daemon', 'status', '--json'], ['events', '--json']]) await cli(home, args);
    }
    const secrets: string[] = [];
    for (const home of HOMES) {
      const config = JSON.parse(await readFile(join(scratch, home, 'config.json'), 'utf8')) as { meshes: Array<{ secretKey: string }> };
      for (const mesh of config.meshes) secrets.push(mesh.secretKey, mesh.secretKey.slice(0, 64), Buffer.from(mesh.secretKey, 'hex').toString('base64'));
    }
    assert.ok(secrets.length >= 6 && secrets.every((secret) => secret.length >= 44));
    const places = new Map<string, string>([['broker log', broker.logs.map((line) => JSON.stringify(line)).join('\n')], ['cli outputs', outputs.join('\n')]]);
    for (const home of HOMES) {
      for (const [path, text] of await texts(join(scratch, home, 'daemon'))) {
        // The outbox holds ciphertext and the inbox plaintext of messages: never keys.
        places.set(path, text);
      }
    }
    for (const [place, text] of places) {
      for (const secret of secrets) assert.ok(!text.includes(secret), `a secret key appears in ${place}`);
    }
  });
});
