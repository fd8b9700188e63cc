// `claudemesh hook …` as Claude Code runs it: a real child process with the hook JSON on
// stdin, against a real daemon and broker. It exits 0 fast and silent with no daemon; it
// registers the session on start, moves its presence working → idle (as alice sees it), says
// one line about unread messages (never a body) when no channel reads them, and ends it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { peerSeenBy, startPair, until } from '../helpers/pair.ts';
import type { Pair } from '../helpers/pair.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const HOOK_BUDGET_MS = 1_000;
// On a loaded machine Node's start-up and module loading alone can take a second. The budget
// grows by what `claudemesh hook --help` (the same process and modules, no work) takes beyond
// a quiet machine's, never by anything the hook itself waits for.
const QUIET_START_MS = 400;
const ATTEMPTS = 3;

interface HookRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runHook(action: string, input: Record<string, unknown>, env: Record<string, string>): Promise<HookRun> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete childEnv.NODE_TEST_CONTEXT;
  delete childEnv.CLAUDEMESH_SESSION_TOKEN_FILE;
  const started = Date.now();
  const child = spawn(process.execPath, ['cli.ts', 'hook', action], { cwd: ROOT, env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => void (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => void (stderr += chunk.toString()));
  child.stdin.end(JSON.stringify(input));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started })));
}

async function budgetMs(): Promise<number> {
  const starts: number[] = [];
  for (let attempt = 0; attempt < 2; attempt += 1) starts.push((await runHook('--help', {}, {})).ms);
  return HOOK_BUDGET_MS + Math.max(0, Math.min(...starts) - QUIET_START_MS);
}

describe('claudemesh hook with the daemon stopped', () => {
  it('exits 0 in under a second and prints nothing', async () => {
    const home = await mkdtemp(join(tmpdir(), 'cm-hook-none-'));
    try {
      // Timing on a shared machine is noisy: the fastest of a few runs must be in budget (a hook
      // that waited for anything — a daemon start, a retry — would be slow every time).
      for (const action of ['working', 'idle', 'start', 'end']) {
        const times: number[] = [];
        for (let attempt = 0; attempt < ATTEMPTS; attempt += 1) {
          const run = await runHook(action, { session_id: 's-1', hook_event_name: 'UserPromptSubmit', cwd: home }, { CLAUDEMESH_HOME: home });
          assert.equal(run.code, 0, run.stderr);
          assert.equal(run.stdout, '');
          times.push(run.ms);
          if (run.ms < HOOK_BUDGET_MS) break;
        }
        const budget = await budgetMs();
        assert.ok(Math.min(...times) < budget, `hook ${action} took ${times.join(', ')} ms (budget ${budget} ms)`);
      }
      const bad = await runHook('dance', {}, { CLAUDEMESH_HOME: home });
      assert.equal(bad.code, 0, 'even a wrong action exits 0: a hook must never block Claude');
      assert.equal(bad.stdout, '');
      assert.match(bad.stderr, /CM_ERR_USAGE/);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe('claudemesh hook against a real daemon and broker', () => {
  let pair: Pair;
  before(async () => {
    pair = await startPair('hook');
  });
  after(async () => {
    await pair.close();
  });

  it('registers on start, goes working then idle as alice sees it, gives the unread line, ends', async () => {
    const { alice, bob } = pair;
    // CLAUDE_PID: this test process stands for Claude, so the session lives while it runs.
    const env = { CLAUDEMESH_HOME: bob.home, CLAUDE_PID: String(process.pid), CLAUDEMESH_SESSION_NAME: 'bob-session', HOME: bob.home };
    const input = { session_id: 'claude-hook-1', cwd: bob.home };
    const start = await runHook('start', { ...input, hook_event_name: 'SessionStart', source: 'startup' }, env);
    assert.equal(start.code, 0);
    assert.equal(start.stdout, '');
    const registered = bob.daemon.sessions.list().find((record) => record.sessionId === 'claude-hook-1');
    assert.equal(registered?.name, 'bob-session');
    assert.equal(registered?.pid, process.pid);
    await until('alice sees bob-session online', async () => (await peerSeenBy(alice, 'bob-session'))?.online === true);

    const working = await runHook('working', { ...input, hook_event_name: 'UserPromptSubmit', prompt: 'hi' }, env);
    assert.equal(working.stdout, '', 'nothing unread: nothing said');
    await until('alice sees bob-session working', async () => (await peerSeenBy(alice, 'bob-session'))?.status === 'working');

    const sent = await alice.ask('POST', '/v1/send', { to: 'bob-session', text: 'SECRET-BODY deploy is done' });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    await until('bob receives it', () => bob.daemon.listInbox({}).some((row) => row.body === 'SECRET-BODY deploy is done'));
    const prompt = await runHook('working', { ...input, hook_event_name: 'UserPromptSubmit', prompt: 'next' }, env);
    assert.equal(prompt.code, 0);
    assert.equal(prompt.stdout, '1 unread claudemesh message (alice): run `claudemesh inbox` to read it\n');
    assert.doesNotMatch(prompt.stdout, /SECRET-BODY/);

    const idle = await runHook('idle', { ...input, hook_event_name: 'Stop', stop_hook_active: false }, env);
    assert.equal(idle.stdout, '', 'Stop never prints');
    await until('alice sees bob-session idle', async () => (await peerSeenBy(alice, 'bob-session'))?.status === 'idle');

    const end = await runHook('end', { ...input, hook_event_name: 'SessionEnd', reason: 'other' }, env);
    assert.equal(end.code, 0);
    await until('the session is unregistered', () => !bob.daemon.sessions.list().some((record) => record.sessionId === 'claude-hook-1'));
  });
});
