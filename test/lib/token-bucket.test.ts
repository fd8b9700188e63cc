import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedTokenBuckets, MAX_TRACKED_KEYS, TokenBucket } from '../../lib/token-bucket.ts';

/** A clock the test moves by hand, so nothing ever sleeps. */
function manualClock(start = 1_000_000): { now: () => number; advance: (milliseconds: number) => void } {
  let current = start;
  return {
    now: () => current,
    advance: (milliseconds) => {
      current += milliseconds;
    },
  };
}

describe('TokenBucket', () => {
  it('starts full and refuses past capacity', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ capacity: 3, refillPerSecond: 1, now: clock.now });
    assert.equal(bucket.tokens, 3);
    assert.equal(bucket.take(), true);
    assert.equal(bucket.take(2), true);
    assert.equal(bucket.take(), false);
    assert.equal(bucket.tokens, 0);
  });

  it('takes nothing when a multi-token request cannot be met', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ capacity: 5, refillPerSecond: 1, now: clock.now });
    assert.equal(bucket.take(4), true);
    assert.equal(bucket.take(2), false);
    assert.equal(bucket.tokens, 1);
    assert.equal(bucket.take(6), false);
  });

  it('refills in proportion to elapsed time and never beyond capacity', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ capacity: 10, refillPerSecond: 4, now: clock.now });
    assert.equal(bucket.take(10), true);
    clock.advance(250);
    assert.equal(bucket.tokens, 1);
    clock.advance(500);
    assert.equal(bucket.tokens, 3);
    clock.advance(125);
    assert.equal(bucket.tokens, 3.5);
    clock.advance(60_000);
    assert.equal(bucket.tokens, 10);
    assert.equal(bucket.take(10), true);
    assert.equal(bucket.take(), false);
  });

  it('earns nothing while the clock steps backwards', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ capacity: 2, refillPerSecond: 1, now: clock.now });
    bucket.take(2);
    clock.advance(-5_000);
    assert.equal(bucket.tokens, 0);
    clock.advance(5_000);
    assert.equal(bucket.tokens, 0);
    clock.advance(1_000);
    assert.equal(bucket.tokens, 1);
  });

  it('reports how long until tokens are available', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ capacity: 2, refillPerSecond: 10, now: clock.now });
    assert.equal(bucket.retryAfterMs(), 0);
    bucket.take(2);
    assert.equal(bucket.retryAfterMs(), 100);
    assert.equal(bucket.retryAfterMs(2), 200);
    clock.advance(40);
    assert.equal(bucket.retryAfterMs(), 60);
    assert.equal(bucket.take(), false);
    clock.advance(60);
    assert.equal(bucket.retryAfterMs(), 0);
    assert.equal(bucket.take(), true);
    assert.equal(bucket.retryAfterMs(3), Infinity);
  });

  it('is enough to wait exactly retryAfterMs, even with awkward rates', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ capacity: 1, refillPerSecond: 3, now: clock.now });
    for (let round = 0; round < 100; round += 1) {
      assert.equal(bucket.take(), true);
      const wait = bucket.retryAfterMs();
      assert.equal(wait, 334);
      clock.advance(wait - 1);
      assert.equal(bucket.take(), false, 'one millisecond early is not enough');
      clock.advance(1);
    }
  });

  it('rejects bad options, naming the option and the value', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ capacity: 0, refillPerSecond: 1 }, /capacity.*received 0/],
      [{ capacity: -1, refillPerSecond: 1 }, /capacity.*received -1/],
      [{ capacity: Infinity, refillPerSecond: 1 }, /capacity.*received Infinity/],
      [{ capacity: 1, refillPerSecond: Number.NaN }, /refillPerSecond.*received NaN/],
      [{ capacity: 1, refillPerSecond: '5' }, /refillPerSecond.*received 5/],
      [{ capacity: 1 }, /refillPerSecond.*received undefined/],
    ];
    for (const [options, message] of cases) {
      // The cast feeds deliberately wrong shapes through to the runtime checks.
      const bad = options as unknown as { capacity: number; refillPerSecond: number };
      assert.throws(() => new TokenBucket(bad), (error: unknown) => error instanceof TypeError && message.test(error.message));
      assert.throws(() => new KeyedTokenBuckets(bad), TypeError);
    }
    const bucket = new TokenBucket({ capacity: 1, refillPerSecond: 1 });
    assert.throws(() => bucket.take(-1), RangeError);
    assert.throws(() => bucket.retryAfterMs(Number.NaN), RangeError);
  });
});

describe('KeyedTokenBuckets', () => {
  it('keeps each key in its own bucket', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 2, refillPerSecond: 1, now: clock.now });
    assert.equal(buckets.take('alice'), true);
    assert.equal(buckets.take('alice'), true);
    assert.equal(buckets.take('alice'), false);
    assert.equal(buckets.retryAfterMs('alice'), 1000);
    assert.equal(buckets.take('bob'), true);
    assert.equal(buckets.retryAfterMs('bob'), 0);
    assert.equal(buckets.retryAfterMs('carol'), 0);
    assert.equal(buckets.retryAfterMs('carol', 3), Infinity);
    assert.equal(buckets.size, 2);
    clock.advance(1000);
    assert.equal(buckets.take('alice'), true);
  });

  it('stays within maxKeys while 50k distinct keys arrive', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 5, refillPerSecond: 1, now: clock.now });
    let largest = 0;
    for (let index = 0; index < 50_000; index += 1) {
      buckets.take(`stranger-${index}`);
      largest = Math.max(largest, buckets.size);
      if (index % 1000 === 0) clock.advance(10);
    }
    assert.equal(largest, MAX_TRACKED_KEYS);
  });

  it('drops idle (refilled) buckets before evicting a throttled one', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 2, refillPerSecond: 1, now: clock.now, maxKeys: 3 });
    buckets.take('idle-1');
    buckets.take('idle-2');
    clock.advance(2_000);
    buckets.take('throttled', 2);
    buckets.take('newcomer');
    assert.equal(buckets.size, 2);
    assert.equal(buckets.take('throttled'), false, 'the drained bucket was kept, not reset');
  });

  it('evicts the oldest key when no bucket is idle', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 1, refillPerSecond: 1, now: clock.now, maxKeys: 2 });
    buckets.take('first');
    buckets.take('second');
    buckets.take('third');
    assert.equal(buckets.size, 2);
    assert.equal(buckets.retryAfterMs('second'), 1000);
    assert.equal(buckets.retryAfterMs('third'), 1000);
    assert.equal(buckets.retryAfterMs('first'), 0, 'the oldest key was forgotten');
  });

  it('rejects a bad maxKeys', () => {
    for (const maxKeys of [0, -1, 1.5, Number.NaN, Infinity]) {
      assert.throws(() => new KeyedTokenBuckets({ capacity: 1, refillPerSecond: 1, maxKeys }), /maxKeys/);
    }
  });
});
