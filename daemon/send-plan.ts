// Which mesh a send goes to, and what it becomes before it is queued, from the roster the
// daemon has — fresh from the broker, or the last one kept in roster.db while the broker is
// unreachable:
//
//   - resolvable → the full target and one envelope per recipient, queued encrypted;
//   - not resolvable from an old roster (a name that may be newer than it), or no roster at
//     all (the broker never reached) → deferred: queued with its text, resolved and
//     encrypted by the outbox sender once the connection opens (outbox-sender.ts);
//   - not resolvable from a fresh roster, or a key that is not a key → refused now.
//
// A name that exists in exactly one of the caller's meshes needs no --mesh.

import { cmError, isCmError } from '../lib/errors.ts';
import type { MeshIdentity } from '../lib/client-config.ts';
import type { Roster } from './held-roster.ts';
import type { Encrypted } from './outbox.ts';
import { checkKeyTarget, encryptFor, resolveTarget } from './router.ts';

export interface RosterView {
  roster: Roster;
  /** from the broker just now (true), or the last one kept (false) */
  fresh: boolean;
  /** when the broker gave it (epoch ms) */
  at: number;
}

interface Sender {
  key: string;
  memberKey: string;
  secret: Buffer;
}

/** Encrypted, or undefined when the target must wait for a roster from the broker. */
export function planSend(to: string, text: string, view: RosterView | undefined, sender: Sender): Encrypted | undefined {
  checkKeyTarget(to);
  if (view === undefined) return undefined;
  let resolved;
  try {
    resolved = resolveTarget(to, view.roster, sender);
  } catch (error) {
    if (!view.fresh && isCmError(error) && error.code === 'CM_ERR_PEER_UNKNOWN') return undefined;
    throw error;
  }
  return { target: resolved.target, envelopes: encryptFor(text, resolved.recipients, sender.secret) };
}

/**
 * The one mesh among several whose roster knows `to` (a name or key); CM_ERR_MESH_UNKNOWN
 * naming the candidates when none or several do. `*` and `@group` always need --mesh.
 */
export function meshForTarget(to: string, candidates: ReadonlyArray<{ mesh: MeshIdentity; roster: Roster | undefined }>): MeshIdentity {
  const names = candidates.map((each) => each.mesh.name).join(', ');
  const broad = to === '*' || to.startsWith('@');
  const holders = broad ? [] : candidates.filter(({ mesh, roster }) => {
    if (roster === undefined) return false;
    try {
      resolveTarget(to, roster, { key: mesh.publicKey, memberKey: mesh.publicKey, secret: Buffer.alloc(0) });
      return true;
    } catch {
      return false;
    }
  });
  const only = holders[0];
  if (holders.length === 1 && only !== undefined) return only.mesh;
  const why = broad
    ? `${JSON.stringify(to)} means a different set of peers in each of your meshes (${names})`
    : holders.length > 1
      ? `${JSON.stringify(to)} is in ${holders.length} of your meshes (${holders.map((each) => each.mesh.name).join(', ')})`
      : `no mesh of yours (${names}) knows ${JSON.stringify(to)}`;
  throw cmError('CM_ERR_MESH_UNKNOWN', `${why}: say which with --mesh`, { hint: 'claudemesh list shows your meshes; claudemesh peer list --mesh NAME who is in one' });
}
