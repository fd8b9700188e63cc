// End to end with real processes: a broker child on a fixed port (so it can be stopped and
// started again at the same address), two daemons (alice and bob, one CLAUDEMESH_HOME each)
// started as `node cli.ts daemon up --foreground`, and the CLI verbs talking to them.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { writeConfig } from '../../lib/client-config.ts';
import type { MeshIdentity } from '../../lib/client-config.ts';
import { callBroker } from '../../lib/broker-client.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import type { SigningKeyPair } from '../../lib/crypto.ts';
import { ipcRequest, probeDaemon } from '../../lib/daemon-client.ts';
import { createInvite, encodeInvite } from '../../lib/invite.ts';
import { daemonPaths } from '../../daemon/paths.ts';
import { readPidFile } from '../../daemon/lock.ts';
import { brokerEnv, startBroker } from '../helpers/broker-process.ts';
import type { BrokerProcess } from '../helpers/broker-process.ts';
import { createTestDatabase } from '../helpers/db.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { freePort } from '../helpers/ports.ts';
import { waitUntil } from '../helpers/wait.ts';
import { runCli } from '../helpers/cli.ts';
import type { CliRun } from '../helpers/cli.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const WAIT_MS = 15_000;
const POLL_MS = 50;
// Reconnects in tens of milliseconds instead of seconds.
const TIMINGS = JSON.stringify({ link: { backoffStepsMs: [50, 100, 200, 400], helloAckTimeoutMs: 3_000, pingIntervalMs: 1_000, idleTimeoutMs: 5_000 }, pollIntervalMs: 100 });

let scratch: string;
let database: TestDatabase;
let broker: BrokerProcess;
let port: number;
const daemons = new Map<string, ChildProcess>();

function envFor(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CLAUDEMESH_HOME: join(scratch, home), CLAUDEMESH_DAEMON_TIMINGS: TIMINGS, ...extra };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

function cli(home: string, args: string[], extra: Record<string, string> = {}): Promise<CliRun> {
  return runCli(args, envFor(home, extra));
}

const waitFor = <T>(what: string, probe: () => Promise<T | undefined>) => waitUntil(what, probe, { timeoutMs: WAIT_MS, pollMs: POLL_MS });

