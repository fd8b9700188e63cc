// Per-key token buckets for rate limiting; every caller (lib/broker/send.ts, lib/broker/hook.ts)
// spends one token per request. Refill is continuous (no timer): a bucket is credited with the
// tokens earned since it was last read, so an idle key costs nothing.

export const MAX_TRACKED_KEYS = 10_000;
// Refill arithmetic is floating point; this slack keeps a wait of exactly retryAfterMs() from
// failing by a rounding error of a billionth of a token.
const TOKEN_EPSILON = 1e-9;
// Sweeping idle buckets scans every key, so at the cap it runs at most once per this fraction of
// maxKeys insertions and the oldest key is evicted in between: inserts stay O(1) amortised.
const SWEEP_INTERVAL_FRACTION = 0.1;

interface Bucket { tokens: number; updatedAt: number }
interface Options {
  capacity: number;
  refillPerSecond: number;
  /** millisecond clock, Date.now by default; injectable so tests never sleep */
  now?: () => number;
  maxKeys?: number;
}

/** Tracks at most maxKeys keys, so a stranger cycling keys cannot grow memory. */
export class KeyedTokenBuckets {
  readonly #capacity: number;
  readonly #refillPerSecond: number;
  readonly #now: () => number;
  readonly #maxKeys: number;
  readonly #buckets = new Map<string, Bucket>();
  #insertsSinceSweep = 0;

  constructor({ capacity, refillPerSecond, now = Date.now, maxKeys = MAX_TRACKED_KEYS }: Options) {
    // Below one token a bucket could never grant a request.
    if (!(Number.isFinite(capacity) && capacity >= 1)) throw new TypeError(`capacity must be a finite number >= 1, received ${String(capacity)}`);
    if (!(Number.isFinite(refillPerSecond) && refillPerSecond > 0)) throw new TypeError(`refillPerSecond must be a finite number > 0, received ${String(refillPerSecond)}`);
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) throw new TypeError(`maxKeys must be an integer >= 1, received ${String(maxKeys)}`);
    this.#capacity = capacity;
    this.#refillPerSecond = refillPerSecond;
    this.#now = now;
    this.#maxKeys = maxKeys;
  }

  take(key: string): boolean {
    const bucket = this.#buckets.get(key) ?? this.#add(key);
    if (this.#refill(bucket) + TOKEN_EPSILON < 1) return false;
    bucket.tokens = Math.max(0, bucket.tokens - 1);
    return true;
  }

  /** ms until `key` has a token, 0 if it has one now; rounded up so that waiting that long is always enough. */
  retryAfterMs(key: string): number {
    const bucket = this.#buckets.get(key); // never creates one: an unknown key counts as a full bucket
    const missing = bucket === undefined ? 0 : 1 - this.#refill(bucket);
    return missing <= TOKEN_EPSILON ? 0 : Math.ceil((missing * 1000) / this.#refillPerSecond);
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Credits what the bucket earned since it was last read; returns its tokens. */
  #refill(bucket: Bucket): number {
    const now = this.#now();
    // A clock that steps backwards earns nothing and does not move the mark back, so the
    // same interval is never credited twice once the clock catches up.
    if (now > bucket.updatedAt) {
      bucket.tokens = Math.min(this.#capacity, bucket.tokens + ((now - bucket.updatedAt) * this.#refillPerSecond) / 1000);
      bucket.updatedAt = now;
    }
    return bucket.tokens;
  }

  #add(key: string): Bucket {
    if (this.#buckets.size >= this.#maxKeys) {
      if (this.#insertsSinceSweep >= Math.ceil(this.#maxKeys * SWEEP_INTERVAL_FRACTION)) {
        this.#insertsSinceSweep = 0;
        // A bucket that refilled to capacity is indistinguishable from a new one: dropping it loses nothing.
        for (const [idle, bucket] of this.#buckets) if (this.#refill(bucket) >= this.#capacity) this.#buckets.delete(idle);
      }
      // Map iteration order is insertion order, so the first key is the oldest.
      const oldest = this.#buckets.keys().next();
      if (this.#buckets.size >= this.#maxKeys && oldest.done !== true) this.#buckets.delete(oldest.value);
    }
    const bucket = { tokens: this.#capacity, updatedAt: this.#now() };
    this.#buckets.set(key, bucket);
    this.#insertsSinceSweep += 1;
    return bucket;
  }
}
