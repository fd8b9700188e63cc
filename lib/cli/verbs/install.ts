// `claudemesh install` and `claudemesh uninstall`: wire Claude Code to claudemesh (the MCP
// server, the hooks, the skill; or the same as a plugin) and take it out again exactly
// (lib/claude/install.ts). Each prints one line per part; --json prints them as a list.

import { install, uninstall } from '../../claude/install.ts';
import type { InstallOptions, Scope } from '../../claude/install.ts';
import { stringOption, usageError } from '../args.ts';
import { printJson } from '../output.ts';
import type { CliContext, Verb } from '../verb.ts';
import type { ParsedArgs } from '../args.ts';

const SCOPES: readonly Scope[] = ['user', 'project'];

function optionsOf(verb: string, context: CliContext, args: ParsedArgs): InstallOptions {
  const scope = stringOption(args.values, 'scope') ?? 'user';
  if (!(SCOPES as readonly string[]).includes(scope)) throw usageError(verb, `--scope must be user or project, received ${JSON.stringify(scope)}`);
  return { scope: scope as Scope, plugin: args.values.plugin === true, dryRun: args.values['dry-run'] === true, home: context.home, env: context.env, cwd: process.cwd() };
}

function print(context: CliContext, args: ParsedArgs, lines: string[]): void {
  if (args.values.json === true) printJson(context, { done: lines });
  else context.stdout(`${lines.join('\n')}\n`);
}

export const installVerb: Verb = {
  name: 'install',
  summary: 'wire Claude Code to claudemesh: the MCP server, four hooks, the skill',
  help: `usage: claudemesh install [--scope user|project] [--plugin] [--dry-run] [--json]

Registers with Claude Code, idempotently and leaving every other setting as it is:
  - the MCP server claudemesh (channel messages, and the tools send, peers, inbox, status),
    through claude mcp add-json where claude is installed, else by editing the file;
  - the hooks UserPromptSubmit, Stop, SessionStart and SessionEnd (claudemesh hook …);
  - the skill claudemesh (how to read and answer a peer's message).
claudemesh uninstall takes out exactly that; settings.json comes back byte for byte.

options:
  --scope user      ~/.claude.json, ~/.claude/settings.json, ~/.claude/skills (default)
  --scope project   ./.mcp.json, ./.claude/settings.local.json, ./.claude/skills
  --plugin          instead, the same three as the plugin claudemesh@claudemesh from a local
                    marketplace under ~/.claudemesh/claude-plugin (needs claude); the route on
                    which channel messages can work without a dialog (docs/claude-code.md)
  --dry-run         say what would change, change nothing
`,
  options: { scope: { type: 'string' }, plugin: { type: 'boolean' }, 'dry-run': { type: 'boolean' } },
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    print(context, args, await install(optionsOf('install', context, args)));
  },
};

export const uninstallVerb: Verb = {
  name: 'uninstall',
  summary: 'take out of Claude Code exactly what claudemesh install added',
  help: `usage: claudemesh uninstall [--scope user|project] [--json]

Removes what claudemesh install added: the MCP server entry, the hooks and the skill (or the
plugin). settings.json gets its bytes from before the install back when nothing else changed
it since; otherwise only claudemesh's hook handlers are taken out, and it says so. A skill
that was edited since is left in place.
`,
  options: { scope: { type: 'string' } },
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    print(context, args, await uninstall(optionsOf('uninstall', context, args)));
  },
};
