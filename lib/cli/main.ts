// The `claudemesh` command line: pick the verb, parse its arguments, run it, and turn any
// failure into one error report and an exit code (lib/cli/output.ts). cli.ts is the entry.

import { cmError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { parseVerbArgs, usageError } from './args.ts';
import { EXIT_OK, EXIT_USAGE, printJson, reportError } from './output.ts';
import { didYouMean } from './suggest.ts';
import type { CliContext, Verb } from './verb.ts';
import { inviteVerb } from './verbs/invite.ts';
import { joinVerb } from './verbs/join.ts';
import { leaveVerb } from './verbs/leave.ts';
import { listVerb } from './verbs/list.ts';
import { banVerb, bansVerb, kickVerb, unbanVerb } from './verbs/moderation.ts';
import { newVerb } from './verbs/new.ts';
import { daemonVerb } from './verbs/daemon.ts';
import { eventsVerb, inboxVerb, msgVerb, peerVerb } from './verbs/messaging.ts';
import { sendVerb } from './verbs/send.ts';
import { groupVerb, statusVerb, summaryVerb } from './verbs/presence.ts';
import { whoamiVerb } from './verbs/whoami.ts';
import { doctorVerb } from './verbs/doctor.ts';
import { CLAUDE_VERBS } from './verbs/claude.ts';

const MESH_VERBS: readonly Verb[] = [newVerb, inviteVerb, joinVerb, listVerb, leaveVerb, whoamiVerb];
const MODERATION_VERBS: readonly Verb[] = [kickVerb, banVerb, unbanVerb, bansVerb];
const MESSAGING_VERBS: readonly Verb[] = [sendVerb, peerVerb, inboxVerb, msgVerb, statusVerb, summaryVerb, groupVerb, daemonVerb, eventsVerb, doctorVerb];
/** Every verb, for --help and for the contract every verb keeps (test/cli-contract.test.ts). */
export const VERBS: ReadonlyMap<string, Verb> = new Map([...MESH_VERBS, ...MODERATION_VERBS, ...MESSAGING_VERBS, ...CLAUDE_VERBS].map((verb) => [verb.name, verb]));

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
Exit codes: 0 ok, 1 a check or operation failed, 2 usage, 3 daemon not running and not
startable, 4 broker unreachable or refused, or membership removed.
Environment: CLAUDEMESH_HOME (default ~/.claudemesh), CLAUDEMESH_BROKER (broker for new,
default http://127.0.0.1:7900), CLAUDEMESH_BROKER_TOKEN (operator token for new),
CLAUDEMESH_NO_AUTOSTART=1 (never start the daemon), CLAUDEMESH_DEBUG=1 (stack traces of
unexpected errors); switches take 1, true or yes.
`;
}

/** What --help --json prints: every verb with its options. */
function helpJson(verbs: readonly Verb[]): unknown {
  return {
    version: VERSION,
    verbs: verbs.map((verb) => ({
      name: verb.name, argument: verb.argument ?? null, summary: verb.summary,
      options: [...Object.keys(verb.options), 'json', 'help'].map((name) => `--${name}`), help: verb.help,
    })),
  };
}

function unknownVerb(name: string): Error {
  const suggestion = didYouMean(name, VERBS.keys(), (verb) => `claudemesh ${verb}`);
  return cmError('CM_ERR_USAGE', `unknown verb ${JSON.stringify(name)}${suggestion}`, { hint: 'see claudemesh --help for the verbs' });
}

/** Run one command line; returns the exit code. Never throws. */
export async function main(argv: readonly string[], context: CliContext): Promise<number> {
  const json = argv.includes('--json');
  try {
    const [first, ...rest] = argv.filter((arg, index) => !(arg === '--json' && index === 0));
    if (first === undefined) {
      context.stderr(globalHelp());
      return EXIT_USAGE;
    }
    if (first === '--help' || first === '-h' || first === 'help') return topHelp(context, rest.filter((arg) => arg !== '--json')[0], json);
    if (first === '--version' || first === '-v') {
      context.stdout(json ? `${JSON.stringify({ version: VERSION })}\n` : `${VERSION}\n`);
      return EXIT_OK;
    }
    if (first.startsWith('-')) throw usageError('', `the verb comes first: claudemesh <verb> [options], received ${JSON.stringify(first)}`);
    const verb = VERBS.get(first);
    if (verb === undefined) throw unknownVerb(first);
    const args = parseVerbArgs(verb.name, rest, verb.options, verb.positionals);
    if (args.values.help === true) return topHelp(context, verb.name, json);
    return (await verb.run(context, args)) ?? EXIT_OK;
  } catch (error) {
    return reportError(context, error, json, context.env);
  }
}

/** `claudemesh --help [verb]`, `claudemesh <verb> --help`, as text or --json. */
function topHelp(context: CliContext, topic: string | undefined, json: boolean): number {
  const verb = topic === undefined ? undefined : VERBS.get(topic);
  if (topic !== undefined && verb === undefined) throw unknownVerb(topic);
  if (json) printJson(context, helpJson(verb === undefined ? [...VERBS.values()] : [verb]));
  else context.stdout(verb === undefined ? globalHelp() : verb.help);
  return EXIT_OK;
}
