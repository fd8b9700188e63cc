// Being in a mesh and being put out of it: the member list, leave, kick, ban, unban, bans.
//
// A member who leaves or is kicked gets `left_at`; coming back needs a new invite. A ban
// sets `revoked_at` and leaves `left_at` as it was, so a hello from a banned key reads as
// "revoked" (close 4002), not as "not a member": it can neither join again, even with a valid
// invite, nor say hello. A current member is one with neither set. Unban clears `revoked_at`
// and sets `left_at` if it was not — the key is allowed back, not let back in; it still
// needs an invite. Every statement is scoped to the caller's mesh, so keys of another mesh
// are "not found" exactly like keys that do not exist.

import type pg from 'pg';
import { cmError } from '../errors.ts';
import { currentMember, requireModerator, requireOutranks } from './membership-db.ts';
import type { CallerMember, Role } from './membership-db.ts';

const SELECT_MEMBERS = `
  SELECT name, pubkey, role, joined_at FROM members
  WHERE mesh_id = $1 AND left_at IS NULL AND revoked_at IS NULL
  ORDER BY joined_at, id`;
const SELECT_TARGET = `SELECT id, name, pubkey, role, left_at, revoked_at FROM members WHERE mesh_id = $1 AND pubkey = $2`;
const MARK_LEFT = `UPDATE members SET left_at = $2 WHERE id = $1 AND left_at IS NULL AND revoked_at IS NULL`;
const MARK_REVOKED = `UPDATE members SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL`;
const CLEAR_REVOKED = `
  UPDATE members SET revoked_at = NULL, revoked_by = NULL, left_at = COALESCE(left_at, $2)
  WHERE id = $1 AND revoked_at IS NOT NULL`;
const SELECT_BANS = `
  SELECT m.name, m.pubkey, m.role, m.revoked_at, b.name AS revoked_by_name
  FROM members m LEFT JOIN members b ON b.id = m.revoked_by
  WHERE m.mesh_id = $1 AND m.revoked_at IS NOT NULL
  ORDER BY m.revoked_at, m.id`;

export interface MemberView {
  name: string;
  pubkey: string;
  role: Role;
  joinedAt: string;
}

export interface BanView {
  name: string;
  pubkey: string;
  role: Role;
  bannedAt: string;
  /** name of the owner or admin who banned; null once that member row is gone */
  bannedBy: string | null;
}

/** A member as a kick/ban/unban target answer describes it. */
export interface TargetView {
  name: string;
  pubkey: string;
  role: Role;
}

interface TargetRow {
  id: string;
  name: string;
  pubkey: string;
  role: Role;
  left_at: Date | null;
  revoked_at: Date | null;
}

interface Scope {
  meshId: string;
  callerKey: string;
}

async function target(pool: pg.Pool, meshId: string, pubkey: string): Promise<TargetRow | undefined> {
  return (await pool.query<TargetRow>(SELECT_TARGET, [meshId, pubkey])).rows[0];
}

function notFound(caller: CallerMember, pubkey: string, what: string): Error {
  return cmError('CM_ERR_NOT_FOUND', `mesh ${JSON.stringify(caller.meshName)} has no ${what} with key ${pubkey.slice(0, 12)}…`, {
    hint: 'check the key (claudemesh resolves names to keys from the member list)',
  });
}

export async function listMembers(pool: pg.Pool, scope: Scope): Promise<{ meshName: string; members: MemberView[] }> {
  const caller = await currentMember(pool, scope.meshId, scope.callerKey);
  const { rows } = await pool.query<{ name: string; pubkey: string; role: Role; joined_at: Date }>(SELECT_MEMBERS, [scope.meshId]);
  return {
    meshName: caller.meshName,
    members: rows.map((row) => ({ name: row.name, pubkey: row.pubkey, role: row.role, joinedAt: row.joined_at.toISOString() })),
  };
}

