// The first minutes of a new user, as real processes: a broker, `claudemesh new` and `join`,
// and daemons started only by the verbs that need them. Each dead end a user once hit ends
// here in an honest answer or a delivered message: the first send right after auto-start,
// a daemon started while the broker is down (with no roster at all, then with an old one),
// the stale peer list, sent texts kept out of the outbox files, file modes, and a reader that
// closes the pipe early.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, rm, stat } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { daemonPaths } from '../daemon/paths.ts';
import { cliMesh } from './helpers/cli-mesh.ts';
import type { CliMesh } from './helpers/cli-mesh.ts';
import { waitUntil } from './helpers/wait.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const WAIT = { timeoutMs: 20_000, pollMs: 100 };

let mesh: CliMesh;

async function bodiesOf(person: string): Promise<string[]> {
  const run = await mesh.cli(person, ['inbox', '--peek', '--json']);
  assert.equal(run.code, 0, run.stderr);
  return (run.json.items as Array<{ body: string }>).map((item) => item.body);
}

const delivered = (person: string, body: string) => waitUntil(`${person} receives ${JSON.stringify(body)}`, async () => (await bodiesOf(person)).includes(body), WAIT);

/** Run `claudemesh <args> | <reader>` in a shell; the CLI's own exit code and stderr. */
function piped(person: string, args: string[], reader: string): Promise<{ code: number; stderr: string }> {
  const command = `${JSON.stringify(process.execPath)} cli.ts ${args.join(' ')} 2>"$CM_ERR" | ${reader}; exit \${PIPESTATUS[0]}`;
  const errFile = `${mesh.scratch}/piped-stderr`;
  const child = spawn('bash', ['-c', command], { cwd: ROOT, env: mesh.env(person, { CM_ERR: errFile }), stdio: ['ignore', 'ignore', 'ignore'] });
  return new Promise((resolve) => child.on('close', async (code) => resolve({ code: code ?? -1, stderr: await readFile(errFile, 'utf8') })));
}

