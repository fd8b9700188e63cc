// A rolling restart as an operator runs it: two broker instances on one database behind a
// balancer, real daemons spread across both sending to each other all the while, and each
// instance restarted in turn (SIGTERM's path: /health draining, sockets closed 1012, its
// presences handed to a lease with no instance). Nothing is lost or shown twice, and nobody
// hears `peer_left` for a peer that came back inside its lease — while a peer that really
// went away is announced once its lease ran out, by whichever instance is left.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startBalancer } from './helpers/balancer.ts';
import type { Balancer } from './helpers/balancer.ts';
import { startTestBroker } from './helpers/broker.ts';
import type { TestBroker } from './helpers/broker.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { identityOf, startMember, until } from './helpers/pair.ts';
import type { Member } from './helpers/pair.ts';
import { seedMesh } from './helpers/peer.ts';

// Short enough that the departed peer's lease ends within the test, long enough that every
// other peer is back well inside it.
const TIMINGS = { leaseMs: 5_000, instanceBeatMs: 100 };
const SEND_EVERY_MS = 15;
const SETTLE_MS = 300;
const NAMES = ['alice', 'bob', 'carol', 'erin', 'dave'] as const;

interface Sent {
  to: string;
  text: string;
}

describe('a rolling restart of two instances behind a balancer', () => {
  let database: TestDatabase;
  let scratch: string;
  let balancer: Balancer;
  const brokers = new Map<string, TestBroker>();
  const members = new Map<string, Member>();

  const startInstance = async (id: string): Promise<number> => {
    const broker = await startTestBroker('rolling', { database, instanceId: id, timings: TIMINGS });
    brokers.set(id, broker);
    return Number(new URL(broker.baseUrl).port);
  };
  const restart = async (id: string): Promise<void> => {
    await brokers.get(id)?.close();
    const port = await startInstance(id);
    balancer.backends = [...brokers.values()].map((broker) => Number(new URL(broker.baseUrl).port));
    assert.ok(balancer.backends.includes(port));
  };
  const allConnected = (who: readonly Member[]) => until('every daemon connected again', () => who.every((member) => member.daemon.links.get(member.identity.meshId)?.isOpen === true));

  before(async () => {
    database = await createTestDatabase('rolling');
    scratch = await mkdtemp(join(tmpdir(), 'cm-rolling-'));
    balancer = await startBalancer([await startInstance('a'), await startInstance('b')]);
    const mesh = await seedMesh(brokers.get('a')!.db.pool, NAMES.length, [...NAMES]);
    const owner = mesh.members[0]!.publicKey;
    for (const [index, name] of NAMES.entries()) {
      members.set(name, await startMember(join(scratch, name), identityOf(mesh.members[index]!, mesh.meshId, name, owner, balancer.url)));
    }
  });
  after(async () => {
    for (const member of members.values()) await member.stop().catch(() => {});
    for (const broker of brokers.values()) await broker.close();
    await balancer.close();
    await database.drop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('loses nothing, shows nothing twice, and tells no peer_left for peers back inside the lease', async () => {
    const online = (id: string) => [...brokers.get(id)!.broker.context.hub.online()].length;
    assert.ok(online('a') > 0 && online('b') > 0, `clients spread across both instances (a: ${online('a')}, b: ${online('b')})`);
    const senders = NAMES.filter((name) => name !== 'dave').map((name) => members.get(name)!);
    const heard = new Map<string, Array<{ kind: string; name: string }>>();
    for (const member of senders) {
      const events: Array<{ kind: string; name: string }> = [];
      heard.set(member.identity.memberName, events);
      member.daemon.events.subscribe((event) => {
        if (event.kind === 'peer_joined' || event.kind === 'peer_left') events.push({ kind: event.kind, name: String((event.peer as { name?: unknown } | undefined)?.name) });
      });
    }

    // The joins of the start reach the other instance's sockets a moment later: let them
    // land, then listen from a clean slate.
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    for (const events of heard.values()) events.length = 0;

    const sent: Sent[] = [];
    const failures: string[] = [];
    let sending = true;
    const load = Promise.all(senders.map(async (member, index) => {
      for (let n = 0; sending; n += 1) {
        const to = senders[(index + 1 + (n % (senders.length - 1))) % senders.length]!.identity.memberName;
        const text = `${member.identity.memberName}->${to}#${n}`;
        const answer = await member.ask('POST', '/v1/send', { to, text });
        if (answer.status >= 200 && answer.status < 300) sent.push({ to, text });
        else failures.push(`${text}: ${answer.status} ${JSON.stringify(answer.body)}`);
        await new Promise((resolve) => setTimeout(resolve, SEND_EVERY_MS));
      }
    }));

    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    await members.get('dave')!.stop();
    for (const id of ['a', 'b']) {
      assert.ok(online(id) > 0, `instance ${id} holds clients when it restarts`);
      await restart(id);
      await allConnected(senders);
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    }
    sending = false;
    await load;

    assert.deepEqual(failures, [], 'every send was taken');
    assert.ok(sent.length > 50, `a real load went through the restarts (${sent.length} sends)`);
    const inboxOf = (name: string) => members.get(name)!.daemon.listInbox({ limit: 1_000 }).map((row) => row.body);
    await until('every message delivered', () => sent.every(({ to, text }) => inboxOf(to).includes(text)));
    for (const member of senders) {
      const bodies = inboxOf(member.identity.memberName);
      assert.equal(bodies.length, new Set(bodies).size, `${member.identity.memberName} sees nothing twice`);
      assert.equal(bodies.length, sent.filter(({ to }) => to === member.identity.memberName).length, 'and nothing it was not sent');
    }

    // dave did not come back: once his lease ran out, everyone hears it, once.
    await until('dave announced gone', () => [...heard.values()].every((events) => events.some((event) => event.kind === 'peer_left' && event.name === 'dave')));
    await new Promise((resolve) => setTimeout(resolve, TIMINGS.instanceBeatMs * 3));
    for (const [name, events] of heard) {
      assert.deepEqual(events, [{ kind: 'peer_left', name: 'dave' }], `${name} heard only that dave left`);
    }
  });
});
