// The messaging verbs: peer list, inbox, msg status, events (send is in send.ts). Each one
// asks the local daemon (starting it when needed): the daemon holds the keys, resolves
// names, encrypts and queues; the CLI only formats — peer-supplied text always through
// render.ts, so no name or body can forge a line. Exit 3 when the daemon cannot be reached.

import { parseCount, stringOption, usageError } from '../args.ts';
import { EXIT_BROKER, EXIT_OK, formatTable, printJson, shortKey } from '../output.ts';
import { visible, visibleLines } from '../render.ts';
import type { CliContext, Verb } from '../verb.ts';
import { askDaemon, queryOf } from './daemon-access.ts';
import { EVENT_RING_SIZE } from '../../../daemon/events.ts';

const MAX_LIST = 1_000;

type Row = Record<string, any>;

/** One line per peer: members first (never connected ones too), then sessions; me marked. */
function peerRows(body: Row): string[][] {
  const peers = (body.peers ?? []) as Row[];
  const members = (body.members ?? []) as Row[];
  const fresh = body.connected === true;
  const roleOf = new Map(members.map((member) => [member.key, String(member.role ?? '')]));
  const mark = (peer: Row) => (peer.key === body.you ? ' (you)' : peer.memberKey === body.you ? ' (your session)' : '');
  const online = (value: unknown) => (!fresh ? 'unknown' : value === true ? 'yes' : 'no');
  const rows = peers.map((peer) => [
    `${visible(peer.name)}${mark(peer)}`, shortKey(String(peer.key ?? '')), String(peer.kind ?? ''), String(peer.role ?? roleOf.get(peer.memberKey) ?? ''),
    fresh ? String(peer.status ?? '') : '?', online(peer.online), Array.isArray(peer.groups) ? peer.groups.join(',') : '', String(peer.summary ?? ''),
  ]);
  const listed = new Set(peers.map((peer) => peer.key));
  for (const member of members) {
    if (!listed.has(member.key)) rows.push([`${visible(member.name)}${mark(member)}`, shortKey(String(member.key ?? '')), 'member', String(member.role ?? ''), '-', fresh ? 'no' : 'unknown', '', '']);
  }
  return rows;
}

export const peerVerb: Verb = {
  name: 'peer',
  argument: 'list',
  summary: 'the members and sessions of a mesh, with role, status and groups',
  help: `usage: claudemesh peer list [--mesh M] [--json]

The mesh's members and live (or recent) sessions as the broker reports them, through the
daemon: name ("(you)" marks you, "(your session)" your Claude sessions), key, kind (member
or session), role (owner, admin, member), status, online, groups, summary. Members without a
connection show as offline: a message to them waits at the broker until they connect.

When the broker cannot be reached the daemon shows the last roster it kept, "as of" when
it got it, with online unknown, and the command exits 4 (the list may be old).
`,
  options: { mesh: { type: 'string' } },
  positionals: { min: 1, max: 1 },
  async run(context, args) {
    if (args.positionals[0] !== 'list') throw usageError('peer', `unknown peer action ${JSON.stringify(args.positionals[0])}: use claudemesh peer list`);
    const answer = await askDaemon(context, 'GET', `/v1/peers${queryOf({ mesh: stringOption(args.values, 'mesh') })}`);
    const stale = answer.body.connected !== true;
    if (args.values.json === true) printJson(context, answer.body);
    else context.stdout(formatTable(['NAME', 'KEY', 'KIND', 'ROLE', 'STATUS', 'ONLINE', 'GROUPS', 'SUMMARY'], peerRows(answer.body)));
    if (!stale) return EXIT_OK;
    context.stderr(`the broker of mesh ${visible(answer.body.mesh)} is unreachable: this is the roster as of ${String(answer.body.asOf)}, online unknown\n`);
    return EXIT_BROKER;
  },
};

export const inboxVerb: Verb = {
  name: 'inbox',
  summary: 'messages received by this machine, newest first; --search for full text',
  help: `usage: claudemesh inbox [--mesh M] [--search WORDS] [--unsurfaced] [--limit N] [--peek] [--json]

The messages the daemon received and decrypted, newest first. Listing marks the shown
messages as read (the sender's claudemesh msg status shows them as read) unless --peek.
A message that could not be decrypted is listed as such, never as garbage.

options:
  --search WORDS   full-text search over message bodies (every word must occur)
  --unsurfaced     only messages not surfaced yet (not yet shown to a Claude session);
                   --unseen is its old name and still works
  --limit N        at most N messages (default 100, at most ${MAX_LIST})
  --peek           do not mark anything as read
`,
  options: { mesh: { type: 'string' }, search: { type: 'string' }, unsurfaced: { type: 'boolean' }, unseen: { type: 'boolean' }, limit: { type: 'string' }, peek: { type: 'boolean' } },
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    const limitText = stringOption(args.values, 'limit');
    const limit = limitText === undefined ? undefined : parseCount(limitText, 1, MAX_LIST);
    if (limitText !== undefined && limit === undefined) throw usageError('inbox', `--limit must be 1 to ${MAX_LIST}, received ${JSON.stringify(limitText)}`);
    const unsurfaced = args.values.unsurfaced === true || args.values.unseen === true;
    const query = queryOf({ mesh: stringOption(args.values, 'mesh'), search: stringOption(args.values, 'search'), unsurfaced, limit });
    const answer = await askDaemon(context, 'GET', `/v1/inbox${query}`);
    const items = (answer.body.items ?? []) as Array<Record<string, unknown>>;
    if (args.values.peek !== true) {
      const unread = items.filter((item) => item.readAt === null).map((item) => item.id);
      if (unread.length > 0) await askDaemon(context, 'POST', '/v1/inbox/read', { ids: unread });
    }
    if (args.values.json === true) {
      printJson(context, { items });
      return;
    }
    if (items.length === 0) {
      context.stdout('no messages\n');
      return;
    }
    for (const item of items) printInboxItem(context, item);
  },
};

