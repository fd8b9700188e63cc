import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { lintExposition } from '../../helpers/prom-lint.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';

const HOOK_LIMIT = 3;

/** A raw request, for bodies fetch will not send (chunked, oversize, lying Content-Length). */
function rawPost(url: string, chunks: Buffer[], headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

async function metricValue(baseUrl: string, series: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((each) => each.startsWith(`${series} `));
  assert.ok(line !== undefined, `series ${series} present`);
  return Number(line.slice(series.length + 1));
}

describe('broker HTTP', () => {
  let t: TestBroker;
  let clock = 1_000_000;

  before(async () => {
    t = await startTestBroker('http', {
      env: { HOOK_RATE_LIMIT_PER_MIN: String(HOOK_LIMIT), MAX_MESSAGE_BYTES: '2048' },
      now: () => clock,
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

  it('GET /metrics serves valid exposition text with every DESIGN §3 series', async () => {
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

  it('refuses hook bodies that are not JSON objects or lack pid and cwd', async () => {
    const cases: Array<[string, string]> = [
      ['not json', 'CM_ERR_BAD_JSON'],
      ['[1,2]', 'CM_ERR_BAD_JSON'],
      ['{"cwd":"/x"}', 'CM_ERR_BAD_REQUEST'],
      ['{"pid":-4,"cwd":"/x"}', 'CM_ERR_BAD_REQUEST'],
      ['{"pid":7}', 'CM_ERR_BAD_REQUEST'],
      ['{"__proto__":{"pid":7},"cwd":"/x"}', 'CM_ERR_BAD_REQUEST'],
    ];
    for (const [body, code] of cases) {
      const response = await fetch(`${t.baseUrl}/hook/set-status`, { method: 'POST', body });
      assert.equal(response.status, 400, body);
      assert.equal(((await response.json()) as { code: string }).code, code, body);
    }
  });

  it('refuses hook bodies over MAX_MESSAGE_BYTES with 413, declared or streamed', async () => {
    const big = Buffer.alloc(3000, 'a');
    const declared = await rawPost(`${t.baseUrl}/hook/set-status`, [big], { 'content-length': String(big.length) });
    assert.equal(declared.status, 413);
    assert.equal((JSON.parse(declared.body) as { code: string }).code, 'CM_ERR_PAYLOAD_TOO_LARGE');
    const streamed = await rawPost(`${t.baseUrl}/hook/set-status`, [Buffer.alloc(1500, 'a'), Buffer.alloc(1500, 'b')], { 'transfer-encoding': 'chunked' });
    assert.equal(streamed.status, 413);
  });

  it('rate-limits hooks per (pid, cwd) with 429 and Retry-After, counted in the metrics', async () => {
    const before = await metricValue(t.baseUrl, 'broker_hook_requests_rate_limited_total');
    const requestsBefore = await metricValue(t.baseUrl, 'broker_hook_requests_total');
    const post = (pid: number, cwd: string) => fetch(`${t.baseUrl}/hook/set-status`, { method: 'POST', body: JSON.stringify({ pid, cwd }) });
    for (let i = 0; i < HOOK_LIMIT; i += 1) {
      const response = await post(42, '/work/a');
      assert.equal(response.status, 501, 'within the limit the request reaches the (not yet real) handler');
      await response.body?.cancel();
    }
    const limited = await post(42, '/work/a');
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal(((await limited.json()) as { code: string }).code, 'CM_ERR_RATE_LIMITED');
    const other = await post(42, '/work/b');
    assert.equal(other.status, 501, 'another cwd has its own bucket');
    await other.body?.cancel();
    clock += 60_000 / HOOK_LIMIT;
    const refilled = await post(42, '/work/a');
    assert.equal(refilled.status, 501, 'one token back after 1/limit of a minute');
    await refilled.body?.cancel();
    assert.equal(await metricValue(t.baseUrl, 'broker_hook_requests_rate_limited_total'), before + 1);
    assert.equal(await metricValue(t.baseUrl, 'broker_hook_requests_total'), requestsBefore + HOOK_LIMIT + 3);
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
