import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { generateKeyPair } from '../../lib/crypto.ts';
import { isCmError } from '../../lib/errors.ts';
import { configPath, readConfig, updateConfig, writeConfig } from '../../lib/client-config.ts';
import { claudemeshHome } from '../../lib/home.ts';
import type { ClientConfig, MeshIdentity } from '../../lib/client-config.ts';

const roots: string[] = [];
async function home(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'cm-config-'));
  roots.push(root);
  return join(root, 'home');
}

function identity(name: string): MeshIdentity {
  const keys = generateKeyPair();
  return {
    meshId: `Mesh_${name}_0001`,
    name,
    brokerUrl: 'http://127.0.0.1:7900',
    role: 'member',
    memberName: 'me',
    publicKey: keys.publicKey,
    secretKey: keys.secretKey.toString('hex'),
    ownerPubkey: null,
    createdAt: new Date(0).toISOString(),
    status: 'active',
  };
}

async function codeOf(work: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await work();
  } catch (error) {
    return isCmError(error) ? error.code : `not a CmError: ${String(error)}`;
  }
  return undefined;
}

const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe('client config', () => {
  after(async () => {
    for (const root of roots) await rm(root, { recursive: true, force: true });
  });

  it('lives under CLAUDEMESH_HOME, else ~/.claudemesh', () => {
    assert.equal(claudemeshHome({ CLAUDEMESH_HOME: '/x/y' }), '/x/y');
    assert.equal(claudemeshHome({}), join(homedir(), '.claudemesh'));
    assert.equal(configPath('/x/y'), '/x/y/config.json');
  });

  it('reads a missing file as an empty config', async () => {
    assert.deepEqual(await readConfig(await home()), { version: 1, meshes: [] });
  });

  it('writes the directory 0700 and the file 0600, and round-trips', async () => {
    const dir = await home();
    const config: ClientConfig = { version: 1, meshes: [identity('one')] };
    await writeConfig(dir, config);
    assert.equal(await mode(dir), 0o700);
    assert.equal(await mode(configPath(dir)), 0o600);
    assert.deepEqual(await readConfig(dir), config);
  });

  it('repairs a directory or file that others can read', async () => {
    const dir = await home();
    await mkdir(dir, { mode: 0o755 });
    await chmod(dir, 0o755);
    await writeFile(configPath(dir), JSON.stringify({ version: 1, meshes: [] }), { mode: 0o644 });
    await chmod(configPath(dir), 0o644);
    await readConfig(dir);
    assert.equal(await mode(configPath(dir)), 0o600);
    await updateConfig(dir, () => {});
    assert.equal(await mode(dir), 0o700);
  });

  it('replaces the file by rename, leaving no temporary file behind', async () => {
    const dir = await home();
    await writeConfig(dir, { version: 1, meshes: [identity('a')] });
    await writeConfig(dir, { version: 1, meshes: [identity('b')] });
    assert.deepEqual(await readdir(dir), ['config.json']);
  });

  it('leaves the old file whole when a write fails, and cleans its temporary file', async () => {
    const dir = await home();
    const before: ClientConfig = { version: 1, meshes: [identity('keep')] };
    await writeConfig(dir, before);
    const beforeText = await readFile(configPath(dir), 'utf8');
    // A change that throws aborts the update before anything is written.
    assert.equal(
      await codeOf(() => updateConfig(dir, () => {
        throw new Error('changed my mind');
      })).then((code) => code?.startsWith('not a CmError')),
      true,
    );
    assert.equal(await readFile(configPath(dir), 'utf8'), beforeText);
    // A rename that fails (the target is now a directory) leaves no temporary file.
    const blocked = await home();
    await mkdir(join(blocked, 'config.json'), { recursive: true });
    assert.equal(await codeOf(() => writeConfig(blocked, before)), 'CM_ERR_CLIENT_CONFIG');
    assert.deepEqual(await readdir(blocked), ['config.json']);
  });

  it('serialises concurrent updates so none is lost', async () => {
    const dir = await home();
    await Promise.all(Array.from({ length: 8 }, (_, index) => updateConfig(dir, (config) => void config.meshes.push(identity(`m${index}`)))));
    const config = await readConfig(dir);
    assert.equal(config.meshes.length, 8);
    assert.deepEqual(await readdir(dir), ['config.json']);
  });

  it('takes over a lock left by a dead process, and gives up on a live one', async () => {
    const dir = await home();
    await mkdir(dir, { recursive: true });
    const lock = join(dir, 'config.lock');
    await writeFile(lock, '99999');
    assert.equal(await codeOf(() => updateConfig(dir, () => {}, { lockTimeoutMs: 50 })), 'CM_ERR_CLIENT_CONFIG');
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    await updateConfig(dir, (config) => void config.meshes.push(identity('after')));
    assert.equal((await readConfig(dir)).meshes.length, 1);
  });

  it('refuses a config that is not what it should be, naming the problem', async () => {
    const dir = await home();
    await mkdir(dir, { recursive: true });
    const mismatched = { ...identity('x'), publicKey: generateKeyPair().publicKey };
    const cases: Array<[string, RegExp]> = [
      ['{not json', /not JSON/],
      ['[]', /not a JSON object/],
      [JSON.stringify({ version: 2, meshes: [] }), /version 2/],
      [JSON.stringify({ version: 1, meshes: [mismatched] }), /does not belong to its publicKey/],
      [JSON.stringify({ version: 1, meshes: [{ ...identity('y'), brokerUrl: 'nope' }] }), /brokerUrl/],
      [JSON.stringify({ version: 1, meshes: [identity('z'), identity('z')] }), /listed twice/],
    ];
    for (const [text, problem] of cases) {
      await writeFile(configPath(dir), text);
      await assert.rejects(readConfig(dir), (error: unknown) => isCmError(error) && error.code === 'CM_ERR_CLIENT_CONFIG' && problem.test(error.message));
    }
  });
});
