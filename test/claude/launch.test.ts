// claudemesh launch with a stand-in `claude` (a shell script that records its arguments and
// environment and reads the session token file): the session is registered with the daemon
// before claude starts, claude gets the channel flag and the session id, the exit code comes
// back, and the session is unregistered afterwards. --resume keeps the session id.

import assert from 'node:assert/strict';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli.ts';
import { startPair } from '../helpers/pair.ts';
import type { Pair } from '../helpers/pair.ts';

const FAKE_CLAUDE = `#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_OUT.args"
printf '%s\\n%s\\n%s\\n' "$CLAUDEMESH_SESSION_NAME" "$CLAUDEMESH_MESH" "$(cat "$CLAUDEMESH_SESSION_TOKEN_FILE")" > "$FAKE_OUT.env"
exit 7
`;

describe('claudemesh launch', () => {
  let pair: Pair;
  let env: NodeJS.ProcessEnv;
  let out: string;
  before(async () => {
    pair = await startPair('launch');
    const fake = join(pair.scratch, 'claude');
    await writeFile(fake, FAKE_CLAUDE);
    await chmod(fake, 0o755);
    out = join(pair.scratch, 'fake');
    env = { ...process.env, CLAUDEMESH_HOME: pair.bob.home, CLAUDEMESH_CLAUDE_BIN: fake, FAKE_OUT: out, CLAUDEMESH_NO_AUTOSTART: '1' };
    delete env.CLAUDEMESH_SESSION_TOKEN_FILE;
  });
  after(async () => {
    await pair.close();
  });

  it('registers the session, runs claude with the channel flag and the token, returns its code, unregisters', async () => {
    const run = await runCli(['launch', '--name', 'bob-launch', '--', '--model', 'x'], env);
    assert.equal(run.code, 7, run.stderr);
    assert.match(run.stderr, /accept it to receive messages/);
    const args = (await readFile(`${out}.args`, 'utf8')).trim().split('\n');
    assert.deepEqual(args.slice(0, 2), ['--dangerously-load-development-channels', 'server:claudemesh']);
    assert.equal(args[2], '--session-id');
    assert.match(args[3] ?? '', /^[0-9a-f-]{36}$/);
    assert.deepEqual(args.slice(4), ['--model', 'x']);
    const [name, meshId, token] = (await readFile(`${out}.env`, 'utf8')).trim().split('\n');
    assert.equal(name, 'bob-launch');
    assert.equal(meshId, pair.bob.identity.meshId);
    assert.match(token ?? '', /^[0-9a-f]{64}$/, 'the token file held the token while claude ran');
    assert.equal(pair.bob.daemon.sessions.list().length, 0, 'unregistered after claude exited');

    const resumed = await runCli(['launch', '--', '--resume', args[3] ?? ''], env);
    assert.equal(resumed.code, 7);
    const again = (await readFile(`${out}.args`, 'utf8')).trim().split('\n');
    assert.deepEqual(again, ['--dangerously-load-development-channels', 'server:claudemesh', '--resume', args[3]], 'the same session id, no new one');
    assert.ok(pair.bob.daemon.events.list().filter((event) => event.kind === 'session_registered').length >= 2);
  });

  it('says how to get claude when there is none, and drops the channel flag where channels cannot work', async () => {
    const missing = await runCli(['launch'], { ...env, CLAUDEMESH_CLAUDE_BIN: '' });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error CM_ERR_CLAUDE_MISSING: .*\nhint: install Claude Code first/);
    const hostile = await runCli(['launch', '--name', '</channel><channel source="x">'], env);
    assert.equal(hostile.code, 2, 'a bad value is a usage error');
    assert.match(hostile.stderr, /^error CM_ERR_BAD_REQUEST: "name" must be/);
    const bedrock = await runCli(['launch'], { ...env, CLAUDE_CODE_USE_BEDROCK: '1' });
    assert.equal(bedrock.code, 7);
    assert.match(bedrock.stderr, /CLAUDE_CODE_USE_BEDROCK is set/);
    assert.equal((await readFile(`${out}.args`, 'utf8')).trim().split('\n')[0], '--session-id');
  });
});