describe('the dead ends of the first minutes', () => {
  before(async () => {
    mesh = await cliMesh('dead-ends', ['alice', 'bob']);
  });
  after(() => mesh.close());

  it('the first send right after the daemon starts itself is resolved and delivered', async () => {
    for (const round of [1, 2]) {
      if (round > 1) assert.equal((await mesh.cli('alice', ['daemon', 'down'])).code, 0);
      const sent = await mesh.cli('alice', ['send', 'bob', 'first', 'words', String(round), '--json']);
      assert.equal(sent.code, 0, sent.stderr);
      assert.match(sent.stderr, /started the daemon/);
      assert.equal(sent.json.resolved, true, 'not "offline": the send waited for the first connect');
      assert.equal(sent.json.targetName, 'bob');
      assert.equal(sent.json.recipients, 1);
      await delivered('bob', `first words ${round}`);
    }
    const human = await mesh.cli('alice', ['send', 'bob', 'in', 'plain', 'words']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^[0-9a-f-]{36}\n$/);
    assert.match(human.stderr, /^to bob in team \(1 recipient\): /m);
  });

  it('a daemon started with the broker down and no roster queues by name, key and *, and delivers when it is back', async () => {
    const bobKey = ((await mesh.cli('bob', ['whoami', '--json'])).json.meshes as Array<{ key: string }>)[0]?.key ?? '';
    await mesh.cli('alice', ['daemon', 'down']);
    await mesh.stopBroker();
    const roster = daemonPaths(mesh.home('alice')).roster;
    for (const suffix of ['', '-wal', '-shm']) await rm(`${roster}${suffix}`, { force: true });
    const byName = await mesh.cli('alice', ['send', 'bob', 'queued by name']);
    assert.equal(byName.code, 0, byName.stderr);
    assert.match(byName.stderr, /"bob" \(resolved when the broker is reached\): queued; the broker is unreachable, it goes out when it is back/);
    for (const [to, text] of [[bobKey, 'queued by key'], ['*', 'queued for everyone']] as const) {
      const sent = await mesh.cli('alice', ['send', to, text, '--json']);
      assert.equal(sent.code, 0, sent.stderr);
      assert.equal(sent.json.resolved, false);
      assert.equal(sent.json.connected, false);
    }
    const notAKey = await mesh.cli('alice', ['send', '0'.repeat(64), 'to nobody', '--json']);
    assert.equal(notAKey.code, 2, 'refused at once, broker or not');
    assert.equal(notAKey.json.error.code, 'CM_ERR_INVALID_KEY');
    const peers = await mesh.cli('alice', ['peer', 'list', '--json']);
    assert.equal(peers.code, 4);
    assert.equal(peers.json.error.code, 'CM_ERR_MESH_OFFLINE');
    await mesh.startBroker();
    for (const text of ['queued by name', 'queued by key', 'queued for everyone']) await delivered('bob', text);
  });

  it('with an old roster it encrypts and queues at once; peer list says "as of" and exits 4', async () => {
    await waitUntil('alice connected again', async () => (await mesh.cli('alice', ['peer', 'list', '--json'])).code === 0, WAIT);
    await mesh.stopBroker();
    await mesh.cli('alice', ['daemon', 'down']);
    const sent = await mesh.cli('alice', ['send', 'bob', 'from the kept roster', '--json']);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.json.resolved, true, 'resolved and encrypted from roster.db');
    assert.equal(sent.json.connected, false);
    assert.equal(sent.json.status, 'pending');
    const table = await mesh.cli('alice', ['peer', 'list']);
    assert.equal(table.code, 4, 'old data is not a success');
    assert.match(table.stdout, /^bob +[0-9a-f]{12} +member +member +\? +unknown/m);
    assert.match(table.stderr, /unreachable: this is the roster as of \d{4}-\d\d-\d\dT\S+Z, online unknown/);
    const json = await mesh.cli('alice', ['peer', 'list', '--json']);
    assert.equal(json.code, 4);
    assert.equal(json.json.connected, false);
    assert.match(json.json.asOf, /^\d{4}-\d\d-\d\dT/);
    await mesh.startBroker();
    await delivered('bob', 'from the kept roster');
  });

  it('keeps no sent text in the outbox files, and every database file is 0600', async () => {
    const marker = `broadcast-marker-${Date.now()}`;
    const sent = await mesh.cli('alice', ['send', '*', marker, '--json']);
    assert.equal(sent.code, 0, sent.stderr);
    await delivered('bob', marker);
    const paths = daemonPaths(mesh.home('alice'));
    await waitUntil('the outbox row done', async () => (await mesh.cli('alice', ['msg', 'status', sent.json.clientMessageId, '--json'])).json.outbox?.status === 'done', WAIT);
    await waitUntil('the WAL truncated', async () => {
      const files = await Promise.all(['', '-wal'].map((suffix) => readFile(`${paths.outbox}${suffix}`).catch(() => Buffer.alloc(0))));
      return files.every((bytes) => !bytes.includes(marker));
    }, WAIT);
    for (const person of ['alice', 'bob']) {
      const each = daemonPaths(mesh.home(person));
      for (const db of [each.outbox, each.inbox, each.roster]) {
        for (const suffix of ['', '-wal', '-shm']) {
          const info = await stat(`${db}${suffix}`).catch(() => undefined);
          if (info !== undefined) assert.equal(info.mode & 0o777, 0o600, `${db}${suffix}`);
        }
      }
    }
  });

  it('a reader that closes the pipe early ends the command quietly', async () => {
    for (const [args, reader] of [[['inbox', '--peek'], 'head -1'], [['daemon', 'status'], 'head -1'], [['events'], 'true'], [['--help'], 'true']] as const) {
      const run = await piped('bob', [...args], reader);
      assert.equal(run.stderr, '', `${args.join(' ')} | ${reader}`);
      assert.equal(run.code, 0, `${args.join(' ')} | ${reader}`);
    }
  });
});
