import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { generateKeyPair, isPublicKey, keyPairFromSecret, open, seal, sha256Hex, sign, signingString, verify } from '../../lib/crypto.ts';

describe('signatures', () => {
  it('verifies what the key signed and nothing else', () => {
    const alice = generateKeyPair();
    const message = signingString('hello', ['mesh_12345678', alice.publicKey, 1]);
    const signature = sign(message, alice.secretKey);
    assert.equal(verify(signature, message, alice.publicKey), true);
    assert.equal(verify(signature, signingString('hello', ['mesh_12345678', alice.publicKey, 2]), alice.publicKey), false);
    assert.equal(verify(signature, message, generateKeyPair().publicKey), false);
  });

  it('separates purposes: a signature for one purpose is not valid for another', () => {
    const alice = generateKeyPair();
    const fields = ['mesh_12345678', alice.publicKey, 5];
    const signature = sign(signingString('hello', fields), alice.secretKey);
    assert.equal(verify(signature, signingString('session-hello', fields), alice.publicKey), false);
  });

  it('refuses fields that could shift into the next line', () => {
    assert.throws(() => signingString('hello', ['a\nb']), TypeError);
  });

  it('never throws on malformed keys or signatures', () => {
    const message = Buffer.from('x');
    for (const [signature, key] of [['zz', 'a'.repeat(64)], ['a'.repeat(128), 'not-a-key'], [undefined, undefined], [42, {}]] as const) {
      assert.equal(verify(signature, message, key), false);
    }
    assert.equal(isPublicKey('A'.repeat(64)), false, 'uppercase hex is not canonical');
  });

  it('rebuilds a key pair from its secret', () => {
    const pair = generateKeyPair();
    assert.equal(keyPairFromSecret(pair.secretKey).publicKey, pair.publicKey);
    assert.throws(() => keyPairFromSecret(Buffer.alloc(10)), TypeError);
  });
});

describe('envelopes', () => {
  it('opens for the recipient from the sender, with a fresh nonce each time', () => {
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    const first = seal(Buffer.from('secret plan'), bob.publicKey, alice.secretKey);
    const second = seal(Buffer.from('secret plan'), bob.publicKey, alice.secretKey);
    assert.notDeepEqual(first.nonce, second.nonce);
    assert.equal(first.nonce.length, 24);
    assert.equal(open(first, alice.publicKey, bob.secretKey)?.toString(), 'secret plan');
  });

  it('does not open for anyone else, from anyone else, or after tampering', () => {
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    const eve = generateKeyPair();
    const envelope = seal(Buffer.from('for bob'), bob.publicKey, alice.secretKey);
    assert.equal(open(envelope, alice.publicKey, eve.secretKey), undefined);
    assert.equal(open(envelope, eve.publicKey, bob.secretKey), undefined);
    const tampered = { nonce: envelope.nonce, ciphertext: Buffer.from(envelope.ciphertext) };
    tampered.ciphertext[0] = (tampered.ciphertext[0] ?? 0) ^ 1;
    assert.equal(open(tampered, alice.publicKey, bob.secretKey), undefined);
    assert.equal(open({ nonce: Buffer.alloc(3), ciphertext: envelope.ciphertext }, alice.publicKey, bob.secretKey), undefined);
  });

  it('refuses to encrypt to something that is not a key', () => {
    assert.throws(() => seal(Buffer.from('x'), 'nope', generateKeyPair().secretKey), TypeError);
  });

  it('hashes with sha256', () => {
    assert.equal(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});

describe('envelopes on the wire', () => {
  const sodium = createRequire(import.meta.url)('sodium-native') as typeof import('sodium-native');
  const x25519 = (pair: { publicKey: string; secretKey: Buffer }) => {
    const publicKey = Buffer.alloc(32);
    const secretKey = Buffer.alloc(32);
    sodium.crypto_sign_ed25519_pk_to_curve25519(publicKey, Buffer.from(pair.publicKey, 'hex'));
    sodium.crypto_sign_ed25519_sk_to_curve25519(secretKey, pair.secretKey);
    return { publicKey, secretKey };
  };

  it('are crypto_box_easy exactly, both ways, with the shared key kept between messages', () => {
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    for (const text of ['first', 'second, from the kept key', '']) {
      const envelope = seal(Buffer.from(text), bob.publicKey, alice.secretKey);
      const plain = Buffer.alloc(envelope.ciphertext.length - 16);
      assert.equal(sodium.crypto_box_open_easy(plain, envelope.ciphertext, envelope.nonce, x25519(alice).publicKey, x25519(bob).secretKey), true, text);
      assert.equal(plain.toString(), text);
      const boxed = Buffer.alloc(text.length + 16);
      sodium.crypto_box_easy(boxed, Buffer.from(text), envelope.nonce, x25519(alice).publicKey, x25519(bob).secretKey);
      assert.equal(open({ nonce: envelope.nonce, ciphertext: boxed }, bob.publicKey, alice.secretKey)?.toString(), text, 'what libsodium sealed opens');
    }
  });

  it('keep one key per pair of identities: a third party’s envelope does not open with another pair’s key', () => {
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    const carol = generateKeyPair();
    const toBob = seal(Buffer.from('for bob'), bob.publicKey, alice.secretKey);
    assert.equal(open(toBob, alice.publicKey, bob.secretKey)?.toString(), 'for bob');
    const toCarol = seal(Buffer.from('for carol'), carol.publicKey, alice.secretKey);
    assert.equal(open(toCarol, alice.publicKey, bob.secretKey), undefined, 'bob cannot read carol’s');
    assert.equal(open(toCarol, alice.publicKey, carol.secretKey)?.toString(), 'for carol');
    assert.equal(open(toBob, carol.publicKey, bob.secretKey), undefined, 'nor take it as from carol');
  });
});

