// The IPC surface without a broker: guards, errors, and reload (meshes come and go).

import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeConfig } from '../../lib/client-config.ts';
import type { MeshIdentity } from '../../lib/client-config.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import { callDaemon, ipcRequest, sessionHeader } from '../../lib/daemon-client.ts';
import { Daemon } from '../../daemon/daemon.ts';
import { closeIpc, listenIpc } from '../../daemon/ipc.ts';
import { daemonPaths, ensureDaemonDir } from '../../daemon/paths.ts';
import { MAX_SESSIONS } from '../../daemon/sessions.ts';
import type { DaemonPaths } from '../../daemon/paths.ts';

function raw(socketPath: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => void (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** An active mesh whose broker never answers: links retry, rosters stay empty. */
function unreachableMesh(meshId: string): MeshIdentity {
  const keys = generateKeyPair();
  return {
    meshId, name: 'later', brokerUrl: 'http://127.0.0.1:9', role: 'member', memberName: 'ann',
    publicKey: keys.publicKey, secretKey: keys.secretKey.toString('hex'), ownerPubkey: null, createdAt: new Date().toISOString(), status: 'active',
  };
}

describe('daemon IPC', () => {
  let home: string;
  let paths: DaemonPaths;
  let daemon: Daemon;
  let server: Server;
  before(async () => {
    home = await mkdtemp(join(tmpdir(), 'cm-ipc-'));
    paths = daemonPaths(home);
    await ensureDaemonDir(paths);
    daemon = new Daemon({ paths, config: { version: 1, meshes: [] }, timings: { link: { backoffStepsMs: [1_000] } } });
    daemon.start();
    server = await listenIpc(daemon);
  });
  after(async () => {
    await closeIpc(server, paths.socket);
    await daemon.close();
    await rm(home, { recursive: true, force: true });
  });

  it('listens on a 0600 socket in a 0700 directory', async () => {
    assert.equal((await stat(paths.socket)).mode & 0o777, 0o600);
    assert.equal((await stat(paths.dir)).mode & 0o777, 0o700);
  });

  it('answers version and health', async () => {
    const version = await ipcRequest(paths.socket, 'GET', '/v1/version');
    assert.equal(version.body.pid, process.pid);
    assert.equal(version.body.ipcApi, 'v1');
    assert.deepEqual((await ipcRequest(paths.socket, 'GET', '/v1/health')).body, { ok: true, pid: process.pid, meshes: [], sessions: [] });
  });

  it('refuses browsers, unknown routes, wrong methods, bad JSON and bad fields with codes', async () => {
    assert.equal((await raw(paths.socket, 'GET', '/v1/version', { origin: 'https://evil.example' })).body.error.code, 'CM_ERR_FORBIDDEN');
    assert.equal((await ipcRequest(paths.socket, 'GET', '/v1/nothing')).body.error.code, 'CM_ERR_NOT_FOUND');
    assert.equal((await ipcRequest(paths.socket, 'GET', '/v1/send')).status, 405);
    const badJson = await raw(paths.socket, 'POST', '/v1/send', { 'content-type': 'application/json' }, '{nope');
    assert.equal(badJson.body.error.code, 'CM_ERR_BAD_JSON');
    assert.equal((await ipcRequest(paths.socket, 'POST', '/v1/send', { to: 'bob' })).body.error.code, 'CM_ERR_BAD_REQUEST');
    assert.equal((await ipcRequest(paths.socket, 'POST', '/v1/send', { to: 'bob', text: 'hi' })).body.error.code, 'CM_ERR_MESH_UNKNOWN');
    assert.equal((await ipcRequest(paths.socket, 'GET', '/v1/outbox?status=weird')).status, 400);
    assert.equal((await raw(paths.socket, 'GET', '/v1/inbox', { authorization: 'ClaudeMesh-Session nope' })).status, 401);
  });

  it('marks surfaced under the new route and the old one', async () => {
    assert.deepEqual((await ipcRequest(paths.socket, 'POST', '/v1/inbox/surfaced', { ids: [] })).body, { markedSurfaced: 0 });
    assert.deepEqual((await ipcRequest(paths.socket, 'POST', '/v1/inbox/seen', { ids: [] })).body, { markedSeen: 0 });
    assert.deepEqual((await ipcRequest(paths.socket, 'GET', '/v1/inbox?unsurfaced=1')).body, { items: [] });
    assert.deepEqual((await ipcRequest(paths.socket, 'GET', '/v1/inbox?unseen=1')).body, { items: [] });
  });

  it('reload attaches a mesh added to the config and detaches a removed one', async () => {
    await writeConfig(home, { version: 1, meshes: [unreachableMesh('mesh-reload-01')] });
    const added = await ipcRequest(paths.socket, 'POST', '/v1/reload');
    assert.deepEqual(added.body, { added: ['mesh-reload-01'], removed: [] });
    const health = await ipcRequest(paths.socket, 'GET', '/v1/health');
    assert.equal(health.body.meshes[0].name, 'later');
    assert.notEqual(health.body.meshes[0].state, 'open');
    const offline = await ipcRequest(paths.socket, 'POST', '/v1/send', { to: 'bob', text: 'hi' });
    assert.equal(offline.status, 202, 'no roster yet: queued, to be resolved when the broker is reached');
    assert.equal(offline.body.resolved, false);
    assert.equal(offline.body.connected, false);
    const peers = await ipcRequest(paths.socket, 'GET', '/v1/peers');
    assert.equal(peers.body.error.code, 'CM_ERR_MESH_OFFLINE', 'no roster, not even an old one: nothing to list');
    const notAKey = await ipcRequest(paths.socket, 'POST', '/v1/send', { to: '0'.repeat(64), text: 'hi' });
    assert.equal(notAKey.body.error.code, 'CM_ERR_INVALID_KEY', 'refused at once, even offline');
    await writeConfig(home, { version: 1, meshes: [] });
    assert.deepEqual((await ipcRequest(paths.socket, 'POST', '/v1/reload')).body, { added: [], removed: ['mesh-reload-01'] });
  });

  it('refuses a new session past MAX_SESSIONS with CM_ERR_SESSION_LIMIT (503); known sessions still register', async () => {
    await writeConfig(home, { version: 1, meshes: [unreachableMesh('mesh-limit-01')] });
    await ipcRequest(paths.socket, 'POST', '/v1/reload');
    for (let n = 0; n < MAX_SESSIONS; n += 1) daemon.registerSession({ sessionId: `held-${n}` });
    const refused = await ipcRequest(paths.socket, 'POST', '/v1/sessions/register', { sessionId: 'one-too-many' });
    assert.equal(refused.status, 503);
    assert.equal(refused.body.error.code, 'CM_ERR_SESSION_LIMIT');
    assert.match(refused.body.error.message, new RegExp(`already holds ${MAX_SESSIONS} sessions.+"one-too-many" was not registered`));
    assert.match(refused.body.error.hint, /unregister/);
    assert.equal((await ipcRequest(paths.socket, 'POST', '/v1/sessions/register', { sessionId: 'held-7' })).status, 200, 'a known session re-registers');
    const token = String(daemon.registerSession({ sessionId: 'held-0' }).body.token);
    await callDaemon(paths.socket, 'POST', '/v1/sessions/unregister', undefined, undefined, sessionHeader(token));
    assert.equal((await ipcRequest(paths.socket, 'POST', '/v1/sessions/register', { sessionId: 'one-too-many' })).status, 201, 'room again after one left');
    await writeConfig(home, { version: 1, meshes: [] });
    await ipcRequest(paths.socket, 'POST', '/v1/reload');
    assert.deepEqual(daemon.sessions.list(), [], 'removing the mesh unregistered its sessions');
  });
});
