import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseCount, parseDuration } from '../../../lib/cli/args.ts';
import { globalHelp, main, VERBS as SERVED } from '../../../lib/cli/main.ts';
import { formatTable } from '../../../lib/cli/output.ts';
import type { MeshIdentity } from '../../../lib/client-config.ts';
import { writeConfig } from '../../../lib/client-config.ts';
import { generateKeyPair } from '../../../lib/crypto.ts';
import type { SigningKeyPair } from '../../../lib/crypto.ts';
import { createInvite, encodeInvite } from '../../../lib/invite.ts';

const VERBS = ['new', 'invite', 'join', 'list', 'leave', 'whoami', 'kick', 'ban', 'unban', 'bans', 'send', 'peer', 'inbox', 'msg', 'status', 'summary', 'group', 'daemon', 'events', 'doctor', 'install', 'uninstall', 'launch', 'mcp', 'hook'];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

describe('claudemesh command line', () => {
  let home: string;
  before(async () => {
    home = await mkdtemp(join(tmpdir(), 'cm-cli-main-'));
  });
  after(() => rm(home, { recursive: true, force: true }));

  async function run(...argv: string[]): Promise<Run> {
    let stdout = '';
    let stderr = '';
    const code = await main(argv, {
      env: { CLAUDEMESH_BROKER: 'http://127.0.0.1:9' },
      home,
      now: () => Date.UTC(2030, 0, 1),
      stdout: (text) => void (stdout += text),
      stderr: (text) => void (stderr += text),
    });
    return { code, stdout, stderr };
  }

  it('--help lists exactly the verbs it serves, and exits 0', async () => {
    const result = await run('--help');
    assert.equal(result.code, 0);
    assert.equal(result.stdout, await globalHelp());
    const listed = [...result.stdout.matchAll(/^ {2}(\w+)/gm)].map((match) => match[1]);
    assert.deepEqual(listed, VERBS);
    assert.match(result.stdout, /0 ok, 1 a check or operation failed, 2 usage, 3 daemon not running and not\nstartable, 4 broker unreachable or refused, or membership removed/);
    assert.deepEqual([...SERVED.keys()], VERBS, 'the contract below covers every verb served');
    for (const [name, load] of SERVED) assert.equal((await load()).name, name, 'each name loads its own verb');
  });

  it('--help --json and --version --json print JSON', async () => {
    const help = await run('--help', '--json');
    assert.equal(help.code, 0);
    const body = JSON.parse(help.stdout) as { verbs: Array<{ name: string; options: string[] }> };
    assert.deepEqual(body.verbs.map((verb) => verb.name), VERBS);
    assert.ok(body.verbs.find((verb) => verb.name === 'send')?.options.includes('--priority'));
    assert.equal(JSON.parse((await run('send', '--help', '--json')).stdout).verbs[0].name, 'send');
    assert.match(JSON.parse((await run('--version', '--json')).stdout).version, /^\d+\.\d+\.\d+/);
  });

  it('usage errors suggest the nearest verb and option in our words', async () => {
    const verb = await run('sned', 'bob', 'hi');
    assert.equal(verb.code, 2);
    assert.match(verb.stderr, /^error CM_ERR_USAGE: unknown verb "sned" \(did you mean claudemesh send\?\)/);
    const flag = await run('send', 'bob', 'hi', '--priorty', 'now');
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /unknown option --priorty \(did you mean --priority\?\)/);
    assert.doesNotMatch(flag.stderr, /To specify a positional argument/, 'not parseArgs\' words');
    const value = await run('inbox', '--limit');
    assert.match(value.stderr, /--limit needs a value, as in --limit VALUE/);
    assert.equal((await run('zzzzzzzz')).stderr, 'error CM_ERR_USAGE: unknown verb "zzzzzzzz"\nhint: see claudemesh --help for the verbs\n', 'no far-fetched guess');
  });

  it('no verb prints the help on stderr and exits 2', async () => {
    const result = await run();
    assert.equal(result.code, 2);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /^usage: claudemesh <verb>/);
  });

  for (const verb of VERBS) {
    it(`${verb} --help names every option the verb accepts, and no other`, async () => {
      const result = await run(verb, '--help');
      assert.equal(result.code, 0);
      const line = (await globalHelp()).split('\n').find((each) => each.startsWith(`  ${verb} `)) ?? '';
      const synopsis = /^ {2}(\S+(?: <[^>]+>)?)/.exec(line)?.[1] ?? '';
      assert.equal(synopsis.split(' ')[0], verb);
      assert.ok(result.stdout.startsWith(`usage: claudemesh ${synopsis}`), `${synopsis}: ${result.stdout}`);
      const again = await run('help', verb);
      assert.equal(again.stdout, result.stdout);
      const documented = new Set([...result.stdout.matchAll(/--([a-z][a-z-]*)/g)].map((match) => match[1]));
      documented.delete('help');
      for (const option of documented) {
        const probe = await run(verb, `--${option}`, '--help');
        assert.doesNotMatch(probe.stderr, /Unknown option/, `${verb} --${option} is documented but not accepted`);
      }
      const declared = Object.keys((await SERVED.get(verb)?.())?.options ?? {});
      for (const option of declared) assert.ok(documented.has(option), `${verb} takes --${option} but --help does not say so`);
      const unknown = await run(verb, '--definitely-not-an-option');
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /^error CM_ERR_USAGE: .*unknown option --definitely-not-an-option/);
      assert.match(unknown.stderr, new RegExp(`hint: see claudemesh ${verb} --help`));
      assert.doesNotMatch(unknown.stderr, /\n\s+at /, 'no stack trace');
      const json = await run(verb, '--definitely-not-an-option', '--json');
      assert.equal(json.code, 2);
      assert.equal(json.stderr, '', 'with --json, errors go to stdout as JSON');
      assert.equal(JSON.parse(json.stdout).error.code, 'CM_ERR_USAGE');
      const helpJson = await run(verb, '--help', '--json');
      assert.equal(helpJson.code, 0);
      assert.equal(JSON.parse(helpJson.stdout).verbs[0].help, result.stdout);
    });
  }

  it('usage errors exit 2 with a code and a hint, as JSON with --json', async () => {
    const text = await run('frobnicate');
    assert.equal(text.code, 2);
    assert.equal(text.stderr, 'error CM_ERR_USAGE: unknown verb "frobnicate"\nhint: see claudemesh --help for the verbs\n');
    const missing = await run('join');
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /needs an argument/);
    const json = await run('invite', '--role', 'king', '--json');
    assert.equal(json.code, 2);
    assert.equal(json.stderr, '');
    const body = JSON.parse(json.stdout) as { error: { code: string; message: string; hint: string } };
    assert.equal(body.error.code, 'CM_ERR_USAGE');
    assert.match(body.error.message, /--role must be member or admin, received "king"/);
  });

  it('a verb that needs a mesh says how to get one', async () => {
    const result = await run('bans');
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^error CM_ERR_MESH_UNKNOWN: this machine is in no mesh yet\nhint: start one with claudemesh new NAME/);
  });

  it('an unreachable broker exits 4 without a stack trace', async () => {
    const result = await run('new', 'team', '--broker', 'http://127.0.0.1:9');
    assert.equal(result.code, 4);
    assert.match(result.stderr, /^error CM_ERR_BROKER_UNREACHABLE: broker http:\/\/127\.0\.0\.1:9 is unreachable/);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
  });

  it('join refuses an invite to a mesh this machine already reaches through another broker address', async () => {
    const owner = generateKeyPair();
    const invite = createInvite(
      { meshId: 'Team_id_0001', meshName: 'team', brokerUrl: 'http://localhost:9', role: 'member', expiresAt: Date.UTC(2030, 0, 2) / 1000, maxUses: 1 },
      owner.secretKey,
    );
    const existing = { ...mesh('team', 'Team_id_0001'), ...keysOf(generateKeyPair()) };
    await writeConfig(home, { version: 1, meshes: [existing] });
    try {
      const result = await run('join', encodeInvite(invite));
      assert.equal(result.code, 2);
      assert.match(result.stderr, /^error CM_ERR_MESH_EXISTS: you are already in mesh "team" through broker http:\/\/127\.0\.0\.1:7900/);
    } finally {
      await writeConfig(home, { version: 1, meshes: [] });
    }
  });

  it('join refuses a malformed token (exit 2) before anything else', async () => {
    const result = await run('join', 'cm1.broken');
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^error CM_ERR_INVITE_MALFORMED/);
  });
});

