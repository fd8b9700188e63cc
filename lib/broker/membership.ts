// Membership routes (DESIGN §7): create a mesh, invite, join, leave, kick, ban, unban.
//
// Every route is a signed request (lib/signed-request.ts): the key that signed it is the
// caller, and the mesh it signed for (x-claudemesh-mesh) is the only mesh it can touch.
// Nothing in a body or header is trusted as identity. Handlers here only parse, authenticate
// and answer; the rules live in membership-invites.ts and membership-moderation.ts. Route
// table and bodies: docs/protocol.md.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type pg from 'pg';
import type { BrokerConfig } from '../config.ts';
import { isPublicKey } from '../crypto.ts';
import { cmError } from '../errors.ts';
import { decodeInvite, NONCE_PATTERN } from '../invite.ts';
import type { Logger } from '../log.ts';
import { isMemberName, isMeshId, isMeshName } from '../names.ts';
import type { ReplayGuard } from '../replay-guard.ts';
import { verifySignedRequest } from '../signed-request.ts';
import { parseJsonObject, readBody } from './body.ts';
import { sendJson } from './http.ts';
import type { RouteEntry } from './http.ts';
import { createMesh, joinMesh, registerInvite, revokeInvite } from './membership-invites.ts';
import { banMember, kickMember, leaveMesh, listBans, listMembers, unbanMember } from './membership-moderation.ts';

export const CLOSE_LEFT = 1000;
export const CLOSE_KICKED = 4001;
export const CLOSE_BANNED = 4002;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

/** What membership changes do to live connections; implemented by the connection hub. */
export interface MembershipEvents {
  /**
   * A member is out of the mesh: close its member and session sockets with `closeCode`
   * (4001 kicked, 4002 banned/revoked, 1000 left) and tell the others `peer_left`.
   */
  memberRemoved(meshId: string, memberPubkey: string, closeCode: number, reason: string): void;
}

export interface MembershipDeps {
  pool: pg.Pool;
  log: Logger;
  config: BrokerConfig;
  replay: ReplayGuard;
  events: MembershipEvents;
  now: () => number;
}

interface SignedCall {
  request: IncomingMessage;
  /** the key that signed the request: the caller */
  key: string;
  /** the mesh the request was signed for ('' when none) */
  meshId: string;
  body: Record<string, unknown>;
  now: Date;
}

type Answer = { status: number; body: Record<string, unknown> };
type Operation = (call: SignedCall) => Promise<Answer>;

function field<T>(body: Record<string, unknown>, name: string, valid: (value: unknown) => value is T, shape: string): T {
  const value = body[name];
  if (!valid(value)) {
    throw cmError('CM_ERR_BAD_REQUEST', `field "${name}" must be ${shape}, received ${JSON.stringify(value)?.slice(0, 80) ?? 'nothing'}`);
  }
  return value;
}

function requireMesh(call: SignedCall): string {
  if (!isMeshId(call.meshId)) {
    throw cmError('CM_ERR_BAD_REQUEST', 'this route acts on one mesh: sign the request for it (header x-claudemesh-mesh)');
  }
  return call.meshId;
}

function isString(value: unknown): value is string {
  return typeof value === 'string';
}

function isNonce(value: unknown): value is string {
  return typeof value === 'string' && NONCE_PATTERN.test(value);
}

