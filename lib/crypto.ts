// Signatures and end-to-end encryption, on libsodium (sodium-native).
// Identities are ed25519 keys, shown as 64 lowercase hex characters. Every signed string is
// domain-separated ("claudemesh/v1/<purpose>" first) so a signature made for one purpose can
// never be replayed as another. Envelopes are crypto_box (x25519 + XSalsa20-Poly1305) with
// the ed25519 keys converted to x25519, and a fresh random 24-byte nonce each.
//
// The box is computed in its two halves: the key a pair of identities shares (x25519, then
// HSalsa20: crypto_box_beforenm), kept per pair, then a secretbox with it. The bytes on the
// wire are exactly crypto_box_easy's; what changes is that a daemon receiving 1,000 messages
// from one peer does the curve arithmetic once, not 1,000 times (docs/benchmarks.md).

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { hsalsa20 } from './hsalsa20.ts';

// libsodium is loaded on the first call that needs it, not with this module: the key and
// signing-string formats below are also what the CLI's everyday verbs check, and loading the
// native addon would cost them ~25 ms for nothing (docs/benchmarks.md, *The everyday CLI*).
let loadedSodium: typeof import('sodium-native') | undefined;
function sodium(): typeof import('sodium-native') {
  loadedSodium ??= createRequire(import.meta.url)('sodium-native') as typeof import('sodium-native');
  return loadedSodium;
}

export const PUBLIC_KEY_BYTES = 32;
export const SECRET_KEY_BYTES = 64;
export const SIGNATURE_BYTES = 64;
export const NONCE_BYTES = 24;
export const BOX_MAC_BYTES = 16;
const X25519_KEY_BYTES = 32;
export const PUBLIC_KEY_HEX = /^[0-9a-f]{64}$/;
export const SIGNATURE_HEX = /^[0-9a-f]{128}$/;
const DOMAIN_PREFIX = 'claudemesh/v1/';

export interface SigningKeyPair {
  /** 64 hex characters */
  publicKey: string;
  /** 64 bytes (seed + public key); never leaves the process that owns it */
  secretKey: Buffer;
}

export function generateKeyPair(): SigningKeyPair {
  const publicKey = Buffer.alloc(PUBLIC_KEY_BYTES);
  const secretKey = Buffer.alloc(SECRET_KEY_BYTES);
  sodium().crypto_sign_keypair(publicKey, secretKey);
  return { publicKey: publicKey.toString('hex'), secretKey };
}

/** Rebuild a key pair from its stored secret (the public key is its second half). */
export function keyPairFromSecret(secretKey: Buffer): SigningKeyPair {
  if (secretKey.length !== SECRET_KEY_BYTES) throw new TypeError(`secret key must be ${SECRET_KEY_BYTES} bytes, received ${secretKey.length}`);
  return { publicKey: secretKey.subarray(PUBLIC_KEY_BYTES).toString('hex'), secretKey };
}

export function isPublicKey(value: unknown): value is string {
  return typeof value === 'string' && PUBLIC_KEY_HEX.test(value);
}

/** The exact bytes that get signed: the purpose, then each field on its own line. */
export function signingString(purpose: string, fields: ReadonlyArray<string | number>): Buffer {
  for (const field of fields) {
    if (String(field).includes('\n')) throw new TypeError(`a signed field cannot contain a newline (purpose ${purpose})`);
  }
  return Buffer.from(`${DOMAIN_PREFIX}${purpose}\n${fields.join('\n')}`, 'utf8');
}

export function sign(message: Buffer, secretKey: Buffer): string {
  const signature = Buffer.alloc(SIGNATURE_BYTES);
  sodium().crypto_sign_detached(signature, message, secretKey);
  return signature.toString('hex');
}

/** Never throws: a malformed key or signature is simply not valid. */
export function verify(signatureHex: unknown, message: Buffer, publicKeyHex: unknown): boolean {
  if (typeof signatureHex !== 'string' || !SIGNATURE_HEX.test(signatureHex)) return false;
  if (!isPublicKey(publicKeyHex)) return false;
  return sodium().crypto_sign_verify_detached(Buffer.from(signatureHex, 'hex'), message, Buffer.from(publicKeyHex, 'hex'));
}

// Converting an ed25519 public key to its x25519 form decompresses a curve point: about
// 150 µs, three times the box operation itself. Keys are public and peers few, so the
// conversions are kept (the least recently used dropped past this many).
const MAX_CONVERTED_KEYS = 4_096;
const converted = new Map<string, Buffer | null>();
// Shared keys are secrets: they stay in this process's memory, like the secret keys they come
// from, and are never written, logged or sent. One per (own key, peer key) pair: a daemon with
// a few sessions in a mesh of 1,000 uses several thousand, and the bench harness, 100 peers
// in one process, 9,900. Past the bound the least recently used is dropped (about 9 MB when
// full); at 4,096, first in first out, the harness recomputed most of them, 90 µs each.
const MAX_SHARED_KEYS = 16_384;
const sharedKeys = new Map<string, Buffer>();

