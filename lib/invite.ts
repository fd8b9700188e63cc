// Invites: what an owner or admin hands to someone so they can join a mesh.
//
// An invite is signed on the inviter's machine (the broker never holds a key that could
// mint one) over a canonical, domain-separated string of every field that matters: mesh
// id, mesh name, broker URL, role, expiry, max uses, a random nonce and the signer's key.
// Changing any of them breaks the signature, so `claudemesh join` can refuse a tampered
// invite before it contacts anyone. The broker checks it again, and checks that the
// signer is still an owner or admin, that the invite was registered under that nonce with
// that very signature, and its expiry, revocation and uses.
//
// Token: `cm1.` + base64url(JSON {v, mesh, name, broker, role, exp, uses, nonce, by, sig}),
// one line with no characters a terminal or chat would mangle.

import { cmError } from './errors.ts';
import { isPublicKey, keyPairFromSecret, randomId, SIGNATURE_HEX, sign, signingString, verify } from './crypto.ts';
import { isMeshId, isMeshName } from './protocol.ts';

export const INVITE_PREFIX = 'cm1.';
const INVITE_VERSION = 1;
export const MAX_TOKEN_LENGTH = 4_096;
export const MAX_INVITE_USES = 10_000;
export const MAX_INVITE_LIFETIME_SECONDS = 365 * 24 * 3600;
const INVITE_ROLES = ['member', 'admin'] as const;
/** Mirrors the CHECK on invites.id (the nonce is the invite's id at the broker). */
export const NONCE_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
const NONCE_BYTES = 16;
const SIGNING_PURPOSE = 'invite';
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const TOKEN_KEYS = ['v', 'mesh', 'name', 'broker', 'role', 'exp', 'uses', 'nonce', 'by', 'sig'] as const;

type InviteRole = (typeof INVITE_ROLES)[number];

export interface InviteFields {
  meshId: string;
  meshName: string;
  /** origin only, e.g. `https://mesh.example.com` or `http://127.0.0.1:7900` */
  brokerUrl: string;
  role: InviteRole;
  /** unix seconds */
  expiresAt: number;
  maxUses: number;
  nonce: string;
  /** the signer: an owner or admin of the mesh */
  inviterKey: string;
}

export interface Invite extends InviteFields {
  signature: string;
}

/**
 * The broker address as invites and the client config carry it: the URL's origin.
 * undefined when it is not an http(s) URL made of scheme, host and optional port
 * (a path, query, fragment or credentials would not survive being compared).
 */
export function normaliseBrokerUrl(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return undefined;
  if (url.pathname !== '/' && url.pathname !== '') return undefined;
  return url.origin;
}

export function isInviteRole(value: unknown): value is InviteRole {
  return value === 'member' || value === 'admin';
}

/** The exact bytes an invite signature covers. */
export function inviteSigningString(fields: InviteFields): Buffer {
  return signingString(SIGNING_PURPOSE, [
    INVITE_VERSION,
    fields.meshId,
    fields.meshName,
    fields.brokerUrl,
    fields.role,
    fields.expiresAt,
    fields.maxUses,
    fields.nonce,
    fields.inviterKey,
  ]);
}

/** Sign a new invite with the inviter's secret key; the nonce is fresh unless given. */
export function createInvite(fields: Omit<InviteFields, 'nonce' | 'inviterKey'> & { nonce?: string }, secretKey: Buffer): Invite {
  const complete: InviteFields = {
    ...fields,
    nonce: fields.nonce ?? randomId(NONCE_BYTES),
    inviterKey: keyPairFromSecret(secretKey).publicKey,
  };
  const problem = fieldProblem(complete);
  if (problem !== undefined) throw cmError('CM_ERR_INVITE_MALFORMED', `cannot make this invite: ${problem}`);
  return { ...complete, signature: sign(inviteSigningString(complete), secretKey) };
}

export function encodeInvite(invite: Invite): string {
  const json = {
    v: INVITE_VERSION,
    mesh: invite.meshId,
    name: invite.meshName,
    broker: invite.brokerUrl,
    role: invite.role,
    exp: invite.expiresAt,
    uses: invite.maxUses,
    nonce: invite.nonce,
    by: invite.inviterKey,
    sig: invite.signature,
  };
  return INVITE_PREFIX + Buffer.from(JSON.stringify(json), 'utf8').toString('base64url');
}

