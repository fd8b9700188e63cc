// Wire protocol v1 (DESIGN §4): one JSON object per WebSocket text frame. Every client
// frame is parsed here into a typed value before any handler runs; anything else becomes a
// CM_ERR_BAD_FRAME / CM_ERR_UNKNOWN_TYPE error naming the field and the value received.
// Also the signing strings of the two handshakes, shared by broker, daemon and tests.

import { cmError } from './errors.ts';
import { PUBLIC_KEY_HEX, SIGNATURE_HEX, signingString } from './crypto.ts';

export const PROTOCOL_VERSION = 1;
export const MAX_ENVELOPES = 1_000;
export const MAX_CLIENT_MESSAGE_ID = 128;
export const MAX_REQUEST_ID = 64;
export const MAX_NAME = 64;
export const MAX_SUMMARY = 512;
export const MAX_GROUP = 64;
export const MAX_GROUPS = 32;
export const MAX_HOPS = 16;
const MAX_WIRE_HOPS = 255;
export const MAX_ACK_IDS = 1_000;
export const MAX_MESH_ID = 64;
const NONCE_BASE64_LENGTH = 32; // 24 bytes
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const GROUP_NAME = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;
const MESH_ID = /^[A-Za-z0-9_-]{8,64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const PRIORITIES = ['now', 'next', 'low'] as const;
export const STATUSES = ['idle', 'working', 'dnd'] as const;
export type Priority = (typeof PRIORITIES)[number];
export type Status = (typeof STATUSES)[number];

export interface HelloFrame { type: 'hello'; id?: string; meshId: string; memberKey: string; timestamp: number; signature: string; name?: string }
export interface SessionHelloFrame {
  type: 'session_hello'; id?: string; meshId: string; memberKey: string; sessionKey: string;
  attestation: { expiresAt: number; signature: string }; timestamp: number; signature: string;
  name?: string; groups?: string[];
}
export interface EnvelopeFrame { to: string; nonce: string; ciphertext: string }
export interface SendFrame { type: 'send'; id?: string; clientMessageId: string; target: string; priority: Priority; envelopes: EnvelopeFrame[]; hops: number }
export interface ClientAckFrame { type: 'client_ack'; id?: string; messageIds: string[] }
export interface MarkFrame { type: 'mark'; id?: string; messageIds: string[]; state: 'surfaced' | 'read' }
export interface SetStatusFrame { type: 'set_status'; id?: string; status: Status }
export interface SetSummaryFrame { type: 'set_summary'; id?: string; summary: string }
export interface GroupFrame { type: 'join_group' | 'leave_group'; id?: string; group: string }
export interface ListPeersFrame { type: 'list_peers'; id?: string }
export interface MessageStatusFrame { type: 'message_status'; id?: string; messageId: string }

export type ClientFrame = HelloFrame | SessionHelloFrame | SendFrame | ClientAckFrame | MarkFrame | SetStatusFrame
  | SetSummaryFrame | GroupFrame | ListPeersFrame | MessageStatusFrame;
export const CLIENT_FRAME_TYPES = ['hello', 'session_hello', 'send', 'client_ack', 'mark', 'set_status', 'set_summary',
  'join_group', 'leave_group', 'list_peers', 'message_status'] as const;

type Obj = Record<string, unknown>;

function bad(field: string, expected: string, value: unknown): never {
  const shown = JSON.stringify(value);
  throw cmError('CM_ERR_BAD_FRAME', `field "${field}" must be ${expected}, received ${shown === undefined ? 'nothing' : shown.slice(0, 80)}`);
}

function string(frame: Obj, field: string, pattern: RegExp | undefined, max: number, expected: string): string {
  const value = frame[field];
  if (typeof value !== 'string' || value.length > max || (pattern !== undefined && !pattern.test(value))) bad(field, expected, value);
  return value;
}

function optionalString(frame: Obj, field: string, max: number, expected: string): string | undefined {
  return frame[field] === undefined ? undefined : string(frame, field, undefined, max, expected);
}

function integer(frame: Obj, field: string, min: number, max: number): number {
  const value = frame[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) bad(field, `an integer from ${min} to ${max}`, value);
  return value;
}

const key = (frame: Obj, field: string) => string(frame, field, PUBLIC_KEY_HEX, 64, 'an ed25519 public key (64 lowercase hex)');
const signature = (frame: Obj, field: string) => string(frame, field, SIGNATURE_HEX, 128, 'an ed25519 signature (128 lowercase hex)');
const meshId = (frame: Obj) => string(frame, 'meshId', MESH_ID, MAX_MESH_ID, 'a mesh id (8-64 of A-Z a-z 0-9 _ -)');
const timestamp = (frame: Obj, field: string) => integer(frame, field, 0, Number.MAX_SAFE_INTEGER);

function groupName(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length > MAX_GROUP || !GROUP_NAME.test(value)) bad(field, 'a group name like "team" or "team/backend"', value);
  return value;
}

