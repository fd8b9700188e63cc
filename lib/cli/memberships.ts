// The membership of each identity as the broker last stated it, read from the daemon's
// roster.db without the daemon (daemon/roster-store.ts): `list` and `whoami` show a mesh
// the member was kicked or banned from as such, never as active.

import { existsSync } from 'node:fs';
import type { MeshIdentity } from '../client-config.ts';
import { daemonPaths } from '../../daemon/paths.ts';
import type { MembershipRecord } from '../../daemon/roster-store.ts';

/** meshId → what the broker last said about our key there; empty when the daemon never ran. */
export async function lastMemberships(home: string, meshes: readonly MeshIdentity[]): Promise<Map<string, MembershipRecord>> {
  const path = daemonPaths(home).roster;
  const found = new Map<string, MembershipRecord>();
  if (!existsSync(path)) return found;
  const { RosterStore } = await import('../../daemon/roster-store.ts');
  const store = new RosterStore(path, { readonly: true });
  try {
    for (const mesh of meshes) {
      const record = store.membership(mesh.meshId, mesh.publicKey);
      if (record !== undefined) found.set(mesh.meshId, record);
    }
  } finally {
    store.close();
  }
  return found;
}

/** The word `list` and `whoami` show: pending, active, removed or banned. */
export function membershipWord(mesh: MeshIdentity, record: MembershipRecord | undefined): string {
  if (mesh.status === 'pending') return 'pending';
  return record?.state ?? 'active';
}
