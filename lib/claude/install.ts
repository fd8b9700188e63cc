// `claudemesh install` and `uninstall`: the MCP server entry, the four hooks and the skill,
// for one scope (user: ~/.claude.json, ~/.claude/settings.json, ~/.claude/skills; project:
// ./.mcp.json, ./.claude/settings.local.json, ./.claude/skills), or the same three as a
// plugin from a local marketplace directory (--plugin; the one route on which Claude Code
// takes channel messages without a dialog, see docs/claude-code.md).
//
// Idempotent: what is there already is not added again. Exact to undo: before the first
// change, the settings file's bytes are saved in a record under the claudemesh home with the
// hash of what install left; uninstall writes the saved bytes back when the file still has
// that hash (byte for byte, or deletes it when there was none), and otherwise removes only
// claudemesh's handlers and says so. ~/.claude.json is Claude Code's own file, rewritten by
// it all the time: there, only the `claudemesh` entry is added and removed.

import { mkdir, readFile, rm, rmdir, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { VERSION } from '../version.ts';
import { hookGroups, MARKETPLACE_NAME, mcpEntry, PLUGIN_ID, pluginFiles, SERVER_NAME, SKILL } from './artifacts.ts';
import { cmError } from '../errors.ts';
import { findClaude, INSTALL_CLAUDE_HINT, runClaude } from './claude-bin.ts';
import { addHooks, jsonText, readBytes, readJsonObject, removeHooks, sha256, writeAtomic } from './files.ts';
import type { JsonObject } from './files.ts';

type Env = Readonly<Record<string, string | undefined>>;
export type Scope = 'user' | 'project';

export interface InstallOptions {
  scope: Scope;
  plugin: boolean;
  dryRun: boolean;
  /** the claudemesh home, where the record and the plugin directory live */
  home: string;
  env: Env;
  cwd: string;
}

interface Places {
  /** the file holding the MCP entry: ~/.claude.json or ./.mcp.json */
  mcpFile: string;
  settings: string;
  skill: string;
  record: string;
  pluginDir: string;
}

interface InstallRecord {
  version: 1;
  scope: Scope;
  plugin: boolean;
  settings: { path: string; original: string | null; written: string | null };
  mcp: { via: 'claude' | 'file' | 'plugin'; path: string; createdServers: boolean };
  skill: { path: string; written: string | null };
}

function placesFor(options: Pick<InstallOptions, 'scope' | 'home' | 'env' | 'cwd'>): Places {
  const claudeDir = options.env.CLAUDE_CONFIG_DIR ?? join(options.env.HOME ?? homedir(), '.claude');
  const stateFile = options.env.CLAUDE_CONFIG_DIR !== undefined ? join(options.env.CLAUDE_CONFIG_DIR, '.claude.json') : join(options.env.HOME ?? homedir(), '.claude.json');
  const project = options.scope === 'project';
  return {
    mcpFile: project ? join(options.cwd, '.mcp.json') : stateFile,
    settings: project ? join(options.cwd, '.claude', 'settings.local.json') : join(claudeDir, 'settings.json'),
    skill: join(project ? join(options.cwd, '.claude') : claudeDir, 'skills', SERVER_NAME, 'SKILL.md'),
    record: join(options.home, 'install', project ? `project-${sha256(options.cwd).slice(0, 16)}.json` : 'user.json'),
    pluginDir: join(options.home, 'claude-plugin'),
  };
}

async function loadRecord(path: string): Promise<InstallRecord | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as InstallRecord;
  } catch {
    return undefined;
  }
}

async function hashOf(path: string): Promise<string | null> {
  const bytes = await readBytes(path);
  return bytes === undefined ? null : sha256(bytes);
}

