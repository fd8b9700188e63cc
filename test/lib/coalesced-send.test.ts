import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { registerRawSocket, sendCoalesced } from '../../lib/coalesced-send.ts';

describe('sendCoalesced', () => {
  it('holds the frames of one turn in the socket and lets them go together, in order, when the turn ends', async () => {
    const server = createServer();
    const wss = new WebSocketServer({ noServer: true });
    const accepted = new Promise<{ ws: WebSocket; raw: Duplex }>((resolve) => {
      server.on('upgrade', (request, raw, head) => wss.handleUpgrade(request, raw, head, (ws) => {
        registerRawSocket(ws, raw);
        resolve({ ws, raw });
      }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const received: string[] = [];
    client.on('message', (data) => received.push(String(data)));
    const { ws, raw } = await accepted;
    const writes: number[] = [];
    const original = raw.write.bind(raw);
    raw.write = ((...args: Parameters<Duplex['write']>) => {
      writes.push(raw.writableCorked);
      return original(...args);
    }) as Duplex['write'];
    for (let n = 0; n < 50; n += 1) sendCoalesced(ws, `frame ${n}`);
    assert.ok(raw.writableCorked > 0, 'corked while the turn runs');
    assert.ok(writes.length >= 50 && writes.every((depth) => depth > 0), 'every frame was written into the corked socket');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(raw.writableCorked, 0, 'uncorked once the turn is over');
    while (received.length < 50) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(received, Array.from({ length: 50 }, (_, n) => `frame ${n}`));
    client.close();
    wss.close();
    server.close();
  });
});
