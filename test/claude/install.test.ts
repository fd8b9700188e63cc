// claudemesh install / uninstall in a throwaway HOME, as real CLI processes, without a
// `claude` command (CLAUDEMESH_CLAUDE_BIN empty): the files are edited directly. The real
// client's own view (claude mcp list, the plugin route) is checked by just test-claude.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli.ts';

let home: string;
let env: NodeJS.ProcessEnv;
const ORIGINAL_SETTINGS = '{\n    "theme": "dark",\n  "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "echo mine"}]}]}\n}';

const exists = (path: string) => stat(path).then(() => true, () => false);
const json = async (path: string) => JSON.parse(await readFile(path, 'utf8')) as Record<string, any>;

describe('claudemesh install and uninstall (no claude command)', () => {
  before(async () => {
    home = await mkdtemp(join(tmpdir(), 'cm-install-'));
    env = { ...process.env, HOME: home, CLAUDEMESH_HOME: join(home, '.claudemesh'), CLAUDEMESH_CLAUDE_BIN: '' };
    delete env.CLAUDE_CONFIG_DIR;
  });
  after(async () => {
    await rm(home, { recursive: true, force: true });
  });

  it('adds the MCP entry, four hooks and the skill once, keeps other settings, and uninstall restores the bytes', async () => {
    await mkdir(join(home, '.claude'), { recursive: true });
    await writeFile(join(home, '.claude', 'settings.json'), ORIGINAL_SETTINGS);
    await writeFile(join(home, '.claude.json'), '{"numStartups": 3, "mcpServers": {"other": {"type": "stdio", "command": "x"}}}');
    const dry = await runCli(['install', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would add hooks UserPromptSubmit, Stop, SessionStart, SessionEnd/);
    assert.equal(await readFile(join(home, '.claude', 'settings.json'), 'utf8'), ORIGINAL_SETTINGS, 'a dry run changes nothing');

    for (const round of [1, 2]) {
      const run = await runCli(['install'], env);
      assert.equal(run.code, 0, run.stderr);
      if (round === 2) assert.match(run.stdout, /already in .*settings\.json/);
    }
    const settings = await json(join(home, '.claude', 'settings.json'));
    assert.equal(settings.theme, 'dark');
    assert.equal(settings.hooks.Stop.length, 2, 'the user’s own Stop group is kept, ours appended once');
    assert.deepEqual(settings.hooks.Stop[1].hooks[0].args.slice(1), ['hook', 'idle']);
    assert.deepEqual(Object.keys(settings.hooks).sort(), ['SessionEnd', 'SessionStart', 'Stop', 'UserPromptSubmit']);
    const state = await json(join(home, '.claude.json'));
    assert.equal(state.numStartups, 3);
    assert.deepEqual(state.mcpServers.claudemesh.args.slice(1), ['mcp']);
    assert.ok(state.mcpServers.other !== undefined);
    assert.match(await readFile(join(home, '.claude', 'skills', 'claudemesh', 'SKILL.md'), 'utf8'), /^---\nname: claudemesh\n/);

    const out = await runCli(['uninstall'], env);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /restored byte for byte/);
    assert.equal(await readFile(join(home, '.claude', 'settings.json'), 'utf8'), ORIGINAL_SETTINGS);
    assert.deepEqual(await json(join(home, '.claude.json')), { numStartups: 3, mcpServers: { other: { type: 'stdio', command: 'x' } } });
    assert.equal(await exists(join(home, '.claude', 'skills', 'claudemesh')), false);
  });

  it('after a later edit of settings.json, uninstall removes only its own handlers; a file that does not parse is refused', async () => {
    await rm(join(home, '.claude', 'settings.json'));
    assert.equal((await runCli(['install'], env)).code, 0);
    const settings = await json(join(home, '.claude', 'settings.json'));
    await writeFile(join(home, '.claude', 'settings.json'), JSON.stringify({ ...settings, model: 'opus' }));
    const out = await runCli(['uninstall'], env);
    assert.match(out.stdout, /changed since install; 4 claudemesh hook handler\(s\) removed/);
    assert.deepEqual(await json(join(home, '.claude', 'settings.json')), { model: 'opus' });

    await writeFile(join(home, '.claude', 'settings.json'), '{"broken": ');
    const refused = await runCli(['install', '--json'], env);
    assert.equal(refused.code, 1);
    assert.equal(refused.json.error.code, 'CM_ERR_CLAUDE_FILE');
    assert.equal(await readFile(join(home, '.claude', 'settings.json'), 'utf8'), '{"broken": ', 'left untouched');
    const scope = await runCli(['install', '--scope', 'everywhere'], env);
    assert.equal(scope.code, 2);
    assert.match(scope.stderr, /--scope must be user or project/);
  });

  it('--scope project writes .mcp.json, .claude/settings.local.json and the project skill, and takes them out again', async () => {
    const project = join(home, 'project');
    await mkdir(project);
    const run = (args: string[]) => runCli(args, env, project);
    assert.equal((await run(['install', '--scope', 'project'])).code, 0);
    assert.ok((await json(join(project, '.mcp.json'))).mcpServers.claudemesh !== undefined);
    assert.ok((await json(join(project, '.claude', 'settings.local.json'))).hooks.UserPromptSubmit !== undefined);
    assert.ok(await exists(join(project, '.claude', 'skills', 'claudemesh', 'SKILL.md')));
    assert.equal((await run(['uninstall', '--scope', 'project'])).code, 0);
    assert.equal(await exists(join(project, '.claude', 'settings.local.json')), false, 'it did not exist before');
    assert.equal(await exists(join(project, '.mcp.json')), false, 'nor did .mcp.json');
  });
});
