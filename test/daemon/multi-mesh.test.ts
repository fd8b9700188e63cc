// One daemon in two meshes on two brokers (alice: alpha with bob, beta with carol), as a real
// process driven by the real CLI. Each mesh stays its own: `peer list --mesh` shows that
// mesh only; a name finds the one mesh that knows it; a session sends in its own mesh by
// default; and a mesh whose broker is down holds nothing back in the other.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeConfig } from '../../lib/client-config.ts';
import type { SigningKeyPair } from '../../lib/crypto.ts';
import { ipcRequest, sessionHeader } from '../../lib/daemon-client.ts';
import { startTestBroker } from '../helpers/broker.ts';
import type { TestBroker } from '../helpers/broker.ts';
import { runCli } from '../helpers/cli.ts';
import { daemonEnv, meshIdentity, startDaemonProcess } from '../helpers/daemon-process.ts';
import type { DaemonProcess } from '../helpers/daemon-process.ts';
import { enrolMesh } from '../helpers/pair.ts';
import { TestPeer } from '../helpers/peer.ts';
import { waitUntil } from '../helpers/wait.ts';

const WAIT_MS = 15_000;

interface Mesh { broker: TestBroker; meshId: string; owner: SigningKeyPair; member: SigningKeyPair }

async function enrol(broker: TestBroker, name: string, memberName: string): Promise<Mesh> {
  const { owner, members, meshId } = await enrolMesh(broker.baseUrl, name, [memberName]);
  return { broker, meshId, owner, member: members[0]! };
}

describe('one daemon in two meshes', () => {
  let scratch: string;
  let alpha: Mesh;
  let beta: Mesh;
  let alice: DaemonProcess;
  let bob: TestPeer;
  let carol: TestPeer;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-multi-'));
    alpha = await enrol(await startTestBroker('multi_alpha'), 'alpha', 'bob');
    beta = await enrol(await startTestBroker('multi_beta'), 'beta', 'carol');
    const home = join(scratch, 'alice');
    await writeConfig(home, {
      version: 1,
      meshes: [alpha, beta].map((mesh, index) => ({ ...meshIdentity(mesh.owner, mesh.meshId, 'alice', mesh.owner.publicKey, mesh.broker.baseUrl), name: index === 0 ? 'alpha' : 'beta' })),
    });
    alice = await startDaemonProcess(home);
    await waitUntil('both meshes open', async () => ((await alice.ask('GET', '/v1/health')).body.meshes as Array<{ state: string }>).every((mesh) => mesh.state === 'open'), { timeoutMs: WAIT_MS });
    bob = await TestPeer.connect(alpha.broker.wsUrl, { meshId: alpha.meshId, member: alpha.member });
    carol = await TestPeer.connect(beta.broker.wsUrl, { meshId: beta.meshId, member: beta.member });
  });
  after(async () => {
    await alice?.stop('SIGKILL');
    await bob?.close().catch(() => {});
    await carol?.close().catch(() => {});
    await alpha?.broker.close();
    await beta?.broker.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('peer list --mesh shows that mesh’s peers only', async () => {
    for (const [mesh, mine, theirs] of [['alpha', 'bob', 'carol'], ['beta', 'carol', 'bob']] as const) {
      const run = await runCli(['peer', 'list', '--mesh', mesh, '--json'], daemonEnv(alice.home));
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.json.mesh, mesh);
      const names = [...run.json.peers, ...run.json.members].map((peer: { name: string }) => peer.name);
      assert.ok(names.includes(mine), `${mesh} lists ${mine}`);
      assert.ok(!names.includes(theirs), `${mesh} does not list ${theirs}`);
    }
  });

  it('a name goes to the one mesh that knows it; * needs a mesh, except from a session, which sends in its own', async () => {
    const toCarol = await alice.ask('POST', '/v1/send', { to: 'carol', text: 'carol is only in beta' });
    assert.equal(toCarol.status, 202, JSON.stringify(toCarol.body));
    assert.equal(toCarol.body.mesh, 'beta');
    assert.equal(carol.read(await carol.waitFor((frame) => frame.type === 'push')), 'carol is only in beta');
    const everyone = await alice.ask('POST', '/v1/send', { to: '*', text: 'which mesh?' });
    assert.equal(everyone.body.error?.code, 'CM_ERR_MESH_UNKNOWN', 'ambiguous without a session or --mesh');

    const session = await alice.ask('POST', '/v1/sessions/register', { sessionId: 'beta-session', mesh: 'beta', name: 'alice-beta', pid: process.pid });
    assert.equal(session.status, 201, JSON.stringify(session.body));
    const token = String(session.body.token);
    const fromSession = await ipcRequest(alice.socket, 'POST', '/v1/send', { to: '*', text: 'from the beta session' }, 5_000, sessionHeader(token));
    assert.equal(fromSession.status, 202, JSON.stringify(fromSession.body));
    assert.equal(fromSession.body.mesh, 'beta');
    const pushed = await carol.waitFor((frame) => frame.type === 'push' && carol.read(frame) === 'from the beta session', WAIT_MS);
    assert.equal(pushed.senderKey, session.body.sessionKey, 'sent as the session');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(bob.pushes().length, 0, 'nothing reached alpha');
  });

  it('a mesh whose broker is down holds nothing back in the other', async () => {
    await bob.close();
    await alpha.broker.close();
    await waitUntil('alpha down', async () => ((await alice.ask('GET', '/v1/health')).body.meshes as Array<{ name: string; state: string }>).find((mesh) => mesh.name === 'alpha')?.state !== 'open', { timeoutMs: WAIT_MS });
    for (let index = 0; index < 5; index += 1) {
      assert.equal((await alice.ask('POST', '/v1/send', { to: 'bob', mesh: 'alpha', text: `parked ${index}` })).status, 202);
    }
    const before = carol.pushes().length;
    const sent = await alice.ask('POST', '/v1/send', { to: 'carol', text: 'beta goes on' });
    assert.equal(sent.body.mesh, 'beta');
    await carol.waitFor((frame) => frame.type === 'push' && carol.read(frame) === 'beta goes on', WAIT_MS);
    assert.equal(carol.pushes().length, before + 1);
    const parked = (await alice.ask('GET', '/v1/outbox?status=pending')).body.counts.pending;
    assert.equal(parked, 5, 'alpha’s messages wait for their broker');
  });
});
