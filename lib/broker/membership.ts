// Membership routes (DESIGN §7): create a mesh, invite, join, leave, kick, ban, unban.
// Placeholder until the membership work lands: no routes yet.

import type pg from 'pg';
import type { BrokerConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { ReplayGuard } from '../replay-guard.ts';
import type { RouteEntry } from './http.ts';

/** What membership changes do to live connections; implemented by the connection hub. */
export interface MembershipEvents {
  /**
   * A member is out of the mesh: close its member and session sockets with `closeCode`
   * (4001 kicked, 4002 banned/revoked, 1000 left) and tell the others `peer_left`.
   */
  memberRemoved(meshId: string, memberPubkey: string, closeCode: number, reason: string): void;
}

export interface MembershipDeps {
  pool: pg.Pool;
  log: Logger;
  config: BrokerConfig;
  replay: ReplayGuard;
  events: MembershipEvents;
  now: () => number;
}

export function createMembershipRoutes(_deps: MembershipDeps): RouteEntry[] {
  return [];
}
