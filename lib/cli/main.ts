// The `claudemesh` command line: pick the verb, parse its arguments, run it, and turn any
// failure into one error report and an exit code (lib/cli/output.ts). cli.ts is the entry.

import { cmError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { parseVerbArgs, usageError } from './args.ts';
import { EXIT_OK, EXIT_USAGE, printJson, reportError } from './output.ts';
import { didYouMean } from './suggest.ts';
import type { CliContext, Verb } from './verb.ts';

// A verb's module is loaded only when that verb runs (or a help text lists it): a command
// that starts, asks the daemon and exits spends most of its life loading code, so a warm
// `send` must not pay for what `join` signs with, `daemon up` stores in SQLite or `mcp`
// serves (docs/benchmarks.md, *The everyday CLI*).
type VerbLoader = () => Promise<Verb>;
type VerbGroup = ReadonlyArray<readonly [name: string, load: VerbLoader]>;

// Modules that serve several verbs.
const moderation = () => import('./verbs/moderation.ts');
const messaging = () => import('./verbs/messaging.ts');
const presence = () => import('./verbs/presence.ts');
const install = () => import('./verbs/install.ts');

const MESH_VERBS: VerbGroup = [
  ['new', async () => (await import('./verbs/new.ts')).newVerb],
  ['invite', async () => (await import('./verbs/invite.ts')).inviteVerb],
  ['join', async () => (await import('./verbs/join.ts')).joinVerb],
  ['list', async () => (await import('./verbs/list.ts')).listVerb],
  ['leave', async () => (await import('./verbs/leave.ts')).leaveVerb],
  ['whoami', async () => (await import('./verbs/whoami.ts')).whoamiVerb],
];
const MODERATION_VERBS: VerbGroup = [
  ['kick', async () => (await moderation()).kickVerb],
  ['ban', async () => (await moderation()).banVerb],
  ['unban', async () => (await moderation()).unbanVerb],
  ['bans', async () => (await moderation()).bansVerb],
];
const MESSAGING_VERBS: VerbGroup = [
  ['send', async () => (await import('./verbs/send.ts')).sendVerb],
  ['peer', async () => (await messaging()).peerVerb],
  ['inbox', async () => (await messaging()).inboxVerb],
  ['msg', async () => (await messaging()).msgVerb],
  ['status', async () => (await presence()).statusVerb],
  ['summary', async () => (await presence()).summaryVerb],
  ['group', async () => (await presence()).groupVerb],
  ['daemon', async () => (await import('./verbs/daemon.ts')).daemonVerb],
  ['events', async () => (await messaging()).eventsVerb],
  ['doctor', async () => (await import('./verbs/doctor.ts')).doctorVerb],
];
const CLAUDE_VERBS: VerbGroup = [
  ['install', async () => (await install()).installVerb],
  ['uninstall', async () => (await install()).uninstallVerb],
  ['launch', async () => (await import('./verbs/launch.ts')).launchVerb],
  ['mcp', async () => (await import('./verbs/mcp.ts')).mcpVerb],
  ['hook', async () => (await import('./verbs/hook.ts')).hookVerb],
];
/** Every verb by name, loaded on demand; for --help and for the contract every verb keeps (test/lib/cli/main.test.ts). */
export const VERBS: ReadonlyMap<string, VerbLoader> = new Map([...MESH_VERBS, ...MODERATION_VERBS, ...MESSAGING_VERBS, ...CLAUDE_VERBS]);

async function verbLines(group: VerbGroup): Promise<string> {
  const verbs = await Promise.all(group.map(([, load]) => load()));
  const usage = (verb: Verb) => (verb.argument === undefined ? verb.name : `${verb.name} ${verb.argument}`);
  const width = Math.max(...verbs.map((verb) => usage(verb).length));
  return verbs.map((verb) => `  ${usage(verb).padEnd(width)}  ${verb.summary}`).join('\n');
}

export async function globalHelp(): Promise<string> {
  return `usage: claudemesh <verb> [options]

claudemesh ${VERSION}: end-to-end encrypted messaging between Claude Code sessions, people
and bots, through a self-hosted broker.

meshes:
${await verbLines(MESH_VERBS)}

moderation (owners and admins):
${await verbLines(MODERATION_VERBS)}

messaging (through the per-user daemon, started when needed):
${await verbLines(MESSAGING_VERBS)}

Claude Code (docs/claude-code.md):
${await verbLines(CLAUDE_VERBS)}

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
      context.stderr(await globalHelp());
      return EXIT_USAGE;
    }
    if (first === '--help' || first === '-h' || first === 'help') return await topHelp(context, rest.filter((arg) => arg !== '--json')[0], json);
    if (first === '--version' || first === '-v') {
      context.stdout(json ? `${JSON.stringify({ version: VERSION })}\n` : `${VERSION}\n`);
      return EXIT_OK;
    }
    if (first.startsWith('-')) throw usageError('', `the verb comes first: claudemesh <verb> [options], received ${JSON.stringify(first)}`);
    const load = VERBS.get(first);
    if (load === undefined) throw unknownVerb(first);
    const verb = await load();
    const args = parseVerbArgs(verb.name, rest, verb.options, verb.positionals);
    if (args.values.help === true) return await topHelp(context, verb.name, json);
    return (await verb.run(context, args)) ?? EXIT_OK;
  } catch (error) {
    return reportError(context, error, json, context.env);
  }
}

/** `claudemesh --help [verb]`, `claudemesh <verb> --help`, as text or --json. */
async function topHelp(context: CliContext, topic: string | undefined, json: boolean): Promise<number> {
  const load = topic === undefined ? undefined : VERBS.get(topic);
  if (topic !== undefined && load === undefined) throw unknownVerb(topic);
  const verb = await load?.();
  if (json) printJson(context, helpJson(verb === undefined ? await Promise.all([...VERBS.values()].map((each) => each())) : [verb]));
  else context.stdout(verb === undefined ? await globalHelp() : verb.help);
  return EXIT_OK;
}
