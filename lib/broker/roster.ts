// The roster of a mesh: its current members and every proven key (member connections and
// sessions) with status, summary and groups. One source of truth, read from Postgres, for
// both `list_peers` and routing; cached briefly and invalidated on every local change.

import type pg from 'pg';
import { query } from './sql.ts';

export const ROSTER_CACHE_MS = 1_000;
// Offline presences stay routable (store-and-forward to a session key) this long.
export const OFFLINE_PRESENCE_SECONDS = 7 * 24 * 3600;

export interface RosterMember { key: string; name: string; role: 'owner' | 'admin' | 'member' }
export interface RosterPresence {
  key: string;
  memberKey: string;
  role: 'control' | 'session';
  name: string;
  status: 'idle' | 'working' | 'dnd';
  statusSource: 'hook' | 'manual' | 'inferred';
  summary: string;
  groups: string[];
  connectedAt: string;
  online: boolean;
}
export interface Roster {
  members: Map<string, RosterMember>;
  presences: Map<string, RosterPresence>;
}

interface Entry { roster: Roster; loadedAt: number }

export class RosterCache {
  readonly #pool: pg.Pool;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #loading = new Map<string, Promise<Roster>>();
  readonly #versions = new Map<string, number>();

  constructor(pool: pg.Pool, now: () => number = Date.now) {
    this.#pool = pool;
    this.#now = now;
  }

  invalidate(meshId: string): void {
    this.#entries.delete(meshId);
    this.#loading.delete(meshId);
    this.#versions.set(meshId, (this.#versions.get(meshId) ?? 0) + 1);
  }

  async get(meshId: string): Promise<Roster> {
    const cached = this.#entries.get(meshId);
    if (cached !== undefined && this.#now() - cached.loadedAt < ROSTER_CACHE_MS) return cached.roster;
    const inFlight = this.#loading.get(meshId);
    if (inFlight !== undefined) return inFlight;
    const version = this.#versions.get(meshId) ?? 0;
    const loading = this.#load(meshId).then((roster) => {
      // A change made while this load was running may not be in it: do not cache it then.
      if ((this.#versions.get(meshId) ?? 0) === version) this.#entries.set(meshId, { roster, loadedAt: this.#now() });
      return roster;
    }).finally(() => {
      if (this.#loading.get(meshId) === loading) this.#loading.delete(meshId);
    });
    this.#loading.set(meshId, loading);
    return loading;
  }

  async #load(meshId: string): Promise<Roster> {
    const [members, presences] = await Promise.all([
      this.#pool.query(query('roster_members', [meshId])),
      this.#pool.query(query('roster_presences', [meshId, OFFLINE_PRESENCE_SECONDS])),
    ]);
    const roster: Roster = { members: new Map(), presences: new Map() };
    for (const row of members.rows) roster.members.set(row.pubkey, { key: row.pubkey, name: row.name, role: row.role });
    for (const row of presences.rows) {
      roster.presences.set(row.pubkey, {
        key: row.pubkey,
        memberKey: row.member_key,
        role: row.role,
        name: row.name,
        status: row.status,
        statusSource: row.status_source,
        summary: row.summary,
        groups: row.groups,
        connectedAt: (row.connected_at as Date).toISOString(),
        online: row.online,
      });
    }
    return roster;
  }
}
