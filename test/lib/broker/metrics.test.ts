import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createBrokerMetrics, formatPrometheus, HTTP_ROUTES, MESSAGE_REJECT_REASONS } from '../../../lib/broker/metrics.ts';
import { generateKeyPair } from '../../../lib/crypto.ts';
import { PRIORITIES } from '../../../lib/protocol.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { metricValue } from '../../helpers/http.ts';
import { lintExposition } from '../../helpers/prom-lint.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';

/** A fresh metric set over sources the test controls; `render` is what GET /metrics would serve. */
function testMetrics(live = 0, healthy = true) {
  const sources = { live, healthy, unsent: { slow: 0, bytes: 0 } };
  const metrics = createBrokerMetrics({ liveConnections: () => sources.live, unsent: () => sources.unsent, dbHealthy: () => sources.healthy });
  const render = (): string => formatPrometheus(metrics.registry.snapshot());
  const samples = (): string[] => render().split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  return { metrics, sources, render, samples };
}

describe('formatPrometheus', () => {
  it('escapes backslash and newline in help, plus the double quote in label values', () => {
    const text = formatPrometheus([{
      name: 'escapes_total',
      help: 'path C:\\dir\nsecond "line"',
      type: 'counter',
      samples: [{ suffix: '', labels: [['value', 'a\\b"c\nd']], value: 1 }],
    }]);
    assert.equal(text, [
      '# HELP escapes_total path C:\\\\dir\\nsecond "line"',
      '# TYPE escapes_total counter',
      'escapes_total{value="a\\\\b\\"c\\nd"} 1',
      '',
    ].join('\n'));
    assert.deepEqual(lintExposition(text), []);
  });

  it('prints special floats, omits braces without labels and ends every line with a line feed', () => {
    const text = formatPrometheus([{
      name: 'values',
      help: '',
      type: 'gauge',
      samples: [
        { suffix: '', labels: [], value: Infinity },
        { suffix: '', labels: [['k', '1']], value: -Infinity },
        { suffix: '', labels: [['k', '2']], value: Number.NaN },
        { suffix: '', labels: [['k', '3']], value: 0.25 },
        { suffix: '', labels: [['k', '4'], ['j', 'x']], value: 1e21 },
      ],
    }]);
    assert.equal(text, [
      '# HELP values ',
      '# TYPE values gauge',
      'values +Inf',
      'values{k="1"} -Inf',
      'values{k="2"} NaN',
      'values{k="3"} 0.25',
      'values{k="4",j="x"} 1e+21',
      '',
    ].join('\n'));
    assert.deepEqual(lintExposition(text), []);
    assert.equal(formatPrometheus([]), '');
  });
});