/** The entry under `name`, moved to the young end of `map` (away from the next drop). */
function recall<V>(map: Map<string, V>, name: string): V | undefined {
  const value = map.get(name);
  if (value !== undefined) {
    map.delete(name);
    map.set(name, value);
  }
  return value;
}

/** Keep `value` under `name`, dropping the least recently kept or recalled entry (through `drop`) past `max`. */
function keep<V>(map: Map<string, V>, max: number, name: string, value: V, drop?: (old: V) => void): V {
  if (map.size >= max) {
    const oldest = map.keys().next().value ?? '';
    const old = map.get(oldest);
    if (old !== undefined) drop?.(old);
    map.delete(oldest);
  }
  map.set(name, value);
  return value;
}

function x25519Public(publicKeyHex: string): Buffer | undefined {
  const known = recall(converted, publicKeyHex);
  if (known !== undefined) return known ?? undefined;
  let out: Buffer | null = Buffer.alloc(X25519_KEY_BYTES);
  try {
    sodium().crypto_sign_ed25519_pk_to_curve25519(out, Buffer.from(publicKeyHex, 'hex'));
  } catch {
    out = null; // not a valid curve point
  }
  return keep(converted, MAX_CONVERTED_KEYS, publicKeyHex, out) ?? undefined;
}

/** Whether a key can be encrypted to: 64 hex that is also a point on the curve. */
export function isEncryptionKey(publicKeyHex: string): boolean {
  return isPublicKey(publicKeyHex) && x25519Public(publicKeyHex) !== undefined;
}

function x25519Secret(secretKey: Buffer): Buffer {
  const out = Buffer.alloc(X25519_KEY_BYTES);
  sodium().crypto_sign_ed25519_sk_to_curve25519(out, secretKey);
  return out;
}

/**
 * The secretbox key `ownSecretKey` shares with the holder of `peer` (its x25519 form), as
 * crypto_box_beforenm makes it; undefined when the shared point is the identity (a
 * low-order peer key, which libsodium refuses too).
 */
function sharedKey(ownSecretKey: Buffer, peerHex: string, peer: Buffer): Buffer | undefined {
  // The secret's second half is its public key: a cheap, non-secret name for it.
  const name = `${ownSecretKey.toString('hex', PUBLIC_KEY_BYTES)}:${peerHex}`;
  const known = recall(sharedKeys, name);
  if (known !== undefined) return known;
  const secret = x25519Secret(ownSecretKey);
  const point = Buffer.alloc(X25519_KEY_BYTES);
  try {
    sodium().crypto_scalarmult(point, secret, peer);
  } catch {
    return undefined;
  } finally {
    sodium().sodium_memzero(secret);
  }
  const key = hsalsa20(point);
  sodium().sodium_memzero(point);
  return keep(sharedKeys, MAX_SHARED_KEYS, name, key, (old) => old.fill(0));
}

export interface Envelope {
  nonce: Buffer;
  ciphertext: Buffer;
}

/** Encrypt for one recipient key, authenticated as the sender's key. */
export function seal(plaintext: Buffer, recipientPublicKey: string, senderSecretKey: Buffer): Envelope {
  const recipient = isPublicKey(recipientPublicKey) ? x25519Public(recipientPublicKey) : undefined;
  const key = recipient === undefined ? undefined : sharedKey(senderSecretKey, recipientPublicKey, recipient);
  if (key === undefined) throw new TypeError(`cannot encrypt to "${recipientPublicKey}": not an ed25519 public key`);
  const nonce = Buffer.alloc(NONCE_BYTES);
  sodium().randombytes_buf(nonce);
  const ciphertext = Buffer.alloc(plaintext.length + BOX_MAC_BYTES);
  sodium().crypto_secretbox_easy(ciphertext, plaintext, nonce, key);
  return { nonce, ciphertext };
}

/** Decrypt an envelope from `senderPublicKey`; undefined when it does not authenticate. */
export function open(envelope: Envelope, senderPublicKey: string, recipientSecretKey: Buffer): Buffer | undefined {
  if (envelope.nonce.length !== NONCE_BYTES || envelope.ciphertext.length < BOX_MAC_BYTES) return undefined;
  const sender = isPublicKey(senderPublicKey) ? x25519Public(senderPublicKey) : undefined;
  const key = sender === undefined ? undefined : sharedKey(recipientSecretKey, senderPublicKey, sender);
  if (key === undefined) return undefined;
  const plaintext = Buffer.alloc(envelope.ciphertext.length - BOX_MAC_BYTES);
  const ok = sodium().crypto_secretbox_open_easy(plaintext, envelope.ciphertext, envelope.nonce, key);
  return ok ? plaintext : undefined;
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function randomId(bytes = 16): string {
  const buffer = Buffer.alloc(bytes);
  sodium().randombytes_buf(buffer);
  return buffer.toString('base64url');
}