/** One header value; a repeated header is treated as absent. */
function headerValue(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Does the broker URL inside an invite name the host this request reached? Compared as
 * host:port under the invite's scheme (so default ports match); `X-Forwarded-Host` counts
 * too, for proxies that rewrite `Host`. The invite's signature is the security; this check
 * catches an invite made for another broker address before it is registered or used.
 * (Refused with 400, not 421 Misdirected Request: fetch silently retries a 421, and the
 * replay guard would then answer the retry with CM_ERR_REPLAYED instead.)
 */
export function brokerHostMatches(brokerUrl: string, request: IncomingMessage): boolean {
  const expected = new URL(brokerUrl);
  const forwarded = headerValue(request, 'x-forwarded-host')?.split(',')[0]?.trim();
  for (const candidate of [headerValue(request, 'host'), forwarded]) {
    if (candidate === undefined || candidate === '') continue;
    try {
      if (new URL(`${expected.protocol}//${candidate}`).host === expected.host) return true;
    } catch {
      // not a host: no match
    }
  }
  return false;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

export function createMembershipRoutes(deps: MembershipDeps): RouteEntry[] {
  const { pool, log, config } = deps;
  if (config.adminToken === undefined && !LOOPBACK_HOSTS.has(config.host) && !config.host.startsWith('127.')) {
    log.warn('anyone who reaches this broker may create meshes', {
      host: config.host,
      hint: 'set BROKER_ADMIN_TOKEN to require an operator token for claudemesh new',
    });
  }
  const adminTokenDigest = config.adminToken === undefined ? undefined : digest(config.adminToken);

  function requireAdminToken(request: IncomingMessage): void {
    if (adminTokenDigest === undefined) return;
    const given = /^Bearer (\S+)$/.exec(headerValue(request, 'authorization') ?? '')?.[1];
    // Compare digests: equal length, constant time, whatever was sent.
    if (given === undefined || !timingSafeEqual(digest(given), adminTokenDigest)) {
      throw cmError('CM_ERR_UNAUTHORIZED', 'this broker lets only holders of its operator token create meshes', {
        hint: 'pass the token: claudemesh new NAME --token TOKEN (or CLAUDEMESH_BROKER_TOKEN); the operator sets it as BROKER_ADMIN_TOKEN',
      });
    }
  }

  function notify(meshId: string, pubkey: string, closeCode: number, reason: string): void {
    try {
      deps.events.memberRemoved(meshId, pubkey, closeCode, reason);
    } catch (error) {
      // The database already says the member is out; a hub failure must not undo the answer.
      log.error('closing the connections of a removed member failed', { meshId, reason, error });
    }
  }

  function route(method: 'GET' | 'POST', path: string, operation: Operation, before?: (request: IncomingMessage) => void): RouteEntry {
    return {
      method,
      path,
      route: 'membership',
      handler: async (request, response) => {
        before?.(request);
        const raw = await readBody(request, config.maxMessageBytes);
        const now = deps.now();
        const verified = verifySignedRequest({ method, path, headers: request.headers, body: raw, now, replay: deps.replay });
        const body = raw.length === 0 ? (Object.create(null) as Record<string, unknown>) : parseJsonObject(raw);
        const answer = await operation({ request, key: verified.publicKey, meshId: verified.meshId, body, now: new Date(now) });
        sendJson(response, answer.status, answer.body, { 'cache-control': 'no-store' });
      },
    };
  }

  const create: Operation = async (call) => {
    const name = field(call.body, 'name', isMeshName, 'a mesh name of 1–64 characters without control characters');
    const ownerName = field(call.body, 'ownerName', isMemberName, 'a member name: letters, digits, ".", "_", "@", "-", up to 64');
    const mesh = await createMesh(pool, { name, ownerPubkey: call.key, ownerName, now: call.now });
    log.info('mesh created', { meshId: mesh.meshId, owner: call.key.slice(0, 12) });
    return { status: 201, body: { ...mesh, role: 'owner' } };
  };

  const invite: Operation = async (call) => {
    const meshId = requireMesh(call);
    const decoded = decodeInvite(field(call.body, 'token', isString, 'an invite token (cm1.…)'));
    const registered = await registerInvite(pool, {
      meshId,
      callerKey: call.key,
      invite: decoded,
      brokerHostMatches: brokerHostMatches(decoded.brokerUrl, call.request),
      now: call.now,
    });
    return {
      status: registered.alreadyRegistered ? 200 : 201,
      body: { ...registered, role: decoded.role, maxUses: decoded.maxUses, expiresAt: decoded.expiresAt },
    };
  };

  const revoke: Operation = async (call) => {
    const meshId = requireMesh(call);
    const inviteId = field(call.body, 'inviteId', isNonce, 'an invite id (16–128 base64url characters)');
    const revoked = await revokeInvite(pool, { meshId, callerKey: call.key, inviteId, now: call.now });
    return { status: 200, body: { inviteId, revokedAt: revoked.revokedAt.toISOString() } };
  };

  const join: Operation = async (call) => {
    const decoded = decodeInvite(field(call.body, 'token', isString, 'an invite token (cm1.…)'));
    const name = field(call.body, 'name', isMemberName, 'a member name: letters, digits, ".", "_", "@", "-", up to 64');
    if (call.meshId !== '' && call.meshId !== decoded.meshId) {
      throw cmError('CM_ERR_BAD_REQUEST', `the request is signed for mesh ${call.meshId} but the invite is for mesh ${decoded.meshId}`);
    }
    if (!brokerHostMatches(decoded.brokerUrl, call.request)) {
      throw cmError('CM_ERR_INVITE_WRONG_BROKER', `the invite is for broker ${decoded.brokerUrl}, which is not the address this request reached`);
    }
    const joined = await joinMesh(pool, { invite: decoded, joinerKey: call.key, name, now: call.now });
    if (!joined.alreadyMember) log.info('member joined', { meshId: joined.meshId, member: call.key.slice(0, 12), role: joined.role });
    return { status: joined.alreadyMember ? 200 : 201, body: { ...joined, pubkey: call.key } };
  };

  const leave: Operation = async (call) => {
    const meshId = requireMesh(call);
    const left = await leaveMesh(pool, { meshId, callerKey: call.key, now: call.now });
    notify(meshId, call.key, CLOSE_LEFT, 'left');
    log.info('member left', { meshId, member: call.key.slice(0, 12) });
    return { status: 200, body: { meshId, ...left } };
  };

  const members: Operation = async (call) => {
    const meshId = requireMesh(call);
    return { status: 200, body: { meshId, ...(await listMembers(pool, { meshId, callerKey: call.key })) } };
  };

  const kick: Operation = async (call) => {
    const meshId = requireMesh(call);
    const pubkey = field(call.body, 'pubkey', isPublicKey, 'a member key (64 lowercase hex characters)');
    const kicked = await kickMember(pool, { meshId, callerKey: call.key, pubkey, now: call.now });
    notify(meshId, pubkey, CLOSE_KICKED, 'kicked');
    log.info('member kicked', { meshId, member: pubkey.slice(0, 12), by: call.key.slice(0, 12) });
    return { status: 200, body: { meshId, ...kicked } };
  };

  const ban: Operation = async (call) => {
    const meshId = requireMesh(call);
    const pubkey = field(call.body, 'pubkey', isPublicKey, 'a member key (64 lowercase hex characters)');
    const banned = await banMember(pool, { meshId, callerKey: call.key, pubkey, now: call.now });
    // Also for a former member: a socket that outlived its membership must not survive a ban.
    if (!banned.alreadyBanned) notify(meshId, pubkey, CLOSE_BANNED, 'banned');
    log.info('member banned', { meshId, member: pubkey.slice(0, 12), by: call.key.slice(0, 12), alreadyBanned: banned.alreadyBanned });
    return { status: 200, body: { meshId, name: banned.name, pubkey: banned.pubkey, role: banned.role, alreadyBanned: banned.alreadyBanned } };
  };

  const unban: Operation = async (call) => {
    const meshId = requireMesh(call);
    const pubkey = field(call.body, 'pubkey', isPublicKey, 'a member key (64 lowercase hex characters)');
    const unbanned = await unbanMember(pool, { meshId, callerKey: call.key, pubkey, now: call.now });
    log.info('member unbanned', { meshId, member: pubkey.slice(0, 12), by: call.key.slice(0, 12) });
    return { status: 200, body: { meshId, ...unbanned } };
  };

  const bans: Operation = async (call) => {
    const meshId = requireMesh(call);
    return { status: 200, body: { meshId, ...(await listBans(pool, { meshId, callerKey: call.key })) } };
  };

  return [
    route('POST', '/mesh/create', create, requireAdminToken),
    route('POST', '/mesh/invite', invite),
    route('POST', '/mesh/invite/revoke', revoke),
    route('POST', '/mesh/join', join),
    route('POST', '/mesh/leave', leave),
    route('GET', '/mesh/members', members),
    route('POST', '/mesh/kick', kick),
    route('POST', '/mesh/ban', ban),
    route('POST', '/mesh/unban', unban),
    route('GET', '/mesh/bans', bans),
  ];
}
