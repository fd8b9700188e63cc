// deploy/ against the code it deploys: nginx keeps a quiet WebSocket longer than the broker
// pings and waits for a pong; the systemd unit waits longer than the broker's shutdown limit
// and starts Node as `npm start` does; the rollbridge config uses the same port, health
// path and flags; and the environments they give the broker are ones it accepts.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULTS, loadConfig } from '../../lib/broker/config.ts';
import { WS_PATH } from '../../lib/broker/connection.ts';
import { PING_INTERVAL_MS, PONG_TIMEOUT_MS } from '../../lib/broker/hub.ts';

const ROOT = resolve(new URL('../../', import.meta.url).pathname);
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const START_FLAGS = (JSON.parse(read('package.json')) as { scripts: { start: string } }).scripts.start.split(/\s+/).slice(1, -1);
const HEALTH_PATH = '/health';

/** A constant of broker.ts (the process's own, not exported): a number, or a sum of earlier ones. */
function brokerConstant(name: string): number {
  const match = new RegExp(`^const ${name} = ([^;]+);`, 'm').exec(read('broker.ts'));
  assert.ok(match !== null, `broker.ts defines ${name}`);
  return (match[1] ?? '').split('+').map((term) => term.trim())
    .reduce((sum, term) => sum + (/^[\d_]+$/.test(term) ? Number(term.replace(/_/g, '')) : brokerConstant(term)), 0);
}
const HARD_LIMIT_MS = brokerConstant('SHUTDOWN_HARD_LIMIT_MS');

