// `just test-claude`: claudemesh against the real Claude Code client (pinned, installed into
// .cache/claude-code by the recipe), offline: a real broker and Postgres, alice's and bob's
// daemons started by the CLI as a user would, bob's Claude in a throwaway HOME wired with
// `claudemesh install --plugin`, and a fake Messages API that plays the model. Not a
// *.test.ts file, so `npm test` does not run it; the recipe names it.
//
// It shows: `claude mcp list` sees claudemesh connected; bob's presence goes working during a
// turn and idle after it (alice's peer list); alice's message reaches the model's next request
// as a <channel …> block and is marked surfaced; the model's send tool_use with reply_to lands
// in alice's inbox as a reply; with the feature cache gone, the next prompt carries the one
// unread line and no body; uninstall gives settings.json its bytes back; and `claudemesh
// launch` in a tmux terminal (the development flag, its dialog accepted) gets a message through.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brokerEnv, startBroker } from '../helpers/broker-process.ts';
import type { BrokerProcess } from '../helpers/broker-process.ts';
import { runCli } from '../helpers/cli.ts';
import type { CliRun } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/db.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { waitUntil } from '../helpers/wait.ts';
import { claudeEnv, dropFeatureCache, ORIGINAL_SETTINGS, restoreFeatureCache, seedClaudeHome } from './claude-home.ts';
import { openTerminal } from './tmux.ts';
import { requestText, startFakeApi } from './fake-api.ts';
import type { Answer, FakeApi, MessagesRequest } from './fake-api.ts';
import { startSession } from './session.ts';
import type { ClaudeSession } from './session.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const CLAUDE = process.env.CLAUDEMESH_TEST_CLAUDE ?? join(ROOT, '.cache/claude-code/node_modules/.bin/claude');
const WAIT_MS = 60_000;
// Searched in JSON text, where every quote is escaped.
const CHANNEL_BLOCK = /<channel source=\\"(?:plugin:claudemesh:)?claudemesh\\"([^>]*)>/;

let scratch: string;
let database: TestDatabase;
let broker: BrokerProcess;
let api: FakeApi;
let claudeHome: string;
let project: string;
let releaseFirstTurn: () => void = () => {};
const firstTurnHeld = new Promise<void>((resolve) => (releaseFirstTurn = resolve));

const until = <T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>) => waitUntil(what, probe, { timeoutMs: WAIT_MS, pollMs: 200 });

function cli(who: 'alice' | 'bob', args: string[], extra: Record<string, string> = {}): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = { ...claudeEnv(claudeHome, api.url, {}), CLAUDEMESH_HOME: join(scratch, who), CLAUDEMESH_CLAUDE_BIN: CLAUDE, ...extra };
  return runCli(args, env, project);
}

async function ok(run: Promise<CliRun>): Promise<CliRun> {
  const done = await run;
  assert.equal(done.code, 0, `${done.stdout}\n${done.stderr}`);
  return done;
}

function lastUserText(request: MessagesRequest): string {
  return JSON.stringify(request.messages.at(-1) ?? {});
}

/** The model's part: hold the first prompt, answer alice's channel message with the send tool. */
async function playModel(request: MessagesRequest): Promise<Answer> {
  const last = lastUserText(request);
  const send = request.tools?.find((tool) => /claudemesh.*__send$/.test(tool.name));
  if (last.includes('tool_result')) return { text: 'Sent.' };
  // Held whatever the tools: the first request may go out before the MCP server's are listed.
  if (last.includes('first prompt')) {
    await firstTurnHeld;
    return { text: 'Hello from bob.' };
  }
  const channel = CHANNEL_BLOCK.exec(last);
  if (channel !== null && /from_name=\\"alice\\"/.test(channel[1] ?? '') && send !== undefined) {
    const messageId = /message_id=\\"([^"\\]+)\\"/.exec(channel[1] ?? '')?.[1] ?? '';
    return { toolUse: { name: send.name, input: { to: 'alice', text: 'deploy confirmed', reply_to: messageId } } };
  }
  return { text: 'ok' };
}

async function peerStatus(name: string): Promise<string | undefined> {
  const run = await cli('alice', ['peer', 'list', '--json']);
  return (run.json.peers as Array<Record<string, any>> | undefined)?.find((peer) => peer.name === name && peer.online === true)?.status;
}

