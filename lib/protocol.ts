// The wire contract, both directions: one JSON object per WebSocket text frame. Every
// frame type is declared once here as a shape; its TypeScript type is derived from that
// shape, the broker parses what clients send with it, the daemon parses what the broker
// sends with it, and docs/protocol.md is checked against it (test/docs.test.ts). A frame
// that does not fit its shape is refused with CM_ERR_BAD_FRAME naming the field and the
// value received. Also: the close-code table and the handshake signing strings.

import { cmError, ERROR_CODES } from './errors.ts';
import type { CmError, ErrorCode } from './errors.ts';
import { PUBLIC_KEY_HEX, SIGNATURE_HEX, signingString } from './crypto.ts';
import { PRIORITIES, STATUSES } from './wire-values.ts';

// 2: the hello signs a challenge the broker sent on this connection, so that no captured
// hello can be replayed — on any instance, before or after a restart — without shared state.
export const PROTOCOL_VERSION = 2;
const CHALLENGE_LENGTH = 43; // 32 random bytes, base64url
/** the first 132 bits of the SHA-256 of a roster as the broker encodes it, base64url */
export const ROSTER_DIGEST_LENGTH = 22;
const ROSTER_DIGEST = /^[A-Za-z0-9_-]{22}$/;
export const MAX_ENVELOPES = 1_000;
const MAX_CLIENT_MESSAGE_ID = 128;
export const MAX_REQUEST_ID = 64;
const MAX_NAME = 64;
const MAX_SUMMARY = 512;
export const MAX_GROUP = 64;
export const MAX_GROUPS = 32;
export const MAX_HOPS = 16;
const MAX_WIRE_HOPS = 255;
const MAX_IDS = 1_000;
const MAX_LIST = 100_000;
const MAX_TEXT = 4_096;
const NONCE_BASE64_LENGTH = 32; // 24 bytes
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const GROUP_NAME = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;
const MESH_ID = /^[A-Za-z0-9_-]{8,64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PRINTABLE = /^[\x21-\x7e]+$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
// Free text that peers show to each other (summaries, error messages) may carry any printable
// character, never NUL (Postgres text refuses it) nor other C0/C1 controls but tab and newline.
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
/**
 * Patterns that match visible ASCII only (anchored character classes): a text they accept
 * cannot hold a control, so it is not searched for one again. That search over every base64
 * ciphertext was a measurable part of parsing a send (docs/benchmarks.md).
 */
export const VISIBLE_ASCII_PATTERNS: ReadonlySet<RegExp> = new Set([PUBLIC_KEY_HEX, SIGNATURE_HEX, BASE64, GROUP_NAME, MESH_ID, UUID, PRINTABLE, BASE64URL, ROSTER_DIGEST]);

export { PRIORITIES, STATUSES };
export const ROLES = ['owner', 'admin', 'member'] as const;
/** A connection is a member's own (the daemon's, one per mesh) or a Claude session's. */
export const KINDS = ['member', 'session'] as const;
export const DELIVERY_STATES = ['queued', 'delivered', 'surfaced', 'read', 'expired'] as const;
export type Priority = (typeof PRIORITIES)[number];
export type Status = (typeof STATUSES)[number];
export type Role = (typeof ROLES)[number];
export type Kind = (typeof KINDS)[number];

// ---- shapes: a check per field, composed into objects ------------------------------------

type Check<T> = (value: unknown, field: string) => T;
type Shape = Record<string, Check<unknown>>;
type Required<S extends Shape> = { [K in keyof S as undefined extends ReturnType<S[K]> ? never : K]: ReturnType<S[K]> };
type Optional<S extends Shape> = { [K in keyof S as undefined extends ReturnType<S[K]> ? K : never]?: Exclude<ReturnType<S[K]>, undefined> };
type Of<S extends Shape> = Required<S> & Optional<S>;

function bad(field: string, expected: string, value: unknown): never {
  const shown = JSON.stringify(value);
  throw cmError('CM_ERR_BAD_FRAME', `field "${field}" must be ${expected}, received ${shown === undefined ? 'nothing' : shown.slice(0, 80)}`);
}

const text = (max: number, expected: string, pattern?: RegExp): Check<string> => {
  const controls = pattern === undefined || !VISIBLE_ASCII_PATTERNS.has(pattern);
  return (value, field) => {
    if (typeof value !== 'string' || value.length > max || (pattern !== undefined && !pattern.test(value)) || (controls && CONTROLS.test(value))) bad(field, expected, value);
    return value;
  };
};
const int = (min: number, max: number): Check<number> => (value, field) => {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) bad(field, `an integer from ${min} to ${max}`, value);
  return value;
};
const bool: Check<boolean> = (value, field) => (typeof value === 'boolean' ? value : bad(field, 'true or false', value));
const oneOf = <const T extends readonly string[]>(values: T): Check<T[number]> => (value, field) =>
  (values as readonly unknown[]).includes(value) ? (value as T[number]) : bad(field, `one of ${values.join(', ')}`, value);
