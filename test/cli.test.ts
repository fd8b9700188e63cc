// End to end: the real `claudemesh` command, run as child processes with one
// CLAUDEMESH_HOME per identity, against a real broker on a real Postgres.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { generateKeyPair, sign } from '../lib/crypto.ts';
import { createInvite, decodeInvite, encodeInvite, INVITE_PREFIX, inviteSigningString } from '../lib/invite.ts';
import { helloSigningString } from '../lib/protocol.ts';
import { signRequest } from '../lib/signed-request.ts';
import { startTestBroker } from './helpers/broker.ts';
import { runCli } from './helpers/cli.ts';
import type { CliRun } from './helpers/cli.ts';
import type { TestBroker } from './helpers/broker.ts';


let scratch: string;
let broker: TestBroker;
// The broker's clock runs ahead of the CLI's by this much (kept within the 60 s skew).
let clockOffsetMs = 0;

function cli(home: string, args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return runCli(args, { ...process.env, CLAUDEMESH_HOME: join(scratch, home), CLAUDEMESH_BROKER: broker.baseUrl, ...env });
}

async function config(home: string): Promise<{ meshes: Array<Record<string, any>> }> {
  return JSON.parse(await readFile(join(scratch, home, 'config.json'), 'utf8')) as { meshes: Array<Record<string, any>> };
}

/** The token with one field of its payload replaced, the signature left as it was. */
function tamper(token: string, field: string, value: unknown): string {
  const json = JSON.parse(Buffer.from(token.slice(INVITE_PREFIX.length), 'base64url').toString('utf8')) as Record<string, unknown>;
  json[field] = value;
  return INVITE_PREFIX + Buffer.from(JSON.stringify(json)).toString('base64url');
}

interface Connection {
  socket: WebSocket;
  /** true once hello_ack arrived; false when the hello was refused */
  acked: boolean;
  frames: Array<Record<string, any>>;
  closed: Promise<number>;
}

/** Say hello to the broker as the first identity of `home`'s config (the daemon's part, later). */
async function connectAs(home: string): Promise<Connection> {
  const identity = (await config(home)).meshes[0] as Record<string, string>;
  const meshId = identity.meshId ?? '';
  const memberKey = identity.publicKey ?? '';
  const socket = new WebSocket(broker.wsUrl);
  const challenged = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String(JSON.parse(String(data)).nonce))));
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  const frames: Array<Record<string, any>> = [];
  const answered = new Promise<boolean>((resolve) => {
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Record<string, any>;
      frames.push(frame);
      if (frame.type === 'hello_ack') resolve(true);
      if (frame.type === 'error') resolve(false);
    });
    void closed.then(() => resolve(false));
  });
  const timestamp = Date.now();
  const challenge = await challenged;
  const signature = sign(helloSigningString(meshId, memberKey, timestamp, challenge), Buffer.from(identity.secretKey ?? '', 'hex'));
  socket.send(JSON.stringify({ type: 'hello', id: 'hello', meshId, memberKey, timestamp, challenge, signature }));
  return { socket, acked: await answered, frames, closed };
}

function expectError(run: CliRun, exitCode: number, code: string): void {
  assert.equal(run.code, exitCode, `${run.stdout}${run.stderr}`);
  if (run.stdout.startsWith('{')) assert.equal(run.json.error?.code, code, run.stdout);
  else assert.match(run.stderr, new RegExp(`^error ${code}: .+\\nhint: .+`), run.stderr);
  assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
}

