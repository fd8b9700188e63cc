// Receiving one push: decrypt it with the secret of the link it arrived on (the envelope was
// sealed to that link's key), store it, and only then acknowledge it with `client_ack`
// (original-client §8 lesson 9). A duplicate push is acknowledged again, never stored twice;
// an envelope that does not decrypt is stored flagged, without a body (never as garbage).

import { open as openEnvelope } from '../lib/crypto.ts';
import type { BrokerLink, Frame } from './broker-link.ts';
import type { EventRing } from './events.ts';
import type { Inbox } from './inbox.ts';

export interface PushContext {
  link: BrokerLink;
  meshId: string;
  frame: Frame;
  inbox: Inbox;
  events: EventRing;
  now: () => number;
}

function text(value: unknown, fallback: string): string {
  return typeof value === 'string' ? value : fallback;
}

export function receivePush({ link, meshId, frame, inbox, events, now }: PushContext): void {
  const { messageId, senderKey, envelope } = frame;
  if (typeof messageId !== 'string' || typeof senderKey !== 'string' || envelope === null || typeof envelope !== 'object') {
    events.push('push_malformed', { meshId });
    return;
  }
  const { nonce, ciphertext } = envelope as Record<string, unknown>;
  let body: string | null = null;
  if (typeof nonce === 'string' && typeof ciphertext === 'string') {
    const plain = openEnvelope({ nonce: Buffer.from(nonce, 'base64'), ciphertext: Buffer.from(ciphertext, 'base64') }, senderKey, link.secret);
    body = plain === undefined ? null : plain.toString('utf8');
  }
  const sender = link.roster?.members.find((member) => member.key === senderKey) ?? link.roster?.peers.find((peer) => peer.key === senderKey);
  const row = inbox.insert({
    meshId,
    recipientKey: link.key,
    recipientKind: link.identity.session === undefined ? 'member' : 'session',
    brokerMessageId: messageId,
    clientMessageId: text(frame.clientMessageId, messageId),
    senderKey,
    senderMemberKey: text(frame.senderMemberKey, senderKey),
    senderName: typeof sender?.name === 'string' ? sender.name : null,
    target: text(frame.target, ''),
    priority: text(frame.priority, 'now'),
    body,
    createdAt: text(frame.createdAt, new Date(now()).toISOString()),
  });
  // Committed (or already there): now the broker may stop keeping it for us.
  link.notify({ type: 'client_ack', messageIds: [messageId] });
  if (row !== undefined) {
    events.push('message', { meshId, inboxId: row.id, from: row.senderName ?? senderKey, undecryptable: row.undecryptable, recipientKey: row.recipientKey });
  }
}
