// The `claudemesh` command line: pick the verb, parse its arguments, run it, and turn any
// failure into one error report and an exit code (lib/cli/output.ts). cli.ts is the entry.

import { cmError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { parseVerbArgs, usageError } from './args.ts';
import { EXIT_OK, EXIT_USAGE, reportError } from './output.ts';
import type { CliContext, Verb } from './verb.ts';
import { inviteVerb } from './verbs/invite.ts';
import { joinVerb } from './verbs/join.ts';
import { leaveVerb } from './verbs/leave.ts';
import { listVerb } from './verbs/list.ts';
import { banVerb, bansVerb, kickVerb, unbanVerb } from './verbs/moderation.ts';
import { newVerb } from './verbs/new.ts';
import { daemonVerb } from './verbs/daemon.ts';
import { eventsVerb, inboxVerb, msgVerb, peerVerb, sendVerb } from './verbs/messaging.ts';
import { CLAUDE_VERBS } from './verbs/claude.ts';

const MESH_VERBS: readonly Verb[] = [newVerb, inviteVerb, joinVerb, listVerb, leaveVerb];
const MODERATION_VERBS: readonly Verb[] = [kickVerb, banVerb, unbanVerb, bansVerb];
const MESSAGING_VERBS: readonly Verb[] = [sendVerb, peerVerb, inboxVerb, msgVerb, daemonVerb, eventsVerb];
const VERBS: ReadonlyMap<string, Verb> = new Map([...MESH_VERBS, ...MODERATION_VERBS, ...MESSAGING_VERBS, ...CLAUDE_VERBS].map((verb) => [verb.name, verb]));
// Verbs planned for later versions (the Claude Code integration: hooks, install, launch, the
// MCP server, status). They are not in --help, and they say so plainly instead of pretending.
const LATER_VERBS: ReadonlySet<string> = new Set([
  'status', 'whoami', 'doctor', 'install', 'uninstall', 'launch', 'mcp',
].filter((name) => !CLAUDE_VERBS.some((verb) => verb.name === name)));

function verbLines(verbs: readonly Verb[]): string {
  const usage = (verb: Verb) => (verb.argument === undefined ? verb.name : `${verb.name} ${verb.argument}`);
  const width = Math.max(...verbs.map((verb) => usage(verb).length));
  return verbs.map((verb) => `  ${usage(verb).padEnd(width)}  ${verb.summary}`).join('\n');
}

export function globalHelp(): string {
  return `usage: claudemesh <verb> [options]

claudemesh ${VERSION}: end-to-end encrypted messaging between Claude Code sessions, people
and bots, through a self-hosted broker.

meshes:
${verbLines(MESH_VERBS)}

moderation (owners and admins):
${verbLines(MODERATION_VERBS)}

messaging (through the per-user daemon, started when needed):
${verbLines(MESSAGING_VERBS)}

Claude Code (docs/claude-code.md):
${verbLines(CLAUDE_VERBS)}

Every verb takes --help; every verb takes --json for machine-readable output.
Exit codes: 0 ok, 1 a check failed, 2 usage, 3 daemon not running, 4 broker unreachable or refused.
Environment: CLAUDEMESH_HOME (default ~/.claudemesh), CLAUDEMESH_BROKER (broker for new,
default http://127.0.0.1:7900), CLAUDEMESH_BROKER_TOKEN (operator token for new).
`;
}

function unknownVerb(name: string): Error {
  if (LATER_VERBS.has(name)) {
    return cmError('CM_ERR_NOT_IMPLEMENTED', `claudemesh ${name} is not available in this version yet`, {
      hint: 'this version manages meshes and messages (see claudemesh --help); Claude Code integration comes later',
    });
  }
  return cmError('CM_ERR_USAGE', `unknown verb ${JSON.stringify(name)}`, { hint: 'see claudemesh --help for the verbs' });
}

/** Run one command line; returns the exit code. Never throws. */
export async function main(argv: readonly string[], context: CliContext): Promise<number> {
  const json = argv.includes('--json');
  try {
    const [first, ...rest] = argv;
    if (first === undefined) {
      context.stderr(globalHelp());
      return EXIT_USAGE;
    }
    if (first === '--help' || first === '-h' || first === 'help') {
      const topic = rest[0];
      if (topic === undefined) {
        context.stdout(globalHelp());
        return EXIT_OK;
      }
      const verb = VERBS.get(topic);
      if (verb === undefined) throw unknownVerb(topic);
      context.stdout(verb.help);
      return EXIT_OK;
    }
    if (first === '--version' || first === '-v') {
      context.stdout(`${VERSION}\n`);
      return EXIT_OK;
    }
    if (first.startsWith('-')) throw usageError('', `the verb comes first: claudemesh <verb> [options], received ${JSON.stringify(first)}`);
    const verb = VERBS.get(first);
    if (verb === undefined) throw unknownVerb(first);
    const args = parseVerbArgs(verb.name, rest, verb.options, verb.positionals);
    if (args.values.help === true) {
      context.stdout(verb.help);
      return EXIT_OK;
    }
    await verb.run(context, args);
    return EXIT_OK;
  } catch (error) {
    return reportError(context, error, json, context.env);
  }
}