describe('argument values', () => {
  it('parseDuration takes s, m, h, d', () => {
    assert.equal(parseDuration('90s'), 90);
    assert.equal(parseDuration('30m'), 1_800);
    assert.equal(parseDuration('12h'), 43_200);
    assert.equal(parseDuration('7d'), 604_800);
    for (const bad of ['7', 'd', '0d', '-1d', '1w', '1.5h', '']) assert.equal(parseDuration(bad), undefined, bad);
  });

  it('parseCount keeps whole numbers in range', () => {
    assert.equal(parseCount('1', 1, 10), 1);
    assert.equal(parseCount('10', 1, 10), 10);
    for (const bad of ['0', '11', '1.0', '-1', 'x', '']) assert.equal(parseCount(bad, 1, 10), undefined, bad);
  });

  it('formatTable pads every column but the last', () => {
    assert.equal(formatTable(['A', 'BB'], [['xyz', 'q'], ['', 'long value']]), 'A    BB\nxyz  q\n     long value\n');
  });
});

function mesh(name: string, meshId: string): MeshIdentity {
  return {
    meshId,
    name,
    brokerUrl: 'http://127.0.0.1:7900',
    role: 'owner',
    memberName: 'me',
    publicKey: 'a'.repeat(64),
    secretKey: 'b'.repeat(128),
    ownerPubkey: null,
    createdAt: '',
    status: 'active',
  };
}

function keysOf(keys: SigningKeyPair): { publicKey: string; secretKey: string } {
  return { publicKey: keys.publicKey, secretKey: keys.secretKey.toString('hex') };
}
