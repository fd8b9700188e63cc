import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { lintExposition } from '../../helpers/prom-lint.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';

describe('broker HTTP', () => {
  let t: TestBroker;

  before(async () => {
    t = await startTestBroker('http', {
      env: { MAX_MESSAGE_BYTES: '2048' },
    });
  });
  after(() => t.close());

  it('GET /health answers 200 with status, db, version, gitSha and uptime', async () => {
    const response = await fetch(`${t.baseUrl}/health`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /application\/json/);
    const body = (await response.json()) as Record<string, unknown>;
    assert.equal(body.status, 'ok');
    assert.equal(body.db, 'up');
    assert.equal(body.version, '0.0.0-test');
    assert.equal(body.gitSha, 'abc1234');
    assert.equal(typeof body.uptime, 'number');
  });

  it('HEAD /health answers without a body', async () => {
    const response = await fetch(`${t.baseUrl}/health`, { method: 'HEAD' });
    assert.equal(response.status, 200);
    assert.equal(await response.text(), '');
  });

  it('GET /metrics serves valid exposition text with every series the broker declares', async () => {
    await fetch(`${t.baseUrl}/health`);
    const response = await fetch(`${t.baseUrl}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    assert.deepEqual(lintExposition(text), []);
    for (const series of [
      'broker_connections_active 0',
      'broker_connections_total 0',
      'broker_connections_rejected_total{reason="capacity"} 0',
      'broker_messages_routed_total{priority="now"} 0',
      'broker_messages_routed_total{priority="next"} 0',
      'broker_messages_routed_total{priority="low"} 0',
      'broker_messages_rejected_total{reason="unknown_recipient"} 0',
      'broker_queue_depth 0',
      'broker_ttl_sweeps_total{flipped="true"} 0',
      'broker_hook_requests_total',
      'broker_hook_requests_rate_limited_total',
      'broker_db_healthy 1',
      'process_resident_memory_bytes',
      'broker_http_request_duration_seconds_bucket{route="health",le="+Inf"}',
    ]) {
      assert.ok(text.split('\n').some((line) => line.startsWith(series)), `missing ${series}`);
    }
  });

  it('answers unknown routes 404 and wrong methods 405, as JSON with a code', async () => {
    const missing = await fetch(`${t.baseUrl}/nope`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { code: string }).code, 'CM_ERR_NOT_FOUND');
    const wrong = await fetch(`${t.baseUrl}/metrics`, { method: 'POST' });
    assert.equal(wrong.status, 405);
    const body = (await wrong.json()) as { code: string; message: string; hint: string };
    assert.equal(body.code, 'CM_ERR_METHOD_NOT_ALLOWED');
    assert.match(body.message, /takes GET, received POST/);
    assert.ok(body.hint.length > 0);
  });

  it('answers a malformed request line with 400 and keeps serving', async () => {
    const { connect } = await import('node:net');
    const port = Number(new URL(t.baseUrl).port);
    const reply = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => socket.write('GARBAGE\r\n\r\n'));
      let text = '';
      socket.on('data', (chunk) => {
        text += chunk.toString();
      });
      socket.on('close', () => resolve(text));
    });
    assert.match(reply, /^HTTP\/1\.1 400/);
    assert.equal((await fetch(`${t.baseUrl}/health`)).status, 200);
  });
});
