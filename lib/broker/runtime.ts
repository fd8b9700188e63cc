// The messaging core assembled: hub, roster, delivery, sender and presence, with the
// events that tie them together. server.ts hands it each accepted socket.

import type pg from 'pg';
import type { WebSocket } from 'ws';
import type { BrokerConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { ReplayGuard } from '../replay-guard.ts';
import { Delivery } from './delivery.ts';
import { createHookRoute } from './hook.ts';
import type { RouteEntry } from './http.ts';
import { Hub, LEASE_MS } from './hub.ts';
import type { Peer } from './hub.ts';
import type { MembershipEvents } from './membership.ts';
import type { BrokerMetrics } from './metrics.ts';
import { Presence } from './presence.ts';
import { RosterCache } from './roster.ts';
import { Sender } from './send.ts';
import { handleConnection } from './session.ts';
import { query } from './sql.ts';

/** Every timer of the core, injectable so tests run in milliseconds. */
export interface Timings {
  helloTimeoutMs?: number;
  leaseMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  deliveryLeaseMs?: number;
  redeliveryTickMs?: number;
  sweepIntervalMs?: number;
  ttlSweepIntervalMs?: number;
}

export interface RuntimeOptions {
  pool: pg.Pool;
  log: Logger;
  config: BrokerConfig;
  metrics: BrokerMetrics;
  replay: ReplayGuard;
  instanceId: string;
  now: () => number;
  timings?: Timings;
}

export interface Runtime {
  readonly hub: Hub;
  readonly delivery: Delivery;
  readonly presence: Presence;
  readonly roster: RosterCache;
  readonly hookRoute: RouteEntry;
  readonly membershipEvents: MembershipEvents;
  onConnection(socket: WebSocket): void;
  close(): Promise<void>;
}

export function createRuntime(options: RuntimeOptions): Runtime {
  const { pool, log, config, metrics, instanceId, now } = options;
  const timings = options.timings ?? {};
  const leaseMs = timings.leaseMs ?? LEASE_MS;
  const roster = new RosterCache(pool, now);
  let delivery: Delivery | undefined;

  const peerLeft = (peer: Peer, reason: string): void => {
    hub.broadcast(peer.meshId, {
      type: 'system', event: 'peer_left', meshId: peer.meshId, reason, at: new Date(now()).toISOString(),
      peer: { key: peer.key, memberKey: peer.memberKey, name: peer.name, role: peer.role },
    });
  };

  const hub: Hub = new Hub({
    log,
    maxPerMesh: config.maxConnectionsPerMesh,
    now,
    leaseMs,
    ...(timings.pingIntervalMs === undefined ? {} : { pingIntervalMs: timings.pingIntervalMs }),
    ...(timings.pongTimeoutMs === undefined ? {} : { pongTimeoutMs: timings.pongTimeoutMs }),
    events: {
      onDetached(peer) {
        // Inside its lease a peer still lists as online: the roster view does not change.
        void pool.query(query('presence_disconnect', [peer.meshId, peer.key, instanceId, leaseMs / 1000]))
          .catch((error: unknown) => log.warn('could not record disconnect', { error }));
        void delivery?.releaseLeases(peer).catch((error: unknown) => log.warn('could not release leases', { error }));
      },
      onGone(peer, reason) {
        // Record it first, then tell the others: list_peers never contradicts peer_left.
        void pool.query(query('presence_gone', [peer.meshId, peer.key, instanceId, reason !== 'lease_expired']))
          .catch((error: unknown) => log.warn('could not record departure', { error }))
          .finally(() => {
            roster.invalidate(peer.meshId);
            peerLeft(peer, reason);
          });
      },
    },
  });

  delivery = new Delivery({
    pool, log, hub, roster, metrics, instanceId,
    messageTtlSeconds: config.messageTtlSeconds,
    ...(timings.deliveryLeaseMs === undefined ? {} : { leaseMs: timings.deliveryLeaseMs }),
    ...(timings.redeliveryTickMs === undefined ? {} : { tickMs: timings.redeliveryTickMs }),
    ...(timings.sweepIntervalMs === undefined ? {} : { sweepMs: timings.sweepIntervalMs }),
  });
  const presence = new Presence({
    pool, log, hub, roster, delivery, metrics,
    statusTtlSeconds: config.statusTtlSeconds,
    hookFreshWindowSeconds: config.hookFreshWindowSeconds,
    ...(timings.ttlSweepIntervalMs === undefined ? {} : { sweepIntervalMs: timings.ttlSweepIntervalMs }),
  });
  const sender = new Sender({
    pool, log, hub, roster, delivery, metrics, instanceId, now,
    messageTtlSeconds: config.messageTtlSeconds, sendBurst: config.sendBurst, sendRatePerSecond: config.sendRatePerSecond,
    pairBurst: config.loopGuardBurst, pairRatePerSecond: config.loopGuardRatePerSecond,
  });
  const deliveryReady = delivery;

  return {
    hub,
    delivery: deliveryReady,
    presence,
    roster,
    hookRoute: createHookRoute({
      metrics, presence, roster, replay: options.replay, now,
      maxBodyBytes: config.maxMessageBytes,
      rateLimitPerMin: config.hookRateLimitPerMin,
    }),
    membershipEvents: {
      memberRemoved(meshId, memberPubkey, closeCode, reason) {
        hub.removeMember(meshId, memberPubkey, closeCode, reason);
        roster.invalidate(meshId);
      },
    },
    onConnection(socket) {
      handleConnection(socket, {
        pool, log, hub, roster, delivery: deliveryReady, sender, presence, metrics, replay: options.replay, instanceId, now,
        ...(timings.helloTimeoutMs === undefined ? {} : { helloTimeoutMs: timings.helloTimeoutMs }),
      });
    },
    async close() {
      hub.close();
      presence.close();
      await deliveryReady.close();
    },
  };
}
