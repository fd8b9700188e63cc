// HSalsa20 is checked against libsodium itself: a key made with it must open what
// crypto_box_easy sealed, and seal what crypto_box_open_easy opens, for many random pairs.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { hsalsa20 } from '../../lib/hsalsa20.ts';

const sodium = createRequire(import.meta.url)('sodium-native') as typeof import('sodium-native') & {
  crypto_box_keypair(publicKey: Uint8Array, secretKey: Uint8Array): void;
};
const PAIRS = 50;

function boxPair(): { publicKey: Buffer; secretKey: Buffer } {
  const publicKey = Buffer.alloc(32);
  const secretKey = Buffer.alloc(32);
  sodium.crypto_box_keypair(publicKey, secretKey);
  return { publicKey, secretKey };
}

/** crypto_box_beforenm, from its two halves. */
function beforenm(peerPublic: Buffer, ownSecret: Buffer): Buffer {
  const point = Buffer.alloc(32);
  sodium.crypto_scalarmult(point, ownSecret, peerPublic);
  return hsalsa20(point);
}

describe('hsalsa20', () => {
  it('makes the key crypto_box uses, both ways, for many pairs', () => {
    for (let i = 0; i < PAIRS; i += 1) {
      const alice = boxPair();
      const bob = boxPair();
      const nonce = Buffer.alloc(24);
      sodium.randombytes_buf(nonce);
      const text = Buffer.from(`message ${i} ${'x'.repeat(i)}`);
      const boxed = Buffer.alloc(text.length + 16);
      sodium.crypto_box_easy(boxed, text, nonce, bob.publicKey, alice.secretKey);
      const opened = Buffer.alloc(text.length);
      assert.equal(sodium.crypto_secretbox_open_easy(opened, boxed, nonce, beforenm(alice.publicKey, bob.secretKey)), true, `pair ${i}`);
      assert.deepEqual(opened, text);
      const sealed = Buffer.alloc(text.length + 16);
      sodium.crypto_secretbox_easy(sealed, text, nonce, beforenm(bob.publicKey, alice.secretKey));
      assert.deepEqual(sealed, boxed, 'the same bytes as crypto_box_easy');
    }
  });

  it('depends on every byte of its key and input', () => {
    const key = Buffer.alloc(32, 7);
    const base = hsalsa20(key);
    for (const index of [0, 15, 16, 31]) {
      const changed = Buffer.from(key);
      changed[index] = (changed[index] ?? 0) ^ 1;
      assert.notDeepEqual(hsalsa20(changed), base, `key byte ${index}`);
    }
    const input = Buffer.alloc(16);
    input[15] = 1;
    assert.notDeepEqual(hsalsa20(key, input), base, 'input byte 15');
    assert.deepEqual(hsalsa20(key), base, 'deterministic');
  });

  it('refuses a key or input of the wrong size, naming the size received', () => {
    assert.throws(() => hsalsa20(Buffer.alloc(31)), /32 bytes, received 31/);
    assert.throws(() => hsalsa20(Buffer.alloc(32), Buffer.alloc(8)), /16 bytes, received 8/);
  });
});