const optional = <T>(check: Check<T>): Check<T | undefined> => (value, field) => (value === undefined ? undefined : check(value, field));
const nullable = <T>(check: Check<T>): Check<T | null> => (value, field) => (value === null ? null : check(value, field));
const withDefault = <T>(check: Check<T>, fallback: T): Check<T> => (value, field) => (value === undefined ? fallback : check(value, field));
function list<T>(item: Check<T>, min: number, max: number, expected: string): Check<T[]> {
  return (value, field) => {
    if (!Array.isArray(value) || value.length < min || value.length > max) bad(field, expected, value);
    return value.map((entry: unknown, index) => item(entry, `${field}[${index}]`));
  };
}
/** An object check; its field names stay readable (docs/protocol.md is checked against them). */
function object<S extends Shape>(shape: S): Check<Of<S>> & { fields: string[] } {
  const entries = Object.entries(shape);
  const check: Check<Of<S>> = (value, field) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) bad(field, `an object {${Object.keys(shape).join(', ')}}`, value);
    const out: Record<string, unknown> = {};
    for (const [name, check] of entries) {
      const parsed = check((value as Record<string, unknown>)[name], field === '' ? name : `${field}.${name}`);
      if (parsed !== undefined) out[name] = parsed;
    }
    return out as Of<S>;
  };
  return Object.assign(check, { fields: Object.keys(shape) });
}

const key = text(64, 'an ed25519 public key (64 lowercase hex)', PUBLIC_KEY_HEX);
const signature = text(128, 'an ed25519 signature (128 lowercase hex)', SIGNATURE_HEX);
const meshId = text(64, 'a mesh id (8-64 of A-Z a-z 0-9 _ -)', MESH_ID);
const time = int(0, Number.MAX_SAFE_INTEGER);
const iso = text(40, 'an ISO 8601 time');
const uuid = text(36, 'a message id (uuid)', UUID);
const group = text(MAX_GROUP, 'a group name like "team" or "team/backend"', GROUP_NAME);
const ids = list(uuid, 1, MAX_IDS, `a list of 1 to ${MAX_IDS} message ids`);
const name = text(MAX_NAME, 'a name: letters, digits, ".", "_", "@", "-", up to 64, starting with a letter or digit', /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/);
const challenge = text(CHALLENGE_LENGTH, 'the challenge this connection was sent (base64url)', BASE64URL);
const rosterDigest = optional(text(ROSTER_DIGEST_LENGTH, `a roster digest (${ROSTER_DIGEST_LENGTH} base64url characters) from an earlier hello_ack or peers frame`, ROSTER_DIGEST));
// A client that keeps the roster it was last given names it by its digest; the answer then
// carries the lists only when they changed.
const knownRoster = { rosterDigest };
const anyText = text(MAX_TEXT, `text of at most ${MAX_TEXT} characters`);
const summary = text(MAX_SUMMARY, `text of at most ${MAX_SUMMARY} characters`);
const groups = list(group, 0, MAX_GROUPS, `a list of at most ${MAX_GROUPS} group names`);
const peerId = { key, memberKey: key, name, kind: oneOf(KINDS), role: oneOf(ROLES) };
const target: Check<string> = (value, field) => {
  const ok = typeof value === 'string' && (value === '*' || PUBLIC_KEY_HEX.test(value) || (value.startsWith('@') && value.length <= MAX_GROUP + 1 && GROUP_NAME.test(value.slice(1))));
  return ok ? value : bad(field, 'a full public key, "*" or "@group" (names and prefixes are resolved by the client)', value);
};
const sealed = {
  nonce: text(NONCE_BASE64_LENGTH, 'a base64 24-byte nonce', BASE64),
  ciphertext: text(Number.MAX_SAFE_INTEGER, 'base64 ciphertext', BASE64),
};
const record: Check<Record<string, unknown>> = (value, field) =>
  value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : bad(field, 'an object', value);
