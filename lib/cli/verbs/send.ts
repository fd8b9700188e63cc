// `claudemesh send <to> <text…>`: queue a message in the daemon's outbox. The text is the
// rest of the line (`send bob the build is green`), or stdin with `-`. The client message
// id is chosen here, before the daemon is asked, so that a lost answer can be told
// honestly ("unknown — may be queued") and a retry with the same id is the same message.

import { closeSync, openSync, readSync } from 'node:fs';
import { isCmError, cmError } from '../../errors.ts';
import { PRIORITIES } from '../../wire-values.ts';
import { stringOption, usageError } from '../args.ts';
import { printJson } from '../output.ts';
import { visible } from '../render.ts';
import type { CliContext, Verb } from '../verb.ts';
import { askDaemon } from './daemon-access.ts';

// As the daemon accepts (daemon/send-input.ts): checked here too, so a usage error needs no daemon.
const MAX_TEXT_BYTES = 32 * 1024;
const STDIN_MARK = '-';
const UUID_BYTES = 16;

/**
 * A random (version 4) UUID. Its 16 bytes come straight from the system's random source:
 * loading node:crypto for this one call would cost every `send` about 5 ms, a tenth of the
 * command (docs/benchmarks.md). Where there is no /dev/urandom, node:crypto makes it.
 */
function newClientMessageId(): string {
  const bytes = Buffer.alloc(UUID_BYTES);
  try {
    const fd = openSync('/dev/urandom', 'r');
    try {
      if (readSync(fd, bytes) !== UUID_BYTES) throw new Error('short read');
    } finally {
      closeSync(fd);
    }
  } catch {
    return process.getBuiltinModule('node:crypto').randomUUID();
  }
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40; // version 4
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80; // the RFC 9562 variant
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    size += (chunk as Buffer).length;
    if (size > MAX_TEXT_BYTES) throw usageError('send', `the message on stdin is over ${MAX_TEXT_BYTES} bytes (${size} read so far)`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8').replace(/\n$/, '');
}

async function messageText(words: readonly string[]): Promise<string> {
  const text = words.length === 1 && words[0] === STDIN_MARK ? await readStdin() : words.join(' ');
  const bytes = Buffer.byteLength(text, 'utf8');
  if (text.trim() === '') throw usageError('send', 'the message is empty: give the text after the target, or - to read it from stdin');
  if (bytes > MAX_TEXT_BYTES) throw usageError('send', `the message is ${bytes} bytes; at most ${MAX_TEXT_BYTES} fit in one`);
  return text;
}

/** A failure after the request went out: the message may be queued; say so, with its id. */
function unknownOutcome(error: unknown, clientMessageId: string): unknown {
  if (!isCmError(error) || error.code !== 'CM_ERR_DAEMON_NOT_RUNNING' || error.details?.requestSent !== true) return error;
  return cmError('CM_ERR_OUTCOME_UNKNOWN', `unknown whether message ${clientMessageId} was queued: ${error.message} after the request went out. It may be queued; claudemesh msg status ${clientMessageId} tells`, {
    hint: `claudemesh msg status ${clientMessageId}; to be sure it goes out, send again with --id ${clientMessageId} (never a duplicate)`,
    details: { clientMessageId },
  });
}

function report(context: CliContext, body: Record<string, any>): void {
  const to = body.targetName ?? body.target;
  const whom = body.resolved === false ? `${visible(JSON.stringify(String(body.to ?? '')))} (resolved when the broker is reached)` : `${visible(to)} in ${visible(body.mesh)}`;
  const count = body.resolved === false ? '' : ` (${String(body.recipients)} recipient${body.recipients === 1 ? '' : 's'})`;
  const again = body.duplicate === true ? ', already queued under this id' : '';
  const state = body.connected === false && body.status === 'pending' ? 'queued; the broker is unreachable, it goes out when it is back' : `${String(body.status)}`;
  context.stdout(`${String(body.clientMessageId)}\n`);
  context.stderr(`to ${whom}${count}: ${state}${again}\n`);
}

export const sendVerb: Verb = {
  name: 'send',
  argument: '<to> <text…>',
  summary: 'send a message (end-to-end encrypted) to a peer, @group or *',
  help: `usage: claudemesh send <to> <text…> [--mesh M] [--priority now|next|low] [--id ID] [--reply-to ID] [--json]
       claudemesh send <to> - < file

Queue a message in the daemon's outbox; the daemon encrypts it for each recipient key and
delivers it, retrying until the broker has stored it. <to> is a member or session name, a
key prefix (≥ 4 hex), a full key, @group, or * (everyone in the mesh). The text is the rest
of the line, or stdin with -. Prints the client message id once the message is stored on
this machine (exit 0); claudemesh msg status <id> follows its delivery. With the broker
unreachable the message is still queued (from the last roster the daemon kept) and goes
out when the broker is back. A text that starts with - goes after --.

options:
  --mesh M       the mesh (name or id); needed when you are in several and <to> is in
                 more than one of them (or is * or @group)
  --priority P   now (default: delivered at once), next or low (held while the peer works)
  --id ID        your own client message id: sending again with the same id never duplicates
  --reply-to ID  the message this answers (its message id); the recipient sees it as a reply
  --json         print {clientMessageId, status, mesh, target, targetName, recipients,
                 resolved, connected, duplicate}
`,
  options: { mesh: { type: 'string' }, priority: { type: 'string' }, id: { type: 'string' }, 'reply-to': { type: 'string' } },
  positionals: { min: 2, max: Infinity },
  async run(context, args) {
    const [to = '', ...words] = args.positionals;
    const priority = stringOption(args.values, 'priority');
    if (priority !== undefined && !(PRIORITIES as readonly string[]).includes(priority)) {
      throw usageError('send', `--priority must be now, next or low, received ${JSON.stringify(priority)}`);
    }
    const text = await messageText(words);
    const mesh = stringOption(args.values, 'mesh');
    const clientMessageId = stringOption(args.values, 'id') ?? newClientMessageId();
    const replyTo = stringOption(args.values, 'reply-to');
    const request = {
      to, text, clientMessageId, ...(mesh === undefined ? {} : { mesh }), ...(priority === undefined ? {} : { priority }), ...(replyTo === undefined ? {} : { replyTo }),
    };
    const answer = await askDaemon(context, 'POST', '/v1/send', request).catch((error: unknown) => {
      throw unknownOutcome(error, clientMessageId);
    });
    if (args.values.json === true) printJson(context, answer.body);
    else report(context, { ...answer.body, to });
  },
};
