// Membership without a web account: create a mesh, invite, join, leave, kick, ban, unban.
//
// Every route is a signed request (lib/signed-request.ts): the key that signed it is the
// caller, and the mesh it signed for (x-claudemesh-mesh) is the only mesh it can touch.
// Nothing in a body or header is taken as identity. The broker stores public keys and
// invite signatures only; it never signs an invite. Route table and bodies: docs/cli.md.
//
// A member who leaves or is kicked gets `left_at`; coming back needs a new invite. A ban
// sets `banned_at` and leaves `left_at` as it was, so a banned key can neither join again,
// even with a valid invite, nor say hello (close 4002). Unban lets the key back, not in.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type pg from 'pg';
import type { Context } from '../../broker.ts';
import { isPublicKey, randomId } from '../crypto.ts';
import { cmError } from '../errors.ts';
import { decodeInvite, inviteSignatureValid, MAX_INVITE_LIFETIME_SECONDS, NONCE_PATTERN } from '../invite.ts';
import type { Invite } from '../invite.ts';
import { CLOSES, isMemberName, isMeshId, isMeshName } from '../protocol.ts';
import type { Role } from '../protocol.ts';
import { isUniqueViolation, query, transaction } from './db.ts';
import type { Row } from './db.ts';
import { parseJsonObject, readBody, sendJson, verifySignedCall } from './http.ts';
import { SIGNAL_REMOVALS } from './hub.ts';
import type { RouteEntry } from './http.ts';

const MESH_ID_BYTES = 16; // 22 base64url characters, within meshes.id's CHECK
const MESH_ID_ATTEMPTS = 3;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);
// Moderation only reaches down: the owner acts on admins and members, an admin on members.
const RANK: Record<Role, number> = { member: 1, admin: 2, owner: 3 };
const MEMBER_NAME = 'a member name: letters, digits, ".", "_", "@", "-", up to 64';

type Caller = Row<'current_member'> & { meshId: string };
type Member = Row<'member_by_key'>;
interface Call { request: IncomingMessage; key: string; meshId: string; body: Record<string, unknown>; now: Date }
type Answer = [status: number, body: Record<string, unknown>];

function field<T>(body: Record<string, unknown>, name: string, valid: (value: unknown) => value is T, shape: string): T {
  const value = body[name];
  if (!valid(value)) throw cmError('CM_ERR_BAD_REQUEST', `field "${name}" must be ${shape}, received ${JSON.stringify(value)?.slice(0, 80) ?? 'nothing'}`);
  return value;
}
const isString = (value: unknown): value is string => typeof value === 'string';
const isNonce = (value: unknown): value is string => typeof value === 'string' && NONCE_PATTERN.test(value);
const targetKey = (call: Call) => field(call.body, 'key', isPublicKey, 'a member key (64 lowercase hex characters)');
const view = (member: { name: string; key: string; role: Role }) => ({ name: member.name, key: member.key, role: member.role });
const digest = (text: string) => createHash('sha256').update(text).digest();

function meshOf(call: Call): string {
  if (!isMeshId(call.meshId)) throw cmError('CM_ERR_BAD_REQUEST', 'this route acts on one mesh: sign the request for it (header x-claudemesh-mesh)');
  return call.meshId;
}

