// What a send is, worked out from its frame alone: its message id, its fingerprint for
// idempotency, whether its envelopes are well formed and whether they match whom its target
// reaches. Pure functions, so lib/broker/send.ts keeps only the batching and the commit.

import { hash } from 'node:crypto';
import { cmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import { groupMatches } from '../protocol.ts';
import type { SendFrame } from '../protocol.ts';
import type { Peer } from './hub.ts';
import type { Roster } from './presence.ts';

/**
 * A message's id: derived from (mesh, sender key, client message id), so that a retry lands
 * on the row its first copy wrote (the primary key is the idempotency check). The mesh id
 * has no newline and the key is hex, so the joined string is unambiguous.
 */
export function messageIdOf(meshId: string, senderKey: string, clientMessageId: string): string {
  const hex = hash('sha256', `${meshId}\n${senderKey}\n${clientMessageId}`);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** How many bytes a base64 string (charset checked by lib/protocol.ts) decodes to; -1 when its length is not whole quads. */
export function base64Bytes(text: string): number {
  if (text.length % 4 !== 0) return -1;
  return (text.length / 4) * 3 - (text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0);
}

/**
 * The request's identity for idempotency: the SHA-256 of the JSON text of [target, priority,
 * [[to, nonce, ciphertext], …] in key order]. Keys are hex and envelopes base64 (checked by
 * lib/protocol.ts), so only the target needs JSON escaping; the text is the one
 * JSON.stringify made before, so rows stored earlier keep matching.
 */
export function fingerprintOf(frame: SendFrame): string {
  const only = frame.envelopes.length === 1 ? frame.envelopes[0] : undefined;
  const listed = only !== undefined
    ? `["${only.to}","${only.nonce}","${only.ciphertext}"]`
    : [...frame.envelopes].sort((a, b) => a.to.localeCompare(b.to)).map((e) => `["${e.to}","${e.nonce}","${e.ciphertext}"]`).join(',');
  return hash('sha256', `[${JSON.stringify(frame.target)},${JSON.stringify(frame.priority)},[${listed}]]`);
}

/**
 * Which keys a target reaches, checked against the envelopes the sender encrypted: a key →
 * exactly that key; `*` → every current member (offline too), plus any live or recent
 * session key the sender chose to include; `@group` → every key in that group.
 */
export function checkRecipients(roster: Roster, sender: Peer, target: string, envelopes: ReadonlyArray<{ to: string }>): CmError | undefined {
  // The common case, a direct message with its one envelope, answered without building sets.
  if (envelopes.length === 1 && envelopes[0]?.to === target && target !== sender.key && (roster.members.has(target) || roster.peers.has(target))) return undefined;
  const required = new Set<string>();
  const allowed = new Set<string>();
  if (target === '*') {
    for (const key of roster.members.keys()) {
      if (key !== sender.memberKey) required.add(key);
      allowed.add(key);
    }
    for (const key of roster.peers.keys()) allowed.add(key);
  } else if (target.startsWith('@')) {
    for (const peer of roster.peers.values()) {
      if (groupMatches(peer.groups, target)) {
        required.add(peer.key);
        allowed.add(peer.key);
      }
    }
  } else {
    if (!roster.members.has(target) && !roster.peers.has(target)) {
      return cmError('CM_ERR_UNKNOWN_RECIPIENT', `no member or session with key ${target.slice(0, 12)}… in mesh ${sender.meshId}`);
    }
    required.add(target);
    allowed.add(target);
  }
  required.delete(sender.key);
  allowed.delete(sender.key);
  if (allowed.size === 0) return cmError('CM_ERR_UNKNOWN_RECIPIENT', `target ${target} reaches nobody in mesh ${sender.meshId}`, { hint: 'check the group name with list_peers' });
  const seen = new Set<string>();
  const unexpected: string[] = [];
  for (const envelope of envelopes) {
    if (seen.has(envelope.to) || !allowed.has(envelope.to)) unexpected.push(envelope.to);
    seen.add(envelope.to);
  }
  const missing = [...required].filter((key) => !seen.has(key));
  if (unexpected.length > 0 && !target.startsWith('@') && target !== '*') {
    return cmError('CM_ERR_UNKNOWN_RECIPIENT', `a message to ${target.slice(0, 12)}… carries envelopes for other keys: ${unexpected.map((k) => k.slice(0, 12)).join(', ')}`);
  }
  if (unexpected.length > 0 || missing.length > 0) {
    return cmError('CM_ERR_ENVELOPES_MISMATCH', `envelopes do not match the recipients of ${target}: ${missing.length} missing, ${unexpected.length} unexpected or repeated`, {
      details: { missing, unexpected },
    });
  }
  return undefined;
}
