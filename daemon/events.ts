// The daemon's recent history: the last ~500 events (connects, refusals, reconnect delays,
// send failures, arrivals) in a ring, served over IPC for `claudemesh events`, and a fan-out
// to live subscribers (the per-session streams). Bounded: the oldest event falls off.

export const EVENT_RING_SIZE = 500;

interface DaemonEvent {
  seq: number;
  /** ISO time */
  at: string;
  kind: string;
  [field: string]: unknown;
}

type Listener = (event: DaemonEvent) => void;

export class EventRing {
  readonly #size: number;
  readonly #events: DaemonEvent[] = [];
  readonly #listeners = new Set<Listener>();
  readonly #now: () => number;
  #seq = 0;

  constructor(options: { size?: number; now?: () => number } = {}) {
    this.#size = options.size ?? EVENT_RING_SIZE;
    this.#now = options.now ?? Date.now;
  }

  push(kind: string, fields: Record<string, unknown> = {}): DaemonEvent {
    this.#seq += 1;
    const event: DaemonEvent = { ...fields, seq: this.#seq, at: new Date(this.#now()).toISOString(), kind };
    this.#events.push(event);
    if (this.#events.length > this.#size) this.#events.shift();
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // one broken subscriber must not stop the others or the caller
      }
    }
    return event;
  }

  /** Events after `afterSeq` (oldest first), at most `limit` of the newest. */
  list(options: { afterSeq?: number; limit?: number } = {}): DaemonEvent[] {
    const after = options.afterSeq ?? 0;
    const matching = this.#events.filter((event) => event.seq > after);
    const limit = options.limit ?? this.#size;
    return matching.slice(Math.max(0, matching.length - limit));
  }

  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
