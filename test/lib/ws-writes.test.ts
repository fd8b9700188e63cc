import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { sendFrame } from '../../lib/ws-writes.ts';

const FRAMES = 2_000;

describe('sendFrame', () => {
  it('delivers every frame of one turn whole and in order, past the held-bytes bound, to several sockets', async () => {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const accepted: WebSocket[] = [];
    server.on('connection', (socket) => accepted.push(socket));
    const clients = [new WebSocket(url), new WebSocket(url)];
    const received: string[][] = clients.map(() => []);
    const done = clients.map((client, index) => new Promise<void>((resolve) => {
      client.on('message', (data) => {
        received[index]!.push(String(data));
        if (received[index]!.length === FRAMES) resolve();
      });
    }));
    await Promise.all(clients.map((client) => once(client, 'open')));
    while (accepted.length < clients.length) await new Promise((resolve) => setImmediate(resolve));
    // All in one synchronous run: 2,000 frames of ~1 KB each per socket, so each socket passes
    // the held-bytes bound many times inside the turn.
    const padding = 'x'.repeat(1_000);
    for (let n = 0; n < FRAMES; n += 1) for (const socket of accepted) sendFrame(socket, JSON.stringify({ n, padding }));
    await Promise.all(done);
    for (const frames of received) assert.deepEqual(frames.map((text) => (JSON.parse(text) as { n: number }).n), Array.from({ length: FRAMES }, (_, n) => n));
    for (const client of clients) client.close();
    server.close();
  });

  it('sends to a socket whose connection is already gone without throwing', async () => {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const [[accepted]] = (await Promise.all([once(server, 'connection'), once(client, 'open')])) as [[WebSocket], unknown];
    client.terminate();
    await once(accepted, 'close');
    assert.doesNotThrow(() => sendFrame(accepted, '{"type":"late"}'));
    server.close();
  });
});
