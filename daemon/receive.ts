// Receiving one push: decrypt it with the secret of the link it arrived on (the envelope was
// sealed to that link's key), store it, and only then acknowledge it with `client_ack` — an
// ack before the commit would let a crash lose a message the broker no longer keeps. A
// duplicate push is acknowledged again, never stored twice; an envelope that does not
// decrypt is stored flagged, without a body (never as garbage).

import { open as openEnvelope } from '../lib/crypto.ts';
import type { PushFrame } from '../lib/protocol.ts';
import type { BrokerLink } from './broker-link.ts';
import type { EventRing } from './events.ts';
import type { Inbox } from './inbox.ts';

interface PushContext {
  link: BrokerLink;
  meshId: string;
  /** already checked against its shape (lib/protocol.ts parseServerFrame) */
  frame: PushFrame;
  inbox: Inbox;
  events: EventRing;
  now: () => number;
}

export function receivePush({ link, meshId, frame, inbox, events, now }: PushContext): void {
  const { messageId, senderKey, envelope } = frame;
  const plain = openEnvelope({ nonce: Buffer.from(envelope.nonce, 'base64'), ciphertext: Buffer.from(envelope.ciphertext, 'base64') }, senderKey, link.secret);
  const sender = link.roster?.members.find((member) => member.key === senderKey) ?? link.roster?.peers.find((peer) => peer.key === senderKey);
  const row = inbox.insert({
    meshId,
    recipientKey: link.key,
    recipientKind: link.identity.session === undefined ? 'member' : 'session',
    brokerMessageId: messageId,
    clientMessageId: frame.clientMessageId,
    senderKey,
    senderMemberKey: frame.senderMemberKey,
    senderName: sender?.name ?? null,
    target: frame.target,
    priority: frame.priority,
    body: plain === undefined ? null : plain.toString('utf8'),
    createdAt: frame.createdAt,
  });
  // Committed (or already there): now the broker may stop keeping it for us.
  link.notify({ type: 'client_ack', messageIds: [messageId] });
  if (row !== undefined) {
    events.push('message', { meshId, inboxId: row.id, from: row.senderName ?? senderKey, undecryptable: row.undecryptable, recipientKey: row.recipientKey });
  }
}
