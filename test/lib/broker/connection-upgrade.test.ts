import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';

const MAX_BYTES = 4096;

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.once('open', () => resolve(socket));
    socket.once('error', reject);
  });
}

function nextMessage(socket: WebSocket): Promise<Record<string, unknown>> {
  return new Promise((resolve) => socket.once('message', (data) => resolve(JSON.parse(String(data)) as Record<string, unknown>)));
}

function closed(socket: WebSocket): Promise<number> {
  return new Promise((resolve) => socket.once('close', (code) => resolve(code)));
}

/** Send a hand-written upgrade request and collect everything until the server hangs up. */
function rawUpgrade(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString();
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(text));
  });
}

async function scrape(t: TestBroker): Promise<string> {
  return (await fetch(`${t.baseUrl}/metrics`)).text();
}

describe('WebSocket upgrade', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('upgrade', { env: { MAX_MESSAGE_BYTES: String(MAX_BYTES) } });
  });
  after(() => t.close());

  it('accepts /ws and counts the connection while it is open', async () => {
    const socket = await open(t.wsUrl);
    let text = await scrape(t);
    assert.match(text, /^broker_connections_active 1$/m);
    assert.match(text, /^broker_connections_total 1$/m);
    const done = closed(socket);
    socket.close(1000);
    await done;
    // the server sees the close a moment after the client does
    for (let i = 0; i < 50 && /^broker_connections_active 1$/m.test(text); i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      text = await scrape(t);
    }
    assert.match(text, /^broker_connections_active 0$/m);
  });

  it('answers a frame before hello with an error frame, never silence', async () => {
    const socket = await open(t.wsUrl);
    const reply = nextMessage(socket);
    socket.send(JSON.stringify({ type: 'list_peers', id: 'r1' }));
    const frame = await reply;
    assert.equal(frame.type, 'error');
    assert.equal(frame.code, 'CM_ERR_NO_HELLO');
    assert.equal(frame.id, 'r1');
    socket.close();
  });

  it('refuses other paths with a raw 404 and destroys the socket', async () => {
    const port = Number(new URL(t.baseUrl).port);
    const reply = await rawUpgrade(port, '/socket');
    assert.match(reply, /^HTTP\/1\.1 404 Not Found\r\n/);
    assert.match(reply, /connect to \/ws/);
    assert.match(await scrape(t), /^broker_connections_rejected_total\{reason="not_found"\} 1$/m);
  });

  it('closes with 1009 a frame larger than MAX_MESSAGE_BYTES and stays up', async () => {
    const socket = await open(t.wsUrl);
    socket.on('error', () => {});
    const code = closed(socket);
    socket.send(Buffer.alloc(MAX_BYTES + 1, 'x'));
    assert.equal(await code, 1009);
    const again = await open(t.wsUrl);
    again.close();
  });
});
