// Getting into a mesh: create one, register and revoke invites, join with an invite.
// The broker stores public keys and invite signatures only; it never signs an invite.
//
// Join runs in one transaction that first locks the mesh row (FOR NO KEY UPDATE, which
// does not block foreign-key checks of other writers). Joins of one mesh are therefore
// serialised: "exactly one wins" for a single-use invite and "names are unique among
// current members" hold without retry loops. Joins are rare; messaging never takes this lock.

import type pg from 'pg';
import { randomId } from '../crypto.ts';
import { cmError } from '../errors.ts';
import { inviteSignatureValid, MAX_INVITE_LIFETIME_SECONDS } from '../invite.ts';
import type { Invite } from '../invite.ts';
import { transaction } from './db.ts';
import { currentMember, isUniqueViolation, requireModerator } from './membership-db.ts';
import type { Role } from './membership-db.ts';

const MESH_ID_BYTES = 16; // 22 base64url characters, within meshes.id's CHECK
const MESH_ID_ATTEMPTS = 3;

const INSERT_MESH = `INSERT INTO meshes (id, name, owner_pubkey, created_at) VALUES ($1, $2, $3, $4)`;
const INSERT_OWNER = `INSERT INTO members (mesh_id, pubkey, name, role, joined_at) VALUES ($1, $2, $3, 'owner', $4)`;
const INSERT_INVITE = `
  INSERT INTO invites (id, mesh_id, role, expires_at, max_uses, created_by, signature, created_at)
  VALUES ($1, $2, $3, to_timestamp($4), $5, $6, $7, $8)
  ON CONFLICT (id) DO NOTHING`;
const SELECT_INVITE_BY_ID = `SELECT mesh_id, signature FROM invites WHERE id = $1`;
const REVOKE_INVITE = `
  UPDATE invites SET revoked_at = COALESCE(revoked_at, $3)
  WHERE id = $1 AND mesh_id = $2 AND ($4::bigint IS NULL OR created_by = $4)
  RETURNING revoked_at`;
const LOCK_MESH = `SELECT name, owner_pubkey FROM meshes WHERE id = $1 FOR NO KEY UPDATE`;
const LOCK_INVITE = `
  SELECT i.signature, i.role, i.expires_at, i.revoked_at,
         m.pubkey AS inviter_key, m.role AS inviter_role,
         (m.left_at IS NULL AND m.revoked_at IS NULL) AS inviter_current
  FROM invites i JOIN members m ON m.id = i.created_by
  WHERE i.id = $1 AND i.mesh_id = $2
  FOR UPDATE OF i`;
const SELECT_JOINER = `SELECT id, name, role, left_at, revoked_at, invite_id FROM members WHERE mesh_id = $1 AND pubkey = $2`;
const NAME_TAKEN = `
  SELECT 1 FROM members
  WHERE mesh_id = $1 AND name = $2 AND pubkey <> $3 AND left_at IS NULL AND revoked_at IS NULL
  LIMIT 1`;
const CONSUME_USE = `UPDATE invites SET uses = uses + 1 WHERE id = $1 AND uses < max_uses RETURNING uses, max_uses`;
const INSERT_MEMBER = `INSERT INTO members (mesh_id, pubkey, name, role, invite_id, joined_at) VALUES ($1, $2, $3, $4, $5, $6)`;
const READMIT_MEMBER = `
  UPDATE members SET name = $2, role = $3, invite_id = $4, joined_at = $5, left_at = NULL
  WHERE id = $1`;

export interface CreatedMesh {
  meshId: string;
  name: string;
  ownerPubkey: string;
  memberName: string;
}

export async function createMesh(pool: pg.Pool, input: { name: string; ownerPubkey: string; ownerName: string; now: Date }): Promise<CreatedMesh> {
  for (let attempt = 1; ; attempt += 1) {
    const meshId = randomId(MESH_ID_BYTES);
    try {
      await transaction(pool, async (client) => {
        await client.query(INSERT_MESH, [meshId, input.name, input.ownerPubkey, input.now]);
        await client.query(INSERT_OWNER, [meshId, input.ownerPubkey, input.ownerName, input.now]);
      });
      return { meshId, name: input.name, ownerPubkey: input.ownerPubkey, memberName: input.ownerName };
    } catch (error) {
      // 128 random bits do not collide; the retry only keeps a freak event from being a 500.
      if (!isUniqueViolation(error) || attempt >= MESH_ID_ATTEMPTS) throw error;
    }
  }
}