const requestId = { id: optional(text(MAX_REQUEST_ID, `a request id of at most ${MAX_REQUEST_ID} characters`)) };
const errorBody = { code: text(64, 'an error code'), message: anyText, hint: anyText, details: optional(record) };

// ---- client → broker ----------------------------------------------------------------------

const CLIENT_FRAMES = {
  hello: object({ ...requestId, meshId, memberKey: key, timestamp: time, challenge: optional(challenge), signature, name: optional(name), ...knownRoster }),
  session_hello: object({
    ...requestId, meshId, memberKey: key, sessionKey: key, attestation: object({ expiresAt: time, signature }), challenge: optional(challenge),
    timestamp: time, signature, name: optional(name), groups: optional(groups), ...knownRoster,
  }),
  send: object({
    ...requestId,
    clientMessageId: text(MAX_CLIENT_MESSAGE_ID, `a client message id of 1 to ${MAX_CLIENT_MESSAGE_ID} printable characters`, PRINTABLE),
    target, priority: withDefault(oneOf(PRIORITIES), 'now'), hops: withDefault(int(0, MAX_WIRE_HOPS), 0),
    envelopes: list(object({ to: key, ...sealed }), 1, MAX_ENVELOPES, `a list of 1 to ${MAX_ENVELOPES} envelopes {to, nonce, ciphertext}`),
  }),
  client_ack: object({ ...requestId, messageIds: ids }),
  mark: object({ ...requestId, messageIds: ids, state: oneOf(['surfaced', 'read'] as const) }),
  set_status: object({ ...requestId, status: oneOf(STATUSES) }),
  set_summary: object({ ...requestId, summary }),
  join_group: object({ ...requestId, group }),
  leave_group: object({ ...requestId, group }),
  list_peers: object({ ...requestId, ...knownRoster }),
  message_status: object({ ...requestId, messageId: uuid }),
};

// ---- broker → client ----------------------------------------------------------------------

const peer = object({ ...peerId, status: oneOf(STATUSES), summary, groups, connectedAt: iso, online: bool });
const member = object({ key, name, role: oneOf(ROLES) });
// Both lists are left out when the request named this very roster's digest (knownRoster).
const roster = {
  rosterDigest,
  peers: optional(list(peer, 0, MAX_LIST, 'a list of peers')), members: optional(list(member, 0, MAX_LIST, 'a list of members')),
};
const stored = object({ ...requestId, queued: ((value, field) => (value === true ? true : bad(field, 'true', value))) as Check<true>, messageId: uuid, recipients: int(0, MAX_ENVELOPES), duplicate: optional(bool) });
const refused = object({ ...requestId, queued: ((value, field) => (value === false ? false : bad(field, 'false', value))) as Check<false>, ...errorBody });