function session(sessionId: string): ClaudeSession {
  const env = claudeEnv(claudeHome, api.url, { CLAUDEMESH_HOME: join(scratch, 'bob'), CLAUDEMESH_SESSION_NAME: 'bob-session' });
  return startSession(CLAUDE, ['--channels', 'plugin:claudemesh@claudemesh', '--session-id', sessionId], env, project);
}

/** Postgres, the broker, the fake API, bob's Claude HOME; alice's mesh with bob in it; both daemons up. */
async function setUp(): Promise<void> {
  scratch = await mkdtemp(join(tmpdir(), 'cm-real-claude-'));
  claudeHome = join(scratch, 'claude-home');
  project = join(scratch, 'project');
  await mkdir(project, { recursive: true });
  await seedClaudeHome(claudeHome, project);
  database = await createTestDatabase('real_claude');
  broker = await startBroker(brokerEnv({ DATABASE_URL: database.url }));
  api = await startFakeApi(playModel);
  await ok(cli('alice', ['new', 'team', '--broker', broker.baseUrl, '--name', 'alice']));
  const invite = await ok(cli('alice', ['invite']));
  await ok(cli('bob', ['join', invite.stdout.trim(), '--name', 'bob']));
  await ok(cli('alice', ['daemon', 'up']));
  await ok(cli('bob', ['daemon', 'up']));
}

async function tearDown(): Promise<void> {
  await cli('alice', ['daemon', 'down']).catch(() => undefined);
  await cli('bob', ['daemon', 'down']).catch(() => undefined);
  await api?.close();
  await broker?.stop();
  await database?.drop();
  // CLAUDEMESH_KEEP_SCRATCH=1 keeps the homes, the daemon logs and every model request.
  if (process.env.CLAUDEMESH_KEEP_SCRATCH === '1') await writeFile(join(scratch, 'api-requests.json'), JSON.stringify(api?.requests ?? [], null, 2));
  else await rm(scratch, { recursive: true, force: true });
}

