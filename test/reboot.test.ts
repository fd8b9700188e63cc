// A whole machine "rebooting" under traffic: the broker (`node broker.ts` with its embedded
// Postgres, as a one-box deployment runs), Postgres itself (postmaster and every backend) and
// both daemons are SIGKILLed in the same instant, in the middle of a burst of sends between
// alice and bob; then everything is started again in the same places. What the daemons
// acknowledged before the kill must arrive without any help; what they never answered is
// sent again under the same ids, as any client does; every message is in its recipient's
// inbox exactly once.
//
// SIGKILL of every process is not a power cut: the kernel's page cache survives it. What a
// power cut adds is covered by fsync (SQLite synchronous=FULL, Postgres synchronous_commit),
// which this test cannot take away.
//
// `npm test` runs one round of 150 messages each way; `just chaos` runs REBOOT_ROUNDS rounds
// of REBOOT_MESSAGES, rebooting at a different point of each burst.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { daemonPaths } from '../daemon/paths.ts';
import { brokerEnv, startBroker } from './helpers/broker-process.ts';
import type { BrokerProcess } from './helpers/broker-process.ts';
import { meshIdentity, startDaemonProcess } from './helpers/daemon-process.ts';
import type { DaemonProcess } from './helpers/daemon-process.ts';
import { enrolAliceAndBob } from './helpers/pair.ts';
import { freePort } from './helpers/ports.ts';
import { waitUntil } from './helpers/wait.ts';

const ROUNDS = Number(process.env.REBOOT_ROUNDS ?? 1);
const MESSAGES = Number(process.env.REBOOT_MESSAGES ?? 150);
const CONCURRENCY = 10;
const INBOX_PAGE = 1_000;
const DELIVERY_WAIT_MS = 60_000;
const SETTLE_MS = 500;
const GONE_WAIT_MS = 10_000;

type Answered = Map<string, number>;

/** The postmaster and every process it started, from its pid file and /proc. */
function postgresProcesses(dataDir: string): number[] {
  const postmaster = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).filter((pid) => {
    try {
      // "pid (comm) state ppid …": the comm may hold spaces, so read after its closing paren.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster;
    } catch {
      return false;
    }
  }).map(Number);
  return [postmaster, ...children];
}