export interface RegisteredInvite {
  inviteId: string;
  alreadyRegistered: boolean;
}

/**
 * Register an invite signed by the caller. `brokerHostMatches` tells whether the broker URL
 * inside the invite names the host this request reached.
 */
export async function registerInvite(
  pool: pg.Pool,
  input: { meshId: string; callerKey: string; invite: Invite; brokerHostMatches: boolean; now: Date },
): Promise<RegisteredInvite> {
  const { invite } = input;
  const caller = await currentMember(pool, input.meshId, input.callerKey);
  if (invite.meshId !== input.meshId) {
    throw cmError('CM_ERR_BAD_REQUEST', `the invite is for mesh ${invite.meshId} but the request is signed for mesh ${input.meshId}`);
  }
  if (invite.inviterKey !== input.callerKey) {
    throw cmError('CM_ERR_BAD_REQUEST', 'an invite is registered by the key that signed it, and this request is signed by another key');
  }
  if (!inviteSignatureValid(invite)) throw cmError('CM_ERR_INVITE_BAD_SIGNATURE', 'the invite does not match its signature');
  requireModerator(caller, 'invite');
  if (invite.role === 'admin' && caller.role !== 'owner') {
    throw cmError('CM_ERR_FORBIDDEN', 'only the owner of a mesh may invite admins', { hint: 'invite with --role member, or ask the owner' });
  }
  if (invite.meshName !== caller.meshName) {
    throw cmError('CM_ERR_BAD_REQUEST', `the invite names the mesh ${JSON.stringify(invite.meshName)}, but it is called ${JSON.stringify(caller.meshName)}`);
  }
  if (!input.brokerHostMatches) {
    throw cmError('CM_ERR_INVITE_WRONG_BROKER', `the invite names broker ${invite.brokerUrl}, which is not the address this request reached`);
  }
  const nowSeconds = Math.floor(input.now.getTime() / 1000);
  if (invite.expiresAt <= nowSeconds) {
    throw cmError('CM_ERR_INVITE_EXPIRED', `the invite already expired at ${new Date(invite.expiresAt * 1000).toISOString()}`);
  }
  if (invite.expiresAt - nowSeconds > MAX_INVITE_LIFETIME_SECONDS) {
    throw cmError('CM_ERR_BAD_REQUEST', `an invite may live at most ${MAX_INVITE_LIFETIME_SECONDS / 86_400} days`, { hint: 'use a shorter --expires' });
  }
  const inserted = await pool.query(INSERT_INVITE, [
    invite.nonce,
    invite.meshId,
    invite.role,
    invite.expiresAt,
    invite.maxUses,
    caller.id,
    invite.signature,
    input.now,
  ]);
  if (inserted.rowCount === 1) return { inviteId: invite.nonce, alreadyRegistered: false };
  // A retried registration of the same invite is fine; another invite reusing a nonce is not.
  const { rows } = await pool.query<{ mesh_id: string; signature: string }>(SELECT_INVITE_BY_ID, [invite.nonce]);
  if (rows[0]?.mesh_id === invite.meshId && rows[0].signature === invite.signature) return { inviteId: invite.nonce, alreadyRegistered: true };
  throw cmError('CM_ERR_BAD_REQUEST', 'an invite with this nonce is already registered', { hint: 'sign a new invite: every invite needs a fresh nonce' });
}

/** The owner revokes any invite of the mesh, an admin only the invites it signed. */
export async function revokeInvite(pool: pg.Pool, input: { meshId: string; callerKey: string; inviteId: string; now: Date }): Promise<{ revokedAt: Date }> {
  const caller = await currentMember(pool, input.meshId, input.callerKey);
  requireModerator(caller, 'revoke invites');
  const { rows } = await pool.query<{ revoked_at: Date }>(REVOKE_INVITE, [input.inviteId, input.meshId, input.now, caller.role === 'owner' ? null : caller.id]);
  const row = rows[0];
  if (row === undefined) {
    throw cmError('CM_ERR_INVITE_UNKNOWN', `mesh ${input.meshId} has no invite ${input.inviteId}${caller.role === 'owner' ? '' : ' signed by you'}`);
  }
  return { revokedAt: row.revoked_at };
}

export interface JoinResult {
  meshId: string;
  meshName: string;
  ownerPubkey: string;
  role: Role;
  name: string;
  /** true when the key was already a current member: nothing changed, no use was taken */
  alreadyMember: boolean;
}

