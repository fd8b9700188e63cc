import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedTokenBuckets, MAX_TRACKED_KEYS } from '../../lib/token-bucket.ts';

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

/** Takes from `key` until refused; returns how many tokens it got (at most `limit`). */
function drain(buckets: KeyedTokenBuckets, key: string, limit = 1000): number {
  let taken = 0;
  while (taken < limit && buckets.take(key)) taken += 1;
  return taken;
}

describe('KeyedTokenBuckets, one key', () => {
  it('starts full and refuses past capacity', () => {
    const buckets = new KeyedTokenBuckets({ capacity: 3, refillPerSecond: 1, now: manualClock().now });
    assert.equal(drain(buckets, 'k'), 3);
    assert.equal(buckets.take('k'), false);
  });

  it('refills in proportion to elapsed time and never beyond capacity', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 10, refillPerSecond: 4, now: clock.now });
    assert.equal(drain(buckets, 'k'), 10);
    clock.advance(250);
    assert.equal(drain(buckets, 'k'), 1);
    clock.advance(500);
    assert.equal(drain(buckets, 'k'), 2);
    // Half a token is carried over: 125 ms earns the other half.
    clock.advance(375);
    assert.equal(drain(buckets, 'k'), 1);
    clock.advance(125);
    assert.equal(drain(buckets, 'k'), 1);
    clock.advance(60_000);
    assert.equal(drain(buckets, 'k'), 10);
  });

  it('neither earns nor loses tokens while the clock steps backwards', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 2, refillPerSecond: 1, now: clock.now });
    assert.equal(buckets.take('k'), true);
    clock.advance(-5_000);
    assert.equal(drain(buckets, 'k'), 1);
    clock.advance(5_000);
    assert.equal(buckets.take('k'), false);
    clock.advance(1_000);
    assert.equal(drain(buckets, 'k'), 1);
  });

  it('reports how long until a token is available', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 2, refillPerSecond: 10, now: clock.now });
    assert.equal(buckets.retryAfterMs('k'), 0);
    assert.equal(drain(buckets, 'k'), 2);
    assert.equal(buckets.retryAfterMs('k'), 100);
    clock.advance(40);
    assert.equal(buckets.retryAfterMs('k'), 60);
    assert.equal(buckets.take('k'), false);
    clock.advance(60);
    assert.equal(buckets.retryAfterMs('k'), 0);
    assert.equal(buckets.take('k'), true);
  });

  it('is enough to wait exactly retryAfterMs, even with awkward rates', () => {
    // 20 per minute is how lib/broker/hook.ts configures its limit; in floating point the two
    // refills below add up to a hair under one token.
    for (const [refillPerSecond, expectedWait] of [[3, 334], [20 / 60, 3000]] as const) {
      const clock = manualClock();
      const buckets = new KeyedTokenBuckets({ capacity: 1, refillPerSecond, now: clock.now });
      for (let round = 0; round < 100; round += 1) {
        assert.equal(buckets.take('k'), true, `rate ${refillPerSecond}, round ${round}`);
        const wait = buckets.retryAfterMs('k');
        assert.equal(wait, expectedWait);
        clock.advance(wait - 1);
        assert.equal(buckets.take('k'), false, 'one millisecond early is not enough');
        clock.advance(1);
        assert.equal(buckets.retryAfterMs('k'), 0);
      }
    }
  });

  it('rejects bad options, naming the option and the value', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ capacity: 0, refillPerSecond: 1 }, /capacity.*received 0/],
      [{ capacity: 0.5, refillPerSecond: 1 }, /capacity.*received 0.5/],
      [{ capacity: Infinity, refillPerSecond: 1 }, /capacity.*received Infinity/],
      [{ capacity: 1, refillPerSecond: Number.NaN }, /refillPerSecond.*received NaN/],
      [{ capacity: 1, refillPerSecond: '5' }, /refillPerSecond.*received 5/],
      [{ capacity: 1 }, /refillPerSecond.*received undefined/],
    ];
    for (const [options, message] of cases) {
      // The cast feeds deliberately wrong shapes through to the runtime checks.
      const bad = options as unknown as { capacity: number; refillPerSecond: number };
      assert.throws(() => new KeyedTokenBuckets(bad), (error: unknown) => error instanceof TypeError && message.test(error.message));
    }
    for (const maxKeys of [0, -1, 1.5, Number.NaN, Infinity]) {
      assert.throws(() => new KeyedTokenBuckets({ capacity: 1, refillPerSecond: 1, maxKeys }), /maxKeys/);
    }
  });
});

describe('KeyedTokenBuckets, many keys', () => {
  it('keeps each key in its own bucket', () => {
    const clock = manualClock();
    const buckets = new KeyedTokenBuckets({ capacity: 2, refillPerSecond: 1, now: clock.now });
    assert.equal(drain(buckets, 'alice'), 2);
    assert.equal(buckets.retryAfterMs('alice'), 1000);
    assert.equal(buckets.take('bob'), true);
    assert.equal(buckets.retryAfterMs('bob'), 0);
    assert.equal(buckets.retryAfterMs('carol'), 0);
    assert.equal(buckets.size, 2, 'asking about carol did not track her');
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
    assert.equal(drain(buckets, 'throttled'), 2);
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
});
