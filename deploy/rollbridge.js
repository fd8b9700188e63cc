// rollbridge config for the claudemesh broker: releases without downtime (docs/deploy.md).
//
// nginx (deploy/nginx.conf) keeps pointing at 127.0.0.1:7900, which rollbridge's proxy holds.
// Each release's broker listens on a port of its own from 17900–17999, so the old and the
// new one overlap during a deploy; its instance id (host:port by default) differs too, so
// never set BROKER_INSTANCE_ID here: two live brokers with one id take each other's presences.
//
// Every release must use the same Postgres: start the rollbridge daemon with DATABASE_URL
// (and the rest of deploy/broker.env) in its environment. Each broker inherits it; without
// it the release does not start (rollbridge refuses the missing {{env.DATABASE_URL}}).
//
//   rollbridge daemon --config /opt/claudemesh/deploy/rollbridge.js
//   rollbridge deploy --config /opt/claudemesh/deploy/rollbridge.js \
//     --release-path /opt/claudemesh/releases/$SHA --release-id $SHA --revision $SHA

export default {
  application: 'claudemesh-broker',
  proxy: {
    host: '127.0.0.1',
    port: 7900,
    healthPath: '/health',
    // A broker's WebSockets never end by themselves, so waiting for them would only delay the
    // SIGTERM. Two seconds let HTTP requests in flight finish; then the broker drains itself:
    // new upgrades get 503, sockets close 1012 in batches and their daemons reconnect, through
    // the proxy, to the new release.
    drainTimeoutMs: 2_000,
    forceStopTimeoutMs: 15_000,
  },
  processes: [
    {
      id: 'broker',
      policy: 'proxied',
      cwd: '{{releasePath}}',
      // The flags of `npm start`; exec, so that the broker itself gets rollbridge's signals.
      command: 'exec node_modules/.bin/node --max-semi-space-size=8 --max-old-space-size=192 broker.ts',
      port: { from: 17_900, to: 17_999 },
      env: {
        DATABASE_URL: '{{env.DATABASE_URL}}',
        BROKER_HOST: '127.0.0.1',
        BROKER_PORT: '{{port}}',
        TRUST_PROXY: '1',
        NODE_ENV: 'production',
      },
      // 200 only once Postgres answers and migrations are applied.
      health: { path: '/health', timeoutMs: 60_000, intervalMs: 250 },
      stopSignal: 'SIGTERM',
      // The broker exits within 5 s of SIGTERM (SHUTDOWN_HARD_LIMIT_MS in broker.ts).
      gracefulStopMs: 15_000,
      restart: { maxRestarts: 5, windowMs: 120_000, backoffFactor: 2, maxDelayMs: 30_000 },
    },
  ],
};
