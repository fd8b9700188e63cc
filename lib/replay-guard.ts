// Remembers signatures until their timestamp falls out of the accepted clock window, so a
// captured hello or signed request cannot be replayed inside that window either. Bounded:
// past MAX_ENTRIES the oldest entries go first (they are the closest to expiring anyway).

export const MAX_ENTRIES = 200_000;

export class ReplayGuard {
  readonly #seen = new Map<string, number>();
  readonly #now: () => number;
  readonly #maxEntries: number;

  constructor(options: { now?: () => number; maxEntries?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxEntries ?? MAX_ENTRIES;
  }

  /** true the first time `signature` is seen (it is then remembered until `expiresAt`) */
  firstUse(signature: string, expiresAt: number): boolean {
    const now = this.#now();
    const known = this.#seen.get(signature);
    if (known !== undefined && known > now) return false;
    if (this.#seen.size >= this.#maxEntries) this.#prune(now);
    this.#seen.set(signature, expiresAt);
    return true;
  }

  get size(): number {
    return this.#seen.size;
  }

  #prune(now: number): void {
    for (const [signature, expiresAt] of this.#seen) {
      if (expiresAt <= now) this.#seen.delete(signature);
    }
    for (const signature of this.#seen.keys()) {
      if (this.#seen.size < this.#maxEntries) break;
      this.#seen.delete(signature);
    }
  }
}