describe('createBrokerMetrics', () => {
  it('exposes every labelled series at 0 before any traffic', () => {
    const { metrics, samples } = testMetrics();
    const lines = samples();
    const expected = [
      ...MESSAGE_REJECT_REASONS.map((reason) => `broker_messages_rejected_total{reason="${reason}"} 0`),
      ...PRIORITIES.map((priority) => `broker_messages_routed_total{priority="${priority}"} 0`),
      ...HTTP_ROUTES.map((route) => `broker_http_request_duration_seconds_count{route="${route}"} 0`),
      'broker_ttl_sweeps_total{flipped="true"} 0',
      'broker_ttl_sweeps_total{flipped="false"} 0',
    ];
    for (const line of expected) assert.ok(lines.includes(line), `missing ${line}`);
    metrics.stop();
  });

  it('counts each label value in its own series', () => {
    const { metrics, samples } = testMetrics();
    metrics.messagesRejected.inc({ reason: 'bad_envelope' });
    metrics.messagesRejected.inc({ reason: 'bad_envelope' });
    metrics.messagesRejected.inc({ reason: 'loop_guard' });
    metrics.hookRequests.inc();
    const rejected = samples().filter((line) => line.startsWith('broker_messages_rejected_total'));
    assert.deepEqual(rejected, MESSAGE_REJECT_REASONS.map((reason) => {
      const count = reason === 'bad_envelope' ? 2 : reason === 'loop_guard' ? 1 : 0;
      return `broker_messages_rejected_total{reason="${reason}"} ${count}`;
    }));
    assert.ok(samples().includes('broker_hook_requests_total 1'));
    metrics.stop();
  });

  it('refuses a label value that was never declared instead of counting it nowhere', () => {
    const { metrics, samples } = testMetrics();
    // Only the broker's own series: the process gauges move between scrapes.
    const brokerSeries = (): string[] => samples().filter((line) => line.startsWith('broker_'));
    const before = brokerSeries();
    // The cast stands for a caller that escaped the compiler's check of the value list.
    assert.throws(() => metrics.messagesRejected.inc({ reason: 'made_up' as 'bad_envelope' }), /broker_messages_rejected_total/);
    assert.throws(() => metrics.httpDuration.observe(1, { route: 'nope' as 'hook' }), TypeError);
    assert.deepEqual(brokerSeries(), before);
    metrics.stop();
  });

  it('reads the collected gauges at every scrape and keeps the last value set', () => {
    const { metrics, sources, samples } = testMetrics(4, true);
    metrics.queueDepth.set(5);
    assert.ok(samples().includes('broker_connections_active 4'));
    assert.ok(samples().includes('broker_db_healthy 1'));
    sources.live = 9;
    sources.healthy = false;
    sources.unsent = { slow: 1, bytes: 1_500_000 };
    metrics.queueDepth.set(2);
    const lines = samples();
    for (const line of ['broker_connections_active 9', 'broker_db_healthy 0', 'broker_queue_depth 2', 'broker_slow_consumer_connections 1', 'broker_slow_consumer_buffered_bytes 1500000']) {
      assert.ok(lines.includes(line), `missing ${line}`);
    }
    metrics.stop();
  });

  it('keeps histogram buckets cumulative, with +Inf equal to the count, plus sum and count', () => {
    const { metrics, samples } = testMetrics();
    // Binary fractions, so the sum is exact; 0.25 sits on a bound, which "le" includes.
    for (const seconds of [0.00390625, 0.0625, 0.25, 2, 16]) metrics.httpDuration.observe(seconds, { route: 'hook' });
    const hook = samples().filter((line) => line.startsWith('broker_http_request_duration_seconds') && line.includes('route="hook"'));
    assert.deepEqual(hook, [
      'broker_http_request_duration_seconds_bucket{route="hook",le="0.005"} 1',
      'broker_http_request_duration_seconds_bucket{route="hook",le="0.01"} 1',
      'broker_http_request_duration_seconds_bucket{route="hook",le="0.025"} 1',
      'broker_http_request_duration_seconds_bucket{route="hook",le="0.05"} 1',
      'broker_http_request_duration_seconds_bucket{route="hook",le="0.1"} 2',
      'broker_http_request_duration_seconds_bucket{route="hook",le="0.25"} 3',
      'broker_http_request_duration_seconds_bucket{route="hook",le="0.5"} 3',
      'broker_http_request_duration_seconds_bucket{route="hook",le="1"} 3',
      'broker_http_request_duration_seconds_bucket{route="hook",le="2.5"} 4',
      'broker_http_request_duration_seconds_bucket{route="hook",le="5"} 4',
      'broker_http_request_duration_seconds_bucket{route="hook",le="10"} 4',
      'broker_http_request_duration_seconds_bucket{route="hook",le="+Inf"} 5',
      'broker_http_request_duration_seconds_sum{route="hook"} 18.31640625',
      'broker_http_request_duration_seconds_count{route="hook"} 5',
    ]);
    assert.ok(samples().includes('broker_http_request_duration_seconds_bucket{route="health",le="+Inf"} 0'));
    metrics.stop();
  });

  it('renders text that the independent linter accepts, one HELP and TYPE per metric', () => {
    const { metrics, render } = testMetrics(1);
    metrics.connectionsRejected.inc({ reason: 'capacity' });
    metrics.httpDuration.observe(0.3, { route: 'metrics' });
    const text = render();
    assert.deepEqual(lintExposition(text), []);
    const types = text.split('\n').filter((line) => line.startsWith('# TYPE '));
    assert.equal(types.length, metrics.registry.snapshot().length);
    assert.equal(new Set(types.map((line) => line.split(' ')[2])).size, types.length);
    metrics.stop();
  });
});