/** Rows a dead daemon's outbox still held for the broker (pending or in flight). */
function unsent(home: string): number {
  const db = new Database(daemonPaths(home).outbox);
  try {
    return (db.prepare("SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'inflight')").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

/** Every inbox body of a daemon, oldest first, page by page. */
async function inboxBodies(daemon: DaemonProcess): Promise<string[]> {
  const bodies: string[] = [];
  for (let after = 0; ;) {
    const items = (await daemon.ask('GET', `/v1/inbox?limit=${INBOX_PAGE}&after=${after}`)).body.items as Array<{ id: number; body: string }>;
    bodies.push(...items.map((item) => item.body));
    if (items.length < INBOX_PAGE) return bodies;
    after = items.at(-1)?.id ?? after;
  }
}

describe('a whole machine killed mid-burst and started again', () => {
  let scratch: string;
  let pgBase: string;
  let env: NodeJS.ProcessEnv;
  let broker: BrokerProcess | undefined;
  const daemons: { alice?: DaemonProcess; bob?: DaemonProcess } = {};
  const homes = { alice: '', bob: '' };
  // every text sent to each, over all rounds
  const expected = { alice: [] as string[], bob: [] as string[] };

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-reboot-'));
    // Its own directory: as root the embedded cluster's parent must be traversable (0711).
    pgBase = await mkdtemp(join(tmpdir(), 'cm-reboot-pg-'));
    env = brokerEnv({
      BROKER_PORT: String(await freePort()), EMBEDDED_PG_PORT: String(await freePort()), BROKER_DATA_DIR: pgBase,
      SEND_BURST: '100000', SEND_RATE_PER_SECOND: '100000', LOOP_GUARD_BURST: '100000', LOOP_GUARD_RATE_PER_SECOND: '100000',
    });
    delete env.DATABASE_URL;
    broker = await startBroker(env);
    const { aliceKeys, bobKeys, meshId } = await enrolAliceAndBob(broker.baseUrl);
    homes.alice = join(scratch, 'alice');
    homes.bob = join(scratch, 'bob');
    daemons.alice = await startDaemonProcess(homes.alice, meshIdentity(aliceKeys, meshId, 'alice', aliceKeys.publicKey, broker.baseUrl));
    daemons.bob = await startDaemonProcess(homes.bob, meshIdentity(bobKeys, meshId, 'bob', aliceKeys.publicKey, broker.baseUrl));
  });
  after(async () => {
    await daemons.alice?.stop('SIGKILL');
    await daemons.bob?.stop('SIGKILL');
    await broker?.stop('SIGTERM');
    await rm(scratch, { recursive: true, force: true });
    await rm(pgBase, { recursive: true, force: true });
  });

  // One test per round (each within the runner's per-test timeout), in order, on the same machine.
  for (let round = 1; round <= ROUNDS; round += 1) {
    it(`round ${round}: loses nothing acknowledged and shows nothing twice`, async (test) => {
      assert.ok(broker !== undefined, 'the previous round left everything running');
      const { alice, bob } = daemons as Required<typeof daemons>;
      // Each round reboots at another point of its burst: 20 % to 80 % of the answers.
      const killAfter = Math.round(2 * MESSAGES * (0.2 + (0.6 * (round - 1)) / Math.max(1, ROUNDS - 1)));
      const sends = Array.from({ length: MESSAGES }, (_, index) => [
        { from: alice, to: 'bob', text: `r${round} alice→bob ${index}`, clientMessageId: `r${round}-a2b-${index}` },
        { from: bob, to: 'alice', text: `r${round} bob→alice ${index}`, clientMessageId: `r${round}-b2a-${index}` },
      ]).flat();
      const answered: Answered = new Map();
      let next = 0;
      let killedAt: number | undefined;
      let killed: number[] = [];
      const killAll = (): void => {
        // One instant for every process: collect the pids first, then signal them all.
        killed = postgresProcesses(join(pgBase, 'postgres'));
        const pids = [alice.child.pid, bob.child.pid, broker?.child.pid, ...killed];
        for (const pid of pids) {
          try {
            if (pid !== undefined) process.kill(pid, 'SIGKILL');
          } catch {
            // a backend that ended by itself a moment ago
          }
        }
        killedAt = Date.now();
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        while (next < sends.length && killedAt === undefined) {
          const send = sends[next]!;
          next += 1;
          const { from, ...body } = send;
          const answer = await from.ask('POST', '/v1/send', body).catch(() => undefined);
          if (answer !== undefined && (answer.status === 202 || answer.status === 200)) answered.set(send.clientMessageId, answer.status);
          if (answered.size >= killAfter && killedAt === undefined) killAll();
        }
      }));
      assert.ok(killedAt !== undefined && answered.size < sends.length, `killed mid-burst (${answered.size} of ${sends.length} answered)`);
      await Promise.all([alice.stop('SIGKILL'), bob.stop('SIGKILL'), broker.stop('SIGKILL')]);
      // Postgres refuses to start while the pid in postmaster.pid exists (even as a zombie
      // not yet reaped): after a real reboot it is gone, so wait for that here.
      await waitUntil('every killed Postgres process gone', () => killed.every((pid) => !existsSync(`/proc/${pid}`)), { timeoutMs: GONE_WAIT_MS, pollMs: 20 });
      const inOutboxes = unsent(homes.alice) + unsent(homes.bob);

      // Start everything again, in the same places: Postgres recovers inside the broker's start.
      const restarting = Date.now();
      broker = await startBroker(env);
      daemons.alice = await startDaemonProcess(homes.alice);
      daemons.bob = await startDaemonProcess(homes.bob);
      const upMs = Date.now() - restarting;
      for (const send of sends) expected[send.to === 'bob' ? 'bob' : 'alice'].push(send.text);

      // Acknowledged before the kill: delivered with no help from any client.
      const acked = sends.filter((send) => answered.has(send.clientMessageId));
      const deliveredAcked = async () => {
        const inboxes = { alice: new Set(await inboxBodies(daemons.alice!)), bob: new Set(await inboxBodies(daemons.bob!)) };
        return acked.every((send) => inboxes[send.to === 'bob' ? 'bob' : 'alice'].has(send.text));
      };
      await waitUntil('every acknowledged message delivered after the restart', deliveredAcked, { timeoutMs: DELIVERY_WAIT_MS, pollMs: 100 });
      const ackedMs = Date.now() - restarting;

      // Never answered: the client sends again with the same id (200 if it was stored after all).
      let repeats = 0;
      const again = sends.filter((each) => !answered.has(each.clientMessageId));
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        for (let send = again.shift(); send !== undefined; send = again.shift()) {
          const { from, ...body } = send;
          const answer = await (from === alice ? daemons.alice! : daemons.bob!).ask('POST', '/v1/send', body);
          assert.ok(answer.status === 202 || answer.status === 200, JSON.stringify(answer.body));
          if (answer.status === 200) repeats += 1;
        }
      }));
      const complete = async () => (await inboxBodies(daemons.alice!)).length >= expected.alice.length && (await inboxBodies(daemons.bob!)).length >= expected.bob.length;
      await waitUntil('every message delivered', complete, { timeoutMs: DELIVERY_WAIT_MS, pollMs: 100 });
      await sleep(SETTLE_MS);
      for (const name of ['alice', 'bob'] as const) {
        const bodies = await inboxBodies(daemons[name]!);
        assert.equal(bodies.length, new Set(bodies).size, `nothing twice in ${name}'s inbox`);
        assert.deepEqual([...bodies].sort(), [...expected[name]].sort(), `${name}'s inbox holds every message sent to it`);
      }
      test.diagnostic(`round ${round}: ${sends.length} sends, killed after ${answered.size} answers; up again in ${upMs} ms; ` +
        `${inOutboxes} of the ${acked.length} acknowledged were still in an outbox at the kill, all delivered ${ackedMs} ms after the restart began; ${sends.length - answered.size} sent again (${repeats} already stored)`);
    });
  }
});