/** A header line (unread mark, time, mesh, sender → target), then the body indented: a body can never pass for a header. */
function printInboxItem(context: CliContext, item: Row): void {
  const from = typeof item.senderName === 'string' ? visible(item.senderName) : shortKey(String(item.senderKey ?? ''));
  const target = String(item.target ?? '');
  const to = target === '*' || target.startsWith('@') ? visible(target) : 'you';
  const mark = item.readAt === null ? '*' : ' ';
  const time = String(item.createdAt ?? '');
  context.stdout(`${mark} ${time}  [${visible(item.mesh ?? item.meshId)}]  ${from} → ${to}\n`);
  const body = item.undecryptable === true ? '[could not be decrypted]' : visibleLines(item.body, '    ');
  context.stdout(`    ${body}\n`);
}

export const msgVerb: Verb = {
  name: 'msg',
  argument: 'status <id>',
  summary: 'where a sent message is: outbox state and each recipient’s delivery',
  help: `usage: claudemesh msg status <id> [--mesh M] [--json]

<id> is the client message id printed by claudemesh send, or a broker message id. Shows the
outbox state on this machine (pending, inflight, done, dead, attempts, last error) and, once
the broker stored it, every recipient's timeline (queued, delivered, surfaced, read, expired).
`,
  options: { mesh: { type: 'string' } },
  positionals: { min: 2, max: 2 },
  async run(context, args) {
    const [action, id = ''] = args.positionals;
    if (action !== 'status') throw usageError('msg', `unknown msg action ${JSON.stringify(action)}: use claudemesh msg status <id>`);
    const answer = await askDaemon(context, 'GET', `/v1/message-status${queryOf({ id, mesh: stringOption(args.values, 'mesh') })}`);
    if (args.values.json === true) {
      printJson(context, answer.body);
      return;
    }
    const outbox = answer.body.outbox as Record<string, unknown> | null;
    const broker = answer.body.broker as Record<string, unknown> | null;
    if (outbox !== null) {
      const error = outbox.lastError === null ? '' : `, last error: ${String(outbox.lastError)}`;
      context.stdout(`outbox: ${String(outbox.status)} after ${String(outbox.attempts)} attempt(s)${error}\n`);
    }
    if (broker === null) {
      context.stdout('broker: not stored yet\n');
      return;
    }
    context.stdout(`broker: message ${String(broker.messageId)} to ${visible(broker.targetName ?? broker.target)}, ${String(broker.priority)}\n`);
    const recipients = (broker.recipients ?? []) as Array<Record<string, unknown>>;
    const nameOf = (recipient: Record<string, unknown>) => (typeof recipient.name === 'string' ? recipient.name : shortKey(String(recipient.key ?? '')));
    context.stdout(formatTable(['RECIPIENT', 'STATE', 'QUEUED', 'DELIVERED', 'SURFACED', 'READ'], recipients.map((recipient) => [
      nameOf(recipient), String(recipient.state), String(recipient.queuedAt ?? '-'), String(recipient.deliveredAt ?? '-'),
      String(recipient.surfacedAt ?? '-'), String(recipient.readAt ?? '-'),
    ])));
  },
};

export const eventsVerb: Verb = {
  name: 'events',
  summary: 'the daemon’s recent events: connects, refusals, retries, arrivals',
  help: `usage: claudemesh events [--limit N] [--json]

The last events the daemon kept in memory (up to ${EVENT_RING_SIZE}): broker connections opening and
closing with the reason, reconnect delays, sends retried or given up, messages received.
`,
  options: { limit: { type: 'string' } },
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    const limitText = stringOption(args.values, 'limit');
    const limit = limitText === undefined ? undefined : parseCount(limitText, 1, EVENT_RING_SIZE);
    if (limitText !== undefined && limit === undefined) throw usageError('events', `--limit must be 1 to ${EVENT_RING_SIZE}, received ${JSON.stringify(limitText)}`);
    const answer = await askDaemon(context, 'GET', `/v1/events${queryOf({ limit })}`);
    const events = (answer.body.events ?? []) as Array<Record<string, unknown>>;
    if (args.values.json === true) {
      printJson(context, { events });
      return;
    }
    for (const event of events) {
      const { seq: _seq, at, kind, ...fields } = event;
      context.stdout(`${String(at)}  ${visible(kind)}  ${visible(JSON.stringify(fields))}\n`);
    }
  },
};
