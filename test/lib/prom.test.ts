import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  Counter,
  DEFAULT_BUCKETS,
  formatPrometheus,
  MAX_SERIES_PER_METRIC,
  OTHER_LABEL_VALUE,
  PROMETHEUS_CONTENT_TYPE,
  Registry,
} from '../../lib/prom.ts';
import type { MetricSnapshot } from '../../lib/prom.ts';
import { lintExposition } from '../helpers/prom-lint.ts';

function render(registry: Registry): string {
  return formatPrometheus(registry.snapshot());
}

describe('metric and label names', () => {
  it('accepts valid names and rejects invalid ones, naming the value', () => {
    const registry = new Registry();
    registry.counter({ name: 'ok_name:total', help: 'fine' });
    for (const name of ['1starts_with_digit', 'has-dash', 'has space', '']) {
      assert.throws(() => registry.counter({ name, help: 'x' }), (error: unknown) =>
        error instanceof TypeError && error.message.includes(JSON.stringify(name)));
    }
  });

  it('rejects invalid, reserved and duplicate label names', () => {
    const registry = new Registry();
    for (const labelNames of [['bad-label'], ['__reserved'], ['a:b'], ['same', 'same']]) {
      assert.throws(() => registry.counter({ name: 'labels_total', help: 'x', labelNames }), TypeError);
    }
    assert.throws(() => registry.histogram({ name: 'latency_seconds', help: 'x', labelNames: ['le'] }), TypeError);
    assert.throws(() => registry.counter({ name: 'bounded_total', help: 'x', labelNames: ['a'], labelValues: { b: ['x'] } }), TypeError);
  });

  it('throws when the same name is registered twice', () => {
    const registry = new Registry();
    registry.counter({ name: 'twice_total', help: 'x' });
    assert.throws(() => registry.gauge({ name: 'twice_total', help: 'y' }), /twice_total/);
  });
});

