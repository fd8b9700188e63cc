// The WebSocket front door. node:http hands us the raw socket on `upgrade`; we validate
// in a fixed order (draining → path → method) and refuse with a raw HTTP status before
// `ws` allocates anything, then hand the socket to `ws` in noServer mode.

import { STATUS_CODES } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import type { BrokerMetrics } from './metrics.ts';

export const WS_PATH = '/ws';

export interface UpgradeOptions {
  maxPayload: number;
  metrics: BrokerMetrics;
  isDraining: () => boolean;
  onConnection: (socket: WebSocket, request: IncomingMessage) => void;
}

/** Answer a refused upgrade with a bare HTTP response and drop the socket. */
export function abortHandshake(socket: Duplex, status: number, message: string): void {
  if (socket.writable) {
    const reason = STATUS_CODES[status] ?? 'Error';
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`,
    );
  }
  socket.destroy();
}

export function createUpgradeHandler(options: UpgradeOptions): {
  handle: (request: IncomingMessage, socket: Duplex, head: Buffer) => void;
  wss: WebSocketServer;
} {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: options.maxPayload,
    clientTracking: false,
    // Payloads are ciphertext: compression gains nothing and costs memory per socket.
    perMessageDeflate: false,
  });
  const { metrics } = options;

  function handle(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (options.isDraining()) {
      metrics.connectionsRejected.inc({ reason: 'draining' });
      abortHandshake(socket, 503, 'broker is shutting down: reconnect shortly');
      return;
    }
    const path = (request.url ?? '/').split('?', 1)[0];
    if (path !== WS_PATH) {
      metrics.connectionsRejected.inc({ reason: 'not_found' });
      abortHandshake(socket, 404, `no WebSocket endpoint at ${path}: connect to ${WS_PATH}`);
      return;
    }
    if (request.method !== 'GET') {
      metrics.connectionsRejected.inc({ reason: 'not_found' });
      abortHandshake(socket, 405, 'a WebSocket upgrade must use GET');
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      metrics.connectionsTotal.inc();
      options.onConnection(ws, request);
    });
  }

  return { handle, wss };
}
