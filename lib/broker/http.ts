// HTTP routes of the broker: /health and /metrics here; the hook and membership routes
// come from their own files through `extraRoutes`. Every failure answers JSON {code, message, hint}.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { cmError, isCmError } from '../errors.ts';
import type { CmError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { formatPrometheus, PROMETHEUS_CONTENT_TYPE } from './metrics.ts';
import type { BrokerMetrics } from './metrics.ts';
import type { HTTP_ROUTES } from './metrics.ts';

export interface HealthReport {
  status: 'ok' | 'degraded' | 'draining';
  db: 'up' | 'down';
  version: string;
  gitSha: string;
  uptime: number;
}

export interface HttpContext {
  log: Logger;
  metrics: BrokerMetrics;
  health: () => Promise<HealthReport>;
  /** more routes (membership, …), each a file of its own */
  extraRoutes?: readonly RouteEntry[];
}

export type Route = (typeof HTTP_ROUTES)[number];
export type Handler = (request: IncomingMessage, response: ServerResponse) => Promise<void>;
export interface RouteEntry {
  path: string;
  method: 'GET' | 'POST' | 'DELETE';
  /** metrics label */
  route: Route;
  handler: Handler;
}

export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  response.end(text);
}

function sendError(response: ServerResponse, error: CmError, headers: Record<string, string> = {}): void {
  if (error.status === 413) headers.connection = 'close';
  sendJson(response, error.status, error.toJSON(), headers);
}

export function createHttpHandler(context: HttpContext): (request: IncomingMessage, response: ServerResponse) => void {
  const { log, metrics } = context;

  const health: Handler = async (_request, response) => {
    const report = await context.health();
    sendJson(response, report.status === 'ok' ? 200 : 503, report, { 'cache-control': 'no-store' });
  };

  const scrape: Handler = async (_request, response) => {
    const text = formatPrometheus(metrics.registry.snapshot());
    response.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
    response.end(text);
  };

  const routes = new Map<string, RouteEntry>();
  const entries: RouteEntry[] = [
    { path: '/health', method: 'GET', route: 'health', handler: health },
    { path: '/metrics', method: 'GET', route: 'metrics', handler: scrape },
    ...(context.extraRoutes ?? []),
  ];
  for (const entry of entries) {
    if (routes.has(entry.path)) throw new TypeError(`route ${entry.path} is defined twice`);
    routes.set(entry.path, entry);
  }

  return (request, response) => {
    const started = process.hrtime.bigint();
    const path = (request.url ?? '/').split('?', 1)[0] ?? '/';
    const entry = routes.get(path);
    const route: Route = entry?.route ?? 'other';
    response.on('finish', () => {
      metrics.httpDuration.observe(Number(process.hrtime.bigint() - started) / 1e9, { route });
    });
    const run = async (): Promise<void> => {
      if (entry === undefined) throw cmError('CM_ERR_NOT_FOUND', `no route for ${request.method} ${path}`);
      const head = request.method === 'HEAD' && entry.method === 'GET';
      if (request.method !== entry.method && !head) {
        throw cmError('CM_ERR_METHOD_NOT_ALLOWED', `${path} takes ${entry.method}, received ${request.method}`);
      }
      await entry.handler(request, response);
    };
    run().catch((error: unknown) => {
      if (response.headersSent) {
        response.destroy();
        return;
      }
      if (isCmError(error)) {
        const retry = error.details?.retryAfterSeconds;
        sendError(response, error, typeof retry === 'number' ? { 'retry-after': String(retry) } : {});
        return;
      }
      log.error('http handler failed', { path, error });
      sendError(response, cmError('CM_ERR_INTERNAL', `request to ${path} failed unexpectedly`));
    });
  };
}
