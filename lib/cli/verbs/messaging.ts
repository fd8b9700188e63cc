// The messaging verbs: send, peer list, inbox, msg status, events. Each one asks the local
// daemon (starting it when needed): the daemon holds the keys, resolves names, encrypts and
// queues; the CLI only formats. Exit 3 when the daemon cannot be reached.

import { PRIORITIES } from '../../protocol.ts';
import { parseCount, stringOption, usageError } from '../args.ts';
import { formatTable, printJson, shortKey } from '../output.ts';
import type { Verb } from '../verb.ts';
import { askDaemon, queryOf } from './daemon-access.ts';
import { EVENT_RING_SIZE } from '../../../daemon/events.ts';

const MAX_LIST = 1_000;

function short(value: unknown): string {
  return typeof value === 'string' && /^[0-9a-f]{64}$/.test(value) ? shortKey(value) : String(value ?? '');
}

export const sendVerb: Verb = {
  name: 'send',
  argument: '<to> <text>',
  summary: 'send a message (end-to-end encrypted) to a peer, @group or *',
  help: `usage: claudemesh send <to> <text> [--mesh M] [--priority now|next|low] [--id ID] [--reply-to ID] [--json]

Queue a message in the daemon's outbox; the daemon encrypts it for each recipient key and
delivers it, retrying until the broker has stored it. <to> is a member or session name, a
key prefix (≥ 4 hex), a full key, @group, or * (everyone in the mesh). Prints the client
message id once the message is stored on this machine (exit 0); claudemesh msg status <id>
follows its delivery.

options:
  --mesh M       the mesh (name or id); needed when you are in several
  --priority P   now (default: delivered at once), next or low (held while the peer works)
  --id ID        your own client message id: sending again with the same id never duplicates
  --reply-to ID  the message this answers (its message_id); the recipient sees it as a reply
  --json         print {clientMessageId, status, target, recipients, duplicate}
`,
  options: { mesh: { type: 'string' }, priority: { type: 'string' }, id: { type: 'string' }, 'reply-to': { type: 'string' } },
  positionals: { min: 2, max: 2 },
  async run(context, args) {
    const [to = '', text = ''] = args.positionals;
    const priority = stringOption(args.values, 'priority');
    if (priority !== undefined && !(PRIORITIES as readonly string[]).includes(priority)) {
      throw usageError('send', `--priority must be now, next or low, received ${JSON.stringify(priority)}`);
    }
    const mesh = stringOption(args.values, 'mesh');
    const id = stringOption(args.values, 'id');
    const replyTo = stringOption(args.values, 'reply-to');
    const answer = await askDaemon(context, 'POST', '/v1/send', {
      to, text, ...(replyTo === undefined ? {} : { replyTo }), ...(mesh === undefined ? {} : { mesh }), ...(priority === undefined ? {} : { priority }), ...(id === undefined ? {} : { clientMessageId: id }),
    });
    if (args.values.json === true) {
      printJson(context, answer.body);
      return;
    }
    const body = answer.body;
    const again = body.duplicate === true ? ' (already queued under this id)' : '';
    context.stdout(`${String(body.clientMessageId)}\n`);
    context.stderr(`queued for ${short(body.target)} (${String(body.recipients)} recipient${body.recipients === 1 ? '' : 's'}), ${String(body.status)}${again}\n`);
  },
};

export const peerVerb: Verb = {
  name: 'peer',
  argument: 'list',
  summary: 'the members and sessions of a mesh, with status and groups',
  help: `usage: claudemesh peer list [--mesh M] [--json]

The mesh's members and live (or recent) sessions as the broker reports them, through the
daemon: name, key, role, status, groups, online. Members without a connection show as
offline: a message to them waits at the broker until they connect.
`,
  options: { mesh: { type: 'string' } },
  positionals: { min: 1, max: 1 },
  async run(context, args) {
    if (args.positionals[0] !== 'list') throw usageError('peer', `unknown peer action ${JSON.stringify(args.positionals[0])}: use claudemesh peer list`);
    const answer = await askDaemon(context, 'GET', `/v1/peers${queryOf({ mesh: stringOption(args.values, 'mesh') })}`);
    if (args.values.json === true) {
      printJson(context, answer.body);
      return;
    }
    const peers = (answer.body.peers ?? []) as Array<Record<string, unknown>>;
    const members = (answer.body.members ?? []) as Array<Record<string, unknown>>;
    const seen = new Set(peers.map((peer) => peer.key));
    const rows = peers.map((peer) => [
      String(peer.name ?? ''), short(peer.key), String(peer.role ?? ''), String(peer.status ?? ''),
      peer.online === true ? 'yes' : 'no', Array.isArray(peer.groups) ? peer.groups.join(',') : '',
    ]);
    for (const member of members) {
      if (!seen.has(member.key)) rows.push([String(member.name ?? ''), short(member.key), 'member', '-', 'no', '']);
    }
    if (answer.body.connected !== true) context.stderr(`the daemon is not connected to mesh ${String(answer.body.mesh)}: this list may be old\n`);
    context.stdout(formatTable(['NAME', 'KEY', 'ROLE', 'STATUS', 'ONLINE', 'GROUPS'], rows));
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
    for (const item of items) {
      const from = typeof item.senderName === 'string' ? item.senderName : short(item.senderKey);
      const body = item.undecryptable === true ? '[could not be decrypted]' : String(item.body);
      const mark = item.readAt === null ? '*' : ' ';
      context.stdout(`${mark} ${String(item.createdAt)}  ${from} → ${short(item.target)}  ${body}\n`);
    }
  },
};

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
    context.stdout(`broker: message ${String(broker.messageId)} to ${short(broker.target)}, ${String(broker.priority)}\n`);
    const recipients = (broker.recipients ?? []) as Array<Record<string, unknown>>;
    context.stdout(formatTable(['RECIPIENT', 'STATE', 'QUEUED', 'DELIVERED', 'SURFACED', 'READ'], recipients.map((recipient) => [
      short(recipient.key), String(recipient.state), String(recipient.queuedAt ?? '-'), String(recipient.deliveredAt ?? '-'),
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
      context.stdout(`${String(at)}  ${String(kind)}  ${JSON.stringify(fields)}\n`);
    }
  },
};
