// Group commit for one database step: calls that arrive while a batch runs wait and go into
// the next one together. A thousand callers at once (every daemon saying hello after a
// broker restart) then cost a handful of statements and hold at most one pooled connection
// for this step, instead of a thousand queries queueing for a small pool until they time out.

const MAX_BATCH = 500;

interface Waiting<In, Out> {
  item: In;
  resolve: (out: Out) => void;
  reject: (error: unknown) => void;
}

export class Batcher<In, Out> {
  readonly #work: (items: In[]) => Promise<Out[]>;
  readonly #maxBatch: number;
  #queue: Array<Waiting<In, Out>> = [];
  #running = false;

  /** `work` answers a batch in the order given; when it throws, every caller of that batch gets the error. */
  constructor(work: (items: In[]) => Promise<Out[]>, maxBatch = MAX_BATCH) {
    this.#work = work;
    this.#maxBatch = maxBatch;
  }

  run(item: In): Promise<Out> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      // The first caller waits one turn of the event loop, so that callers of the same
      // moment share its batch.
      if (this.#queue.length === 1 && !this.#running) setImmediate(() => void this.#flush());
    });
  }

  async #flush(): Promise<void> {
    if (this.#running || this.#queue.length === 0) return;
    this.#running = true;
    const batch = this.#queue.splice(0, this.#maxBatch);
    try {
      const results = await this.#work(batch.map((waiting) => waiting.item));
      batch.forEach((waiting, index) => waiting.resolve(results[index] as Out));
    } catch (error) {
      for (const waiting of batch) waiting.reject(error);
    } finally {
      this.#running = false;
      if (this.#queue.length > 0) setImmediate(() => void this.#flush());
    }
  }
}
