// The broker's metric set (DESIGN §3). Every series exists from the start at 0; label
// values are closed lists, so nothing a client sends can create a new series.

import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Registry } from '../prom.ts';
import type { Counter, Gauge, Histogram } from '../prom.ts';

export const CONNECTION_REJECT_REASONS = [
  'not_found', 'draining', 'capacity', 'bad_frame', 'hello_timeout', 'timestamp_skew',
  'bad_signature', 'unauthorized', 'expired', 'revoked', 'duplicate_hello',
] as const;
export const MESSAGE_REJECT_REASONS = [
  'unknown_recipient', 'too_large', 'rate_limited', 'not_member', 'idempotency_conflict',
  'bad_envelope', 'loop_guard', 'db_unavailable',
] as const;
export const PRIORITIES = ['now', 'next', 'low'] as const;
export const HTTP_ROUTES = ['health', 'metrics', 'hook', 'membership', 'other'] as const;
const EVENT_LOOP_RESOLUTION_MS = 20;

export interface BrokerMetrics {
  readonly registry: Registry;
  readonly connectionsTotal: Counter;
  readonly connectionsRejected: Counter;
  readonly messagesRouted: Counter;
  readonly messagesRejected: Counter;
  readonly queueDepth: Gauge;
  readonly ttlSweeps: Counter;
  readonly hookRequests: Counter;
  readonly hookRateLimited: Counter;
  readonly httpDuration: Histogram;
  stop(): void;
}

export interface MetricsSources {
  /** live sockets, read at scrape time: the gauge cannot drift from the truth */
  liveConnections: () => number;
  /** result of the last database ping */
  dbHealthy: () => boolean;
}

export function createBrokerMetrics(sources: MetricsSources): BrokerMetrics {
  const registry = new Registry();
  const loopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  loopDelay.enable();

  registry.gauge({
    name: 'broker_connections_active',
    help: 'WebSocket connections open right now.',
    collect: () => sources.liveConnections(),
  });
  const metrics: BrokerMetrics = {
    registry,
    connectionsTotal: registry.counter({ name: 'broker_connections_total', help: 'WebSocket connections accepted since start.' }),
    connectionsRejected: registry.counter({
      name: 'broker_connections_rejected_total',
      help: 'Connections or upgrades refused, by reason.',
      labelNames: ['reason'],
      labelValues: { reason: CONNECTION_REJECT_REASONS },
    }),
    messagesRouted: registry.counter({
      name: 'broker_messages_routed_total',
      help: 'Messages stored for delivery, by priority.',
      labelNames: ['priority'],
      labelValues: { priority: PRIORITIES },
    }),
    messagesRejected: registry.counter({
      name: 'broker_messages_rejected_total',
      help: 'Sends refused, by reason.',
      labelNames: ['reason'],
      labelValues: { reason: MESSAGE_REJECT_REASONS },
    }),
    queueDepth: registry.gauge({ name: 'broker_queue_depth', help: 'Deliveries queued and not yet acknowledged by their recipient.' }),
    ttlSweeps: registry.counter({
      name: 'broker_ttl_sweeps_total',
      help: 'Status TTL sweeps, by whether they flipped a stale working status to idle.',
      labelNames: ['flipped'],
      labelValues: { flipped: ['true', 'false'] },
    }),
    hookRequests: registry.counter({ name: 'broker_hook_requests_total', help: 'Requests to /hook/set-status.' }),
    hookRateLimited: registry.counter({
      name: 'broker_hook_requests_rate_limited_total',
      help: 'Requests to /hook/set-status refused by the per (pid, cwd) rate limit.',
    }),
    httpDuration: registry.histogram({
      name: 'broker_http_request_duration_seconds',
      help: 'HTTP request handling time, by route.',
      labelNames: ['route'],
      labelValues: { route: HTTP_ROUTES },
    }),
    stop: () => loopDelay.disable(),
  };
  registry.gauge({
    name: 'broker_db_healthy',
    help: '1 while the last database ping succeeded, else 0.',
    collect: () => (sources.dbHealthy() ? 1 : 0),
  });
  registry.gauge({
    name: 'process_resident_memory_bytes',
    help: 'Resident set size of the broker process.',
    collect: () => process.memoryUsage.rss(),
  });
  registry.gauge({
    name: 'process_cpu_seconds',
    help: 'User plus system CPU time used by the broker process, in seconds.',
    collect: () => {
      const usage = process.cpuUsage();
      return (usage.user + usage.system) / 1e6;
    },
  });
  registry.gauge({
    name: 'process_start_time_seconds',
    help: 'Start time of the broker process since the Unix epoch, in seconds.',
    collect: () => Math.round((Date.now() - process.uptime() * 1000) / 1000),
  });
  registry.gauge({
    name: 'nodejs_eventloop_delay_p99_seconds',
    help: 'Event loop delay, 99th percentile since start.',
    collect: () => loopDelay.percentile(99) / 1e9,
  });
  return metrics;
}
