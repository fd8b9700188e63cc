// How I appear to the mesh: `status` (my status, summary and groups as the broker holds
// them), `status set idle|working|dnd`, `summary <text…>` (also `status summary`), and
// `group join|leave <name>`. Each acts on the caller's own connection through the daemon:
// inside a Claude session (its token file named in the environment) the session's, else
// the member's. The broker keeps them with the presence, across reconnects.

import { STATUSES } from '../../wire-values.ts';
import { stringOption, usageError } from '../args.ts';
import { EXIT_BROKER, EXIT_OK, printJson } from '../output.ts';
import { visible } from '../render.ts';
import type { CliContext, Verb } from '../verb.ts';
import { askDaemon, inSession, queryOf } from './daemon-access.ts';

type Row = Record<string, any>;
const MAX_SUMMARY = 512;

async function showStatus(context: CliContext, mesh: string | undefined, json: boolean): Promise<number> {
  const session = inSession(context) ? ((await askDaemon(context, 'GET', '/v1/sessions/me')).body.session as Row) : undefined;
  const peers = (await askDaemon(context, 'GET', `/v1/peers${queryOf({ mesh: mesh ?? session?.meshId })}`)).body;
  const key = session?.sessionKey ?? peers.you;
  const me = ((peers.peers ?? []) as Row[]).find((peer) => peer.key === key) ?? ((peers.members ?? []) as Row[]).find((member) => member.key === key) ?? {};
  const fresh = peers.connected === true;
  const view = {
    mesh: peers.mesh, meshId: peers.meshId, connected: fresh, asOf: peers.asOf, key, name: me.name ?? null, kind: session === undefined ? 'member' : 'session',
    role: me.role ?? null, status: me.status ?? null, summary: me.summary ?? null, groups: me.groups ?? [],
  };
  if (json) printJson(context, view);
  else {
    const lines: Array<[string, string]> = [
      ['mesh', `${visible(view.mesh)} ${fresh ? '(connected)' : `(broker unreachable; as of ${String(view.asOf)})`}`],
      ['name', `${visible(view.name ?? '-')} (${view.kind})`], ['role', String(view.role ?? '-')], ['status', String(view.status ?? '-')],
      ['summary', visible(view.summary || '-')], ['groups', view.groups.length > 0 ? view.groups.map(visible).join(', ') : '-'],
    ];
    context.stdout(lines.map(([label, value]) => `${label.padEnd(8)} ${value}\n`).join(''));
  }
  return fresh ? EXIT_OK : EXIT_BROKER;
}

async function setSummary(context: CliContext, words: readonly string[], mesh: string | undefined, json: boolean): Promise<void> {
  const summary = words.join(' ');
  if (summary.length > MAX_SUMMARY) throw usageError('summary', `a summary is at most ${MAX_SUMMARY} characters, received ${summary.length}`);
  const answer = await askDaemon(context, 'POST', '/v1/summary', { summary, ...(mesh === undefined ? {} : { mesh }) });
  if (json) printJson(context, answer.body);
  else context.stdout(summary === '' ? 'summary cleared\n' : `summary set in ${visible(answer.body.mesh)}\n`);
}

export const statusVerb: Verb = {
  name: 'status',
  argument: '[set idle|working|dnd | summary <text…>]',
  summary: 'how you appear to the mesh: status, summary, groups; or set them',
  help: `usage: claudemesh status [--mesh M] [--json]
       claudemesh status set idle|working|dnd [--mesh M]
       claudemesh status summary <text…> [--mesh M]

Without an action: your presence as the broker holds it — mesh, name, kind (member, or
session inside a Claude session), role, status, summary, groups. Exits 4 when the broker
is unreachable (what is shown is then the last known).

  set S        idle, working or dnd (do not disturb: next and low messages wait; dnd stays
               until you set another status)
  summary T    what you are doing, seen by peers in claudemesh peer list (at most ${MAX_SUMMARY}
               characters; an empty text clears it)
`,
  options: { mesh: { type: 'string' } },
  positionals: { min: 0, max: Infinity },
  async run(context, args) {
    const [action, ...rest] = args.positionals;
    const mesh = stringOption(args.values, 'mesh');
    const json = args.values.json === true;
    if (action === undefined) return showStatus(context, mesh, json);
    if (action === 'summary') return setSummary(context, rest, mesh, json);
    if (action !== 'set') throw usageError('status', `unknown status action ${JSON.stringify(action)}: use claudemesh status, status set S or status summary TEXT`);
    const status = rest[0] ?? '';
    if (rest.length !== 1 || !(STATUSES as readonly string[]).includes(status)) throw usageError('status', `status set takes one of ${STATUSES.join(', ')}, received ${JSON.stringify(rest.join(' '))}`);
    const answer = await askDaemon(context, 'POST', '/v1/status', { status, ...(mesh === undefined ? {} : { mesh }) });
    if (json) printJson(context, answer.body);
    else context.stdout(`status ${String(answer.body.status ?? status)} in ${visible(answer.body.mesh)}\n`);
    return EXIT_OK;
  },
};

export const summaryVerb: Verb = {
  name: 'summary',
  argument: '<text…>',
  summary: 'say what you are doing (shown in peer list); same as status summary',
  help: `usage: claudemesh summary <text…> [--mesh M] [--json]

Set your summary: one line peers see in claudemesh peer list (at most ${MAX_SUMMARY} characters).
An empty text ("") clears it.
`,
  options: { mesh: { type: 'string' } },
  positionals: { min: 1, max: Infinity },
  async run(context, args) {
    await setSummary(context, args.positionals, stringOption(args.values, 'mesh'), args.values.json === true);
  },
};

export const groupVerb: Verb = {
  name: 'group',
  argument: 'join|leave <name>',
  summary: 'join or leave a group, so that @name messages reach you',
  help: `usage: claudemesh group join|leave <name> [--mesh M] [--json]

Groups are names peers put themselves in; claudemesh send @name reaches everyone in the
group, and @a reaches a/b too. <name> is letters, digits, _ . - (nested with /, at most 64
characters); a leading @ is allowed. Inside a Claude session this acts on the session.
`,
  options: { mesh: { type: 'string' } },
  positionals: { min: 2, max: 2 },
  async run(context, args) {
    const [action = '', group = ''] = args.positionals;
    if (action !== 'join' && action !== 'leave') throw usageError('group', `unknown group action ${JSON.stringify(action)}: use claudemesh group join NAME or group leave NAME`);
    const mesh = stringOption(args.values, 'mesh');
    const answer = await askDaemon(context, 'POST', '/v1/groups', { action, group, ...(mesh === undefined ? {} : { mesh }) });
    if (args.values.json === true) printJson(context, answer.body);
    else {
      const groups = (answer.body.groups ?? []) as string[];
      context.stdout(`${action === 'join' ? 'joined' : 'left'} @${visible(answer.body.group)} in ${visible(answer.body.mesh)}; your groups: ${groups.length > 0 ? groups.map(visible).join(', ') : 'none'}\n`);
    }
  },
};