describe('claudemesh with the real Claude Code client', () => {
  before(setUp);
  after(tearDown);

  it('install --plugin: claude mcp list shows claudemesh connected', async () => {
    const installed = await ok(cli('bob', ['install', '--plugin']));
    assert.match(installed.stdout, /plugin claudemesh@claudemesh: installed/);
    const list = runClaudeMcpList();
    assert.match(list, /claudemesh.*Connected/, list);
  });

  it('presence follows the turn; a channel message reaches the model, is surfaced, and is answered with reply_to', async () => {
    const bob = session(randomUUID());
    try {
      bob.prompt('first prompt');
      assert.equal(await until('alice sees bob-session working', async () => (await peerStatus('bob-session')) === 'working'), true);
      releaseFirstTurn();
      await until('the first turn ends', () => bob.results().length >= 1);
      await until('alice sees bob-session idle', async () => (await peerStatus('bob-session')) === 'idle');

      const sent = await ok(cli('alice', ['send', 'bob-session', 'please confirm the deploy', '--json']));
      const clientMessageId = String(sent.json.clientMessageId);
      const reached = await until('the channel block in a model request', () => api.requests.find((request) => CHANNEL_BLOCK.test(lastUserText(request)) && lastUserText(request).includes('please confirm the deploy')));
      const attributes = CHANNEL_BLOCK.exec(lastUserText(reached))?.[1] ?? '';
      assert.match(attributes, /from_name=\\"alice\\"/);
      const messageId = /message_id=\\"([^"\\]+)\\"/.exec(attributes)?.[1] ?? '';
      assert.notEqual(messageId, '');
      const bobInbox = await ok(cli('bob', ['inbox', '--json', '--peek']));
      const row = (bobInbox.json.items as Array<Record<string, any>>).find((item) => item.body === 'please confirm the deploy');
      assert.ok(typeof row?.surfacedAt === 'string' && !Number.isNaN(Date.parse(row.surfacedAt)), `bob's inbox marks it surfaced: ${JSON.stringify(row)}`);
      const status = await ok(cli('alice', ['msg', 'status', clientMessageId, '--json']));
      assert.match(JSON.stringify(status.json.broker?.recipients), /"state":"(surfaced|read)"/);

      const reply = await until('the reply in alice’s inbox', async () => {
        const inbox = await cli('alice', ['inbox', '--json', '--peek']);
        return (inbox.json.items as Array<Record<string, any>> | undefined)?.find((item) => item.body === 'deploy confirmed');
      });
      assert.equal(reply.replyTo, messageId);
      assert.equal(reply.senderName, 'bob-session');
    } finally {
      await bob.end();
    }
  });

  it('with the feature cache absent, the next prompt gets the one-line unread notice and no body', async () => {
    await dropFeatureCache(claudeHome);
    await ok(cli('alice', ['send', 'bob', 'SECRET-FOUR the body must not reach the prompt']));
    await until('bob has it', async () => JSON.stringify((await cli('bob', ['inbox', '--json', '--peek'])).json).includes('SECRET-FOUR'));
    const before = api.requests.length;
    const bob = session(randomUUID());
    try {
      bob.prompt('second prompt');
      await until('the second turn ends', () => bob.results().length >= 1);
    } finally {
      await bob.end();
    }
    const later = api.requests.slice(before).filter((request) => requestText(request).includes('second prompt'));
    assert.ok(later.length > 0);
    const noticed = later.find((request) => /1 unread claudemesh message \(alice\)/.test(requestText(request)));
    assert.ok(noticed !== undefined, 'the UserPromptSubmit hook told the model');
    for (const request of later) assert.doesNotMatch(requestText(request), /SECRET-FOUR/);
  });

  it('uninstall restores settings.json byte for byte', async () => {
    const out = await ok(cli('bob', ['uninstall']));
    assert.match(out.stdout, /restored byte for byte/, out.stdout);
    assert.equal(await readFile(join(claudeHome, '.claude', 'settings.json'), 'utf8'), ORIGINAL_SETTINGS);
  });
  it('claudemesh launch in a terminal: after the channel dialog, a message reaches the model; /exit ends the session', async () => {
    await restoreFeatureCache(claudeHome);
    const installed = await ok(cli('bob', ['install']));
    assert.match(installed.stdout, /claude mcp add-json/);
    const terminal = openTerminal('claudemesh-test-launch', await launchScript());
    try {
      await until('the development-channel dialog', () => terminal.screen().includes('Loading development channels'));
      terminal.type('Enter');
      await until('the channel is loaded', () => terminal.screen().includes('messages from server:claudemesh'));
      await ok(cli('alice', ['send', 'bob-launch', 'hello through launch']));
      // Interactive requests end with a system entry: the block is searched in the whole request.
      const reached = await until('the message in a model request', () => api.requests.find((request) => requestText(request).includes('hello through launch')));
      assert.match(requestText(reached), /<channel source=\\"claudemesh\\" from_name=\\"alice\\"/);
      terminal.type('/exit', 'Enter');
      await until('claude and launch exit', () => !terminal.alive());
      const sessions = await ok(cli('bob', ['daemon', 'status', '--json']));
      assert.doesNotMatch(JSON.stringify(sessions.json), /bob-launch/, 'launch unregistered the session');
    } finally {
      if (terminal.alive()) terminal.kill();
    }
    const out = await ok(cli('bob', ['uninstall']));
    assert.match(out.stdout, /restored byte for byte/, out.stdout);
    assert.equal(await readFile(join(claudeHome, '.claude', 'settings.json'), 'utf8'), ORIGINAL_SETTINGS);
  });
});

/** A shell script that runs `claudemesh launch` as bob, in the project, with the test's environment. */
async function launchScript(): Promise<string> {
  const env = claudeEnv(claudeHome, api.url, { CLAUDEMESH_HOME: join(scratch, 'bob'), CLAUDEMESH_CLAUDE_BIN: CLAUDE });
  const quoted = (value: string) => `'${value.replaceAll("'", "'\\''")}'`;
  const exports = Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined && /^[A-Za-z_][A-Za-z0-9_]*$/.test(entry[0]));
  const path = join(scratch, 'launch.sh');
  await writeFile(path, `#!/bin/sh\n${exports.map(([key, value]) => `export ${key}=${quoted(value)}`).join('\n')}\ncd ${quoted(project)}\nexec ${quoted(process.execPath)} ${quoted(join(ROOT, 'cli.ts'))} launch --name bob-launch\n`);
  await chmod(path, 0o755);
  return path;
}

function runClaudeMcpList(): string {
  const env = claudeEnv(claudeHome, api.url, { CLAUDEMESH_HOME: join(scratch, 'bob') });
  const result = spawnSync(CLAUDE, ['mcp', 'list'], { cwd: project, env, encoding: 'utf8', timeout: WAIT_MS });
  return `${result.stdout}${result.stderr}`;
}
