// Status, summary and groups of a presence (DESIGN §6). Status sources rank
// hook > manual > inferred; the rule itself lives in the `set_status` query so that it is
// applied atomically. A status that turns idle releases held `next`/`low` deliveries at
// once; a periodic sweep flips `working` older than STATUS_TTL_SECONDS back to idle.

import type pg from 'pg';
import type { Logger } from '../log.ts';
import { MAX_GROUPS } from '../protocol.ts';
import type { Status } from '../protocol.ts';
import type { Delivery } from './delivery.ts';
import type { Hub } from './hub.ts';
import type { BrokerMetrics } from './metrics.ts';
import type { RosterCache, RosterPresence } from './roster.ts';
import { query } from './sql.ts';

export const TTL_SWEEP_INTERVAL_MS = 15_000;

export interface PresenceOptions {
  pool: pg.Pool;
  log: Logger;
  hub: Hub;
  roster: RosterCache;
  delivery: Delivery;
  metrics: BrokerMetrics;
  statusTtlSeconds: number;
  hookFreshWindowSeconds: number;
  sweepIntervalMs?: number;
}

/** The wire shape of one peer in `hello_ack`, `peers` and system events. */
export function peerView(presence: RosterPresence): Record<string, unknown> {
  return {
    key: presence.key,
    memberKey: presence.memberKey,
    name: presence.name,
    role: presence.role,
    status: presence.status,
    summary: presence.summary,
    groups: presence.groups,
    connectedAt: presence.connectedAt,
    online: presence.online,
  };
}

export class Presence {
  readonly #options: PresenceOptions;
  readonly #sweep: NodeJS.Timeout;

  constructor(options: PresenceOptions) {
    this.#options = options;
    this.#sweep = setInterval(() => void this.ttlSweep(), options.sweepIntervalMs ?? TTL_SWEEP_INTERVAL_MS);
    this.#sweep.unref();
  }

  /** Apply a status from a source; returns the status in force afterwards. */
  async setStatus(meshId: string, key: string, status: Status, source: 'hook' | 'manual' | 'inferred'): Promise<{ applied: boolean; status: Status }> {
    const { pool, roster, hub, delivery } = this.#options;
    const result = await pool.query(query('set_status', [meshId, key, status, source, this.#options.hookFreshWindowSeconds]));
    const applied = (result.rowCount ?? 0) > 0;
    if (applied) roster.invalidate(meshId);
    const current = applied ? status : ((await roster.get(meshId)).presences.get(key)?.status ?? status);
    if (applied && current === 'idle') {
      const peer = hub.get(meshId, key);
      if (peer !== undefined) void delivery.drain(peer);
    }
    return { applied, status: current };
  }

  async setSummary(meshId: string, key: string, summary: string): Promise<void> {
    await this.#options.pool.query(query('set_summary', [meshId, key, summary]));
    this.#options.roster.invalidate(meshId);
  }

  /** Returns the groups afterwards, or undefined when the presence is at MAX_GROUPS. */
  async joinGroup(meshId: string, key: string, group: string): Promise<string[] | undefined> {
    const result = await this.#options.pool.query(query('join_group', [meshId, key, group, MAX_GROUPS]));
    this.#options.roster.invalidate(meshId);
    return result.rows[0]?.groups;
  }

  async leaveGroup(meshId: string, key: string, group: string): Promise<string[]> {
    const result = await this.#options.pool.query(query('leave_group', [meshId, key, group]));
    this.#options.roster.invalidate(meshId);
    return result.rows[0]?.groups ?? [];
  }

  async ttlSweep(): Promise<number> {
    const { pool, roster, hub, delivery, metrics, log } = this.#options;
    try {
      const { rows } = await pool.query(query('status_ttl_sweep', [this.#options.statusTtlSeconds]));
      metrics.ttlSweeps.inc({ flipped: rows.length > 0 ? 'true' : 'false' });
      for (const meshId of new Set(rows.map((row) => row.mesh_id as string))) roster.invalidate(meshId);
      for (const row of rows) {
        const peer = hub.get(row.mesh_id, row.pubkey);
        if (peer !== undefined) void delivery.drain(peer);
      }
      return rows.length;
    } catch (error) {
      log.warn('status TTL sweep failed', { error });
      return 0;
    }
  }

  close(): void {
    clearInterval(this.#sweep);
  }
}
