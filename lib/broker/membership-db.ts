// What every membership operation shares: "who is the caller in this mesh",
// and the rank rule for moderation. The caller is always the key that signed the request
// (lib/signed-request.ts); nothing here takes an id from a body or header as identity.

import type pg from 'pg';
import { cmError } from '../errors.ts';

export type Role = 'owner' | 'admin' | 'member';

// Moderation only reaches down: the owner acts on admins and members, an admin on members.
// Nobody acts on an equal, so two admins cannot remove each other and nobody removes the owner.
const ROLE_RANK: ReadonlyMap<Role, number> = new Map<Role, number>([
  ['member', 1],
  ['admin', 2],
  ['owner', 3],
]);

const SELECT_CURRENT_MEMBER = `
  SELECT m.id, m.name, m.role, m.pubkey, s.name AS mesh_name, s.owner_pubkey
  FROM members m JOIN meshes s ON s.id = m.mesh_id
  WHERE m.mesh_id = $1 AND m.pubkey = $2 AND m.left_at IS NULL AND m.revoked_at IS NULL`;

export interface CallerMember {
  /** members.id (bigint, as text) */
  id: string;
  meshId: string;
  name: string;
  role: Role;
  pubkey: string;
  meshName: string;
  ownerPubkey: string;
}

/**
 * The caller as a current member of `meshId`, or CM_ERR_FORBIDDEN. The answer is the same
 * whether the mesh does not exist or exists without this key in it: a stranger learns
 * nothing about other meshes, not even that they exist.
 */
export async function currentMember(db: pg.Pool | pg.PoolClient, meshId: string, pubkey: string): Promise<CallerMember> {
  const { rows } = await db.query<{ id: string; name: string; role: Role; pubkey: string; mesh_name: string; owner_pubkey: string }>(
    SELECT_CURRENT_MEMBER,
    [meshId, pubkey],
  );
  const row = rows[0];
  if (row === undefined) {
    throw cmError('CM_ERR_FORBIDDEN', `key ${pubkey.slice(0, 12)}… is not a current member of mesh ${meshId}`, {
      hint: 'join the mesh with an invite first, or check --mesh; a member who left or was removed needs a new invite',
    });
  }
  return { id: row.id, meshId, name: row.name, role: row.role, pubkey: row.pubkey, meshName: row.mesh_name, ownerPubkey: row.owner_pubkey };
}

export function requireModerator(caller: CallerMember, action: string): void {
  if (caller.role !== 'owner' && caller.role !== 'admin') {
    throw cmError('CM_ERR_FORBIDDEN', `${caller.name} is a ${caller.role} of mesh ${caller.meshId}; only an owner or admin may ${action}`);
  }
}

/** Refuse acting on oneself or on an equal or higher role. */
export function requireOutranks(caller: CallerMember, target: { pubkey: string; role: Role; name: string }, action: string): void {
  if (target.pubkey === caller.pubkey) {
    throw cmError('CM_ERR_FORBIDDEN', `you cannot ${action} yourself`, { hint: 'to go, use claudemesh leave <mesh>' });
  }
  const callerRank = ROLE_RANK.get(caller.role) ?? 0;
  const targetRank = ROLE_RANK.get(target.role) ?? Number.POSITIVE_INFINITY;
  if (callerRank <= targetRank) {
    throw cmError('CM_ERR_FORBIDDEN', `a ${caller.role} cannot ${action} ${target.name}, who is ${target.role === 'owner' ? 'the owner' : `a ${target.role}`}`, {
      hint: 'owners act on admins and members, admins on members; the owner cannot be removed',
    });
  }
}

/** Postgres unique_violation */
export function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23505';
}