/** The MCP entry, through `claude mcp add-json` where claude exists, else by editing the file. */
async function installMcp(places: Places, options: InstallOptions, claude: string | undefined, report: string[]): Promise<InstallRecord['mcp']> {
  const file = await readJsonObject(places.mcpFile);
  const servers = (file.mcpServers ?? {}) as JsonObject;
  const wanted = mcpEntry();
  const current = servers[SERVER_NAME];
  const via = claude === undefined ? 'file' : 'claude';
  if (JSON.stringify(current) === JSON.stringify(wanted)) {
    report.push(`MCP server ${SERVER_NAME}: already in ${places.mcpFile}`);
    return { via, path: places.mcpFile, createdServers: false };
  }
  if (options.dryRun) {
    report.push(`would ${current === undefined ? 'add' : 'replace'} MCP server ${SERVER_NAME} in ${places.mcpFile}: ${JSON.stringify(wanted)}`);
    return { via, path: places.mcpFile, createdServers: false };
  }
  if (claude !== undefined) {
    if (current !== undefined) runClaude(claude, ['mcp', 'remove', '--scope', options.scope, SERVER_NAME], options.env, { allowFailure: true });
    runClaude(claude, ['mcp', 'add-json', '--scope', options.scope, SERVER_NAME, JSON.stringify(wanted)], { ...options.env }, {});
  } else {
    await writeAtomic(places.mcpFile, jsonText({ ...file, mcpServers: { ...servers, [SERVER_NAME]: wanted } }));
  }
  report.push(`MCP server ${SERVER_NAME}: added to ${places.mcpFile}${claude === undefined ? '' : ' (claude mcp add-json)'}`);
  return { via, path: places.mcpFile, createdServers: file.mcpServers === undefined };
}

async function installSkill(places: Places, options: InstallOptions, report: string[]): Promise<void> {
  if ((await hashOf(places.skill)) === sha256(SKILL)) {
    report.push(`skill: already at ${places.skill}`);
    return;
  }
  if (options.dryRun) {
    report.push(`would write the skill to ${places.skill}`);
    return;
  }
  await mkdir(dirname(places.skill), { recursive: true });
  await writeAtomic(places.skill, SKILL);
  report.push(`skill: written to ${places.skill}`);
}

async function installPlugin(places: Places, options: InstallOptions, claude: string, report: string[]): Promise<void> {
  const files = pluginFiles(VERSION);
  if (options.dryRun) {
    report.push(`would write the plugin to ${places.pluginDir} (${Object.keys(files).length} files) and run: claude plugin marketplace add ${places.pluginDir}; claude plugin install ${PLUGIN_ID}`);
    return;
  }
  for (const [relative, text] of Object.entries(files)) {
    await mkdir(dirname(join(places.pluginDir, relative)), { recursive: true });
    await writeFile(join(places.pluginDir, relative), text);
  }
  const settings = await readJsonObject(places.settings);
  const known = (settings.extraKnownMarketplaces ?? {}) as JsonObject;
  if (known[MARKETPLACE_NAME] === undefined) runClaude(claude, ['plugin', 'marketplace', 'add', places.pluginDir], options.env);
  else runClaude(claude, ['plugin', 'marketplace', 'update', MARKETPLACE_NAME], options.env, { allowFailure: true });
  runClaude(claude, ['plugin', 'install', PLUGIN_ID, '--scope', options.scope], options.env);
  report.push(`plugin ${PLUGIN_ID}: installed from ${places.pluginDir}`);
}

/** Install; returns one line per part (what was done, or would be with dryRun). */
export async function install(options: InstallOptions): Promise<string[]> {
  const places = placesFor(options);
  const claude = findClaude(options.env);
  const report: string[] = [];
  const previous = await loadRecord(places.record);
  const originalBytes = await readBytes(places.settings);
  const settingsBefore = await readJsonObject(places.settings);
  let mcp: InstallRecord['mcp'] = { via: 'plugin', path: places.pluginDir, createdServers: false };
  if (options.plugin) {
    if (claude === undefined) throw cmError('CM_ERR_CLAUDE_MISSING', 'claudemesh install --plugin needs the claude command', { hint: INSTALL_CLAUDE_HINT });
    await installPlugin(places, options, claude, report);
  } else {
    mcp = await installMcp(places, options, claude, report);
    const { settings, added } = addHooks(settingsBefore, hookGroups());
    if (added.length === 0) report.push(`hooks: already in ${places.settings}`);
    else if (options.dryRun) report.push(`would add hooks ${added.join(', ')} to ${places.settings}`);
    else {
      await writeAtomic(places.settings, jsonText(settings));
      report.push(`hooks: ${added.join(', ')} added to ${places.settings}`);
    }
  }
  if (!options.plugin) await installSkill(places, options, report);
  if (options.dryRun) return report;
  const record: InstallRecord = {
    version: 1, scope: options.scope, plugin: options.plugin,
    // The first install's original stays the original: a second install must not take our own file for it.
    settings: { path: places.settings, original: previous?.settings.original ?? (originalBytes === undefined ? null : originalBytes.toString('base64')), written: await hashOf(places.settings) },
    mcp: previous === undefined ? mcp : { ...mcp, createdServers: previous.mcp.createdServers || mcp.createdServers },
    skill: { path: places.skill, written: options.plugin ? null : await hashOf(places.skill) },
  };
  await mkdir(dirname(places.record), { recursive: true, mode: 0o700 });
  await writeFile(places.record, jsonText(record), { mode: 0o600 });
  return report;
}