function idList(frame: Obj, field: string): string[] {
  const value = frame[field];
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_ACK_IDS) bad(field, `a list of 1 to ${MAX_ACK_IDS} message ids`, value);
  for (const entry of value) if (typeof entry !== 'string' || !UUID.test(entry)) bad(field, 'a list of message ids (uuid)', entry);
  return value as string[];
}

function envelopes(frame: Obj): EnvelopeFrame[] {
  const value = frame.envelopes;
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_ENVELOPES) bad('envelopes', `a list of 1 to ${MAX_ENVELOPES} envelopes`, value);
  return value.map((entry: unknown, index) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) bad(`envelopes[${index}]`, 'an object {to, nonce, ciphertext}', entry);
    const envelope = entry as Obj;
    return {
      to: key(envelope, 'to'),
      nonce: string(envelope, 'nonce', BASE64, NONCE_BASE64_LENGTH, 'a base64 24-byte nonce'),
      ciphertext: string(envelope, 'ciphertext', BASE64, Number.MAX_SAFE_INTEGER, 'base64 ciphertext'),
    };
  });
}

/** Parse one text frame. Throws CmError (CM_ERR_BAD_FRAME, CM_ERR_UNKNOWN_TYPE). */
export function parseClientFrame(text: string): ClientFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw cmError('CM_ERR_BAD_FRAME', `frame is not JSON: ${JSON.stringify(text.slice(0, 60))}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) bad('(frame)', 'a JSON object', value);
  const frame = value as Obj;
  const id = optionalString(frame, 'id', MAX_REQUEST_ID, `a request id of at most ${MAX_REQUEST_ID} characters`);
  const base = id === undefined ? {} : { id };
  switch (frame.type) {
    case 'hello': {
      const name = optionalString(frame, 'name', MAX_NAME, `a name of at most ${MAX_NAME} characters`);
      return { type: 'hello', ...base, meshId: meshId(frame), memberKey: key(frame, 'memberKey'), timestamp: timestamp(frame, 'timestamp'), signature: signature(frame, 'signature'), ...(name === undefined ? {} : { name }) };
    }
    case 'session_hello': {
      const attestation = frame.attestation;
      if (attestation === null || typeof attestation !== 'object' || Array.isArray(attestation)) bad('attestation', 'an object {expiresAt, signature}', attestation);
      const name = optionalString(frame, 'name', MAX_NAME, `a name of at most ${MAX_NAME} characters`);
      let groups: string[] | undefined;
      if (frame.groups !== undefined) {
        if (!Array.isArray(frame.groups) || frame.groups.length > MAX_GROUPS) bad('groups', `a list of at most ${MAX_GROUPS} group names`, frame.groups);
        groups = frame.groups.map((group: unknown) => groupName(group, 'groups'));
      }
      return {
        type: 'session_hello', ...base, meshId: meshId(frame), memberKey: key(frame, 'memberKey'), sessionKey: key(frame, 'sessionKey'),
        attestation: { expiresAt: timestamp(attestation as Obj, 'expiresAt'), signature: signature(attestation as Obj, 'signature') },
        timestamp: timestamp(frame, 'timestamp'), signature: signature(frame, 'signature'),
        ...(name === undefined ? {} : { name }), ...(groups === undefined ? {} : { groups }),
      };
    }
    case 'send': {
      const target = frame.target;
      if (typeof target !== 'string' || !(target === '*' || PUBLIC_KEY_HEX.test(target) || (target.startsWith('@') && GROUP_NAME.test(target.slice(1)) && target.length <= MAX_GROUP + 1))) {
        bad('target', 'a full public key, "*" or "@group" (names and prefixes are resolved by the client)', target);
      }
      const priority = frame.priority ?? 'now';
      if (!(PRIORITIES as readonly unknown[]).includes(priority)) bad('priority', 'one of now, next, low', priority);
      return {
        type: 'send', ...base, target, priority: priority as Priority, envelopes: envelopes(frame),
        clientMessageId: string(frame, 'clientMessageId', /^[\x21-\x7e]+$/, MAX_CLIENT_MESSAGE_ID, `a client message id of 1 to ${MAX_CLIENT_MESSAGE_ID} printable characters`),
        hops: frame.hops === undefined ? 0 : integer(frame, 'hops', 0, MAX_WIRE_HOPS),
      };
    }
    case 'client_ack':
      return { type: 'client_ack', ...base, messageIds: idList(frame, 'messageIds') };
    case 'mark': {
      if (frame.state !== 'surfaced' && frame.state !== 'read') bad('state', 'surfaced or read', frame.state);
      return { type: 'mark', ...base, messageIds: idList(frame, 'messageIds'), state: frame.state };
    }
    case 'set_status': {
      if (!(STATUSES as readonly unknown[]).includes(frame.status)) bad('status', 'one of idle, working, dnd', frame.status);
      return { type: 'set_status', ...base, status: frame.status as Status };
    }
    case 'set_summary':
      return { type: 'set_summary', ...base, summary: string(frame, 'summary', undefined, MAX_SUMMARY, `text of at most ${MAX_SUMMARY} characters`) };
    case 'join_group':
    case 'leave_group':
      return { type: frame.type, ...base, group: groupName(frame.group, 'group') };
    case 'list_peers':
      return { type: 'list_peers', ...base };
    case 'message_status':
      return { type: 'message_status', ...base, messageId: string(frame, 'messageId', UUID, 36, 'a message id (uuid)') };
    default:
      throw cmError('CM_ERR_UNKNOWN_TYPE', `unknown frame type ${JSON.stringify(frame.type)?.slice(0, 40) ?? 'nothing'}`, {
        hint: `send one of: ${CLIENT_FRAME_TYPES.join(', ')}`,
      });
  }
}

// Handshake signing strings (domain-separated; see lib/crypto.ts signingString).
export const helloSigningString = (meshIdValue: string, memberKey: string, time: number) => signingString('hello', [meshIdValue, memberKey, time]);
export const attestationSigningString = (meshIdValue: string, memberKey: string, sessionKey: string, expiresAt: number) =>
  signingString('session-attestation', [meshIdValue, memberKey, sessionKey, expiresAt]);
export const sessionHelloSigningString = (meshIdValue: string, memberKey: string, sessionKey: string, time: number) =>
  signingString('session-hello', [meshIdValue, memberKey, sessionKey, time]);

/** Does a peer in `groups` receive a message to `@target`? Hierarchical: "a/b" matches "@a". */
export function groupMatches(groups: readonly string[], target: string): boolean {
  const wanted = target.slice(1);
  return groups.some((group) => group === wanted || group.startsWith(`${wanted}/`));
}
