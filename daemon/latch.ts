// A moment a caller may wait for, at most so long: the end of a link's first connect
// attempt, or the end of the catch-up the broker pushes after each hello (`caught_up`).

export class Latch {
  #open = false;
  #waiters: Array<() => void> = [];

  /** The moment came: every waiter goes on. */
  open(): void {
    this.#open = true;
    for (const resolve of this.#waiters.splice(0)) resolve();
  }

  /** Wait for the moment again (a new connection). */
  close(): void {
    this.#open = false;
  }

  /** Resolves when open, or after `timeoutMs`; true when it opened. */
  wait(timeoutMs: number): Promise<boolean> {
    if (this.#open) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((each) => each !== done);
        resolve(false);
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#waiters.push(done);
    });
  }
}
