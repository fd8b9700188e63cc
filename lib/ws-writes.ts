// Frames written to one WebSocket during one turn of the event loop leave in one system call.
// A burst answers many sends and pushes per turn (one batch commit acks up to 500 senders and
// pushes to their recipients); written one by one, each frame was its own writev, the
// broker's largest single cost. The socket is corked at its first frame of the turn and
// uncorked when the turn ends, or at once when it holds MAX_HELD_BYTES, so a turn never keeps
// more than that per socket in memory on top of what the socket already buffers.

import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

const MAX_HELD_BYTES = 64 * 1024;

const held = new Set<Socket>();
let releaseScheduled = false;

function releaseAll(): void {
  releaseScheduled = false;
  for (const socket of held) socket.uncork();
  held.clear();
}

/** The TCP socket under a ws connection (ws keeps it as `_socket`; it has no batching API). */
function rawSocket(ws: WebSocket): Socket | undefined {
  const raw = (ws as unknown as { _socket?: Socket | null })._socket;
  return raw === null || raw === undefined || raw.destroyed ? undefined : raw;
}

/** Send one text frame; it leaves with the socket's other frames of this turn. */
export function sendFrame(ws: WebSocket, frame: string): void {
  const raw = rawSocket(ws);
  if (raw === undefined) {
    ws.send(frame);
    return;
  }
  if (!held.has(raw)) {
    raw.cork();
    held.add(raw);
    if (!releaseScheduled) {
      releaseScheduled = true;
      setImmediate(releaseAll);
    }
  }
  ws.send(frame);
  if (raw.writableLength >= MAX_HELD_BYTES) {
    held.delete(raw);
    raw.uncork();
  }
}
