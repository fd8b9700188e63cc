// The daemon's disk failing under it, for real: bob's daemon (a real process) keeps its home
// on a small tmpfs that is then filled, or on an ext4 loop device that the kernel turns
// read-only while the daemon runs (the sysfs `trigger_fs_error` knob, as a disk error would
// with errors=remount-ro). Root is needed to mount, so this runs in `just chaos`, not in the
// test command; where a facility is missing it fails and says which. chmod is no test here:
// root writes through any mode. The failure rules themselves are unit-tested anywhere in
// test/daemon/storage.test.ts.
//
// What must hold: the CLI's send says CM_ERR_DAEMON_STORAGE naming the directory; a pushed
// message the inbox cannot store is not acknowledged, so the broker pushes it again; the
// daemon keeps running; after space returns (or the disk is repaired) both databases open,
// pass integrity_check and hold what they held, and every message arrives once.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { daemonPaths } from '../../daemon/paths.ts';
import { startTestBroker } from '../helpers/broker.ts';
import type { TestBroker } from '../helpers/broker.ts';
import { runCli } from '../helpers/cli.ts';
import { daemonEnv, meshIdentity, startDaemonProcess } from '../helpers/daemon-process.ts';
import type { DaemonProcess } from '../helpers/daemon-process.ts';
import { enrolAliceAndBob } from '../helpers/pair.ts';
import { waitUntil } from '../helpers/wait.ts';

const TMPFS_SIZE = '4m';
const IMAGE_BYTES = 32 * 1024 * 1024;
const BEFORE = 3;
const FILL_CHUNK = Buffer.alloc(64 * 1024, 1);
const WAIT_MS = 30_000;

const until = <T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>) => waitUntil(what, probe, { timeoutMs: WAIT_MS, pollMs: 50 });

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Stop the scenario: this machine lacks what it needs (just chaos runs as root, with mounts). */
function unavailable(why: string): never {
  throw new Error(`cannot run here: ${why} (just chaos needs root, tmpfs, loop devices and ext4's trigger_fs_error)`);
}

/** Why this machine cannot run the scenario, or undefined when it can. */
function missing(tools: string[]): string | undefined {
  if (process.getuid?.() !== 0) return 'mounting a file system needs root';
  for (const tool of tools) {
    try {
      run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return `${tool} is not installed`;
    }
  }
  return undefined;
}