const SERVER_FRAMES = {
  /** sent first, on every connection: the hello must sign `nonce` */
  challenge: object({ protocolVersion: int(1, 1_000), nonce: challenge }),
  hello_ack: object({
    ...requestId, protocolVersion: int(1, 1_000), meshId, meshName: text(MAX_NAME, 'a mesh name'), key, memberKey: key, kind: oneOf(KINDS), role: oneOf(ROLES),
    name, reattached: bool, ...roster,
  }),
  /** the answer to `send`: stored durably (after COMMIT), or refused with an error body */
  ack: Object.assign(
    ((value, field) => ((value as { queued?: unknown } | null)?.queued === true ? stored(value, field) : refused(value, field))) as Check<ReturnType<typeof stored> | ReturnType<typeof refused>>,
    { fields: [...new Set([...stored.fields, ...refused.fields])] },
  ),
  push: object({
    messageId: uuid, meshId, senderKey: key, senderMemberKey: key, target, priority: oneOf(PRIORITIES), envelope: object(sealed),
    createdAt: iso, clientMessageId: text(MAX_CLIENT_MESSAGE_ID, 'a client message id', PRINTABLE), hops: int(0, MAX_WIRE_HOPS),
  }),
  peers: object({ ...requestId, ...roster }),
  /** once per connection, after the hello: everything that could be pushed when it opened has been */
  caught_up: object({}),
  message_status: object({
    ...requestId, messageId: uuid, target, priority: oneOf(PRIORITIES), clientMessageId: text(MAX_CLIENT_MESSAGE_ID, 'a client message id'),
    createdAt: iso, expiresAt: iso,
    recipients: list(object({
      key, state: oneOf(DELIVERY_STATES), queuedAt: iso, deliveredAt: nullable(iso), surfacedAt: nullable(iso), readAt: nullable(iso),
      expiredAt: nullable(iso), pushes: int(0, Number.MAX_SAFE_INTEGER),
    }), 0, MAX_ENVELOPES, 'a list of recipients'),
  }),
  /** the answer to mark, set_status, set_summary, join_group and leave_group */
  ok: object({
    ...requestId, of: oneOf(['mark', 'set_status', 'set_summary', 'join_group', 'leave_group'] as const),
    updated: optional(int(0, MAX_IDS)), applied: optional(bool), status: optional(oneOf(STATUSES)), groups: optional(groups),
  }),
  /**
   * peer_joined carries the whole view of one peer, peers_joined of several that joined
   * together (a connect storm tells each peer of them in a few frames, not one per joiner);
   * peer_left who left (its state is over)
   */
  system: object({
    event: oneOf(['peer_joined', 'peers_joined', 'peer_left'] as const), meshId, at: iso, reason: optional(oneOf(['lease_expired', 'kicked', 'banned', 'left'] as const)),
    peer: optional(object({ ...peerId, status: optional(oneOf(STATUSES)), summary: optional(summary), groups: optional(groups), connectedAt: optional(iso), online: optional(bool) })),
    peers: optional(list(peer, 1, MAX_LIST, 'a list of peers')),
  }),
  error: object({ ...requestId, ...errorBody }),
};

type Frames<T extends Record<string, Check<unknown>>> = { [K in keyof T & string]: { type: K } & ReturnType<T[K]> };
type ClientFrames = Frames<typeof CLIENT_FRAMES>;
type ServerFrames = Frames<typeof SERVER_FRAMES>;
export type ClientFrameType = keyof ClientFrames;
export type ServerFrameType = keyof ServerFrames;
export type ClientFrame = ClientFrames[ClientFrameType];
export type ServerFrame = ServerFrames[ServerFrameType];
export type ClientFrameOf<T extends ClientFrameType> = ClientFrames[T];
export type ServerFrameOf<T extends ServerFrameType> = ServerFrames[T];
export type PeerView = ReturnType<typeof peer>;
export type MemberView = ReturnType<typeof member>;
export type HelloFrame = ClientFrameOf<'hello'>;
export type SessionHelloFrame = ClientFrameOf<'session_hello'>;
export type SendFrame = ClientFrameOf<'send'>;
export type EnvelopeFrame = SendFrame['envelopes'][number];
export type AckFrame = ServerFrameOf<'ack'>;
export type PushFrame = ServerFrameOf<'push'>;
export type HelloAckFrame = ServerFrameOf<'hello_ack'>;
export const CLIENT_FRAME_TYPES = Object.keys(CLIENT_FRAMES) as ClientFrameType[];
export const SERVER_FRAME_TYPES = Object.keys(SERVER_FRAMES) as ServerFrameType[];