/** What is wrong with the fields, or undefined when every one has its shape. */
function fieldProblem(fields: InviteFields): string | undefined {
  if (!isMeshId(fields.meshId)) return 'mesh id must be 8–64 letters, digits, "_" or "-"';
  if (!isMeshName(fields.meshName)) return 'mesh name must be 1–64 characters without control characters';
  if (typeof fields.brokerUrl !== 'string' || normaliseBrokerUrl(fields.brokerUrl) !== fields.brokerUrl) {
    return 'broker must be an http(s) origin such as https://mesh.example.com';
  }
  if (!isInviteRole(fields.role)) return 'role must be "member" or "admin"';
  if (!Number.isSafeInteger(fields.expiresAt) || fields.expiresAt <= 0) return 'expiry must be a positive whole number of unix seconds';
  if (!Number.isSafeInteger(fields.maxUses) || fields.maxUses < 1 || fields.maxUses > MAX_INVITE_USES) {
    return `uses must be a whole number from 1 to ${MAX_INVITE_USES}`;
  }
  if (typeof fields.nonce !== 'string' || !NONCE_PATTERN.test(fields.nonce)) return 'nonce must be 16–128 base64url characters';
  if (!isPublicKey(fields.inviterKey)) return 'inviter key must be 64 lowercase hex characters';
  return undefined;
}

/** Parse a token; throws CM_ERR_INVITE_MALFORMED. Does not check the signature. */
export function decodeInvite(token: string): Invite {
  const trimmed = token.trim();
  const malformed = (why: string) =>
    cmError('CM_ERR_INVITE_MALFORMED', `this is not a valid claudemesh invite: ${why}`, { details: { received: trimmed.slice(0, 24) } });
  if (trimmed.length > MAX_TOKEN_LENGTH) throw malformed(`it is longer than ${MAX_TOKEN_LENGTH} characters`);
  if (!trimmed.startsWith(INVITE_PREFIX)) throw malformed(`it does not start with "${INVITE_PREFIX}"`);
  const payload = trimmed.slice(INVITE_PREFIX.length);
  if (!BASE64URL.test(payload)) throw malformed('it is cut short or has characters that base64url does not use');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw malformed('its payload is not JSON (is it cut short?)');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw malformed('its payload is not an object');
  // Untrusted keys: copy into a null-prototype object, and refuse anything unexpected so a
  // field the signature does not cover can never ride along.
  const json = Object.assign(Object.create(null) as Record<string, unknown>, parsed);
  const unexpected = Object.keys(json).filter((key) => !(TOKEN_KEYS as readonly string[]).includes(key));
  if (unexpected.length > 0) throw malformed(`unexpected field ${JSON.stringify(unexpected[0])}`);
  if (json.v !== INVITE_VERSION) throw malformed(`version ${JSON.stringify(json.v)} is not ${INVITE_VERSION}; update claudemesh`);
  const invite = {
    meshId: json.mesh,
    meshName: json.name,
    brokerUrl: json.broker,
    role: json.role,
    expiresAt: json.exp,
    maxUses: json.uses,
    nonce: json.nonce,
    inviterKey: json.by,
    signature: json.sig,
  } as Invite;
  const problem = fieldProblem(invite);
  if (problem !== undefined) throw malformed(problem);
  if (typeof invite.signature !== 'string' || !SIGNATURE_HEX.test(invite.signature)) throw malformed('signature must be 128 hex characters');
  return invite;
}

/** true when the signature matches the fields and the key named in the invite. */
export function inviteSignatureValid(invite: Invite): boolean {
  return verify(invite.signature, inviteSigningString(invite), invite.inviterKey);
}

/**
 * The offline check: the signature matches and the invite has not expired by `nowMs`.
 * Throws CM_ERR_INVITE_BAD_SIGNATURE / CM_ERR_INVITE_EXPIRED.
 */
export function checkInvite(invite: Invite, nowMs: number): void {
  if (!inviteSignatureValid(invite)) {
    throw cmError('CM_ERR_INVITE_BAD_SIGNATURE', `the invite to mesh ${JSON.stringify(invite.meshName)} does not match its signature: a field was changed after signing`);
  }
  if (invite.expiresAt * 1000 <= nowMs) {
    throw cmError('CM_ERR_INVITE_EXPIRED', `the invite to mesh ${JSON.stringify(invite.meshName)} expired at ${new Date(invite.expiresAt * 1000).toISOString()}`, {
      details: { expiresAt: invite.expiresAt },
    });
  }
}
