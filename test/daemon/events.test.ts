import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventRing } from '../../daemon/events.ts';

describe('EventRing', () => {
  it('keeps the newest events up to its size, in order, and lists after a sequence number', () => {
    const ring = new EventRing({ size: 3, now: () => 0 });
    for (const kind of ['a', 'b', 'c', 'd']) ring.push(kind, { n: kind });
    assert.deepEqual(ring.list().map((event) => event.kind), ['b', 'c', 'd']);
    assert.deepEqual(ring.list({ afterSeq: 3 }).map((event) => event.kind), ['d']);
    assert.deepEqual(ring.list({ limit: 1 }).map((event) => event.kind), ['d']);
    assert.equal(ring.list()[0]?.at, new Date(0).toISOString());
  });

  it('fans out to subscribers; a throwing one does not stop the others', () => {
    const ring = new EventRing();
    const seen: string[] = [];
    ring.subscribe(() => {
      throw new Error('broken subscriber');
    });
    const unsubscribe = ring.subscribe((event) => seen.push(event.kind));
    ring.push('one');
    unsubscribe();
    ring.push('two');
    assert.deepEqual(seen, ['one']);
  });
});