describe('lintExposition', () => {
  it('reports malformed expositions', () => {
    const cases: [string, RegExp][] = [
      ['x 1', /before its TYPE/],
      ['# TYPE x counter\nx 1', /end with a newline/],
      ['# TYPE x counter\nx{a="b} 1\n', /neither HELP, TYPE nor a sample/],
      ['# TYPE x summary\n', /neither HELP, TYPE nor a sample/],
      ['# TYPE x counter\nx one\n', /neither HELP, TYPE nor a sample/],
      ['# TYPE x counter\n# TYPE y gauge\nx 1\n', /not grouped/],
      ['# TYPE x counter\n# TYPE x counter\n', /second TYPE/],
      ['# TYPE x counter\nx 1\nx 2\n', /series repeated/],
      ['# TYPE h histogram\nh_bucket 1\n', /without an le label/],
      ['# TYPE x counter\nx{a="\\t"} 1\n', /bad escape/],
      ['# HELP x tab\\t\n', /bad escape in HELP/],
      ['# TYPE x counter\n\nx 1\n', /neither HELP, TYPE nor a sample/],
    ];
    for (const [text, expected] of cases) {
      const problems = lintExposition(text);
      assert.ok(problems.some((problem) => expected.test(problem)), `${JSON.stringify(text)} gave ${JSON.stringify(problems)}`);
    }
  });
});

describe('broker metrics move with the traffic', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('metrics', { timings: { queueDepthIntervalMs: 20 } });
  });
  after(() => t.close());

  it('counts connections, refusals, routed and rejected messages, and the queue depth', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [a, b] = mesh.members;
    const series = (name: string) => metricValue(t.baseUrl, name);
    const start = {
      total: await series('broker_connections_total'),
      unauthorized: await series('broker_connections_rejected_total{reason="unauthorized"}'),
      now: await series('broker_messages_routed_total{priority="now"}'),
      low: await series('broker_messages_routed_total{priority="low"}'),
      unknown: await series('broker_messages_rejected_total{reason="unknown_recipient"}'),
      loop: await series('broker_messages_rejected_total{reason="loop_guard"}'),
    };
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const stranger = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: generateKeyPair(), noWait: true });
    await stranger.closed;
    assert.equal(await series('broker_connections_active'), 1);
    assert.equal(await series('broker_connections_total'), start.total + 2);
    assert.equal(await series('broker_connections_rejected_total{reason="unauthorized"}'), start.unauthorized + 1);

    await sender.send(b!.publicKey, [b!.publicKey], 'one');
    await sender.send(b!.publicKey, [b!.publicKey], 'two', { priority: 'low' });
    const unknown = generateKeyPair().publicKey;
    assert.equal((await sender.send(unknown, [unknown], 'x')).code, 'CM_ERR_UNKNOWN_RECIPIENT');
    const looping = await sender.send(b!.publicKey, [b!.publicKey], 'again and again', { hops: 17 });
    assert.equal(looping.code, 'CM_ERR_LOOP_GUARD');
    assert.equal(await series('broker_messages_routed_total{priority="now"}'), start.now + 1);
    assert.equal(await series('broker_messages_routed_total{priority="low"}'), start.low + 1);
    assert.equal(await series('broker_messages_rejected_total{reason="unknown_recipient"}'), start.unknown + 1);
    assert.equal(await series('broker_messages_rejected_total{reason="loop_guard"}'), start.loop + 1);

    let depth = 0;
    for (let i = 0; i < 50 && depth < 2; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      depth = await series('broker_queue_depth');
    }
    assert.equal(depth, 2, 'two undelivered messages for the offline recipient');
    assert.deepEqual(lintExposition(await (await fetch(`${t.baseUrl}/metrics`)).text()), []);
    await sender.close();
  });
});
