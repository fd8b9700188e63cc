// Signed HTTP requests: how a client proves which key sends a membership or hook request.
// The signature covers method, path, mesh id, the body's sha256 and a timestamp, under the
// "http" purpose, so it is valid for that one request only; the broker accepts it within
// CLOCK_SKEW_MS of its own clock and refuses a second use of the same signature.
// Nothing in a body or header is trusted as identity except the key that signed.

import { cmError } from './errors.ts';
import { PUBLIC_KEY_HEX, sha256Hex, sign, signingString, verify } from './crypto.ts';

export const CLOCK_SKEW_MS = 60_000;
export const HEADER_KEY = 'x-claudemesh-key';
export const HEADER_MESH = 'x-claudemesh-mesh';
export const HEADER_TIMESTAMP = 'x-claudemesh-timestamp';
export const HEADER_SIGNATURE = 'x-claudemesh-signature';
const PURPOSE = 'http';

export interface SignRequestInput {
  method: string;
  path: string;
  body: Buffer | string;
  publicKey: string;
  secretKey: Buffer;
  meshId?: string;
  now?: number;
}

export function requestSigningString(method: string, path: string, meshId: string, body: Buffer | string, timestamp: number): Buffer {
  return signingString(PURPOSE, [method.toUpperCase(), path, meshId, sha256Hex(body), timestamp]);
}

/** Headers to add to a request so the broker can prove who sent it. */
export function signRequest(input: SignRequestInput): Record<string, string> {
  const timestamp = input.now ?? Date.now();
  const meshId = input.meshId ?? '';
  const headers: Record<string, string> = {
    [HEADER_KEY]: input.publicKey,
    [HEADER_TIMESTAMP]: String(timestamp),
    [HEADER_SIGNATURE]: sign(requestSigningString(input.method, input.path, meshId, input.body, timestamp), input.secretKey),
  };
  if (meshId !== '') headers[HEADER_MESH] = meshId;
  return headers;
}

export interface VerifiedRequest {
  publicKey: string;
  meshId: string;
  timestamp: number;
  /** the signature, to be recorded once by the verifier (a replay record) */
  signature: string;
}

export interface VerifyRequestInput {
  method: string;
  path: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  body: Buffer;
  now: number;
}

function header(headers: VerifyRequestInput['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? undefined : value;
}

/**
 * Throws CM_ERR_UNAUTHORIZED / CM_ERR_TIMESTAMP_SKEW / CM_ERR_BAD_SIGNATURE. A valid request
 * may still be a replay inside the clock window: the verifier records `signature` once (the
 * broker does it in Postgres, so the record holds across restarts and instances).
 */
export function verifySignedRequest(input: VerifyRequestInput): VerifiedRequest {
  const publicKey = header(input.headers, HEADER_KEY);
  const rawTimestamp = header(input.headers, HEADER_TIMESTAMP);
  const signature = header(input.headers, HEADER_SIGNATURE);
  const meshId = header(input.headers, HEADER_MESH) ?? '';
  if (publicKey === undefined || rawTimestamp === undefined || signature === undefined) {
    throw cmError('CM_ERR_UNAUTHORIZED', `this request must be signed: headers ${HEADER_KEY}, ${HEADER_TIMESTAMP} and ${HEADER_SIGNATURE} are required`);
  }
  if (!PUBLIC_KEY_HEX.test(publicKey)) {
    throw cmError('CM_ERR_UNAUTHORIZED', `${HEADER_KEY} must be 64 lowercase hex characters, received ${JSON.stringify(publicKey.slice(0, 80))}`);
  }
  const timestamp = /^\d{1,16}$/.test(rawTimestamp) ? Number(rawTimestamp) : Number.NaN;
  if (!Number.isSafeInteger(timestamp) || Math.abs(input.now - timestamp) > CLOCK_SKEW_MS) {
    throw cmError('CM_ERR_TIMESTAMP_SKEW', `request timestamp ${JSON.stringify(rawTimestamp.slice(0, 20))} is more than ${CLOCK_SKEW_MS / 1000} s from the broker's clock (${input.now})`, {
      details: { received: rawTimestamp.slice(0, 20), brokerTime: input.now },
    });
  }
  const message = requestSigningString(input.method, input.path, meshId, input.body, timestamp);
  if (!verify(signature, message, publicKey)) {
    throw cmError('CM_ERR_BAD_SIGNATURE', `the signature does not match key ${publicKey.slice(0, 12)}… for ${input.method} ${input.path}`);
  }
  return { publicKey, meshId, timestamp, signature };
}
