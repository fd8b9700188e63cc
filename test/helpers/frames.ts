// Broker frames for scripted brokers in daemon tests: complete, so that the daemon's parser
// (lib/protocol.ts parseServerFrame) accepts them exactly as it accepts the real broker's.

import { randomUUID } from 'node:crypto';
import { encodeFrame, PROTOCOL_VERSION } from '../../lib/protocol.ts';
import type { MemberView, Role } from '../../lib/protocol.ts';

const SCRIPTED_MESH = 'mesh-scripted-01';

/** The first frame of every connection; a scripted broker may send the same nonce each time. */
export function challengeFrame(nonce = 'scripted-challenge-000000000000000000000000'): string {
  return encodeFrame('challenge', { protocolVersion: PROTOCOL_VERSION, nonce });
}

/** A member as `hello_ack` and `peers` list it (role defaults to member). */
export function member(key: string, name: string, role: Role = 'member'): MemberView {
  return { key, name, role };
}

export function helloAck(hello: Record<string, any>, members: MemberView[], reattached = false): string {
  return encodeFrame('hello_ack', {
    ...(hello.id === undefined ? {} : { id: hello.id }), protocolVersion: PROTOCOL_VERSION, meshId: hello.meshId ?? SCRIPTED_MESH, meshName: 'scripted',
    key: hello.sessionKey ?? hello.memberKey, memberKey: hello.memberKey, kind: hello.sessionKey === undefined ? 'member' : 'session', role: 'owner',
    name: 'me', reattached, peers: [], members,
  });
}

export function peersFrame(id: string | undefined, members: MemberView[]): string {
  return encodeFrame('peers', { ...(id === undefined ? {} : { id }), peers: [], members });
}

/** An ack: stored (a fresh message id unless given) or refused with a code. */
export function stored(recipients: number, messageId: string = randomUUID()) {
  return { type: 'ack', queued: true, messageId, recipients } as const;
}
export function refused(code: string, message: string) {
  return { type: 'ack', queued: false, code, message, hint: 'scripted' } as const;
}
