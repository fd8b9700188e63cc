// The daemon-facing verbs where no daemon is needed: usage errors, exit 3 when the daemon
// is down and auto-start is off, and the service unit `daemon install-service` writes.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { main } from '../../../lib/cli/main.ts';
import { daemonPaths } from '../../../daemon/paths.ts';
import { VERSION } from '../../../lib/version.ts';

describe('daemon-facing verbs without a daemon', () => {
  let home: string;
  let fakeHome: string;
  const originalHome = process.env.HOME;
  before(async () => {
    home = await mkdtemp(join(tmpdir(), 'cm-verbs-daemon-'));
    fakeHome = await mkdtemp(join(tmpdir(), 'cm-verbs-home-'));
    process.env.HOME = fakeHome;
  });
  after(async () => {
    process.env.HOME = originalHome;
    await rm(home, { recursive: true, force: true });
    await rm(fakeHome, { recursive: true, force: true });
  });

  async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const code = await main(argv, {
      env: { CLAUDEMESH_NO_AUTOSTART: '1' },
      home,
      now: Date.now,
      stdout: (text) => void (stdout += text),
      stderr: (text) => void (stderr += text),
    });
    return { code, stdout, stderr };
  }

  it('refuses bad actions and values with exit 2', async () => {
    for (const argv of [['peer', 'show'], ['msg', 'find', 'x'], ['daemon', 'sideways'], ['send', 'bob', 'hi', '--priority', 'urgent'], ['inbox', '--limit', '0']]) {
      const result = await run(...argv);
      assert.equal(result.code, 2, `${argv.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, /^error CM_ERR_USAGE: /);
    }
  });

  it('exits 3 with CM_ERR_DAEMON_NOT_RUNNING when the daemon is down and may not be started', async () => {
    for (const argv of [['send', 'bob', 'hi'], ['inbox'], ['peer', 'list'], ['events'], ['daemon', 'status']]) {
      const result = await run(...argv, '--json');
      assert.equal(result.code, 3, `${argv.join(' ')}: ${result.stdout}${result.stderr}`);
      assert.equal(JSON.parse(result.stdout).error.code, 'CM_ERR_DAEMON_NOT_RUNNING');
    }
  });

  it('daemon down when nothing runs is not an error', async () => {
    const result = await run('daemon', 'down');
    assert.equal(result.code, 0);
    assert.match(result.stdout, /was not running/);
  });

  it('warns when the daemon runs another version, and prints events one per line', async () => {
    const paths = daemonPaths(home);
    await mkdir(paths.dir, { recursive: true, mode: 0o700 });
    const server = createServer((req, res) => {
      const body = req.url?.startsWith('/v1/version')
        ? { pid: 1, version: '0.0.0-old', ipcApi: 'v1', meshes: [], socket: paths.socket, uptimeMs: 1, startedAt: '' }
        : { events: [{ seq: 7, at: '2030-01-01T00:00:00.000Z', kind: 'link_retry', mesh: 'team', delayMs: 800 }] };
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((resolve) => server.listen(paths.socket, resolve));
    try {
      const result = await run('events');
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /the daemon runs version 0\.0\.0-old, this command is /);
      assert.equal(result.stdout, '2030-01-01T00:00:00.000Z  link_retry  {"mesh":"team","delayMs":800}\n');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  /** A fake daemon on the socket: /v1/version, and `answer` for everything else. */
  async function fakeDaemon(answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<() => Promise<unknown>> {
    const paths = daemonPaths(home);
    await mkdir(paths.dir, { recursive: true, mode: 0o700 });
    const server = createServer((req, res) => {
      if (req.url?.startsWith('/v1/version')) {
        res.end(JSON.stringify({ pid: 1, version: VERSION, ipcApi: 'v1', meshes: [], socket: paths.socket, uptimeMs: 1, startedAt: '' }));
        return;
      }
      answer(req, res);
    });
    await new Promise<void>((resolve) => server.listen(paths.socket, resolve));
    return () => new Promise((resolve) => server.close(resolve));
  }

  it('shows a hostile peer name and message body with its control characters visible: no forged row or header', async () => {
    const hostile = 'alice\u001b[2K\r\u202eFAKE\nmallory  0000  member  owner  idle  yes';
    const close = await fakeDaemon((req, res) => {
      const peer = { key: 'a'.repeat(64), memberKey: 'a'.repeat(64), name: hostile, kind: 'member', role: 'member', status: 'idle\r', summary: '', groups: ['x\u001b[0m'], online: true };
      const item = { id: 1, meshId: 'm', mesh: 'team', senderName: hostile, senderKey: 'a'.repeat(64), target: 'b'.repeat(64), body: 'hi\u001b[31m\n* 2030-01-01T00:00:00.000Z  [team]  bob → you\r', createdAt: '2030-01-01T00:00:00.000Z', readAt: 1 };
      const body = req.url?.startsWith('/v1/peers') ? { meshId: 'm', mesh: 'team', connected: true, asOf: '', you: 'c'.repeat(64), peers: [peer], members: [] } : { items: [item] };
      res.end(JSON.stringify(body));
    });
    try {
      const peers = await run('peer', 'list');
      assert.equal(peers.code, 0, peers.stderr);
      assert.doesNotMatch(peers.stdout, /[\u0000-\u0009\u000b-\u001f\u202e]/, 'no raw control character reaches the terminal');
      assert.equal(peers.stdout.split('\n').length, 3, 'a header and one row, whatever the name holds');
      assert.match(peers.stdout, /^alice\\x1b\[2K\\x0d\\u202eFAKE\\x0amallory/m);
      const inbox = await run('inbox', '--peek');
      assert.equal(inbox.code, 0, inbox.stderr);
      assert.doesNotMatch(inbox.stdout, /[\u0000-\u0009\u000b-\u001f\u202e]/);
      const lines = inbox.stdout.split('\n');
      assert.equal(lines.filter((line) => !line.startsWith('    ') && line !== '').length, 1, 'one header line; the body cannot pass for another');
      assert.match(inbox.stdout, /^ {4}\* 2030-01-01T00:00:00\.000Z {2}\[team\] {2}bob → you\\x0d$/m);
    } finally {
      await close();
    }
  });

  it('a send whose answer is lost after the request went out says the outcome is unknown, with the id it chose', async () => {
    const close = await fakeDaemon((req) => {
      req.resume();
      req.on('end', () => req.socket.destroy());
    });
    try {
      const chosen = await run('send', 'bob', 'hi', '--json');
      assert.equal(chosen.code, 3);
      const error = JSON.parse(chosen.stdout).error;
      assert.equal(error.code, 'CM_ERR_OUTCOME_UNKNOWN');
      assert.match(error.details.clientMessageId, /^[0-9a-f-]{36}$/, 'the CLI chose the id before asking');
      assert.match(error.message, new RegExp(`unknown whether message ${error.details.clientMessageId} was queued.+may be queued; claudemesh msg status ${error.details.clientMessageId} tells`));
      const given = await run('send', 'bob', 'hi', '--id', 'my-id-1');
      assert.equal(given.code, 3);
      assert.match(given.stderr, /^error CM_ERR_OUTCOME_UNKNOWN: unknown whether message my-id-1 was queued/);
      assert.match(given.stderr, /hint: claudemesh msg status my-id-1; .*send again with --id my-id-1/);
    } finally {
      await close();
    }
  });

  it('send gives every message a fresh random (version 4) UUID as its client message id', async () => {
    const asked: string[] = [];
    const close = await fakeDaemon((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const { clientMessageId } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { clientMessageId: string };
        asked.push(clientMessageId);
        res.end(JSON.stringify({ clientMessageId, status: 'pending', mesh: 'team', target: 'b'.repeat(64), targetName: 'bob', recipients: 1, resolved: true, connected: true, duplicate: false }));
      });
    });
    try {
      for (let n = 0; n < 3; n += 1) {
        const sent = await run('send', 'bob', 'hi');
        assert.equal(sent.code, 0, sent.stderr);
        assert.equal(sent.stdout, `${asked.at(-1)}\n`, 'prints the id it sent');
      }
      for (const id of asked) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.equal(new Set(asked).size, 3, 'never the same id twice');
    } finally {
      await close();
    }
  });

  it('daemon install-service writes a unit for this home only; uninstall-service removes it', { skip: process.platform !== 'linux' }, async () => {
    const result = await run('daemon', 'install-service', '--json');
    assert.equal(result.code, 0, result.stderr);
    const unitPath = JSON.parse(result.stdout).unit as string;
    assert.match(unitPath, new RegExp(`^${join(fakeHome, '.config', 'systemd', 'user')}/claudemesh-daemon-[0-9a-f]{8}\\.service$`), 'not the default home: a unit of its own');
    const unit = await readFile(unitPath, 'utf8');
    assert.match(unit, /cli\.ts" daemon up --foreground$/m);
    assert.match(unit, new RegExp(`CLAUDEMESH_HOME=${home}`));
    const removed = await run('daemon', 'uninstall-service', '--json');
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(JSON.parse(removed.stdout).removed, true);
    await assert.rejects(readFile(unitPath, 'utf8'));
    const again = await run('daemon', 'uninstall-service');
    assert.equal(again.code, 0);
    assert.match(again.stdout, /no service was installed for /);
  });
});