async function uninstallMcp(record: InstallRecord | undefined, places: Places, options: InstallOptions, claude: string | undefined, report: string[]): Promise<void> {
  const file = await readJsonObject(places.mcpFile);
  const servers = (file.mcpServers ?? {}) as JsonObject;
  if (servers[SERVER_NAME] === undefined) return;
  if (claude !== undefined) {
    runClaude(claude, ['mcp', 'remove', '--scope', options.scope, SERVER_NAME], options.env, { allowFailure: true });
  } else {
    const { [SERVER_NAME]: _ours, ...others } = servers;
    const dropServers = record?.mcp.createdServers === true && Object.keys(others).length === 0;
    const { mcpServers: _all, ...rest } = file;
    // A file that held nothing but what install put there goes (a project's .mcp.json).
    if (dropServers && Object.keys(rest).length === 0 && options.scope === 'project') await unlink(places.mcpFile);
    else await writeAtomic(places.mcpFile, jsonText(dropServers ? rest : { ...rest, mcpServers: others }));
  }
  report.push(`MCP server ${SERVER_NAME}: removed from ${places.mcpFile}`);
}

async function restoreSettings(record: InstallRecord | undefined, untouched: boolean, places: Places, report: string[]): Promise<void> {
  const now = await readBytes(places.settings);
  if (record !== undefined && untouched) {
    if (record.settings.original === null) await unlink(places.settings).catch(() => {});
    else await writeAtomic(places.settings, Buffer.from(record.settings.original, 'base64'));
    report.push(`settings: ${places.settings} restored byte for byte`);
    return;
  }
  if (now === undefined) return;
  const { settings, removed } = removeHooks(await readJsonObject(places.settings));
  if (removed > 0) await writeAtomic(places.settings, jsonText(settings));
  report.push(`settings: ${places.settings} changed since install; ${removed} claudemesh hook handler(s) removed, everything else left as it is`);
}

/** Remove what install added; one line per part. */
export async function uninstall(options: InstallOptions): Promise<string[]> {
  const places = placesFor(options);
  const record = await loadRecord(places.record);
  const claude = findClaude(options.env);
  const report: string[] = [];
  // Decided before `claude plugin uninstall` rewrites the file in its own way.
  const untouched = record !== undefined && (await hashOf(places.settings)) === record.settings.written;
  if (record?.plugin === true && claude !== undefined) {
    runClaude(claude, ['plugin', 'uninstall', PLUGIN_ID, '--scope', options.scope], options.env, { allowFailure: true });
    runClaude(claude, ['plugin', 'marketplace', 'remove', MARKETPLACE_NAME], options.env, { allowFailure: true });
    await rm(places.pluginDir, { recursive: true, force: true });
    report.push(`plugin ${PLUGIN_ID}: uninstalled`);
  }
  await uninstallMcp(record, places, options, claude, report);
  await restoreSettings(record, untouched, places, report);
  const skillHash = await hashOf(places.skill);
  if (skillHash === sha256(SKILL)) {
    await unlink(places.skill);
    // The skill's directory, then `skills` itself, only when left empty.
    await rmdir(dirname(places.skill)).then(() => rmdir(dirname(dirname(places.skill)))).catch(() => {});
    report.push(`skill: removed from ${places.skill}`);
  } else if (skillHash !== null) {
    report.push(`skill: ${places.skill} was edited since install; left in place`);
  }
  await unlink(places.record).catch(() => {});
  if (report.length === 0) report.push('nothing of claudemesh was installed here');
  return report;
}
