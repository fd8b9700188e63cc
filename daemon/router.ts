// From what a person typed to what the broker receives: the target is resolved on this
// machine, from the broker's roster, to full keys (a name, a key prefix, a full key, `*` or
// `@group`), then the text is sealed once per recipient key (crypto_box, fresh nonce each).
// Resolution happens once, at enqueue time; the outbox keeps the result, so a retry never
// resolves again and never changes whom a message goes to; the broker only ever receives
// full keys.
//
// Names resolve among the mesh's members first (a member is always addressable, online or
// not: the broker stores the message), then among session presences. A full key must be one
// of those too, and a point on the curve: anything else is refused here, at once, instead of
// being queued and refused by the broker later.

import { isEncryptionKey, PUBLIC_KEY_HEX, seal } from '../lib/crypto.ts';
import { cmError, isCmError } from '../lib/errors.ts';
import { groupMatches } from '../lib/protocol.ts';
import type { EnvelopeFrame } from '../lib/protocol.ts';
import { resolvePeer } from '../lib/select.ts';
import type { Peer } from '../lib/select.ts';
import type { Roster } from './held-roster.ts';

interface Sender {
  /** the key the message leaves as */
  key: string;
  memberKey: string;
  secret: Buffer;
}

interface Resolved {
  /** what the broker gets as `target`: a full key, `*` or `@group` */
  target: string;
  recipients: string[];
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/** A 64-hex target that no one can hold a secret for: CM_ERR_INVALID_KEY. */
export function checkKeyTarget(to: string): void {
  if (PUBLIC_KEY_HEX.test(to) && !isEncryptionKey(to)) {
    throw cmError('CM_ERR_INVALID_KEY', `${to} is 64 hex characters but not an ed25519 public key (no point on the curve): nobody can read a message sealed to it`, {
      hint: 'copy the key again from claudemesh peer list --json, or use the peer\'s name',
    });
  }
}

export function resolveTarget(to: string, roster: Roster, sender: Sender): Resolved {
  checkKeyTarget(to);
  const own = new Set([sender.key, sender.memberKey]);
  if (to === '*') {
    // The broker requires every current member except the sender's own member key.
    const recipients = roster.members.map((member) => text(member.key)).filter((key) => key !== '' && !own.has(key));
    if (recipients.length === 0) throw cmError('CM_ERR_PEER_UNKNOWN', 'nobody else is in this mesh yet', { hint: 'invite someone with claudemesh invite' });
    return { target: '*', recipients };
  }
  if (to.startsWith('@')) {
    const recipients = roster.peers.filter((peer) => groupMatches(peer.groups, to)).map((peer) => text(peer.key)).filter((key) => key !== '' && key !== sender.key);
    if (recipients.length === 0) throw cmError('CM_ERR_PEER_UNKNOWN', `nobody is in group ${to}`, { hint: 'claudemesh peer list shows the groups of each peer' });
    return { target: to, recipients: [...new Set(recipients)] };
  }
  const members: Peer[] = roster.members.map((member) => ({ name: text(member.name), key: text(member.key) }));
  const sessions: Peer[] = roster.peers.filter((peer) => peer.kind === 'session').map((peer) => ({ name: text(peer.name), key: text(peer.key) }));
  let peer: Peer;
  try {
    peer = resolvePeer(to, members, 'peer');
  } catch (error) {
    if (!isCmError(error) || error.code !== 'CM_ERR_PEER_UNKNOWN' || PUBLIC_KEY_HEX.test(to)) throw error;
    peer = resolvePeer(to, sessions, 'peer');
  }
  if (![...members, ...sessions].some((each) => each.key === peer.key)) {
    throw cmError('CM_ERR_PEER_UNKNOWN', `key ${peer.key.slice(0, 12)}… is not a member or session of this mesh`, {
      hint: 'claudemesh peer list shows who is in the mesh; a removed member needs a new invite first',
    });
  }
  if (own.has(peer.key)) throw cmError('CM_ERR_PEER_UNKNOWN', `${JSON.stringify(to)} is you`, { hint: 'name another peer (claudemesh peer list)' });
  return { target: peer.key, recipients: [peer.key] };
}

/** One crypto_box envelope per recipient, base64 as the protocol carries them. */
export function encryptFor(plaintext: string, recipients: readonly string[], senderSecret: Buffer): EnvelopeFrame[] {
  const bytes = Buffer.from(plaintext, 'utf8');
  return recipients.map((to) => {
    const envelope = seal(bytes, to, senderSecret);
    return { to, nonce: envelope.nonce.toString('base64'), ciphertext: envelope.ciphertext.toString('base64') };
  });
}
