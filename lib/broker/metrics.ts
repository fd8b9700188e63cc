// The broker's metrics, served by GET /metrics (lib/broker/http.ts) in the Prometheus text
// exposition format, version 0.0.4.
// A metric has at most one label, and that label's values are a closed list declared here and
// checked by the compiler at every call site. So every series exists from the start at 0 and
// nothing a client sends can add one, which is why there is no series cap or overflow value.

import { monitorEventLoopDelay } from 'node:perf_hooks';
import { PRIORITIES } from '../protocol.ts';
import type { Priority } from '../protocol.ts';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

// Every value is counted somewhere (lib/broker/connection.ts, lib/broker/send.ts).
export const CONNECTION_REJECT_REASONS = [
  'not_found', 'draining', 'capacity', 'hello_timeout', 'timestamp_skew', 'bad_signature',
  'unauthorized', 'expired', 'banned', 'duplicate_hello', 'internal', 'protocol_version', 'name_taken',
] as const;
export const MESSAGE_REJECT_REASONS = [
  'unknown_recipient', 'rate_limited', 'idempotency_conflict', 'bad_envelope', 'loop_guard', 'db_unavailable',
] as const;
export const HTTP_ROUTES = ['health', 'metrics', 'hook', 'membership', 'other'] as const;
// Seconds, for request handling from a few milliseconds to ten seconds.
const HTTP_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const EVENT_LOOP_RESOLUTION_MS = 20;

type MetricType = 'counter' | 'gauge' | 'histogram';
interface Sample { suffix: '' | '_bucket' | '_sum' | '_count'; labels: [string, string][]; value: number }
interface MetricSnapshot { name: string; help: string; type: MetricType; samples: Sample[] }
interface Label<N extends string, V extends string> { name: N; values: readonly V[] }

/** Series state by label value ('' when unlabelled), every series created when the metric is. */
abstract class Metric<N extends string, V extends string, S> {
  readonly #type: MetricType;
  readonly #name: string;
  readonly #help: string;
  readonly #labelName: N | undefined;
  readonly #series = new Map<string, S>();

