import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Batcher } from '../../lib/batch.ts';

describe('Batcher', () => {
  it('puts the calls of one moment into one batch, and calls made while it runs into the next', async () => {
    const batches: number[][] = [];
    let release: () => void = () => {};
    const batcher = new Batcher<number, number>(async (items) => {
      batches.push(items);
      if (batches.length === 1) await new Promise<void>((resolve) => (release = resolve));
      return items.map((item) => item * 10);
    });
    const first = [1, 2, 3].map((item) => batcher.run(item));
    await new Promise((resolve) => setImmediate(resolve));
    const second = [4, 5].map((item) => batcher.run(item));
    release();
    assert.deepEqual(await Promise.all([...first, ...second]), [10, 20, 30, 40, 50]);
    assert.deepEqual(batches, [[1, 2, 3], [4, 5]]);
  });

  it('caps a batch, and a failed batch fails only its own callers', async () => {
    const batcher = new Batcher<number, number>(async (items) => {
      if (items.includes(2)) throw new Error('batch failed');
      return items;
    }, 2);
    const results = await Promise.allSettled([1, 2, 3].map((item) => batcher.run(item)));
    assert.deepEqual(results.map((result) => result.status), ['rejected', 'rejected', 'fulfilled']);
  });
});
