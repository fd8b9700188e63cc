// Proving who is on a socket (DESIGN §4). `hello`: the member key signs (mesh, member key,
// time). `session_hello`: the member key attests the session key (with an expiry of at
// most 24 h) and the session key signs (mesh, member key, session key, time). So every key
// the broker routes to has proven possession of its secret, and every session is vouched
// for by a current member. Checks run in a fixed order, cheapest first.

import type pg from 'pg';
import { cmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import { verify } from '../crypto.ts';
import { attestationSigningString, helloSigningString, sessionHelloSigningString } from '../protocol.ts';
import type { HelloFrame, SessionHelloFrame } from '../protocol.ts';
import { CLOCK_SKEW_MS } from '../signed-request.ts';
import type { ReplayGuard } from '../replay-guard.ts';
import type { PeerIdentity } from './hub.ts';
import { query } from './sql.ts';

export const MAX_ATTESTATION_MS = 24 * 3600 * 1000;
export const CLOSE_POLICY = 1008;
export const CLOSE_REVOKED = 4002;

/** A refused handshake: the error frame to send, and how to close the socket. */
export interface Refusal {
  error: CmError;
  closeCode: number;
  /** close reason and metrics label */
  reason: 'timestamp_skew' | 'bad_signature' | 'unauthorized' | 'expired' | 'revoked';
}

function refuse(reason: Refusal['reason'], error: CmError, closeCode = CLOSE_POLICY): Refusal {
  return { error, closeCode, reason };
}

export async function verifyHello(frame: HelloFrame | SessionHelloFrame, pool: pg.Pool, now: number, replay: ReplayGuard): Promise<PeerIdentity | Refusal> {
  if (Math.abs(now - frame.timestamp) > CLOCK_SKEW_MS) {
    return refuse('timestamp_skew', cmError('CM_ERR_TIMESTAMP_SKEW', `hello timestamp ${frame.timestamp} is more than ${CLOCK_SKEW_MS / 1000} s from the broker's clock (${now})`));
  }
  if (frame.type === 'hello') {
    if (!verify(frame.signature, helloSigningString(frame.meshId, frame.memberKey, frame.timestamp), frame.memberKey)) {
      return refuse('bad_signature', cmError('CM_ERR_BAD_SIGNATURE', `hello signature does not match member key ${frame.memberKey.slice(0, 12)}…`));
    }
  } else {
    const { attestation } = frame;
    if (attestation.expiresAt <= now) {
      return refuse('expired', cmError('CM_ERR_EXPIRED', `session attestation expired at ${new Date(attestation.expiresAt).toISOString()}`));
    }
    if (attestation.expiresAt > now + MAX_ATTESTATION_MS) {
      return refuse('expired', cmError('CM_ERR_EXPIRED', `session attestation expires ${Math.round((attestation.expiresAt - now) / 3_600_000)} h ahead; at most 24 h is accepted`));
    }
    const attested = attestationSigningString(frame.meshId, frame.memberKey, frame.sessionKey, attestation.expiresAt);
    if (!verify(attestation.signature, attested, frame.memberKey)) {
      return refuse('bad_signature', cmError('CM_ERR_BAD_SIGNATURE', `session attestation is not signed by member key ${frame.memberKey.slice(0, 12)}…`));
    }
    const signed = sessionHelloSigningString(frame.meshId, frame.memberKey, frame.sessionKey, frame.timestamp);
    if (!verify(frame.signature, signed, frame.sessionKey)) {
      return refuse('bad_signature', cmError('CM_ERR_BAD_SIGNATURE', `session_hello signature does not match session key ${frame.sessionKey.slice(0, 12)}…`));
    }
  }
  // A valid hello replayed within the clock window would otherwise open a second socket
  // as its author (and could ack away that peer's messages).
  if (!replay.firstUse(frame.signature, frame.timestamp + CLOCK_SKEW_MS)) {
    return refuse('bad_signature', cmError('CM_ERR_REPLAYED', 'this hello was already used; sign a fresh one for every connect'));
  }
  const { rows } = await pool.query(query('member_for_hello', [frame.meshId, frame.memberKey]));
  const member = rows[0];
  // A ban outranks everything else about the row: it always closes 4002.
  if (member?.revoked === true) {
    return refuse('revoked', cmError('CM_ERR_REVOKED', `member ${member.name} is banned from mesh ${frame.meshId}`), CLOSE_REVOKED);
  }
  // Unknown mesh and unknown member answer the same: a stranger learns nothing about meshes.
  if (member === undefined || member.left) {
    return refuse('unauthorized', cmError('CM_ERR_UNAUTHORIZED', `key ${frame.memberKey.slice(0, 12)}… is not a member of mesh ${frame.meshId}`, {
      hint: 'join the mesh with an invite first (claudemesh join <token>)',
    }));
  }
  const session = frame.type === 'session_hello';
  return {
    meshId: frame.meshId,
    meshName: member.mesh_name,
    memberId: String(member.id),
    memberKey: frame.memberKey,
    memberRole: member.role,
    key: session ? frame.sessionKey : frame.memberKey,
    role: session ? 'session' : 'control',
    name: frame.name ?? member.name,
  };
}

export function isRefusal(value: PeerIdentity | Refusal): value is Refusal {
  return 'error' in value;
}