  constructor(type: MetricType, name: string, help: string, label: Label<N, V> | undefined, create: () => S) {
    this.#type = type;
    this.#name = name;
    this.#help = help;
    this.#labelName = label?.name;
    for (const value of label?.values ?? ['']) this.#series.set(value, create());
  }
  protected series(labels: Record<N, V> | undefined): S {
    const value = this.#labelName === undefined ? '' : labels?.[this.#labelName];
    const state = value === undefined ? undefined : this.#series.get(value);
    // Only a cast can get here; counting the update nowhere would hide that bug.
    if (state === undefined) throw new TypeError(`metric ${this.#name} has no series ${JSON.stringify(labels)}`);
    return state;
  }
  protected abstract samples(labels: [string, string][], state: S): Sample[];
  snapshot(): MetricSnapshot {
    const samples = [...this.#series].flatMap(([value, state]) =>
      this.samples(this.#labelName === undefined ? [] : [[this.#labelName, value]], state));
    return { name: this.#name, help: this.#help, type: this.#type, samples };
  }
}

class Counter<N extends string = never, V extends string = never> extends Metric<N, V, { value: number }> {
  constructor(name: string, help: string, label?: Label<N, V>) {
    super('counter', name, help, label, () => ({ value: 0 }));
  }
  // The rest parameter makes the labels argument required exactly when the counter has a label.
  inc(...labels: [N] extends [never] ? [] : [Record<N, V>]): void {
    this.series(labels[0]).value += 1;
  }
  protected override samples(labels: [string, string][], state: { value: number }): Sample[] {
    return [{ suffix: '', labels, value: state.value }];
  }
}

/** Unlabelled. With `collect` the value is read at scrape time, so it cannot drift from its source. */
class Gauge extends Metric<never, never, { value: number }> {
  readonly #collect: (() => number) | undefined;
  constructor(name: string, help: string, collect?: () => number) {
    super('gauge', name, help, undefined, () => ({ value: 0 }));
    this.#collect = collect;
  }
  set(value: number): void {
    this.series(undefined).value = value;
  }
  protected override samples(labels: [string, string][], state: { value: number }): Sample[] {
    return [{ suffix: '', labels, value: this.#collect?.() ?? state.value }];
  }
}

// Bucket counts are kept cumulative, as exposed: "le" means less than or equal to the bound.
interface HistogramState { buckets: { le: number; count: number }[]; sum: number; count: number }

class Histogram<N extends string, V extends string> extends Metric<N, V, HistogramState> {
  constructor(name: string, help: string, label: Label<N, V>, bounds: readonly number[]) {
    super('histogram', name, help, label, () => ({ buckets: bounds.map((le) => ({ le, count: 0 })), sum: 0, count: 0 }));
  }
  observe(value: number, labels: Record<N, V>): void {
    const state = this.series(labels);
    for (const bucket of state.buckets) if (value <= bucket.le) bucket.count += 1;
    state.sum += value;
    state.count += 1;
  }
  protected override samples(labels: [string, string][], state: HistogramState): Sample[] {
    return [
      ...state.buckets.map(({ le, count }): Sample => ({ suffix: '_bucket', labels: [...labels, ['le', String(le)]], value: count })),
      // The format requires a +Inf bucket; it holds every observation, so it equals the count.
      { suffix: '_bucket', labels: [...labels, ['le', '+Inf']], value: state.count },
      { suffix: '_sum', labels, value: state.sum },
      { suffix: '_count', labels, value: state.count },
    ];
  }
}

// Format 0.0.4: HELP text escapes backslash and line feed; label values also the double quote.
const escapeHelp = (text: string): string => text.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
const escapeLabelValue = (text: string): string => escapeHelp(text).replaceAll('"', '\\"');
// The format spells infinities +Inf and -Inf; String() already writes NaN and finite numbers as Go's ParseFloat reads them.
const formatValue = (value: number): string => (value === Infinity ? '+Inf' : value === -Infinity ? '-Inf' : String(value));

export function formatPrometheus(snapshot: readonly MetricSnapshot[]): string {
  const lines = snapshot.flatMap(({ name, help, type, samples }) => [
    `# HELP ${name} ${escapeHelp(help)}`,
    `# TYPE ${name} ${type}`,
    ...samples.map(({ suffix, labels, value }) => {
      const pairs = labels.map(([label, text]) => `${label}="${escapeLabelValue(text)}"`).join(',');
      return `${name}${suffix}${pairs === '' ? '' : `{${pairs}}`} ${formatValue(value)}`;
    }),
  ]);
  // Every line, the last included, must end with a line feed.
  return lines.map((line) => `${line}\n`).join('');
}

export interface BrokerMetrics {
  /** snapshot() reads the scrape-time gauges and copies every series, in exposition order */
  readonly registry: { snapshot(): MetricSnapshot[] };
  readonly connectionsTotal: Counter;
  readonly connectionsRejected: Counter<'reason', (typeof CONNECTION_REJECT_REASONS)[number]>;
  readonly messagesRouted: Counter<'priority', Priority>;
  readonly messagesRejected: Counter<'reason', (typeof MESSAGE_REJECT_REASONS)[number]>;
  readonly queueDepth: Gauge;
  readonly ttlSweeps: Counter<'flipped', 'true' | 'false'>;
  readonly hookRequests: Counter;
  readonly hookRateLimited: Counter;
  readonly httpDuration: Histogram<'route', (typeof HTTP_ROUTES)[number]>;
  stop(): void;
}

interface MetricsSources {
  /** live sockets, read at scrape time: the gauge cannot drift from the truth */
  liveConnections: () => number;
  /** slow consumers and the bytes waiting in every socket's send buffer, read at scrape time */
  unsent: () => { slow: number; bytes: number };
  /** result of the last database ping */
  dbHealthy: () => boolean;
}

type TrafficMetrics = Omit<BrokerMetrics, 'registry' | 'stop'>;

function trafficMetrics(): TrafficMetrics {
  return {
    connectionsTotal: new Counter('broker_connections_total', 'WebSocket connections accepted since start.'),
    connectionsRejected: new Counter('broker_connections_rejected_total', 'Connections or upgrades refused, by reason.',
      { name: 'reason', values: CONNECTION_REJECT_REASONS }),
    messagesRouted: new Counter('broker_messages_routed_total', 'Messages stored for delivery, by priority.',
      { name: 'priority', values: PRIORITIES }),
    messagesRejected: new Counter('broker_messages_rejected_total', 'Sends refused, by reason.',
      { name: 'reason', values: MESSAGE_REJECT_REASONS }),
    queueDepth: new Gauge('broker_queue_depth', 'Deliveries queued and not yet acknowledged by their recipient.'),
    ttlSweeps: new Counter('broker_ttl_sweeps_total', 'Status TTL sweeps, by whether they flipped a stale working status to idle.',
      { name: 'flipped', values: ['true', 'false'] }),
    hookRequests: new Counter('broker_hook_requests_total', 'Requests to /hook/set-status.'),
    hookRateLimited: new Counter('broker_hook_requests_rate_limited_total',
      'Requests to /hook/set-status refused by the per (pid, cwd) rate limit.'),
    httpDuration: new Histogram('broker_http_request_duration_seconds', 'HTTP request handling time, by route.',
      { name: 'route', values: HTTP_ROUTES }, HTTP_DURATION_BUCKETS),
  };
}

function healthGauges(sources: MetricsSources, loopDelay: ReturnType<typeof monitorEventLoopDelay>): Gauge[] {
  return [
    new Gauge('broker_db_healthy', '1 while the last database ping succeeded, else 0.', () => (sources.dbHealthy() ? 1 : 0)),
    new Gauge('process_resident_memory_bytes', 'Resident set size of the broker process.', () => process.memoryUsage.rss()),
    new Gauge('process_cpu_seconds', 'User plus system CPU time used by the broker process, in seconds.', () => {
      const usage = process.cpuUsage();
      return (usage.user + usage.system) / 1e6;
    }),
    new Gauge('process_start_time_seconds', 'Start time of the broker process since the Unix epoch, in seconds.',
      () => Math.round((Date.now() - process.uptime() * 1000) / 1000)),
    // Since the previous scrape (then reset): a stall an hour ago must not hide today's, nor
    // the connects of the first minute every later minute. Node's histogram records the whole
    // interval between its timer's runs, so an idle process reads the resolution itself
    // (20 ms): that part is not delay and is taken off.
    new Gauge('nodejs_eventloop_delay_p99_seconds', 'Event loop delay (beyond the timer interval), 99th percentile since the previous scrape.', () => {
      const p99 = Math.max(0, loopDelay.percentile(99) / 1e6 - EVENT_LOOP_RESOLUTION_MS) / 1e3;
      loopDelay.reset();
      return p99;
    }),
  ];
}

export function createBrokerMetrics(sources: MetricsSources): BrokerMetrics {
  const loopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  loopDelay.enable();
  const traffic = trafficMetrics();
  const all: { snapshot(): MetricSnapshot }[] = [
    new Gauge('broker_connections_active', 'WebSocket connections open right now.', sources.liveConnections),
    new Gauge('broker_slow_consumer_connections',
      'Connections with more than 1 MiB written to them and not yet taken by the network: they get no pushes, and none of their frames is read, until they catch up.',
      () => sources.unsent().slow),
    new Gauge('broker_slow_consumer_buffered_bytes', 'Bytes written to WebSocket connections and not yet taken by the network, summed over all connections.',
      () => sources.unsent().bytes),
    ...Object.values(traffic),
    ...healthGauges(sources, loopDelay),
  ];
  return { ...traffic, registry: { snapshot: () => all.map((metric) => metric.snapshot()) }, stop: () => loopDelay.disable() };
}