/** Write until the file system says ENOSPC; the file that took the space. */
async function fill(dir: string): Promise<string> {
  const path = join(dir, 'filler');
  const file = await open(path, 'w');
  try {
    for (;;) await file.write(FILL_CHUNK);
  } catch (error) {
    assert.equal((error as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    await file.close();
  }
  return path;
}

interface Scene {
  broker: TestBroker;
  alice: DaemonProcess;
  bob: DaemonProcess;
  bobHome: string;
  bobIdentity: ReturnType<typeof meshIdentity>;
  texts(of: DaemonProcess): Promise<string[]>;
}

describe('the daemon on a failing disk', () => {
  let scratch: string;
  let broker: TestBroker;
  const mounts: string[] = [];
  const daemons: DaemonProcess[] = [];
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-storage-'));
    // Claims of 1 s: a push that was not acknowledged comes again within a second or two.
    broker = await startTestBroker('daemon_storage', { timings: { claimMs: 1_000, redeliveryTickMs: 200 } });
  });
  after(async () => {
    for (const daemon of daemons) await daemon.stop('SIGKILL');
    for (const mount of mounts.reverse()) {
      try {
        run('umount', [mount]);
      } catch {
        // already unmounted by the test
      }
    }
    await broker.close();
    await rm(scratch, { recursive: true, force: true });
  });

  /** A fresh mesh: alice's daemon on an ordinary home, bob's on `bobHome`; 3 messages each way. */
  async function scene(bobHome: string): Promise<Scene> {
    const { aliceKeys, bobKeys, meshId } = await enrolAliceAndBob(broker.baseUrl);
    const aliceHome = await mkdtemp(join(scratch, 'alice-'));
    const alice = await startDaemonProcess(aliceHome, meshIdentity(aliceKeys, meshId, 'alice', aliceKeys.publicKey, broker.baseUrl));
    daemons.push(alice);
    const bobIdentity = meshIdentity(bobKeys, meshId, 'bob', aliceKeys.publicKey, broker.baseUrl);
    const bob = await startDaemonProcess(bobHome, bobIdentity);
    daemons.push(bob);
    const texts = async (of: DaemonProcess) => ((await of.ask('GET', '/v1/inbox?limit=1000')).body.items as Array<{ body: string }>).map((row) => row.body);
    for (let index = 0; index < BEFORE; index += 1) {
      assert.equal((await alice.ask('POST', '/v1/send', { to: 'bob', text: `to bob ${index}` })).status, 202);
      assert.equal((await bob.ask('POST', '/v1/send', { to: 'alice', text: `to alice ${index}` })).status, 202);
    }
    await until('the first messages both ways', async () => (await texts(bob)).length === BEFORE && (await texts(alice)).length === BEFORE);
    return { broker, alice, bob, bobHome, bobIdentity, texts };
  }

  /** While bob's disk refuses writes: the CLI's answer, and a push left unacknowledged. */
  async function refusedWhileBroken(test: TestContext, { alice, bob, bobHome }: Scene, id: string, why: string): Promise<void> {
    const dir = daemonPaths(bobHome).dir;
    const cli = await runCli(['send', 'alice', 'written while broken', '--id', id, '--json'], daemonEnv(bobHome));
    assert.equal(cli.code, 1, cli.stdout + cli.stderr);
    const error = cli.json.error as Record<string, any>;
    assert.equal(error.code, 'CM_ERR_DAEMON_STORAGE');
    assert.ok(String(error.message).startsWith(`the daemon could not write under ${dir}: ${why} (`) && String(error.message).endsWith(`message ${id} was not queued`), error.message);
    assert.ok(String(error.hint).includes(dir), error.hint);
    assert.equal(error.details.path, dir);
    const human = await runCli(['send', 'alice', 'written while broken', '--id', id], daemonEnv(bobHome));
    assert.match(human.stderr, new RegExp(`^error CM_ERR_DAEMON_STORAGE: the daemon could not write under ${dir}: `, 'm'));
    assert.match(human.stderr, /^hint: free space on the file system that holds /m);
    test.diagnostic(`CLI: ${human.stderr.trim().split('\n').join(' / ')}`);

    const sent = await alice.ask('POST', '/v1/send', { to: 'bob', text: 'pushed while broken' });
    assert.equal(sent.status, 202);
    await until('bob failing to store the push', () => bob.logs.some((line) => line.msg === 'storage_failed' && String(line.while).startsWith('storing a pushed message')));
    const messageId = await until('the message stored at the broker', async () => {
      const status = await alice.ask('GET', `/v1/message-status?id=${String(sent.body.clientMessageId)}`);
      return status.body.broker?.recipients?.[0] === undefined ? undefined : String(status.body.broker.messageId);
    });
    // Pushed, claimed for 1 s, pushed again: never acknowledged while bob cannot store it.
    await until('pushed at least twice', async () => {
      const { rows } = await broker.db.pool.query('SELECT state, pushes FROM deliveries WHERE message_id = $1', [messageId]);
      return rows[0]?.pushes >= 2 ? rows[0] : undefined;
    });
    const { rows } = await broker.db.pool.query('SELECT state FROM deliveries WHERE message_id = $1', [messageId]);
    assert.equal(rows[0]?.state, 'queued', 'not acknowledged by bob');
    assert.equal(bob.child.exitCode, null, 'the daemon keeps running');
  }

  /**
   * A send in flight when the disk fills: the broker's ack cannot be written, so the row stays
   * in flight; it must go out again (a duplicate to the broker) once space returns, not stay.
   */
  async function ackLostToFullDisk({ bob }: Scene, mountPoint: string): Promise<string> {
    const locker = new pg.Client({ connectionString: broker.database.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE');
      assert.equal((await bob.ask('POST', '/v1/send', { to: 'alice', text: 'acked while full', clientMessageId: 'acked-full' })).status, 202);
      await until('the send in flight, waiting for the broker', async () => (await bob.ask('GET', '/v1/outbox?status=inflight')).body.counts.inflight === 1);
      const filler = await fill(mountPoint);
      await locker.query('ROLLBACK');
      await until('the ack not written', () => bob.logs.some((line) => line.msg === 'outbox_sender_error' && /full/.test(String(line.message))));
      const rows = (await bob.ask('GET', '/v1/outbox?status=inflight')).body.rows as Array<{ clientMessageId: string }>;
      assert.deepEqual(rows.map((row) => row.clientMessageId), ['acked-full']);
      return filler;
    } finally {
      await locker.end();
    }
  }

  /** After the disk is back: everything arrives once, and a retry of the refused send goes out. */
  async function recovered({ alice, bob, texts }: Scene, id: string, alsoToAlice: string[] = []): Promise<void> {
    await until('the push stored at last', async () => (await texts(bob)).includes('pushed while broken'));
    const retry = await bob.ask('POST', '/v1/send', { to: 'alice', text: 'written while broken', clientMessageId: id });
    assert.equal(retry.status, 202, 'never queued before, so new now');
    await until('the retried send delivered', async () => (await texts(alice)).includes('written while broken'));
    await sleep(500);
    assert.deepEqual((await texts(bob)).sort(), [...Array.from({ length: BEFORE }, (_, index) => `to bob ${index}`), 'pushed while broken'].sort());
    assert.deepEqual((await texts(alice)).sort(), [...Array.from({ length: BEFORE }, (_, index) => `to alice ${index}`), 'written while broken', ...alsoToAlice].sort());
  }

  /** Both databases of a stopped daemon: intact, and holding every row. */
  function intact(home: string, inboxRows: number, outboxRows: number): void {
    const paths = daemonPaths(home);
    for (const [path, table, rows] of [[paths.inbox, 'inbox', inboxRows], [paths.outbox, 'outbox', outboxRows]] as const) {
      const db = new Database(path, { readonly: true });
      try {
        assert.equal(db.pragma('integrity_check', { simple: true }), 'ok', `${basename(path)} is intact`);
        assert.equal((db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n, rows, `${basename(path)} holds its rows`);
      } finally {
        db.close();
      }
    }
  }

  it('a full disk: the CLI says so by path, pushes wait unacknowledged, nothing is lost once space returns', async (test) => {
    const absent = missing(['mount', 'umount']);
    if (absent !== undefined) unavailable(absent);
    const mountPoint = join(scratch, 'small');
    await mkdir(mountPoint);
    try {
      run('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE},mode=0700`, 'tmpfs', mountPoint]);
    } catch (error) {
      unavailable(`tmpfs cannot be mounted: ${String(error).split('\n')[0]}`);
    }
    mounts.push(mountPoint);
    const scene_ = await scene(join(mountPoint, 'bob'));
    const filler = await ackLostToFullDisk(scene_, mountPoint);
    await refusedWhileBroken(test, scene_, 'full-1', 'the disk is full');
    await unlink(filler);
    await until('the send whose ack was lost done after all', async () => (await scene_.bob.ask('GET', '/v1/outbox?status=done')).body.counts.done === BEFORE + 1);
    await recovered(scene_, 'full-1', ['acked while full']);
    assert.equal(await scene_.bob.stop('SIGTERM'), 0);
    intact(scene_.bobHome, BEFORE + 1, BEFORE + 2);
  });

  it('a home the kernel turns read-only under the daemon: refused by path, and whole after repair', async (test) => {
    const absent = missing(['mount', 'umount', 'mkfs.ext4', 'e2fsck']);
    if (absent !== undefined) unavailable(absent);
    const image = join(scratch, 'home.img');
    const mountPoint = join(scratch, 'ext4');
    await mkdir(mountPoint);
    await writeFile(image, '');
    await truncate(image, IMAGE_BYTES);
    run('mkfs.ext4', ['-q', '-F', image]);
    try {
      run('mount', ['-o', 'loop,errors=remount-ro', image, mountPoint]);
    } catch (error) {
      unavailable(`no loop device for an ext4 image: ${String(error).split('\n')[0]}`);
    }
    mounts.push(mountPoint);
    const device = basename(run('findmnt', ['-n', '-o', 'SOURCE', mountPoint]).trim());
    const trigger = `/sys/fs/ext4/${device}/trigger_fs_error`;
    if (!existsSync(trigger)) unavailable(`${trigger} is missing: this kernel cannot turn ext4 read-only on demand`);
    const scene_ = await scene(join(mountPoint, 'bob'));
    run('sh', ['-c', `echo claudemesh-test > ${trigger}`]);
    const options = run('findmnt', ['-n', '-o', 'OPTIONS', mountPoint]).trim().split(',');
    assert.ok(options.includes('ro') || options.includes('emergency_ro'), `the file system is read-only now (${options.join(',')})`);
    await refusedWhileBroken(test, scene_, 'ro-1', 'it is read-only');

    // A daemon cannot start on it either; the CLI's automatic start says why, by path.
    await scene_.bob.stop('SIGTERM');
    const dir = daemonPaths(scene_.bobHome).dir;
    const up = await runCli(['daemon', 'up', '--foreground'], daemonEnv(scene_.bobHome));
    assert.equal(up.code, 1, up.stderr);
    assert.match(up.stderr, new RegExp(`^error CM_ERR_DAEMON_STORAGE: the daemon could not write under ${dir}: it is read-only`, 'm'));
    const send = await runCli(['send', 'alice', 'hello'], daemonEnv(scene_.bobHome));
    assert.match(send.stderr, /^error CM_ERR_DAEMON_STORAGE: /m, send.stderr);

    // The repair an operator makes: unmount, fsck, mount again; then start the daemon.
    run('umount', [mountPoint]);
    try {
      run('e2fsck', ['-f', '-y', image]);
    } catch (error) {
      // exit 1: errors corrected (the forced error is recorded in the superblock)
      assert.equal((error as { status?: number }).status, 1, String(error));
    }
    run('mount', ['-o', 'loop,errors=remount-ro', image, mountPoint]);
    intact(scene_.bobHome, BEFORE, BEFORE);
    const bob = await startDaemonProcess(scene_.bobHome);
    daemons.push(bob);
    await recovered({ ...scene_, bob }, 'ro-1');
    assert.equal(await bob.stop('SIGTERM'), 0);
    intact(scene_.bobHome, BEFORE + 1, BEFORE + 1);
  });
});