function parse<T>(frames: Record<string, Check<unknown>>, raw: string): T {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw cmError('CM_ERR_BAD_FRAME', `frame is not JSON: ${JSON.stringify(raw.slice(0, 60))}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) bad('(frame)', 'a JSON object', value);
  const type = (value as { type?: unknown }).type;
  const check = typeof type === 'string' && Object.hasOwn(frames, type) ? frames[type] : undefined;
  if (check === undefined) {
    throw cmError('CM_ERR_UNKNOWN_TYPE', `unknown frame type ${JSON.stringify(type)?.slice(0, 40) ?? 'nothing'}`, {
      hint: `send one of: ${Object.keys(frames).join(', ')}`,
    });
  }
  return { type, ...(check(value, '') as object) } as T;
}

/** The top-level fields of a frame type, for the documentation check. */
export function frameFields(type: ClientFrameType | ServerFrameType, direction: 'client' | 'server'): string[] {
  const frames: Record<string, { fields: string[] }> = direction === 'client' ? CLIENT_FRAMES : SERVER_FRAMES;
  return frames[type]?.fields ?? [];
}

/** Parse a frame a client sent. Throws CmError (CM_ERR_BAD_FRAME, CM_ERR_UNKNOWN_TYPE). */
export const parseClientFrame = (raw: string): ClientFrame => parse<ClientFrame>(CLIENT_FRAMES, raw);
/** Parse a frame the broker sent. Throws CmError (CM_ERR_BAD_FRAME, CM_ERR_UNKNOWN_TYPE). */
export const parseServerFrame = (raw: string): ServerFrame => parse<ServerFrame>(SERVER_FRAMES, raw);

/** The one way to put a frame on the wire, typed per frame type. */
export function encodeFrame<T extends ServerFrameType>(type: T, fields: Omit<ServerFrameOf<T>, 'type'>): string;
export function encodeFrame<T extends ClientFrameType>(type: T, fields: Omit<ClientFrameOf<T>, 'type'>): string;
export function encodeFrame(type: string, fields: object): string {
  return JSON.stringify({ type, ...fields });
}

/**
 * A push, written as text: the broker's most frequent frame. Every field but the client
 * message id has a shape checked when it came in (uuid, mesh id, hex keys, a target, a
 * priority, base64, an ISO time, an integer: none needs JSON escaping), so only that one goes
 * through JSON.stringify; the frame parses to exactly what encodeFrame('push', …) would give
 * (test/lib/protocol.test.ts), without building two objects per push first.
 */
export function encodePush(push: Omit<PushFrame, 'type'>): string {
  return `{"type":"push","messageId":"${push.messageId}","meshId":"${push.meshId}","senderKey":"${push.senderKey}","senderMemberKey":"${push.senderMemberKey}",`
    + `"target":"${push.target}","priority":"${push.priority}","envelope":{"nonce":"${push.envelope.nonce}","ciphertext":"${push.envelope.ciphertext}"},`
    + `"createdAt":"${push.createdAt}","clientMessageId":${JSON.stringify(push.clientMessageId)},"hops":${push.hops}}`;
}

/** The broker's refusal as our error: its code when we know it, its message and hint as sent. */
export function refusalOf(answer: ServerFrame, request: string): CmError {
  if (answer.type === 'error' || (answer.type === 'ack' && !answer.queued)) {
    const code = (Object.hasOwn(ERROR_CODES, answer.code) ? answer.code : 'CM_ERR_INTERNAL') as ErrorCode;
    return cmError(code, answer.message, { hint: answer.hint, ...(answer.details === undefined ? {} : { details: answer.details }) });
  }
  return cmError('CM_ERR_INTERNAL', `the broker answered ${request} with a ${answer.type} frame`);
}

/** An error frame for a refused request; `id` correlates it with the request when known. */
export function errorFrame(error: CmError, id?: string): string {
  return encodeFrame('error', { ...(id === undefined ? {} : { id }), ...error.toJSON() });
}

// ---- close codes --------------------------------------------------------------------------

/**
 * Every close the broker makes, with whether the client should stop for good (terminal) or
 * reconnect with backoff. A client that sees an unlisted (code, reason) reconnects.
 */
export const CLOSES = {
  replaced: { code: 1000, reason: 'session_replaced', terminal: true },
  left: { code: 1000, reason: 'left', terminal: true },
  // SIGTERM: this instance restarts or stops; reconnect (with jitter) to it or another one.
  restart: { code: 1012, reason: 'service restart', terminal: false },
  helloTimeout: { code: 1008, reason: 'hello_timeout', terminal: false },
  timestampSkew: { code: 1008, reason: 'timestamp_skew', terminal: false },
  badSignature: { code: 1008, reason: 'bad_signature', terminal: true },
  oldProtocol: { code: 1008, reason: 'protocol_version', terminal: true },
  nameTaken: { code: 1008, reason: 'name_taken', terminal: true },
  unauthorized: { code: 1008, reason: 'unauthorized', terminal: true },
  expired: { code: 1008, reason: 'expired', terminal: true },
  capacity: { code: 1008, reason: 'capacity', terminal: false },
  internal: { code: 1011, reason: 'db_unavailable', terminal: false },
  kicked: { code: 4001, reason: 'kicked', terminal: true },
  banned: { code: 4002, reason: 'banned', terminal: true },
} as const satisfies Record<string, { code: number; reason: string; terminal: boolean }>;
export type Close = (typeof CLOSES)[keyof typeof CLOSES];

/** Should a client stop reconnecting after this close? Kicks and bans always stop it. */
export function isTerminalClose(code: number, reason: string): boolean {
  if (code === CLOSES.kicked.code || code === CLOSES.banned.code) return true;
  return Object.values(CLOSES).some((close) => close.terminal && close.code === code && close.reason === reason);
}

// ---- names: checked alike by the broker (before anything reaches Postgres) and the CLI -----

// Member names are what people type after `kick` or `send`: no spaces, no leading `@` or `*`
// (those are group and broadcast targets), so a name never reads as a target.
const MEMBER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
// Control characters (newlines included) could forge a line in a signed string or a log.
const CONTROL_CHARACTER = /\p{Cc}/u;

/** Mirrors the CHECK on meshes.id in sql/001_initial.sql. */
export function isMeshId(value: unknown): value is string {
  return typeof value === 'string' && MESH_ID.test(value);
}

/** A mesh name is free text for people: 1–64 characters, no control characters, trimmed. */
export function isMeshName(value: unknown): value is string {
  return typeof value === 'string' && value.length >= 1 && [...value].length <= MAX_NAME && value.trim() === value && !CONTROL_CHARACTER.test(value);
}

export function isMemberName(value: unknown): value is string {
  return typeof value === 'string' && MEMBER_NAME.test(value);
}

/** Turn free text (a user or host name) into a valid member name, or undefined. */
export function toMemberName(raw: string): string | undefined {
  const cleaned = raw.replace(/[^A-Za-z0-9._@-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, MAX_NAME);
  return isMemberName(cleaned) ? cleaned : undefined;
}

// ---- handshake signing strings (domain-separated; lib/crypto.ts signingString) -------------

export const helloSigningString = (mesh: string, memberKey: string, at: number, nonce: string) => signingString('hello-v2', [mesh, memberKey, at, nonce]);
export const attestationSigningString = (mesh: string, memberKey: string, sessionKey: string, expiresAt: number) =>
  signingString('session-attestation', [mesh, memberKey, sessionKey, expiresAt]);
export const sessionHelloSigningString = (mesh: string, memberKey: string, sessionKey: string, at: number, nonce: string) =>
  signingString('session-hello-v2', [mesh, memberKey, sessionKey, at, nonce]);

/** Does a peer in `groups` receive a message to `@target`? Hierarchical: "a/b" matches "@a". */
export function groupMatches(groups: readonly string[], targetGroup: string): boolean {
  const wanted = targetGroup.slice(1);
  return groups.some((entry) => entry === wanted || entry.startsWith(`${wanted}/`));
}
