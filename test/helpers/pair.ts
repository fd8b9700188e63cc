// Two members of one mesh, alice (owner) and bob, each with a real daemon (in this process,
// on its own unix socket under its own CLAUDEMESH_HOME) connected to a real broker on a fresh
// database. For tests that run a claudemesh child process (hook, mcp) against bob's daemon.

import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callBroker } from '../../lib/broker-client.ts';
import { writeConfig } from '../../lib/client-config.ts';
import type { MeshIdentity } from '../../lib/client-config.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import type { SigningKeyPair } from '../../lib/crypto.ts';
import { ipcRequest, sessionHeader } from '../../lib/daemon-client.ts';
import type { IpcAnswer } from '../../lib/daemon-client.ts';
import { createInvite, encodeInvite } from '../../lib/invite.ts';
import { Daemon } from '../../daemon/daemon.ts';
import { closeIpc, listenIpc } from '../../daemon/ipc.ts';
import { daemonPaths, ensureDaemonDir } from '../../daemon/paths.ts';
import { startTestBroker } from './broker.ts';
import type { TestBroker } from './broker.ts';
import { waitUntil } from './wait.ts';

const WAIT_MS = 10_000;
const TIMINGS = { link: { backoffStepsMs: [20, 50, 100], helloAckTimeoutMs: 2_000 }, pollIntervalMs: 50, reapIntervalMs: 100 };

export interface Member {
  /** the CLAUDEMESH_HOME of this member */
  home: string;
  identity: MeshIdentity;
  daemon: Daemon;
  socket: string;
  ask(method: string, path: string, body?: unknown, token?: string): Promise<IpcAnswer>;
  /** stop the daemon (socket removed) */
  stop(): Promise<void>;
  /** start it again on the same home */
  restart(): Promise<void>;
}

export interface Pair {
  broker: TestBroker;
  scratch: string;
  alice: Member;
  bob: Member;
  close(): Promise<void>;
}

export const until = <T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>) => waitUntil(what, probe, { timeoutMs: WAIT_MS, pollMs: 20 });

/** A member's daemon, in this process, on its own home, connected before this returns. */
export async function startMember(home: string, identity: MeshIdentity): Promise<Member> {
  const paths = daemonPaths(home);
  await ensureDaemonDir(paths);
  await writeConfig(home, { version: 1, meshes: [identity] });
  let daemon: Daemon;
  let server: Server;
  const start = async () => {
    daemon = new Daemon({ paths, config: { version: 1, meshes: [identity] }, timings: TIMINGS });
    daemon.start();
    server = await listenIpc(daemon);
    await until(`${identity.memberName} connected`, () => daemon.links.get(identity.meshId)?.isOpen === true);
  };
  await start();
  return {
    home, identity, socket: paths.socket,
    get daemon() {
      return daemon;
    },
    ask: (method, path, body, token) => ipcRequest(paths.socket, method, path, body, 5_000, token === undefined ? {} : sessionHeader(token)),
    async stop() {
      await closeIpc(server, paths.socket);
      await daemon.close();
    },
    restart: start,
  };
}

export function identityOf(keys: SigningKeyPair, meshId: string, memberName: string, owner: string, brokerUrl: string): MeshIdentity {
  return {
    meshId, name: 'team', brokerUrl, role: keys.publicKey === owner ? 'owner' : 'member', memberName, publicKey: keys.publicKey,
    secretKey: keys.secretKey.toString('hex'), ownerPubkey: owner, createdAt: new Date().toISOString(), status: 'active',
  };
}

/** A mesh on a broker, through its real routes: `alice` owns it, each of `names` joined with her invite. */
export async function enrolMesh(brokerUrl: string, meshName: string, names: readonly string[]): Promise<{ owner: SigningKeyPair; members: SigningKeyPair[]; meshId: string }> {
  const owner = generateKeyPair();
  const created = await callBroker({ brokerUrl, method: 'POST', path: '/mesh/create', identity: owner, body: { name: meshName, ownerName: 'alice' } });
  const meshId = String(created.body.meshId);
  const token = encodeInvite(createInvite({ meshId, meshName, brokerUrl, role: 'member', expiresAt: Math.floor(Date.now() / 1000) + 3600, maxUses: names.length }, owner.secretKey));
  await callBroker({ brokerUrl, method: 'POST', path: '/mesh/invite', identity: owner, meshId, body: { token } });
  const members: SigningKeyPair[] = [];
  for (const name of names) {
    const keys = generateKeyPair();
    await callBroker({ brokerUrl, method: 'POST', path: '/mesh/join', identity: keys, body: { token, name } });
    members.push(keys);
  }
  return { owner, members, meshId };
}

/** Mesh "team" on a broker, through its real routes: alice owns it, bob joined with her invite. */
export async function enrolAliceAndBob(brokerUrl: string): Promise<{ aliceKeys: SigningKeyPair; bobKeys: SigningKeyPair; meshId: string }> {
  const { owner, members, meshId } = await enrolMesh(brokerUrl, 'team', ['bob']);
  return { aliceKeys: owner, bobKeys: members[0]!, meshId };
}

export async function startPair(label: string): Promise<Pair> {
  const scratch = await mkdtemp(join(tmpdir(), `cm-${label}-`));
  const broker = await startTestBroker(label);
  const { aliceKeys, bobKeys, meshId } = await enrolAliceAndBob(broker.baseUrl);
  const alice = await startMember(join(scratch, 'alice'), identityOf(aliceKeys, meshId, 'alice', aliceKeys.publicKey, broker.baseUrl));
  const bob = await startMember(join(scratch, 'bob'), identityOf(bobKeys, meshId, 'bob', aliceKeys.publicKey, broker.baseUrl));
  return {
    broker, scratch, alice, bob,
    async close() {
      await alice.stop().catch(() => {});
      await bob.stop().catch(() => {});
      await broker.close();
      await rm(scratch, { recursive: true, force: true });
    },
  };
}

/** alice's view of one peer, by name. */
export async function peerSeenBy(viewer: Member, name: string): Promise<Record<string, any> | undefined> {
  const answer = await viewer.ask('GET', '/v1/peers');
  return (answer.body.peers as Array<Record<string, any>> | undefined)?.find((peer) => peer.name === name);
}