describe('claudemesh CLI against a real broker', () => {
  let meshId: string;
  let token: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'cm-cli-e2e-'));
    broker = await startTestBroker('cli_e2e', { now: () => Date.now() + clockOffsetMs });
  });
  after(async () => {
    await broker.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('new: the owner key stays on the machine, in a 0600 config under a 0700 dir', async () => {
    const created = await cli('alice', ['new', 'team', '--name', 'alice', '--json']);
    assert.equal(created.code, 0, created.stderr);
    meshId = created.json.meshId;
    assert.equal(created.json.role, 'owner');
    assert.equal((await stat(join(scratch, 'alice'))).mode & 0o777, 0o700);
    assert.equal((await stat(join(scratch, 'alice', 'config.json'))).mode & 0o777, 0o600);
    const [identity] = (await config('alice')).meshes;
    assert.equal(identity?.publicKey, created.json.publicKey);
    assert.match(identity?.secretKey, /^[0-9a-f]{128}$/);
    const { rows } = await broker.db.pool.query('SELECT owner_key FROM meshes WHERE id = $1', [meshId]);
    assert.deepEqual(rows, [{ owner_key: created.json.publicKey }]);
    const again = await cli('alice', ['new', 'team']);
    expectError(again, 2, 'CM_ERR_MESH_EXISTS');
  });

  it('invite + join: two identities join, a repeat join is harmless, the invite cannot be reused', async () => {
    const invited = await cli('alice', ['invite', '--uses', '2']);
    assert.equal(invited.code, 0, invited.stderr);
    token = invited.stdout.trim();
    assert.match(token, /^cm1\.[A-Za-z0-9_-]+$/);
    assert.match(invited.stderr, /invite to mesh "team" as member, 2 uses/);

    const bob = await cli('bob', ['join', token, '--name', 'bob', '--json']);
    assert.equal(bob.code, 0, bob.stderr);
    assert.deepEqual([bob.json.meshId, bob.json.role, bob.json.memberName, bob.json.alreadyMember], [meshId, 'member', 'bob', false]);
    const carol = await cli('carol', ['join', token, '--name', 'carol']);
    assert.equal(carol.code, 0, carol.stderr);
    assert.match(carol.stdout, /^joined mesh "team" on http:\/\/127\.0\.0\.1:\d+ as "carol" \(member, key [0-9a-f]{12}\)\n$/);

    const repeat = await cli('bob', ['join', token, '--json']);
    assert.equal(repeat.code, 0, repeat.stderr);
    assert.equal(repeat.json.alreadyMember, true);
    assert.equal(repeat.json.publicKey, bob.json.publicKey);

    const dave = await cli('dave', ['join', token, '--name', 'dave', '--json']);
    expectError(dave, 4, 'CM_ERR_INVITE_EXHAUSTED');
    assert.deepEqual((await config('dave')).meshes, [], 'a refused join leaves no identity behind');

    const list = await cli('carol', ['list', '--json']);
    assert.deepEqual(list.json.meshes.map((mesh: Record<string, unknown>) => [mesh.name, mesh.role, mesh.memberName, mesh.status]), [['team', 'member', 'carol', 'active']]);
    assert.doesNotMatch(list.stdout, /secret/i);
    const table = await cli('alice', ['list']);
    assert.match(table.stdout, /^MESH\s+ID\s+ROLE\s+STATE\s+AS\s+KEY\s+BROKER\nteam\s+\S+\s+owner\s+active\s+alice\s/);
  });

  it('kick: bob is out (4001), cannot act in the mesh, and needs a new invite to come back', async () => {
    const live = await connectAs('bob');
    assert.equal(live.acked, true, JSON.stringify(live.frames));
    const kicked = await cli('alice', ['kick', 'bob']);
    assert.equal(kicked.code, 0, kicked.stderr);
    assert.match(kicked.stdout, /^kicked "bob" \([0-9a-f]{12}\) in mesh "team"\n$/);
    assert.equal(await live.closed, 4001);
    const again = await connectAs('bob');
    assert.equal(again.acked, false);
    assert.equal(again.frames[0]?.code, 'CM_ERR_UNAUTHORIZED');
    expectError(await cli('bob', ['bans']), 4, 'CM_ERR_FORBIDDEN');
    expectError(await cli('bob', ['join', token]), 4, 'CM_ERR_INVITE_EXHAUSTED');
    expectError(await cli('alice', ['kick', 'bob']), 2, 'CM_ERR_PEER_UNKNOWN');
    const leave = await cli('bob', ['leave', 'team']);
    expectError(leave, 4, 'CM_ERR_FORBIDDEN');
    assert.match(leave.stderr, /hint: .*claudemesh leave "team" --local/);
    assert.equal((await cli('bob', ['leave', 'team', '--local'])).code, 0);
    assert.deepEqual((await config('bob')).meshes, []);
  });

  it('ban: carol is banned (4002), cannot connect or join again even with a fresh invite, until unbanned', async () => {
    const carolKey = (await config('carol')).meshes[0]?.publicKey as string;
    const live = await connectAs('carol');
    assert.equal(live.acked, true, JSON.stringify(live.frames));
    const banned = await cli('alice', ['ban', carolKey.slice(0, 8)]);
    assert.equal(banned.code, 0, banned.stderr);
    assert.match(banned.stdout, /^banned "carol"/);
    assert.equal(await live.closed, 4002);
    const again = await connectAs('carol');
    assert.equal(again.acked, false);
    assert.equal(again.frames[0]?.code, 'CM_ERR_BANNED');
    assert.equal(await again.closed, 4002);
    const { rows } = await broker.db.pool.query('SELECT banned_at IS NOT NULL AS banned FROM members WHERE mesh_id = $1 AND key = $2', [meshId, carolKey]);
    assert.deepEqual(rows, [{ banned: true }]);

    const bans = await cli('alice', ['bans', '--json']);
    assert.deepEqual(bans.json.bans.map((ban: Record<string, unknown>) => [ban.name, ban.key, ban.bannedBy]), [['carol', carolKey, 'alice']]);
    assert.match((await cli('alice', ['bans'])).stdout, /^NAME\s+KEY\s+ROLE\s+BANNED AT\s+BY\ncarol\s/);

    const fresh = (await cli('alice', ['invite'])).stdout.trim();
    expectError(await cli('carol', ['join', fresh]), 4, 'CM_ERR_BANNED');
    expectError(await cli('alice', ['kick', 'carol']), 2, 'CM_ERR_PEER_UNKNOWN');

    const unbanned = await cli('alice', ['unban', 'carol', '--json']);
    assert.equal(unbanned.code, 0, unbanned.stderr);
    assert.equal(unbanned.json.key, carolKey);
    assert.deepEqual((await cli('alice', ['bans', '--json'])).json.bans, []);
    const back = await cli('carol', ['join', fresh, '--json']);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(back.json.publicKey, carolKey);
  });

  it('tampered invites are refused on the joining machine, before any contact', async () => {
    const good = (await cli('alice', ['invite'])).stdout.trim();
    const cases: Array<[string, unknown]> = [
      ['role', 'admin'],
      ['exp', decodeInvite(good).expiresAt + 86_400],
      ['uses', 1_000],
      // pointing at a port where nothing listens: contacting it would say UNREACHABLE
      ['broker', 'http://127.0.0.1:9'],
      ['sig', `${'ab'.repeat(63)}cd`],
    ];
    for (const [field, value] of cases) {
      const run = await cli('eve', ['join', tamper(good, field, value)]);
      expectError(run, 1, 'CM_ERR_INVITE_BAD_SIGNATURE');
    }
    expectError(await cli('eve', ['join', good.slice(0, 50)]), 2, 'CM_ERR_INVITE_MALFORMED');
    await assert.rejects(stat(join(scratch, 'eve', 'config.json')), 'nothing was saved for eve');
  });

  it('invites re-signed by someone else, expired, or revoked are refused by the broker with their codes', async () => {
    const good = decodeInvite((await cli('alice', ['invite'])).stdout.trim());
    const mallory = generateKeyPair();
    const forged = { ...good, role: 'admin' as const, inviterKey: mallory.publicKey };
    forged.signature = sign(inviteSigningString(forged), mallory.secretKey);
    expectError(await cli('eve', ['join', encodeInvite(forged)]), 4, 'CM_ERR_INVITE_BAD_SIGNATURE');

    const alice = (await config('alice')).meshes[0] as Record<string, string>;
    const expired = createInvite(
      { meshId, meshName: 'team', brokerUrl: broker.baseUrl, role: 'member', expiresAt: Math.floor(Date.now() / 1000) - 1, maxUses: 1 },
      Buffer.from(alice.secretKey ?? '', 'hex'),
    );
    expectError(await cli('eve', ['join', encodeInvite(expired)]), 1, 'CM_ERR_INVITE_EXPIRED');

    // Valid by this machine's clock, expired by the broker's (45 s ahead, within the skew).
    const short = (await cli('alice', ['invite', '--expires', '30s'])).stdout.trim();
    clockOffsetMs = 45_000;
    try {
      expectError(await cli('eve', ['join', short]), 4, 'CM_ERR_INVITE_EXPIRED');
    } finally {
      clockOffsetMs = 0;
    }

    const revokedToken = (await cli('alice', ['invite'])).stdout.trim();
    const revoked = await cli('alice', ['invite', '--revoke', decodeInvite(revokedToken).nonce]);
    assert.equal(revoked.code, 0, revoked.stderr);
    expectError(await cli('eve', ['join', revokedToken]), 4, 'CM_ERR_INVITE_REVOKED');
    assert.deepEqual((await config('eve')).meshes, []);
  });

  it('an invite whose broker address is not the one the request reaches is refused (proxy rewriting Host)', async () => {
    // Like nginx's default proxy_set_header Host $proxy_host: the broker sees its own address.
    const upstream = new URL(broker.baseUrl);
    const proxy: Server = createServer((req, res) => {
      const forward = request(
        { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: { ...req.headers, host: upstream.host } },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      req.pipe(forward);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    try {
      const created = await cli('pat', ['new', 'proxied', '--name', 'pat', '--broker', proxyUrl, '--json']);
      assert.equal(created.code, 0, created.stderr);
      const refused = await cli('pat', ['invite']);
      expectError(refused, 4, 'CM_ERR_INVITE_WRONG_BROKER');
      assert.match(refused.stderr, /hint: .*Host header/);

      // Registered where the address matches, then used through the proxy.
      const pat = (await config('pat')).meshes[0] as Record<string, string>;
      const secretKey = Buffer.from(pat.secretKey ?? '', 'hex');
      const invite = encodeInvite(
        createInvite({ meshId: pat.meshId ?? '', meshName: 'proxied', brokerUrl: proxyUrl, role: 'member', expiresAt: Math.floor(Date.now() / 1000) + 600, maxUses: 1 }, secretKey),
      );
      const body = JSON.stringify({ token: invite });
      const headers = { ...signRequest({ method: 'POST', path: '/mesh/invite', body, publicKey: pat.publicKey ?? '', secretKey, meshId: pat.meshId ?? '' }), host: new URL(proxyUrl).host };
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(`${broker.baseUrl}/mesh/invite`, { method: 'POST', headers }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(body);
      });
      assert.equal(status, 201);
      expectError(await cli('quinn', ['join', invite]), 4, 'CM_ERR_INVITE_WRONG_BROKER');
    } finally {
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });

  it('concurrent joins on a single-use invite: exactly one wins', async () => {
    const single = (await cli('alice', ['invite'])).stdout.trim();
    const racers = ['r1', 'r2', 'r3', 'r4'];
    const runs = await Promise.all(racers.map((name) => cli(name, ['join', single, '--name', name, '--json'])));
    const winners = runs.filter((run) => run.code === 0);
    assert.equal(winners.length, 1, runs.map((run) => run.stdout).join('\n'));
    for (const loser of runs.filter((run) => run.code !== 0)) expectError(loser, 4, 'CM_ERR_INVITE_EXHAUSTED');
    const { rows } = await broker.db.pool.query('SELECT uses FROM invites WHERE id = $1', [decodeInvite(single).nonce]);
    assert.deepEqual(rows, [{ uses: 1 }]);
  });

  it('meshes are isolated: a member of one mesh learns nothing of another', async () => {
    const other = await cli('zed', ['new', 'other', '--name', 'zed', '--json']);
    assert.equal(other.code, 0, other.stderr);
    // alice names zed's mesh with her own key, and then a mesh that does not exist at all
    const aliceConfig = await config('alice');
    const aliceTeam = aliceConfig.meshes[0] as Record<string, unknown>;
    aliceConfig.meshes.push({ ...aliceTeam, meshId: other.json.meshId, name: 'other' });
    aliceConfig.meshes.push({ ...aliceTeam, meshId: 'NoSuchMesh_0001', name: 'ghost' });
    await writeFile(join(scratch, 'alice', 'config.json'), JSON.stringify(aliceConfig));

    const answers = [];
    for (const mesh of ['other', 'ghost']) {
      for (const args of [['bans'], ['kick', other.json.publicKey], ['invite']]) {
        const run = await cli('alice', [...args, '--mesh', mesh, '--json']);
        expectError(run, 4, 'CM_ERR_FORBIDDEN');
        answers.push(JSON.stringify(run.json).replaceAll(mesh === 'other' ? other.json.meshId : 'NoSuchMesh_0001', 'MESH'));
      }
    }
    assert.deepEqual(answers.slice(0, 3), answers.slice(3));
    // through her own mesh, zed's key is unknown like any other key
    expectError(await cli('alice', ['kick', other.json.publicKey, '--mesh', 'team']), 4, 'CM_ERR_NOT_FOUND');
    const zedMembers = await broker.db.pool.query('SELECT name FROM members WHERE mesh_id = $1 AND left_at IS NULL', [other.json.meshId]);
    assert.deepEqual(zedMembers.rows, [{ name: 'zed' }]);
  });

  it('--help and <verb> --help exit 0', async () => {
    const help = await cli('nobody', ['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^usage: claudemesh <verb>/);
    const verbHelp = await cli('nobody', ['join', '--help']);
    assert.equal(verbHelp.code, 0);
    assert.match(verbHelp.stdout, /^usage: claudemesh join <token>/);
  });
});
