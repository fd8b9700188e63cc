// The daemon's memory of each mesh beyond one connection: the last roster (in memory, and
// in roster.db for the next start) and the membership the broker last stated. The daemon's
// member links report into it (hello_ack, peers, terminal closes); send, peer list and the
// CLI's `list` read from it. Session links report nothing: their mesh's roster is the
// member link's.

import type { MeshIdentity } from '../lib/client-config.ts';
import type { Roster } from './held-roster.ts';
import { membershipFromClose } from './membership.ts';
import { RosterStore } from './roster-store.ts';
import type { MembershipRecord, StoredRoster } from './roster-store.ts';

const ROSTER_REWRITE_MS = 60_000;

export class MeshState {
  readonly #store: RosterStore;
  readonly #known = new Map<string, StoredRoster>();
  readonly #written = new Map<string, { roster: Roster; text: string; at: number }>();
  readonly #now: () => number;

  constructor(path: string, now: () => number) {
    this.#store = new RosterStore(path);
    this.#now = now;
  }

  /** Take the rosters kept by the previous run, for meshes never reached in this one yet. */
  load(meshIds: readonly string[]): void {
    for (const meshId of meshIds) {
      const kept = this.#store.loadRoster(meshId);
      if (kept !== undefined && !this.#known.has(meshId)) this.#known.set(meshId, kept);
    }
  }

  /** A roster from the broker: the freshest known, kept for the next start too. */
  rosterSeen(meshId: string, roster: Roster): void {
    const kept = { roster, at: this.#now() };
    const previous = this.#written.get(meshId);
    this.#known.set(meshId, kept);
    const text = previous?.roster === roster ? previous.text : JSON.stringify(roster);
    // Every send asks for the roster: write it only when it changed (or once a minute, for its
    // time). The same object again (the broker said it is unchanged) needs no comparing.
    if (previous !== undefined && previous.text === text && kept.at - previous.at < ROSTER_REWRITE_MS) {
      previous.roster = roster;
      return;
    }
    this.#store.saveRoster(meshId, roster, kept.at);
    this.#written.set(meshId, { roster, text, at: kept.at });
  }

  known(meshId: string): StoredRoster | undefined {
    return this.#known.get(meshId);
  }

  /** A hello_ack: the broker took this member key, so it is a member. */
  opened(mesh: MeshIdentity): void {
    this.#store.saveMembership(mesh.meshId, mesh.publicKey, { state: 'active', reason: null, at: this.#now() });
  }

  /** A terminal close: the membership it states (removed, banned), kept; undefined when it states none. */
  ended(mesh: MeshIdentity, terminal: { code: number; reason: string } | null): MembershipRecord | undefined {
    const record = membershipFromClose(terminal, this.#now());
    if (record !== undefined) this.#store.saveMembership(mesh.meshId, mesh.publicKey, record);
    return record;
  }

  membership(mesh: MeshIdentity): MembershipRecord | undefined {
    return this.#store.membership(mesh.meshId, mesh.publicKey);
  }

  close(): void {
    this.#store.close();
  }
}