describe('formatting', () => {
  it('escapes backslash and newline in help, plus quotes in label values', () => {
    const registry = new Registry();
    const counter = registry.counter({ name: 'escapes_total', help: 'path C:\\dir\nsecond "line"', labelNames: ['value'] });
    counter.inc({ value: 'a\\b"c\nd' });
    assert.equal(render(registry), [
      '# HELP escapes_total path C:\\\\dir\\nsecond "line"',
      '# TYPE escapes_total counter',
      'escapes_total{value="a\\\\b\\"c\\nd"} 1',
      '',
    ].join('\n'));
  });

  it('prints special floats and omits braces without labels', () => {
    const snapshot: MetricSnapshot[] = [{
      name: 'values',
      help: '',
      type: 'gauge',
      samples: [
        { suffix: '', labels: [], value: Infinity },
        { suffix: '', labels: [['k', '1']], value: -Infinity },
        { suffix: '', labels: [['k', '2']], value: Number.NaN },
        { suffix: '', labels: [['k', '3']], value: 0.25 },
        { suffix: '', labels: [['k', '4'], ['j', 'x']], value: -7 },
      ],
    }];
    assert.equal(formatPrometheus(snapshot), [
      '# HELP values ',
      '# TYPE values gauge',
      'values +Inf',
      'values{k="1"} -Inf',
      'values{k="2"} NaN',
      'values{k="3"} 0.25',
      'values{k="4",j="x"} -7',
      '',
    ].join('\n'));
    assert.equal(formatPrometheus([]), '');
    assert.equal(PROMETHEUS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
  });

  it('keeps metrics in registration order and series in insertion order', () => {
    const registry = new Registry();
    const second = registry.gauge({ name: 'b_gauge', help: 'b', labelNames: ['k'] });
    registry.counter({ name: 'a_total', help: 'a' });
    second.set(1, { k: 'z' });
    second.set(2, { k: 'a' });
    const lines = render(registry).split('\n');
    assert.deepEqual(lines.filter((line) => !line.startsWith('#')), ['b_gauge{k="z"} 1', 'b_gauge{k="a"} 2', 'a_total 0', '']);
  });
});

describe('Counter', () => {
  it('increments by one or by a given amount and rejects negative or non-finite steps', () => {
    const counter = new Counter({ name: 'requests_total', help: 'x', labelNames: ['route'] });
    counter.inc({ route: '/a' });
    counter.inc({ route: '/a' }, 2.5);
    assert.equal(counter.get({ route: '/a' }), 3.5);
    assert.equal(counter.get({ route: '/never' }), 0);
    assert.throws(() => counter.inc({ route: '/a' }, -1), RangeError);
    assert.throws(() => counter.inc({ route: '/a' }, Infinity), RangeError);
    assert.throws(() => counter.inc({ route: '/a' }, Number.NaN), RangeError);
    assert.equal(counter.get({ route: '/a' }), 3.5);
  });

  it('names missing and unknown labels', () => {
    const counter = new Counter({ name: 'labelled_total', help: 'x', labelNames: ['route', 'status'] });
    assert.throws(() => counter.inc({ route: '/a' }), (error: unknown) => error instanceof TypeError && error.message.includes('"status"'));
    assert.throws(() => counter.inc({ route: '/a', status: '200', extra: 'x' }), (error: unknown) => error instanceof TypeError && error.message.includes('"extra"'));
    assert.throws(() => counter.inc(), TypeError);
    // A label named like an Object.prototype member must still count as missing.
    const tricky = new Counter({ name: 'tricky_total', help: 'x', labelNames: ['constructor'] });
    assert.throws(() => tricky.inc({}), /missing label "constructor"/);
  });
});

describe('Gauge', () => {
  it('sets, increments and decrements', () => {
    const registry = new Registry();
    const gauge = registry.gauge({ name: 'connections', help: 'open connections', labelNames: ['kind'] });
    gauge.set(5, { kind: 'ws' });
    gauge.inc({ kind: 'ws' });
    gauge.dec({ kind: 'ws' }, 3);
    gauge.dec({ kind: 'http' });
    assert.equal(gauge.get({ kind: 'ws' }), 3);
    assert.equal(gauge.get({ kind: 'http' }), -1);
    assert.throws(() => gauge.inc({ kind: 'ws' }, Infinity), RangeError);
  });

  it('runs collect callbacks just before each snapshot', () => {
    const registry = new Registry();
    let live = 4;
    let calls = 0;
    registry.gauge({ name: 'queue_depth', help: 'x', collect: () => live });
    const labelled = registry.gauge({
      name: 'peers',
      help: 'x',
      labelNames: ['state'],
      collect: () => {
        calls += 1;
        labelled.set(calls, { state: 'online' });
      },
    });
    assert.match(render(registry), /^queue_depth 4$/m);
    live = 9;
    const text = render(registry);
    assert.match(text, /^queue_depth 9$/m);
    assert.match(text, /^peers\{state="online"\} 2$/m);
    assert.equal(calls, 2);
  });
});

describe('Histogram', () => {
  it('keeps cumulative buckets, +Inf equal to count, sum and count', () => {
    const registry = new Registry();
    const histogram = registry.histogram({ name: 'latency_seconds', help: 'x', labelNames: ['route'], buckets: [0.1, 1, 10] });
    for (const value of [0.05, 0.1, 0.5, 3, 42]) histogram.observe(value, { route: '/a' });
    assert.deepEqual(histogram.get({ route: '/a' }), { buckets: [2, 3, 4], sum: 45.65, count: 5 });
    assert.deepEqual(histogram.get({ route: '/b' }), { buckets: [0, 0, 0], sum: 0, count: 0 });
    assert.deepEqual(render(registry).split('\n').slice(2), [
      'latency_seconds_bucket{route="/a",le="0.1"} 2',
      'latency_seconds_bucket{route="/a",le="1"} 3',
      'latency_seconds_bucket{route="/a",le="10"} 4',
      'latency_seconds_bucket{route="/a",le="+Inf"} 5',
      'latency_seconds_sum{route="/a"} 45.65',
      'latency_seconds_count{route="/a"} 5',
      '',
    ]);
    assert.throws(() => histogram.observe(Number.NaN, { route: '/a' }), RangeError);
  });

  it('uses the default buckets and rejects buckets that do not strictly increase', () => {
    const registry = new Registry();
    const histogram = registry.histogram({ name: 'default_seconds', help: 'x' });
    assert.equal(histogram.get().buckets.length, DEFAULT_BUCKETS.length);
    for (const buckets of [[], [1, 1], [2, 1], [1, Infinity], [Number.NaN]]) {
      assert.throws(() => registry.histogram({ name: 'bad_seconds', help: 'x', buckets }), TypeError);
    }
  });
});

describe('bounded label values', () => {
  it('pre-creates every declared combination at zero', () => {
    const registry = new Registry();
    registry.counter({
      name: 'frames_total',
      help: 'x',
      labelNames: ['direction', 'kind'],
      labelValues: { direction: ['in', 'out'], kind: ['send', 'ack'] },
    });
    registry.histogram({ name: 'op_seconds', help: 'x', labelNames: ['op'], labelValues: { op: ['read'] }, buckets: [1] });
    assert.deepEqual(render(registry).split('\n').filter((line) => !line.startsWith('#')), [
      'frames_total{direction="in",kind="send"} 0',
      'frames_total{direction="in",kind="ack"} 0',
      'frames_total{direction="out",kind="send"} 0',
      'frames_total{direction="out",kind="ack"} 0',
      'op_seconds_bucket{op="read",le="1"} 0',
      'op_seconds_bucket{op="read",le="+Inf"} 0',
      'op_seconds_sum{op="read"} 0',
      'op_seconds_count{op="read"} 0',
      '',
    ]);
  });

  it('records undeclared values under "other"', () => {
    const counter = new Counter({ name: 'kinds_total', help: 'x', labelNames: ['kind'], labelValues: { kind: ['send'] } });
    counter.inc({ kind: 'send' });
    counter.inc({ kind: 'made-up-by-a-client' });
    counter.inc({ kind: 'another-invention' });
    assert.equal(counter.get({ kind: OTHER_LABEL_VALUE }), 2);
    assert.equal(counter.get({ kind: 'whatever' }), 2);
    assert.equal(counter.get({ kind: 'send' }), 1);
  });
});

describe('series cap', () => {
  it('folds free-form values into "other" past MAX_SERIES_PER_METRIC, keeping bounded values', () => {
    const registry = new Registry();
    const counter = registry.counter({
      name: 'per_peer_total',
      help: 'x',
      labelNames: ['peer', 'kind'],
      labelValues: { kind: ['send'] },
    });
    for (let index = 0; index < MAX_SERIES_PER_METRIC + 500; index += 1) {
      counter.inc({ peer: `peer-${index}`, kind: index % 2 === 0 ? 'send' : 'unknown' });
    }
    const samples = registry.snapshot()[0]?.samples ?? [];
    assert.equal(samples.length, MAX_SERIES_PER_METRIC + 2);
    assert.equal(counter.get({ peer: 'peer-0', kind: 'send' }), 1);
    assert.equal(counter.get({ peer: OTHER_LABEL_VALUE, kind: 'send' }), 250);
    assert.equal(counter.get({ peer: OTHER_LABEL_VALUE, kind: OTHER_LABEL_VALUE }), 250);
    // Reading a never-seen combination past the cap finds the folded series.
    assert.equal(counter.get({ peer: 'brand-new', kind: 'send' }), 250);
    assert.deepEqual(lintExposition(render(registry)), []);
  });
});

describe('lintExposition', () => {
  it('accepts the output of a registry using every metric kind', () => {
    const registry = new Registry();
    registry.counter({ name: 'a_total', help: 'with \\ and\nnewline', labelNames: ['v'] }).inc({ v: 'q"u\\o\nte' });
    registry.gauge({ name: 'b', help: 'b', collect: () => Number.NaN });
    registry.gauge({ name: 'c', help: 'c' }).set(-Infinity);
    registry.histogram({ name: 'd_seconds', help: 'd', labelNames: ['op'] }).observe(0.3, { op: 'x' });
    registry.counter({ name: 'e_total', help: 'e' }).inc(undefined, 1e21);
    const text = render(registry);
    assert.deepEqual(lintExposition(text), []);
    // Each TYPE precedes its samples: no sample line appears before the first TYPE line.
    const lines = text.split('\n');
    assert.ok(lines.findIndex((line) => line.startsWith('# TYPE a_total')) < lines.findIndex((line) => line.startsWith('a_total')));
  });

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