/** One header value; a repeated header is treated as absent. */
function header(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Does the broker URL inside an invite name the host this request reached? Compared as
 * host:port under the invite's scheme (so default ports match). `X-Forwarded-Host` counts
 * only with TRUST_PROXY (our own proxy rewrote `Host`); from anyone else it could say
 * anything. The signature is the security; this catches an invite made for another broker
 * address before it is registered or used. (Answered 400, not 421: fetch silently retries
 * a 421, and the retry would then read as a replay.)
 */
function brokerHostMatches(brokerUrl: string, request: IncomingMessage, trustProxy: boolean): boolean {
  const expected = new URL(brokerUrl);
  const forwarded = trustProxy ? header(request, 'x-forwarded-host')?.split(',')[0]?.trim() : undefined;
  for (const candidate of [header(request, 'host'), forwarded]) {
    if (candidate === undefined || candidate === '') continue;
    try {
      if (new URL(`${expected.protocol}//${candidate}`).host === expected.host) return true;
    } catch {
      // not a host: no match
    }
  }
  return false;
}

/** The caller as a current member of the mesh, or FORBIDDEN — alike for a mesh that does not exist. */
async function currentMember(ctx: Context, meshId: string, key: string): Promise<Caller> {
  const row = (await query(ctx.pool, 'current_member', [meshId, key])).rows[0];
  if (row === undefined) {
    throw cmError('CM_ERR_FORBIDDEN', `key ${key.slice(0, 12)}… is not a current member of mesh ${meshId}`, {
      hint: 'join the mesh with an invite first, or check --mesh; a member who left or was removed needs a new invite',
    });
  }
  return { ...row, meshId };
}

async function moderator(ctx: Context, call: Call, action: string): Promise<Caller> {
  const caller = await currentMember(ctx, meshOf(call), call.key);
  if (caller.role === 'member') throw cmError('CM_ERR_FORBIDDEN', `${caller.name} is a member of mesh ${caller.meshId}; only an owner or admin may ${action}`);
  return caller;
}

/** The target of kick/ban/unban: acted on only from a higher rank, never oneself. */
async function target(ctx: Context, caller: Caller, key: string, action: string, usable: (row: Member) => boolean, what: string): Promise<Member> {
  const row = (await query(ctx.pool, 'member_by_key', [caller.meshId, key])).rows[0];
  if (row === undefined || !usable(row)) {
    throw cmError('CM_ERR_NOT_FOUND', `mesh ${JSON.stringify(caller.mesh_name)} has no ${what} with key ${key.slice(0, 12)}…`, {
      hint: 'check the key (claudemesh resolves names to keys from the member list)',
    });
  }
  if (row.key === caller.key) throw cmError('CM_ERR_FORBIDDEN', `you cannot ${action} yourself`, { hint: 'to go, use claudemesh leave <mesh>' });
  if (RANK[caller.role] <= RANK[row.role]) {
    throw cmError('CM_ERR_FORBIDDEN', `a ${caller.role} cannot ${action} ${row.name}, who is ${row.role === 'owner' ? 'the owner' : `a ${row.role}`}`, {
      hint: 'owners act on admins and members, admins on members; the owner cannot be removed',
    });
  }
  return row;
}

/**
 * Close the removed member's connections here, and tell the other instances to close theirs.
 * The database already says the member is out, so a failure here only logs; a hello that
 * raced the removal is refused by the hub's removal memory on every instance.
 */
function disconnect(ctx: Context, meshId: string, key: string, close: typeof CLOSES.kicked | typeof CLOSES.banned | typeof CLOSES.left): void {
  try {
    ctx.hub.removeMember(meshId, key, close);
    ctx.presence.invalidate(meshId);
  } catch (error) {
    ctx.log.error('closing the connections of a removed member failed', { meshId, reason: close.reason, error });
  }
  ctx.hub.tell(SIGNAL_REMOVALS, { meshId, key, code: close.code, reason: close.reason }, 'a removal');
}

async function createMesh(ctx: Context, call: Call): Promise<Answer> {
  const name = field(call.body, 'name', isMeshName, 'a mesh name of 1–64 characters without control characters');
  const ownerName = field(call.body, 'ownerName', isMemberName, MEMBER_NAME);
  for (let attempt = 1; ; attempt += 1) {
    const meshId = randomId(MESH_ID_BYTES);
    try {
      await transaction(ctx.pool, async (client) => {
        await query(client, 'mesh_insert', [meshId, name, call.key, call.now]);
        await query(client, 'owner_insert', [meshId, call.key, ownerName, call.now]);
      });
      ctx.log.info('mesh created', { meshId, owner: call.key.slice(0, 12) });
      return [201, { meshId, name, ownerKey: call.key, memberName: ownerName, role: 'owner' }];
    } catch (error) {
      // 128 random bits do not collide; the retry only keeps a freak event from being a 500.
      if (!isUniqueViolation(error) || attempt >= MESH_ID_ATTEMPTS) throw error;
    }
  }
}

/** Register an invite signed by the caller, after every check the joiner's broker would make. */
async function registerInvite(ctx: Context, call: Call): Promise<Answer> {
  const meshId = meshOf(call);
  const invite = decodeInvite(field(call.body, 'token', isString, 'an invite token (cm1.…)'));
  const caller = await currentMember(ctx, meshId, call.key);
  if (invite.meshId !== meshId) throw cmError('CM_ERR_BAD_REQUEST', `the invite is for mesh ${invite.meshId} but the request is signed for mesh ${meshId}`);
  if (invite.inviterKey !== call.key) throw cmError('CM_ERR_BAD_REQUEST', 'an invite is registered by the key that signed it, and this request is signed by another key');
  if (!inviteSignatureValid(invite)) throw cmError('CM_ERR_INVITE_BAD_SIGNATURE', 'the invite does not match its signature');
  if (caller.role === 'member') throw cmError('CM_ERR_FORBIDDEN', `${caller.name} is a member of mesh ${meshId}; only an owner or admin may invite`);
  if (invite.role === 'admin' && caller.role !== 'owner') throw cmError('CM_ERR_FORBIDDEN', 'only the owner of a mesh may invite admins', { hint: 'invite with --role member, or ask the owner' });
  if (invite.meshName !== caller.mesh_name) {
    throw cmError('CM_ERR_BAD_REQUEST', `the invite names the mesh ${JSON.stringify(invite.meshName)}, but it is called ${JSON.stringify(caller.mesh_name)}`);
  }
  if (!brokerHostMatches(invite.brokerUrl, call.request, ctx.config.trustProxy)) {
    throw cmError('CM_ERR_INVITE_WRONG_BROKER', `the invite names broker ${invite.brokerUrl}, which is not the address this request reached`);
  }
  const nowSeconds = Math.floor(call.now.getTime() / 1000);
  if (invite.expiresAt <= nowSeconds) throw cmError('CM_ERR_INVITE_EXPIRED', `the invite already expired at ${new Date(invite.expiresAt * 1000).toISOString()}`);
  if (invite.expiresAt - nowSeconds > MAX_INVITE_LIFETIME_SECONDS) {
    throw cmError('CM_ERR_BAD_REQUEST', `an invite may live at most ${MAX_INVITE_LIFETIME_SECONDS / 86_400} days`, { hint: 'use a shorter --expires' });
  }
  const inserted = await query(ctx.pool, 'invite_insert', [invite.nonce, meshId, invite.role, invite.expiresAt, invite.maxUses, caller.id, invite.signature, call.now]);
  let alreadyRegistered = false;
  if (inserted.rowCount !== 1) {
    // A retried registration of the same invite is fine; another invite reusing a nonce is not.
    const row = (await query(ctx.pool, 'invite_by_id', [invite.nonce])).rows[0];
    if (row?.mesh_id !== meshId || row.signature !== invite.signature) {
      throw cmError('CM_ERR_BAD_REQUEST', 'an invite with this nonce is already registered', { hint: 'sign a new invite: every invite needs a fresh nonce' });
    }
    alreadyRegistered = true;
  }
  return [alreadyRegistered ? 200 : 201, { inviteId: invite.nonce, alreadyRegistered, role: invite.role, maxUses: invite.maxUses, expiresAt: invite.expiresAt }];
}

/** The owner revokes any invite of the mesh, an admin only the invites it signed. */
async function revokeInvite(ctx: Context, call: Call): Promise<Answer> {
  const caller = await moderator(ctx, call, 'revoke invites');
  const inviteId = field(call.body, 'inviteId', isNonce, 'an invite id (16–128 base64url characters)');
  const row = (await query(ctx.pool, 'invite_revoke', [inviteId, caller.meshId, call.now, caller.role === 'owner' ? null : caller.id])).rows[0];
  if (row === undefined) throw cmError('CM_ERR_INVITE_UNKNOWN', `mesh ${caller.meshId} has no invite ${inviteId}${caller.role === 'owner' ? '' : ' signed by you'}`);
  return [200, { inviteId, revokedAt: row.revoked_at.toISOString() }];
}

/**
 * Enrol the caller with an invite, in one transaction that first locks the mesh row. Checks,
 * in order: the mesh and the invite exist here with this exact signature; the joiner is not
 * banned; already a member (harmless, no use taken); the invite is not revoked and its signer
 * is still an owner or admin; not expired; no re-entry with the same invite; name free; a use left.
 */
async function join(ctx: Context, call: Call): Promise<Answer> {
  const invite = decodeInvite(field(call.body, 'token', isString, 'an invite token (cm1.…)'));
  const name = field(call.body, 'name', isMemberName, MEMBER_NAME);
  if (call.meshId !== '' && call.meshId !== invite.meshId) throw cmError('CM_ERR_BAD_REQUEST', `the request is signed for mesh ${call.meshId} but the invite is for mesh ${invite.meshId}`);
  if (!brokerHostMatches(invite.brokerUrl, call.request, ctx.config.trustProxy)) throw cmError('CM_ERR_INVITE_WRONG_BROKER', `the invite is for broker ${invite.brokerUrl}, which is not the address this request reached`);
  if (!inviteSignatureValid(invite)) throw cmError('CM_ERR_INVITE_BAD_SIGNATURE', 'the invite does not match its signature: a field was changed after signing');
  const joined = await transaction(ctx.pool, (client) => admit(client, invite, call.key, name, call.now));
  if (!joined.alreadyMember) {
    ctx.log.info('member joined', { meshId: invite.meshId, member: call.key.slice(0, 12), role: joined.role });
    // A key kicked a moment ago and admitted again with a new invite may say hello at once,
    // here and on every other instance.
    ctx.hub.forgetRemoval(invite.meshId, call.key);
    ctx.hub.tell(SIGNAL_REMOVALS, { meshId: invite.meshId, key: call.key, rejoined: true }, 'a rejoin');
  }
  return [joined.alreadyMember ? 200 : 201, { meshId: invite.meshId, ...joined, key: call.key }];
}

async function admit(client: pg.PoolClient, invite: Invite, key: string, name: string, now: Date) {
  const unknown = cmError('CM_ERR_INVITE_UNKNOWN', `this broker has no invite ${invite.nonce.slice(0, 8)}… for mesh ${invite.meshId}`);
  const mesh = (await query(client, 'mesh_lock', [invite.meshId])).rows[0];
  const row = mesh === undefined ? undefined : (await query(client, 'invite_lock', [invite.nonce, invite.meshId])).rows[0];
  if (mesh === undefined || row === undefined) throw unknown;
  // ed25519 signatures are deterministic: the same signature means the same signed fields.
  if (row.signature !== invite.signature || row.inviter_key !== invite.inviterKey) throw cmError('CM_ERR_INVITE_BAD_SIGNATURE', 'the invite differs from the one registered under its nonce');
  const joiner = (await query(client, 'member_by_key', [invite.meshId, key])).rows[0];
  const result = { meshName: mesh.name, ownerKey: mesh.owner_key };
  if (joiner?.banned_at != null) throw cmError('CM_ERR_BANNED', `key ${key.slice(0, 12)}… is banned from mesh ${JSON.stringify(mesh.name)}`);
  // Before the invite's own state: a retry whose first answer was lost must succeed even if
  // the invite has since expired, been revoked or used up. Nothing changes.
  if (joiner !== undefined && joiner.left_at === null) return { ...result, role: joiner.role, name: joiner.name, alreadyMember: true };
  if (row.revoked_at !== null) throw cmError('CM_ERR_INVITE_REVOKED', `the invite was revoked at ${row.revoked_at.toISOString()}`);
  if (!row.inviter_current || row.inviter_role === 'member') throw cmError('CM_ERR_INVITE_REVOKED', 'whoever signed this invite is no longer an owner or admin of the mesh');
  if (row.expires_at.getTime() <= now.getTime()) throw cmError('CM_ERR_INVITE_EXPIRED', `the invite expired at ${row.expires_at.toISOString()}`);
  if (joiner?.invite_id === invite.nonce) {
    throw cmError('CM_ERR_INVITE_EXHAUSTED', 'this key already entered the mesh with this invite and has since left or been removed', {
      hint: 'coming back needs a new invite: ask an owner or admin (claudemesh invite)',
    });
  }
  if ((await query(client, 'name_taken', [invite.meshId, name, key])).rowCount !== 0) {
    throw cmError('CM_ERR_NAME_TAKEN', `another member of mesh ${JSON.stringify(mesh.name)} is already called ${JSON.stringify(name)}`);
  }
  if ((await query(client, 'invite_use', [invite.nonce])).rowCount !== 1) throw cmError('CM_ERR_INVITE_EXHAUSTED', 'every use of this invite is already taken');
  if (joiner === undefined) await query(client, 'member_insert', [invite.meshId, key, name, row.role, invite.nonce, now]);
  else await query(client, 'member_readmit', [joiner.id, name, row.role, invite.nonce, now]);
  return { ...result, role: row.role, name, alreadyMember: false };
}

async function leave(ctx: Context, call: Call): Promise<Answer> {
  const caller = await currentMember(ctx, meshOf(call), call.key);
  if (caller.role === 'owner') {
    throw cmError('CM_ERR_FORBIDDEN', `the owner cannot leave mesh ${JSON.stringify(caller.mesh_name)}: it would have nobody to run it`, {
      hint: 'to forget this identity on this machine only, use claudemesh leave <mesh> --local',
    });
  }
  if ((await query(ctx.pool, 'member_leave', [caller.id, call.now])).rowCount !== 1) throw cmError('CM_ERR_FORBIDDEN', `key ${call.key.slice(0, 12)}… is no longer a member of mesh ${caller.meshId}`);
  disconnect(ctx, caller.meshId, call.key, CLOSES.left);
  ctx.log.info('member left', { meshId: caller.meshId, member: call.key.slice(0, 12) });
  return [200, { meshId: caller.meshId, ...view(caller) }];
}

async function members(ctx: Context, call: Call): Promise<Answer> {
  const caller = await currentMember(ctx, meshOf(call), call.key);
  const { rows } = await query(ctx.pool, 'members_current', [caller.meshId]);
  return [200, { meshId: caller.meshId, meshName: caller.mesh_name, members: rows.map((row) => ({ ...view(row), joinedAt: row.joined_at.toISOString() })) }];
}

async function kick(ctx: Context, call: Call): Promise<Answer> {
  const caller = await moderator(ctx, call, 'kick');
  const row = await target(ctx, caller, targetKey(call), 'kick', (member) => member.left_at === null && member.banned_at === null, 'current member');
  // A concurrent kick, ban or leave that got there first: the member is out either way.
  if ((await query(ctx.pool, 'member_leave', [row.id, call.now])).rowCount !== 1) throw cmError('CM_ERR_NOT_FOUND', `${row.name} is no longer a current member`);
  disconnect(ctx, caller.meshId, row.key, CLOSES.kicked);
  ctx.log.info('member kicked', { meshId: caller.meshId, member: row.key.slice(0, 12), by: call.key.slice(0, 12) });
  return [200, { meshId: caller.meshId, ...view(row) }];
}

/** Ban a current or former member (a kicked key must not come back with another invite). */
async function ban(ctx: Context, call: Call): Promise<Answer> {
  const caller = await moderator(ctx, call, 'ban');
  const row = await target(ctx, caller, targetKey(call), 'ban', () => true, 'member, current or former,');
  const alreadyBanned = row.banned_at !== null || (await query(ctx.pool, 'member_ban', [row.id, call.now, caller.id])).rowCount !== 1;
  // Also for a former member: a socket that outlived its membership must not survive a ban.
  if (!alreadyBanned) disconnect(ctx, caller.meshId, row.key, CLOSES.banned);
  ctx.log.info('member banned', { meshId: caller.meshId, member: row.key.slice(0, 12), by: call.key.slice(0, 12), alreadyBanned });
  return [200, { meshId: caller.meshId, ...view(row), alreadyBanned }];
}

async function unban(ctx: Context, call: Call): Promise<Answer> {
  const caller = await moderator(ctx, call, 'unban');
  const row = await target(ctx, caller, targetKey(call), 'unban', (member) => member.banned_at !== null, 'banned member');
  if ((await query(ctx.pool, 'member_unban', [row.id, call.now])).rowCount !== 1) throw cmError('CM_ERR_NOT_FOUND', `${row.name} is no longer banned`);
  ctx.log.info('member unbanned', { meshId: caller.meshId, member: row.key.slice(0, 12), by: call.key.slice(0, 12) });
  return [200, { meshId: caller.meshId, ...view(row) }];
}

async function bans(ctx: Context, call: Call): Promise<Answer> {
  const caller = await moderator(ctx, call, 'see the bans');
  const { rows } = await query(ctx.pool, 'bans', [caller.meshId]);
  return [200, {
    meshId: caller.meshId, meshName: caller.mesh_name,
    bans: rows.map((row) => ({ ...view(row), bannedAt: row.banned_at.toISOString(), bannedBy: row.banned_by_name })),
  }];
}

export function membershipRoutes(ctx: Context): RouteEntry[] {
  const { config, log } = ctx;
  if (config.adminToken === undefined && !LOOPBACK_HOSTS.has(config.host) && !config.host.startsWith('127.')) {
    log.warn('anyone who reaches this broker may create meshes', { host: config.host, hint: 'set BROKER_ADMIN_TOKEN to require an operator token for claudemesh new' });
  }
  const tokenDigest = config.adminToken === undefined ? undefined : digest(config.adminToken);
  const requireToken = (request: IncomingMessage): void => {
    const given = /^Bearer (\S+)$/.exec(header(request, 'authorization') ?? '')?.[1];
    // Compare digests: equal length, constant time, whatever was sent.
    if (tokenDigest !== undefined && (given === undefined || !timingSafeEqual(digest(given), tokenDigest))) {
      throw cmError('CM_ERR_UNAUTHORIZED', 'this broker lets only holders of its operator token create meshes', {
        hint: 'pass the token: claudemesh new NAME --token TOKEN (or CLAUDEMESH_BROKER_TOKEN); the operator sets it as BROKER_ADMIN_TOKEN',
      });
    }
  };
  const route = (method: 'GET' | 'POST', path: string, operation: (ctx: Context, call: Call) => Promise<Answer>): RouteEntry => ({
    method, path, route: 'membership',
    async handler(request, response) {
      if (path === '/mesh/create') requireToken(request);
      const raw = await readBody(request, config.maxMessageBytes);
      const now = ctx.now();
      const signed = await verifySignedCall(ctx.pool, request, path, raw, now);
      const body = raw.length === 0 ? (Object.create(null) as Record<string, unknown>) : parseJsonObject(raw);
      const [status, answer] = await operation(ctx, { request, key: signed.publicKey, meshId: signed.meshId, body, now: new Date(now) });
      sendJson(response, status, answer, { 'cache-control': 'no-store' });
    },
  });
  return [
    route('POST', '/mesh/create', createMesh), route('POST', '/mesh/invite', registerInvite), route('POST', '/mesh/invite/revoke', revokeInvite),
    route('POST', '/mesh/join', join), route('POST', '/mesh/leave', leave), route('GET', '/mesh/members', members), route('POST', '/mesh/kick', kick),
    route('POST', '/mesh/ban', ban), route('POST', '/mesh/unban', unban), route('GET', '/mesh/bans', bans),
  ];
}