interface LockedInvite {
  signature: string;
  role: Role;
  expires_at: Date;
  revoked_at: Date | null;
  inviter_key: string;
  inviter_role: Role;
  inviter_current: boolean;
}

interface JoinerRow {
  id: string;
  name: string;
  role: Role;
  left_at: Date | null;
  revoked_at: Date | null;
  invite_id: string | null;
}

/**
 * Enrol `joinerKey` with `invite` (already decoded, broker URL already checked). Checks, in
 * order: the mesh and the invite exist here with this exact signature; the joiner is not
 * banned; already a member (harmless, no use taken); the invite is not revoked and its
 * signer is still an owner or admin; not expired; re-entry with the same invite; name free;
 * a use left.
 */
export async function joinMesh(pool: pg.Pool, input: { invite: Invite; joinerKey: string; name: string; now: Date }): Promise<JoinResult> {
  const { invite, now } = input;
  if (!inviteSignatureValid(invite)) throw cmError('CM_ERR_INVITE_BAD_SIGNATURE', 'the invite does not match its signature: a field was changed after signing');
  return transaction(pool, async (client) => {
    const unknown = cmError('CM_ERR_INVITE_UNKNOWN', `this broker has no invite ${invite.nonce.slice(0, 8)}… for mesh ${invite.meshId}`);
    const mesh = (await client.query<{ name: string; owner_pubkey: string }>(LOCK_MESH, [invite.meshId])).rows[0];
    if (mesh === undefined) throw unknown;
    const row = (await client.query<LockedInvite>(LOCK_INVITE, [invite.nonce, invite.meshId])).rows[0];
    if (row === undefined) throw unknown;
    // ed25519 signatures are deterministic: the same signature means the same signed fields.
    if (row.signature !== invite.signature || row.inviter_key !== invite.inviterKey) {
      throw cmError('CM_ERR_INVITE_BAD_SIGNATURE', 'the invite differs from the one registered under its nonce');
    }
    const joiner = (await client.query<JoinerRow>(SELECT_JOINER, [invite.meshId, input.joinerKey])).rows[0];
    const result = { meshId: invite.meshId, meshName: mesh.name, ownerPubkey: mesh.owner_pubkey };
    if (joiner?.revoked_at !== null && joiner?.revoked_at !== undefined) {
      throw cmError('CM_ERR_REVOKED', `key ${input.joinerKey.slice(0, 12)}… is banned from mesh ${JSON.stringify(mesh.name)}`);
    }
    // Before the invite's own state: a retry whose first answer was lost must succeed even
    // if the invite has since expired, been revoked or used up. Nothing changes.
    if (joiner !== undefined && joiner.left_at === null) return { ...result, role: joiner.role, name: joiner.name, alreadyMember: true };
    if (row.revoked_at !== null) throw cmError('CM_ERR_INVITE_REVOKED', `the invite was revoked at ${row.revoked_at.toISOString()}`);
    if (!row.inviter_current || (row.inviter_role !== 'owner' && row.inviter_role !== 'admin')) {
      throw cmError('CM_ERR_INVITE_REVOKED', 'whoever signed this invite is no longer an owner or admin of the mesh');
    }
    if (row.expires_at.getTime() <= now.getTime()) {
      throw cmError('CM_ERR_INVITE_EXPIRED', `the invite expired at ${row.expires_at.toISOString()}`);
    }
    if (joiner !== undefined && joiner.invite_id === invite.nonce) {
      throw cmError('CM_ERR_INVITE_EXHAUSTED', 'this key already entered the mesh with this invite and has since left or been removed', {
        hint: 'coming back needs a new invite: ask an owner or admin (claudemesh invite)',
      });
    }
    const taken = await client.query(NAME_TAKEN, [invite.meshId, input.name, input.joinerKey]);
    if ((taken.rowCount ?? 0) > 0) throw cmError('CM_ERR_NAME_TAKEN', `another member of mesh ${JSON.stringify(mesh.name)} is already called ${JSON.stringify(input.name)}`);
    const consumed = await client.query(CONSUME_USE, [invite.nonce]);
    if (consumed.rowCount !== 1) throw cmError('CM_ERR_INVITE_EXHAUSTED', 'every use of this invite is already taken');
    if (joiner === undefined) {
      await client.query(INSERT_MEMBER, [invite.meshId, input.joinerKey, input.name, row.role, invite.nonce, now]);
    } else {
      await client.query(READMIT_MEMBER, [joiner.id, input.name, row.role, invite.nonce, now]);
    }
    return { ...result, role: row.role, name: input.name, alreadyMember: false };
  });
}
