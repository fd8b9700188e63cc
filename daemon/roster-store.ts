// What the daemon remembers about each mesh between runs, in roster.db (SQLite, WAL, 0600):
//
//   - the last roster the broker gave (members and peers: names and public keys only), so
//     a daemon that starts while the broker is down can still resolve names, encrypt and
//     queue, and `peer list` can show what it knew and as of when;
//   - the membership of each member key as the broker last stated it: `active` after a
//     hello_ack, `removed` (kicked, left, or no longer a member) or `banned` after a close
//     that said so. `claudemesh list` reads it without the daemon, so a removed member is
//     never shown an active mesh.
//
// Nothing secret lives here: the broker sends the roster to every member anyway.

import Database from 'better-sqlite3';
import type { Database as SqliteDatabase, Statement } from 'better-sqlite3';
import type { Roster } from './held-roster.ts';
import { restrictFiles } from './paths.ts';

const BUSY_TIMEOUT_MS = 5_000;

const MEMBERSHIPS = ['active', 'removed', 'banned'] as const;
type Membership = (typeof MEMBERSHIPS)[number];

export interface StoredRoster {
  roster: Roster;
  /** when the broker gave it (epoch ms) */
  at: number;
}

export interface MembershipRecord {
  state: Membership;
  /** the close that said so (code and reason), null for active */
  reason: string | null;
  at: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS rosters (
  mesh_id TEXT PRIMARY KEY,
  roster TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
  mesh_id TEXT NOT NULL,
  member_key TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('active', 'removed', 'banned')),
  reason TEXT,
  at INTEGER NOT NULL,
  PRIMARY KEY (mesh_id, member_key)
);
`;

export class RosterStore {
  readonly #db: SqliteDatabase;
  readonly #saveRoster: Statement;
  readonly #loadRoster: Statement;
  readonly #saveMembership: Statement;
  readonly #loadMembership: Statement;

  constructor(path: string, options: { readonly?: boolean } = {}) {
    this.#db = new Database(path, { timeout: BUSY_TIMEOUT_MS, readonly: options.readonly === true, fileMustExist: options.readonly === true });
    if (options.readonly !== true) {
      this.#db.pragma('journal_mode = WAL');
      // NORMAL: a roster lost to a power cut is only older; the next hello brings a new one.
      this.#db.pragma('synchronous = NORMAL');
      this.#db.exec(SCHEMA);
      restrictFiles(path);
    }
    this.#saveRoster = this.#db.prepare('INSERT INTO rosters (mesh_id, roster, at) VALUES (?, ?, ?) ON CONFLICT (mesh_id) DO UPDATE SET roster = excluded.roster, at = excluded.at');
    this.#loadRoster = this.#db.prepare('SELECT roster, at FROM rosters WHERE mesh_id = ?');
    this.#saveMembership = this.#db.prepare(`INSERT INTO memberships (mesh_id, member_key, state, reason, at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (mesh_id, member_key) DO UPDATE SET state = excluded.state, reason = excluded.reason, at = excluded.at`);
    this.#loadMembership = this.#db.prepare('SELECT state, reason, at FROM memberships WHERE mesh_id = ? AND member_key = ?');
  }

  saveRoster(meshId: string, roster: Roster, at: number): void {
    this.#saveRoster.run(meshId, JSON.stringify(roster), at);
  }

  loadRoster(meshId: string): StoredRoster | undefined {
    const row = this.#loadRoster.get(meshId) as { roster: string; at: number } | undefined;
    return row === undefined ? undefined : { roster: JSON.parse(row.roster) as Roster, at: row.at };
  }

  saveMembership(meshId: string, memberKey: string, record: MembershipRecord): void {
    this.#saveMembership.run(meshId, memberKey, record.state, record.reason, record.at);
  }

  membership(meshId: string, memberKey: string): MembershipRecord | undefined {
    return this.#loadMembership.get(meshId, memberKey) as MembershipRecord | undefined;
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