export async function leaveMesh(pool: pg.Pool, scope: Scope & { now: Date }): Promise<TargetView> {
  const caller = await currentMember(pool, scope.meshId, scope.callerKey);
  if (caller.role === 'owner') {
    throw cmError('CM_ERR_FORBIDDEN', `the owner cannot leave mesh ${JSON.stringify(caller.meshName)}: it would have nobody to run it`, {
      hint: 'to forget this identity on this machine only, use claudemesh leave <mesh> --local',
    });
  }
  const updated = await pool.query(MARK_LEFT, [caller.id, scope.now]);
  if (updated.rowCount !== 1) throw cmError('CM_ERR_FORBIDDEN', `key ${scope.callerKey.slice(0, 12)}… is no longer a member of mesh ${scope.meshId}`);
  return { name: caller.name, pubkey: caller.pubkey, role: caller.role };
}

export async function kickMember(pool: pg.Pool, scope: Scope & { pubkey: string; now: Date }): Promise<TargetView> {
  const caller = await currentMember(pool, scope.meshId, scope.callerKey);
  requireModerator(caller, 'kick');
  const row = await target(pool, scope.meshId, scope.pubkey);
  if (row === undefined || row.left_at !== null || row.revoked_at !== null) throw notFound(caller, scope.pubkey, 'current member');
  requireOutranks(caller, row, 'kick');
  const updated = await pool.query(MARK_LEFT, [row.id, scope.now]);
  // A concurrent kick, ban or leave got there first: the member is out either way.
  if (updated.rowCount !== 1) throw notFound(caller, scope.pubkey, 'current member');
  return { name: row.name, pubkey: row.pubkey, role: row.role };
}

/** Ban a current or former member (a kicked key must not come back with another invite). */
export async function banMember(pool: pg.Pool, scope: Scope & { pubkey: string; now: Date }): Promise<TargetView & { alreadyBanned: boolean }> {
  const caller = await currentMember(pool, scope.meshId, scope.callerKey);
  requireModerator(caller, 'ban');
  const row = await target(pool, scope.meshId, scope.pubkey);
  if (row === undefined) throw notFound(caller, scope.pubkey, 'member, current or former,');
  requireOutranks(caller, row, 'ban');
  const view = { name: row.name, pubkey: row.pubkey, role: row.role };
  if (row.revoked_at !== null) return { ...view, alreadyBanned: true };
  const updated = await pool.query(MARK_REVOKED, [row.id, scope.now, caller.id]);
  return { ...view, alreadyBanned: updated.rowCount !== 1 };
}

export async function unbanMember(pool: pg.Pool, scope: Scope & { pubkey: string; now: Date }): Promise<TargetView> {
  const caller = await currentMember(pool, scope.meshId, scope.callerKey);
  requireModerator(caller, 'unban');
  const row = await target(pool, scope.meshId, scope.pubkey);
  if (row === undefined || row.revoked_at === null) throw notFound(caller, scope.pubkey, 'banned member');
  requireOutranks(caller, row, 'unban');
  const updated = await pool.query(CLEAR_REVOKED, [row.id, scope.now]);
  if (updated.rowCount !== 1) throw notFound(caller, scope.pubkey, 'banned member');
  return { name: row.name, pubkey: row.pubkey, role: row.role };
}

export async function listBans(pool: pg.Pool, scope: Scope): Promise<{ meshName: string; bans: BanView[] }> {
  const caller = await currentMember(pool, scope.meshId, scope.callerKey);
  requireModerator(caller, 'see the bans');
  const { rows } = await pool.query<{ name: string; pubkey: string; role: Role; revoked_at: Date; revoked_by_name: string | null }>(SELECT_BANS, [
    scope.meshId,
  ]);
  return {
    meshName: caller.meshName,
    bans: rows.map((row) => ({
      name: row.name,
      pubkey: row.pubkey,
      role: row.role,
      bannedAt: row.revoked_at.toISOString(),
      bannedBy: row.revoked_by_name,
    })),
  };
}
