// A member the broker removed is told so everywhere, at once, and a new invite brings it
// back without anyone restarting anything; `claudemesh doctor` passes on a good setup and
// names the broken check (with its hint) on each broken one. Real processes throughout.

import assert from 'node:assert/strict';
import { chmod } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { main } from '../lib/cli/main.ts';
import { readPidFile } from '../daemon/lock.ts';
import { daemonPaths } from '../daemon/paths.ts';
import { cliMesh } from './helpers/cli-mesh.ts';
import type { CliMesh } from './helpers/cli-mesh.ts';
import { waitUntil } from './helpers/wait.ts';

const WAIT = { timeoutMs: 20_000, pollMs: 100 };
const CLOCK_OFFSET_MS = 120_000;
// A rejoin right after a removal: the broker forgets the removal when the key is admitted again.
async function rejoinAfterRemoval(): Promise<void> {
  const joined = await mesh.cli('bob', ['join', await mesh.invite(), '--name', 'bob']);
  assert.equal(joined.code, 0, joined.stderr);
}

let mesh: CliMesh;

async function refusal(person: string, args: string[]): Promise<{ code: number | null; error: Record<string, any> }> {
  const run = await mesh.cli(person, [...args, '--json']);
  return { code: run.code, error: run.json.error ?? {} };
}

/** `claudemesh doctor --json` in this process, with a clock that may be off. */
async function doctor(person: string, offsetMs = 0): Promise<{ code: number; checks: Array<{ name: string; ok: boolean; detail: string; hint: string }> }> {
  let stdout = '';
  const code = await main(['doctor', '--json'], {
    env: mesh.env(person), home: mesh.home(person), now: () => Date.now() + offsetMs, stdout: (text) => void (stdout += text), stderr: () => {},
  });
  return { code, checks: JSON.parse(stdout).checks };
}

function failed(result: Awaited<ReturnType<typeof doctor>>): string[] {
  return result.checks.filter((check) => !check.ok).map((check) => check.name);
}

