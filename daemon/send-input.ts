// What POST /v1/send may ask for, checked before anything is resolved or encrypted: a
// priority of the protocol, someone to send to, 1 byte to 32 KiB of text, and a client
// message id (made here when the caller gives none) that the outbox and the broker use to
// recognise a repeat of the same request.

import { randomUUID } from 'node:crypto';
import { cmError } from '../lib/errors.ts';
import { PRIORITIES } from '../lib/protocol.ts';
import type { Priority } from '../lib/protocol.ts';

const MAX_TEXT_BYTES = 32 * 1024;
const CLIENT_MESSAGE_ID = /^[\x21-\x7e]{1,128}$/;

export interface SendInput {
  mesh?: string;
  to: string;
  text: string;
  priority?: string;
  clientMessageId?: string;
}

/** The checked priority and client message id; CM_ERR_BAD_REQUEST naming the field otherwise. */
export function checkSendInput(input: SendInput): { priority: Priority; clientMessageId: string } {
  const priority = (input.priority ?? 'now') as Priority;
  if (!(PRIORITIES as readonly string[]).includes(priority)) throw cmError('CM_ERR_BAD_REQUEST', `priority must be now, next or low, received ${JSON.stringify(input.priority)}`);
  if (input.to === '') throw cmError('CM_ERR_BAD_REQUEST', 'say whom to send to ("to": a name, a key prefix, a key, * or @group)');
  const bytes = Buffer.byteLength(input.text, 'utf8');
  if (bytes > MAX_TEXT_BYTES || input.text === '') throw cmError('CM_ERR_BAD_REQUEST', `text must be 1 to ${MAX_TEXT_BYTES} bytes, received ${bytes}`);
  const clientMessageId = input.clientMessageId ?? randomUUID();
  if (!CLIENT_MESSAGE_ID.test(clientMessageId)) throw cmError('CM_ERR_BAD_REQUEST', `clientMessageId must be 1–128 printable characters without spaces, received ${JSON.stringify(clientMessageId)}`);
  return { priority, clientMessageId };
}
