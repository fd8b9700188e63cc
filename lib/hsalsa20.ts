// HSalsa20, the one step of crypto_box that sodium-native does not export.
//
// crypto_box is x25519, then HSalsa20 of the shared point (zero input) as the key of an
// XSalsa20-Poly1305 secretbox. libsodium computes both again for every box; a daemon that
// receives thousands of messages from the same few peers should compute them once per peer
// (lib/crypto.ts keeps the result). sodium-native exports crypto_scalarmult and the
// secretbox but not crypto_box_beforenm nor crypto_core_hsalsa20, so this file does that
// one step: Salsa20's 20 rounds over (constant, key, input), without the final addition,
// keeping words 0, 5, 10, 15, 6, 7, 8, 9. It runs once per pair of keys, so it is written
// for clarity, not speed. test/lib/hsalsa20.test.ts checks it against crypto_box itself.

const SIGMA = Buffer.from('expand 32-byte k', 'latin1');
const HSALSA20_KEY_BYTES = 32;
const HSALSA20_INPUT_BYTES = 16;
const ROUNDS = 20;
/** where the output words sit in the state */
const OUTPUT_WORDS = [0, 5, 10, 15, 6, 7, 8, 9] as const;

const rotl = (value: number, bits: number) => (value << bits) | (value >>> (32 - bits));

/** One quarter round on state words a, b, c, d (Salsa20's add-rotate-xor chain). */
function quarter(x: Uint32Array, a: number, b: number, c: number, d: number): void {
  x[b] = x[b]! ^ rotl((x[a]! + x[d]!) | 0, 7);
  x[c] = x[c]! ^ rotl((x[b]! + x[a]!) | 0, 9);
  x[d] = x[d]! ^ rotl((x[c]! + x[b]!) | 0, 13);
  x[a] = x[a]! ^ rotl((x[d]! + x[c]!) | 0, 18);
}

export function hsalsa20(key: Uint8Array, input: Uint8Array = Buffer.alloc(HSALSA20_INPUT_BYTES)): Buffer {
  if (key.length !== HSALSA20_KEY_BYTES) throw new TypeError(`hsalsa20 key must be ${HSALSA20_KEY_BYTES} bytes, received ${key.length}`);
  if (input.length !== HSALSA20_INPUT_BYTES) throw new TypeError(`hsalsa20 input must be ${HSALSA20_INPUT_BYTES} bytes, received ${input.length}`);
  const k = Buffer.from(key.buffer, key.byteOffset, key.length);
  const n = Buffer.from(input.buffer, input.byteOffset, input.length);
  const x = new Uint32Array(16);
  for (let i = 0; i < 4; i += 1) {
    x[i * 5] = SIGMA.readUInt32LE(i * 4); // words 0, 5, 10, 15
    x[1 + i] = k.readUInt32LE(i * 4); // words 1-4: first half of the key
    x[11 + i] = k.readUInt32LE(16 + i * 4); // words 11-14: second half
    x[6 + i] = n.readUInt32LE(i * 4); // words 6-9: the input
  }
  for (let round = 0; round < ROUNDS; round += 2) {
    // columns
    quarter(x, 0, 4, 8, 12);
    quarter(x, 5, 9, 13, 1);
    quarter(x, 10, 14, 2, 6);
    quarter(x, 15, 3, 7, 11);
    // rows
    quarter(x, 0, 1, 2, 3);
    quarter(x, 5, 6, 7, 4);
    quarter(x, 10, 11, 8, 9);
    quarter(x, 15, 12, 13, 14);
  }
  const out = Buffer.alloc(HSALSA20_KEY_BYTES);
  OUTPUT_WORDS.forEach((word, i) => out.writeUInt32LE(x[word]!, i * 4));
  x.fill(0);
  return out;
}