/** nginx: the directives of one block, by the text that opens it. */
function block(text: string, opening: string): Map<string, string[]> {
  const start = text.indexOf(`${opening} {`);
  assert.ok(start >= 0, `deploy/nginx.conf has "${opening} {"`);
  const body = text.slice(start + opening.length + 2, text.indexOf('\n    }', start));
  const directives = new Map<string, string[]>();
  for (const line of body.split('\n').map((each) => each.replace(/#.*/, '').trim()).filter((each) => each.endsWith(';'))) {
    const [name = '', ...value] = line.slice(0, -1).split(/\s+/);
    directives.set(name, [...(directives.get(name) ?? []), value.join(' ')]);
  }
  return directives;
}
const seconds = (value: string | undefined) => Number(/^(\d+)s$/.exec(value ?? '')?.[1]) * 1000;

/** systemd: Key=Value lines (repeated keys keep the last). */
const unit = new Map(read('deploy/claudemesh-broker.service').split('\n').filter((line) => /^[A-Za-z]+=/.test(line)).map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));

describe('deploy/nginx.conf', () => {
  const nginx = read('deploy/nginx.conf');
  // the TLS server block, comments dropped
  const server = nginx.slice(nginx.indexOf('listen 443 ssl')).replace(/#.*$/gm, '');
  const ws = block(nginx, `location = ${WS_PATH}`);

  it('lets a quiet WebSocket live longer than the broker pings it and waits for its pong', () => {
    for (const name of ['proxy_read_timeout', 'proxy_send_timeout']) {
      const timeout = seconds(ws.get(name)?.[0]);
      assert.ok(timeout > PING_INTERVAL_MS, `${name} ${timeout} ms must exceed the ping interval ${PING_INTERVAL_MS} ms`);
      assert.ok(timeout >= PONG_TIMEOUT_MS, `${name} ${timeout} ms: the broker, not nginx, ends a silent socket (${PONG_TIMEOUT_MS} ms)`);
    }
  });

  it('upgrades, and forwards Host and the client address so that the broker can trust them', () => {
    const headers = new Map((server.match(/proxy_set_header[^;]+;/g) ?? []).map((line) => line.slice(0, -1).split(/\s+/).slice(1) as [string, string]));
    assert.equal(headers.get('Upgrade'), '$http_upgrade');
    assert.match(nginx, new RegExp(`map \\$http_upgrade \\${headers.get('Connection')} \\{\\s*default upgrade;`));
    assert.equal(headers.get('Host'), '$http_host', 'the Host the client used, port included: invites are checked against it');
    assert.equal(headers.get('X-Forwarded-Host'), '$http_host');
    assert.equal(headers.get('X-Forwarded-For'), '$remote_addr', 'replaced, not appended: the broker reads the first address');
    assert.match(server, /proxy_http_version 1\.1;/);
  });

  it('sends traffic to the broker\'s default port', () => {
    assert.equal(Number(/upstream claudemesh_broker \{\s*server 127\.0\.0\.1:(\d+)/.exec(nginx)?.[1]), DEFAULTS.BROKER_PORT);
  });
});

describe('deploy/claudemesh-broker.service', () => {
  it('starts the Node of node_modules/.bin with the flags of `npm start`', () => {
    assert.equal(unit.get('ExecStart'), [`${unit.get('WorkingDirectory')}/node_modules/.bin/node`, ...START_FLAGS, 'broker.ts'].join(' '));
  });

  it('waits longer than the broker\'s shutdown limit, and does not restart a bad environment', () => {
    assert.ok(Number(unit.get('TimeoutStopSec')) * 1000 > HARD_LIMIT_MS, `TimeoutStopSec must exceed SHUTDOWN_HARD_LIMIT_MS (${HARD_LIMIT_MS} ms)`);
    assert.equal(Number(unit.get('RestartPreventExitStatus')), brokerConstant('EXIT_BAD_CONFIG'));
    assert.equal(unit.get('Restart'), 'on-failure');
    assert.equal(unit.get('KillMode'), 'mixed', 'SIGTERM to the broker alone: it stops its embedded Postgres itself');
  });

  it('runs as its own user, with the data in its state directory', () => {
    assert.ok(!['', 'root', '0'].includes(unit.get('User') ?? ''));
    assert.equal(unit.get('Environment'), `BROKER_DATA_DIR=/var/lib/${unit.get('StateDirectory')}`);
  });
});

describe('deploy/broker.env', () => {
  const lines = read('deploy/broker.env').split('\n');
  const active = Object.fromEntries(lines.filter((line) => /^[A-Z_]+=/.test(line)).map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));

  it('names only variables the broker reads', () => {
    const config = read('lib/broker/config.ts');
    const named = lines.flatMap((line) => /^#?([A-Z][A-Z_]+)=/.exec(line)?.[1] ?? []);
    assert.ok(named.length >= 6);
    for (const name of named) assert.ok(config.includes(`'${name}'`) || config.includes(`.${name}`) || name in DEFAULTS, `${name} is not read by lib/broker/config.ts`);
  });

  it('is an environment the broker accepts: loopback only, trusting its proxy', () => {
    const result = loadConfig({ ...active, [(unit.get('Environment') ?? '').split('=')[0] ?? '']: (unit.get('Environment') ?? '').split('=')[1] });
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.config.host, '127.0.0.1');
    assert.equal(result.config.trustProxy, true);
    assert.equal(result.config.nodeEnv, 'production');
  });
});

describe('deploy/rollbridge.js', async () => {
  const path = join(ROOT, 'deploy/rollbridge.js');
  const { default: config } = (await import(path)) as { default: Record<string, any> };
  const [broker] = config.processes as Array<Record<string, any>>;

  it('holds the port nginx sends to, and health-checks the broker\'s /health', () => {
    assert.equal(config.proxy.port, Number(/server 127\.0\.0\.1:(\d+)/.exec(read('deploy/nginx.conf'))?.[1]));
    assert.equal(config.proxy.healthPath, HEALTH_PATH);
    assert.equal(broker?.policy, 'proxied');
    assert.equal(broker?.health.path, HEALTH_PATH);
    assert.ok(broker?.port.from > config.proxy.port || broker?.port.to < config.proxy.port, 'releases listen on ports of their own');
  });

  it('starts Node with the flags of `npm start` and lets the broker finish its shutdown', () => {
    assert.equal(broker?.command, ['exec node_modules/.bin/node', ...START_FLAGS, 'broker.ts'].join(' '));
    assert.equal(broker?.stopSignal, 'SIGTERM');
    assert.ok(broker?.gracefulStopMs > HARD_LIMIT_MS, `gracefulStopMs must exceed SHUTDOWN_HARD_LIMIT_MS (${HARD_LIMIT_MS} ms)`);
    assert.ok(config.proxy.forceStopTimeoutMs > HARD_LIMIT_MS);
  });

  it('gives every release the same database and an instance id of its own', () => {
    const env = broker?.env as Record<string, string>;
    assert.equal(env.DATABASE_URL, '{{env.DATABASE_URL}}', 'a release without DATABASE_URL must not start');
    assert.equal(env.BROKER_PORT, '{{port}}');
    assert.ok(!('BROKER_INSTANCE_ID' in env), 'overlapping releases need different instance ids (the default host:port)');
    const filled = Object.fromEntries(Object.entries(env).map(([name, value]) => [name, value.replace('{{env.DATABASE_URL}}', 'postgres://u:p@db/claudemesh').replace('{{port}}', String(broker?.port.from))]));
    const result = loadConfig(filled);
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.config.host, '127.0.0.1');
  });
});
