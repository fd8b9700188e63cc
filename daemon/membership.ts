// What a terminal close says about the member behind a connection, and the refusal the
// daemon gives from then on. The broker's close codes (lib/protocol.ts, CLOSES) are the
// source: 4001 kicked and 1000 left end a membership, 1008 `unauthorized` means the key is
// not a member any more (kicked or left while this daemon was away), 4002 is a ban. Other
// terminal closes (a bad signature, an expired attestation, a replaced session) say nothing
// about the membership.

import { cmError } from '../lib/errors.ts';
import type { MembershipRecord } from './roster-store.ts';

const REMOVED_BY: ReadonlyMap<string, string> = new Map([
  ['4001 kicked', 'kicked by an owner or admin'],
  ['1000 left', 'left the mesh'],
  ['1008 unauthorized', 'not a member any more (kicked or left while this daemon was away)'],
]);
const BANNED = '4002 banned';

/** The membership a terminal close states; undefined when it states none. */
export function membershipFromClose(terminal: { code: number; reason: string } | null, at: number): MembershipRecord | undefined {
  if (terminal === null) return undefined;
  const key = `${terminal.code} ${terminal.reason}`;
  if (key === BANNED) return { state: 'banned', reason: key, at };
  if (REMOVED_BY.has(key)) return { state: 'removed', reason: key, at };
  return undefined;
}

/** Words for a removed or banned membership, as the CLI shows them. */
function describeMembership(record: MembershipRecord): string {
  if (record.state === 'banned') return 'banned by an owner or admin (4002)';
  return REMOVED_BY.get(record.reason ?? '') ?? 'removed';
}

/** CM_ERR_REMOVED / CM_ERR_BANNED when the broker ended this membership; nothing when active. */
export function refuseIfRemoved(meshName: string, record: MembershipRecord | undefined): void {
  if (record === undefined || record.state === 'active') return;
  const since = new Date(record.at).toISOString();
  const details = { mesh: meshName, membership: record.state, reason: record.reason, since };
  if (record.state === 'banned') {
    throw cmError('CM_ERR_BANNED', `you are banned from mesh ${meshName} (the broker closed the connection ${record.reason} at ${since}): nothing can be sent or listed there`, {
      hint: 'an owner or admin can unban you (claudemesh unban); then join again with a new invite and the daemon reconnects by itself',
      details,
    });
  }
  throw cmError('CM_ERR_REMOVED', `you are no longer a member of mesh ${meshName}: ${describeMembership(record)} (the broker closed the connection ${record.reason} at ${since})`, { details });
}