describe('removed, banned, back again; and doctor', () => {
  before(async () => {
    mesh = await cliMesh('membership', ['alice', 'bob']);
  });
  after(() => mesh.close());

  it('doctor passes on a good setup', async () => {
    const sent = await mesh.cli('bob', ['send', 'alice', 'hello']);
    assert.equal(sent.code, 0, sent.stderr);
    await mesh.cli('alice', ['peer', 'list']);
    const result = await doctor('alice');
    assert.deepEqual(failed(result), [], JSON.stringify(result.checks, null, 1));
    assert.equal(result.code, 0);
    assert.deepEqual(result.checks.map((check) => check.name), [
      'config', 'file-modes', 'daemon', 'daemon-version', 'broker:team', 'clock:team', 'websocket:team', 'identity:team', 'service', 'channels',
    ]);
    const human = await mesh.cli('alice', ['doctor']);
    assert.equal(human.code, 0, human.stdout);
    assert.match(human.stdout, /^ok {4}identity:team +the broker accepts requests signed by [0-9a-f]{12}…: member alice \(owner\); the daemon's connection is open$/m);
  });

  it('doctor says whether channels can be live here, and why not', async () => {
    const bedrock = await (async () => {
      let stdout = '';
      await main(['doctor', '--json'], {
        env: { ...mesh.env('alice'), CLAUDE_CODE_USE_BEDROCK: '1' }, home: mesh.home('alice'), now: Date.now, stdout: (text) => void (stdout += text), stderr: () => {},
      });
      return (JSON.parse(stdout) as { checks: Array<{ name: string; ok: boolean; detail: string }> }).checks.find((check) => check.name === 'channels');
    })();
    assert.equal(bedrock?.ok, true, 'channels off is a state, not a failure');
    assert.match(bedrock?.detail ?? '', /^off: CLAUDE_CODE_USE_BEDROCK is set/);
  });

  it('doctor names the broken check and its hint: clock, file modes, broker down, stale socket', async () => {
    const skewed = await doctor('alice', CLOCK_OFFSET_MS);
    assert.deepEqual(failed(skewed), ['clock:team']);
    assert.equal(skewed.code, 1);
    assert.match(skewed.checks.find((check) => check.name === 'clock:team')?.detail ?? '', /this machine is 12\d s ahead of the broker/);
    const inbox = daemonPaths(mesh.home('alice')).inbox;
    await chmod(inbox, 0o644);
    const loose = await doctor('alice');
    assert.deepEqual(failed(loose), ['file-modes']);
    assert.match(loose.checks.find((check) => check.name === 'file-modes')?.detail ?? '', /inbox\.db \(644\)/);
    await chmod(inbox, 0o600);
    await mesh.stopBroker();
    const down = await doctor('alice');
    assert.deepEqual(failed(down), ['broker:team', 'websocket:team', 'identity:team']);
    assert.match(down.checks.find((check) => check.name === 'broker:team')?.hint ?? '', /start the broker/);
    await mesh.startBroker();
    const pid = await readPidFile(daemonPaths(mesh.home('alice')).pid);
    process.kill(pid ?? 0, 'SIGKILL');
    await waitUntil('alice’s daemon gone', async () => {
      try {
        process.kill(pid ?? 0, 0);
        return false;
      } catch {
        return true;
      }
    }, WAIT);
    const stale = await doctor('alice');
    assert.deepEqual(failed(stale), ['daemon']);
    assert.match(stale.checks[2]?.detail ?? '', /exists but no daemon answers on it/);
    assert.match(stale.checks[2]?.hint ?? '', /claudemesh daemon up/);
  });

  it('a kicked member is told so by send, peer list, list and daemon status (exit 4); a new invite brings it back', async () => {
    assert.equal((await mesh.cli('bob', ['peer', 'list'])).code, 0);
    assert.equal((await mesh.cli('alice', ['kick', 'bob'])).code, 0);
    const send = await waitUntil('bob refused', async () => {
      const run = await refusal('bob', ['send', 'alice', 'still here?']);
      return run.error.code === 'CM_ERR_REMOVED' ? run : undefined;
    }, WAIT);
    assert.equal(send.code, 4);
    assert.match(send.error.message, /no longer a member of mesh team: kicked by an owner or admin/);
    assert.deepEqual(await refusal('bob', ['peer', 'list']).then((run) => [run.code, run.error.code]), [4, 'CM_ERR_REMOVED']);
    assert.match((await mesh.cli('bob', ['list'])).stdout, /^team +\S+ +member +removed +bob /m);
    assert.match((await mesh.cli('bob', ['daemon', 'status'])).stdout, /^team +removed /m);
    await rejoinAfterRemoval();
    await waitUntil('bob reconnected by itself', async () => (await mesh.cli('bob', ['send', 'alice', 'back after the kick'])).code === 0, WAIT);
    assert.match((await mesh.cli('bob', ['list'])).stdout, /^team +\S+ +member +active +bob /m);
  });

  it('a banned member is told so (exit 4); after unban and a new invite the daemon reconnects by itself', async () => {
    assert.equal((await mesh.cli('alice', ['ban', 'bob'])).code, 0);
    const send = await waitUntil('bob refused', async () => {
      const run = await refusal('bob', ['send', 'alice', 'banned?']);
      return run.error.code === 'CM_ERR_BANNED' ? run : undefined;
    }, WAIT);
    assert.equal(send.code, 4);
    assert.match((await mesh.cli('bob', ['list'])).stdout, /^team +\S+ +member +banned +bob /m);
    assert.match((await mesh.cli('bob', ['whoami'])).stdout, /^team +bob +member +banned /m);
    assert.equal((await mesh.cli('alice', ['unban', 'bob'])).code, 0);
    await rejoinAfterRemoval();
    await waitUntil('bob reconnected by itself', async () => (await mesh.cli('bob', ['send', 'alice', 'back after the ban'])).code === 0, WAIT);
    await waitUntil('alice receives it', async () => {
      const inbox = await mesh.cli('alice', ['inbox', '--peek', '--json']);
      return (inbox.json.items as Array<{ body: string }>).some((item) => item.body === 'back after the ban');
    }, WAIT);
  });
});
