// The part of sodium-native's API that claudemesh uses (the package ships no types).
declare module 'sodium-native' {
  export function randombytes_buf(buffer: Uint8Array): void;
  export function crypto_sign_keypair(publicKey: Uint8Array, secretKey: Uint8Array): void;
  export function crypto_sign_seed_keypair(publicKey: Uint8Array, secretKey: Uint8Array, seed: Uint8Array): void;
  export function crypto_sign_detached(signature: Uint8Array, message: Uint8Array, secretKey: Uint8Array): void;
  export function crypto_sign_verify_detached(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
  export function crypto_sign_ed25519_pk_to_curve25519(x25519PublicKey: Uint8Array, ed25519PublicKey: Uint8Array): void;
  export function crypto_sign_ed25519_sk_to_curve25519(x25519SecretKey: Uint8Array, ed25519SecretKey: Uint8Array): void;
  export function crypto_box_easy(ciphertext: Uint8Array, message: Uint8Array, nonce: Uint8Array, publicKey: Uint8Array, secretKey: Uint8Array): void;
  export function crypto_box_open_easy(message: Uint8Array, ciphertext: Uint8Array, nonce: Uint8Array, publicKey: Uint8Array, secretKey: Uint8Array): boolean;
  export function crypto_scalarmult(shared: Uint8Array, secretKey: Uint8Array, publicKey: Uint8Array): void;
  export function crypto_secretbox_easy(ciphertext: Uint8Array, message: Uint8Array, nonce: Uint8Array, key: Uint8Array): void;
  export function crypto_secretbox_open_easy(message: Uint8Array, ciphertext: Uint8Array, nonce: Uint8Array, key: Uint8Array): boolean;
  export function sodium_memzero(buffer: Uint8Array): void;
}
