// Token buckets for rate limiting. Refill is continuous (no timer): each call first credits
// the tokens earned since the previous call, so an idle bucket costs nothing.

export interface TokenBucketOptions {
  capacity: number;
  refillPerSecond: number;
  /** millisecond clock, Date.now by default; injectable so tests never sleep */
  now?: () => number;
}

export interface KeyedTokenBucketsOptions extends TokenBucketOptions {
  maxKeys?: number;
}

export const MAX_TRACKED_KEYS = 10_000;
const MILLISECONDS_PER_SECOND = 1000;
const DEFAULT_COUNT = 1;
// Refill arithmetic is floating point; this slack keeps a wait of exactly retryAfterMs() from
// failing by a rounding error of a billionth of a token.
const TOKEN_EPSILON = 1e-9;
// Sweeping idle buckets scans the whole map, so at the cap it runs at most once per this
// fraction of maxKeys insertions; between sweeps the oldest key is evicted. Keeps inserts O(1) amortised.
const SWEEP_INTERVAL_FRACTION = 0.1;

function requirePositiveFinite(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`${name} must be a finite number > 0, received ${String(value)}`);
  }
  return value;
}

function requireCount(count: unknown): number {
  if (typeof count !== 'number' || !Number.isFinite(count) || count < 0) {
    throw new RangeError(`count must be a finite number >= 0, received ${String(count)}`);
  }
  return count;
}

export class TokenBucket {
  readonly #capacity: number;
  readonly #refillPerSecond: number;
  readonly #now: () => number;
  #tokens: number;
  #updatedAt: number;

  constructor(options: TokenBucketOptions) {
    this.#capacity = requirePositiveFinite('capacity', options.capacity);
    this.#refillPerSecond = requirePositiveFinite('refillPerSecond', options.refillPerSecond);
    this.#now = options.now ?? Date.now;
    this.#tokens = this.#capacity;
    this.#updatedAt = this.#now();
  }

  #refill(): void {
    const now = this.#now();
    // A clock that steps backwards earns nothing and does not move the mark back, so the
    // same interval is never credited twice once the clock catches up.
    if (now <= this.#updatedAt) return;
    const earned = ((now - this.#updatedAt) * this.#refillPerSecond) / MILLISECONDS_PER_SECOND;
    this.#tokens = Math.min(this.#capacity, this.#tokens + earned);
    this.#updatedAt = now;
  }

  /** Takes `count` tokens if all are available; takes nothing otherwise. */
  take(count: number = DEFAULT_COUNT): boolean {
    requireCount(count);
    this.#refill();
    if (this.#tokens + TOKEN_EPSILON < count) return false;
    this.#tokens = Math.max(0, this.#tokens - count);
    return true;
  }

  get tokens(): number {
    this.#refill();
    return this.#tokens;
  }

  /** ms until `count` tokens are available (0 if now); Infinity when count exceeds capacity. */
  retryAfterMs(count: number = DEFAULT_COUNT): number {
    requireCount(count);
    if (count > this.#capacity) return Infinity;
    this.#refill();
    const missing = count - this.#tokens;
    if (missing <= TOKEN_EPSILON) return 0;
    // Rounded up so that waiting the returned time is always enough.
    return Math.ceil((missing * MILLISECONDS_PER_SECOND) / this.#refillPerSecond);
  }
}

/** One bucket per key, with at most maxKeys tracked so a stranger cycling keys cannot grow memory. */
export class KeyedTokenBuckets {
  readonly #options: TokenBucketOptions;
  readonly #maxKeys: number;
  readonly #buckets = new Map<string, TokenBucket>();
  #insertsSinceSweep = 0;

  constructor(options: KeyedTokenBucketsOptions) {
    const maxKeys = options.maxKeys ?? MAX_TRACKED_KEYS;
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw new TypeError(`maxKeys must be an integer >= 1, received ${String(maxKeys)}`);
    }
    // Build one bucket up front so bad capacity/refill options fail here, not on first use.
    void new TokenBucket(options);
    this.#options = { capacity: options.capacity, refillPerSecond: options.refillPerSecond, now: options.now ?? Date.now };
    this.#maxKeys = maxKeys;
  }

  take(key: string, count: number = DEFAULT_COUNT): boolean {
    requireCount(count); // before #bucketFor, so a rejected call never tracks a new key
    return this.#bucketFor(key).take(count);
  }

  /** Never creates a bucket: an unknown key is answered as a full bucket would be. */
  retryAfterMs(key: string, count: number = DEFAULT_COUNT): number {
    const bucket = this.#buckets.get(key);
    if (bucket !== undefined) return bucket.retryAfterMs(count);
    requireCount(count);
    return count > this.#options.capacity ? Infinity : 0;
  }

  get size(): number {
    return this.#buckets.size;
  }

  #bucketFor(key: string): TokenBucket {
    const existing = this.#buckets.get(key);
    if (existing !== undefined) return existing;
    if (this.#buckets.size >= this.#maxKeys) this.#makeRoom();
    const bucket = new TokenBucket(this.#options);
    this.#buckets.set(key, bucket);
    this.#insertsSinceSweep += 1;
    return bucket;
  }

  #makeRoom(): void {
    if (this.#insertsSinceSweep >= Math.ceil(this.#maxKeys * SWEEP_INTERVAL_FRACTION)) {
      this.#insertsSinceSweep = 0;
      // A bucket that refilled to capacity is indistinguishable from a new one: dropping it loses nothing.
      for (const [key, bucket] of this.#buckets) {
        if (bucket.tokens >= this.#options.capacity) this.#buckets.delete(key);
      }
    }
    if (this.#buckets.size < this.#maxKeys) return;
    // Map iteration order is insertion order, so the first key is the oldest.
    const oldest = this.#buckets.keys().next();
    if (oldest.done !== true) this.#buckets.delete(oldest.value);
  }
}