async function startDaemon(home: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['cli.ts', 'daemon', 'up', '--foreground'], { cwd: ROOT, env: envFor(home), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => void (stderr += chunk.toString()));
  daemons.set(home, child);
  const socket = daemonPaths(join(scratch, home)).socket;
  await waitFor(`daemon ${home}`, async () => {
    if (child.exitCode !== null) throw new Error(`daemon ${home} exited ${child.exitCode}: ${stderr}`);
    return probeDaemon(socket, 500);
  });
  return child;
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

async function inboxOf(home: string): Promise<Array<Record<string, any>>> {
  const run = await cli(home, ['inbox', '--json', '--peek']);
  assert.equal(run.code, 0, run.stderr);
  return run.json.items as Array<Record<string, any>>;
}

function identity(keys: SigningKeyPair, meshId: string, role: MeshIdentity['role'], memberName: string, owner: string): MeshIdentity {
  return {
    meshId, name: 'team', brokerUrl: `http://127.0.0.1:${port}`, role, memberName, publicKey: keys.publicKey,
    secretKey: keys.secretKey.toString('hex'), ownerPubkey: owner, createdAt: new Date().toISOString(), status: 'active',
  };
}

describe('the daemon, as real processes against a real broker', () => {
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-dae-'));
    database = await createTestDatabase('daemon_e2e');
    port = await freePort();
    broker = await startBroker(brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(port) }));
    const brokerUrl = `http://127.0.0.1:${port}`;
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    const created = await callBroker({ brokerUrl, method: 'POST', path: '/mesh/create', identity: alice, body: { name: 'team', ownerName: 'alice' } });
    const meshId = String(created.body.meshId);
    const invite = createInvite({ meshId, meshName: 'team', brokerUrl, role: 'member', expiresAt: Math.floor(Date.now() / 1000) + 3600, maxUses: 1 }, alice.secretKey);
    const token = encodeInvite(invite);
    await callBroker({ brokerUrl, method: 'POST', path: '/mesh/invite', identity: alice, meshId, body: { token } });
    await callBroker({ brokerUrl, method: 'POST', path: '/mesh/join', identity: bob, body: { token, name: 'bob' } });
    await writeConfig(join(scratch, 'alice'), { version: 1, meshes: [identity(alice, meshId, 'owner', 'alice', alice.publicKey)] });
    await writeConfig(join(scratch, 'bob'), { version: 1, meshes: [identity(bob, meshId, 'member', 'bob', alice.publicKey)] });
    await startDaemon('alice');
    await startDaemon('bob');
  });

  after(async () => {
    for (const child of daemons.values()) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    for (const home of ['alice', 'bob']) {
      const pid = await readPidFile(daemonPaths(join(scratch, home)).pid);
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await broker.stop();
    await database.drop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('alice sends to bob by name; bob’s inbox holds it exactly once, decrypted', async () => {
    const sent = await cli('alice', ['send', 'bob', 'hello bob', '--id', 'first-message', '--json']);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.json.duplicate, false);
    assert.equal(sent.json.recipients, 1);
    const items = await waitFor('bob’s inbox', async () => {
      const rows = await inboxOf('bob');
      return rows.length > 0 ? rows : undefined;
    });
    assert.equal(items[0]?.body, 'hello bob');
    assert.equal(items[0]?.senderName, 'alice');
    const again = await cli('alice', ['send', 'bob', 'hello bob', '--id', 'first-message', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.json.duplicate, true);
    const conflict = await cli('alice', ['send', 'bob', 'something else', '--id', 'first-message', '--json']);
    assert.equal(conflict.code, 1);
    assert.equal(conflict.json.error.code, 'CM_ERR_OUTBOX_CONFLICT');
    await waitFor('alice’s outbox row done', async () => {
      const status = await cli('alice', ['msg', 'status', 'first-message', '--json']);
      return status.json.outbox?.status === 'done' && status.json.broker?.recipients?.[0]?.state === 'delivered' ? status : undefined;
    });
    await sleep(300);
    assert.equal((await inboxOf('bob')).length, 1, 'exactly once');
    assert.equal((await cli('bob', ['inbox', '--unsurfaced', '--peek', '--json'])).json.items.length, 1);
    const search = await cli('bob', ['inbox', '--search', 'hello', '--json']);
    assert.equal(search.json.items.length, 1);
    assert.deepEqual((await cli('bob', ['inbox', '--unsurfaced', '--peek', '--json'])).json.items, [], 'read implies surfaced');
    assert.deepEqual((await cli('bob', ['inbox', '--unseen', '--peek', '--json'])).json.items, [], 'the old flag still works');
    await waitFor('the read mark to reach alice', async () => {
      const status = await cli('alice', ['msg', 'status', 'first-message', '--json']);
      return status.json.broker?.recipients?.[0]?.state === 'read' ? status : undefined;
    });
    const peers = await cli('alice', ['peer', 'list', '--json']);
    assert.deepEqual(peers.json.members.map((member: { name: string }) => member.name).sort(), ['alice', 'bob']);
    const table = await cli('alice', ['peer', 'list']);
    assert.match(table.stdout, /^NAME +KEY +KIND +ROLE +STATUS +ONLINE +GROUPS +SUMMARY\n/);
    assert.match(table.stdout, /^alice \(you\) +[0-9a-f]{12} +member +owner +idle +yes/m);
    assert.match(table.stdout, /^bob +[0-9a-f]{12} +member +member /m);
    const listing = await cli('bob', ['inbox']);
    assert.match(listing.stdout, /^  \S+Z  \[team\]  alice → you\n    hello bob\n/m);
    const status = await cli('alice', ['daemon', 'status']);
    assert.match(status.stdout, /^daemon .+, pid \d+, up \d+ s, socket .+daemon\.sock\noutbox: 0 pending, 0 inflight, 1 done, 0 dead\n/);
    assert.match(status.stdout, /^team +open /m);
  });

  it('a message sent while the broker is down is delivered once it is back', async () => {
    await broker.stop();
    await waitFor('alice to notice', async () => {
      const status = await cli('alice', ['daemon', 'status', '--json']);
      return status.json.meshes?.[0]?.state !== 'open' ? status : undefined;
    });
    const sent = await cli('alice', ['send', 'bob', 'while the broker was down', '--json']);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.json.status, 'pending');
    broker = await startBroker(brokerEnv({ DATABASE_URL: database.url, BROKER_PORT: String(port) }));
    const rows = await waitFor('delivery after the restart', async () => {
      const items = await inboxOf('bob');
      return items.some((item) => item.body === 'while the broker was down') ? items : undefined;
    });
    assert.equal(rows.filter((item) => item.body === 'while the broker was down').length, 1);
    const events = await cli('alice', ['events', '--json']);
    assert.ok(events.json.events.some((event: { kind: string }) => event.kind === 'link_retry'), 'the reconnects are in the event ring');
  });

  it('a second daemon is refused and says which one runs', async () => {
    const second = await cli('alice', ['daemon', 'up', '--foreground', '--json']);
    assert.equal(second.code, 1);
    assert.equal(second.json.error.code, 'CM_ERR_DAEMON_RUNNING');
    assert.equal(second.json.error.details.pid, daemons.get('alice')?.pid);
  });

  it('a daemon killed with SIGKILL leaves a stale socket that does not stop the next one', async () => {
    const bob = daemons.get('bob');
    assert.ok(bob !== undefined);
    bob.kill('SIGKILL');
    await exited(bob);
    const paths = daemonPaths(join(scratch, 'bob'));
    await access(paths.socket);
    await access(paths.pid);
    await startDaemon('bob');
    const sent = await cli('alice', ['send', 'bob', 'after the crash', '--json']);
    assert.equal(sent.code, 0, sent.stderr);
    await waitFor('delivery to the new daemon', async () => ((await inboxOf('bob')).some((item) => item.body === 'after the crash') ? true : undefined));
  });

  it('inside a session (its token file), the CLI sends and reads as that session', async () => {
    const socket = daemonPaths(join(scratch, 'bob')).socket;
    const registered = await ipcRequest(socket, 'POST', '/v1/sessions/register', { sessionId: 'cli-session', name: 'bob-cli', pid: process.pid });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    const tokenFile = join(scratch, 'bob-session-token');
    await writeFile(tokenFile, `${String(registered.body.token)}\n`, { mode: 0o600 });
    const env = { CLAUDEMESH_SESSION_TOKEN_FILE: tokenFile };
    const sent = await cli('bob', ['send', 'alice', 'from the cli session', '--json'], env);
    assert.equal(sent.code, 0, sent.stderr);
    const row = await waitFor('alice receives it', async () => {
      const run = await cli('alice', ['inbox', '--json', '--peek']);
      return (run.json.items as Array<Record<string, any>>).find((item) => item.body === 'from the cli session');
    });
    assert.equal(row.senderKey, registered.body.sessionKey, 'sent as the session');
    const scoped = await cli('bob', ['inbox', '--json', '--peek'], env);
    assert.equal(scoped.code, 0, scoped.stderr);
    const missing = await cli('bob', ['inbox', '--json'], { CLAUDEMESH_SESSION_TOKEN_FILE: join(scratch, 'no-such-file') });
    assert.equal(missing.code, 1);
    assert.equal(missing.json.error.code, 'CM_ERR_UNAUTHORIZED');
    const gone = await ipcRequest(socket, 'POST', '/v1/sessions/unregister', {}, 5_000, { authorization: `ClaudeMesh-Session ${String(registered.body.token)}` });
    assert.equal(gone.status, 200);
  });

  it('daemon down stops it cleanly; a verb starts it again; with auto-start off it exits 3', async () => {
    const down = await cli('bob', ['daemon', 'down', '--json']);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(down.json.wasRunning, true);
    const child = daemons.get('bob');
    if (child !== undefined) assert.equal(await exited(child), 0);
    await assert.rejects(access(daemonPaths(join(scratch, 'bob')).socket), 'the socket is removed');
    const refused = await cli('bob', ['inbox', '--json'], { CLAUDEMESH_NO_AUTOSTART: '1' });
    assert.equal(refused.code, 3);
    assert.equal(refused.json.error.code, 'CM_ERR_DAEMON_NOT_RUNNING');
    const waiting = await cli('alice', ['send', 'bob', 'waited at the broker', '--id', 'cold-inbox', '--json']);
    assert.equal(waiting.code, 0, waiting.stderr);
    await waitFor('the broker to hold it', async () => {
      const status = await cli('alice', ['msg', 'status', 'cold-inbox', '--json']);
      return status.json.outbox?.status === 'done' ? status : undefined;
    });
    const started = await cli('bob', ['inbox', '--json']);
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stderr, /started the daemon/);
    assert.ok(started.json.items.length >= 3, 'the inbox survived the restarts');
    // No waiting here: the cold daemon's first read already shows what the broker held.
    assert.ok(started.json.items.some((item: { body: string }) => item.body === 'waited at the broker'), JSON.stringify(started.json.items.map((item: { body: string }) => item.body)));
    const stopped = await cli('bob', ['daemon', 'down']);
    assert.equal(stopped.code, 0, stopped.stderr);
  });

  it('daemon up detaches, and a second up says what runs', async () => {
    const up = await cli('bob', ['daemon', 'up', '--json']);
    assert.equal(up.code, 0, up.stderr);
    assert.equal(up.json.detached, true);
    assert.equal((await probeDaemon(daemonPaths(join(scratch, 'bob')).socket))?.pid, up.json.pid);
    const again = await cli('bob', ['daemon', 'up']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, new RegExp(`^error CM_ERR_DAEMON_RUNNING: a daemon already runs: pid ${up.json.pid}, version .+, meshes team, socket .+\\nhint: .*daemon down`));
    const down = await cli('bob', ['daemon', 'down']);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(await probeDaemon(daemonPaths(join(scratch, 'bob')).socket, 200), undefined);
  });

  it('a kicked member’s daemon stops reconnecting and shows why', async () => {
    await startDaemon('bob');
    const kicked = await cli('alice', ['kick', 'bob']);
    assert.equal(kicked.code, 0, kicked.stderr);
    const status = await waitFor('bob’s link to stop', async () => {
      const run = await cli('bob', ['daemon', 'status', '--json']);
      return run.json.meshes?.[0]?.state === 'stopped' ? run.json : undefined;
    });
    assert.deepEqual(status.meshes[0].terminal, { code: 4001, reason: 'kicked' });
    const human = await cli('bob', ['daemon', 'status']);
    assert.match(human.stdout, /^team +removed +\S+ +stopped for good: 4001 kicked$/m);
  });
});
