// Frames sent to one WebSocket in the same turn of the event loop leave in one write — one
// system call — instead of one each. Under a burst a socket takes an ack per send and a
// push per message, and writing each frame on its own was the largest single cost of the
// broker (docs/benchmarks.md). The raw socket is corked at the first frame of a turn and
// uncorked when the turn is over, so no frame waits longer than that.

import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

const rawSockets = new WeakMap<WebSocket, Duplex>();
const corked = new Set<Duplex>();
let flushScheduled = false;

/** Remember the raw socket under a WebSocket (from the upgrade), so its writes can be corked. */
export function registerRawSocket(ws: WebSocket, raw: Duplex): void {
  rawSockets.set(ws, raw);
}

/** Send a text frame; frames sent in the same turn to the same socket leave together. */
export function sendCoalesced(ws: WebSocket, text: string): void {
  const raw = rawSockets.get(ws);
  if (raw !== undefined && !corked.has(raw) && !raw.destroyed) {
    raw.cork();
    corked.add(raw);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  }
  ws.send(text);
}

function flush(): void {
  flushScheduled = false;
  for (const raw of corked) raw.uncork();
  corked.clear();
}
