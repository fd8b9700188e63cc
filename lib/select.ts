// Turning what people type into exact things: `--mesh` into one identity of the config,
// a peer (name or key prefix) into one key. Used by the CLI verbs and by the daemon's
// router. Resolution happens here, on the client, from lists the broker returns; the broker
// is only ever sent full keys, so a short prefix can never be taken for the wrong peer there.

import { PUBLIC_KEY_HEX } from './crypto.ts';
import { cmError } from './errors.ts';
import type { ClientConfig, MeshIdentity } from './client-config.ts';

/** Shortest key prefix accepted for a peer: shorter ones match by accident. */
const MIN_KEY_PREFIX = 4;
const KEY_PREFIX = /^[0-9a-f]+$/;

export interface Peer {
  name: string;
  key: string;
}

/** The identity `--mesh` names (mesh id or name); the only one when `--mesh` is omitted. */
export function selectMesh(config: ClientConfig, wanted: string | undefined): MeshIdentity {
  const { meshes } = config;
  if (wanted === undefined) {
    const only = meshes[0];
    if (meshes.length === 1 && only !== undefined) return only;
    if (meshes.length === 0) {
      throw cmError('CM_ERR_MESH_UNKNOWN', 'this machine is in no mesh yet', { hint: 'start one with claudemesh new NAME, or join with claudemesh join TOKEN' });
    }
    throw cmError('CM_ERR_MESH_UNKNOWN', `you are in ${meshes.length} meshes (${meshes.map((mesh) => mesh.name).join(', ')}): say which with --mesh`, {
      hint: 'claudemesh list shows them; --mesh takes a name or an id',
    });
  }
  const byId = meshes.find((mesh) => mesh.meshId === wanted);
  if (byId !== undefined) return byId;
  const byName = meshes.filter((mesh) => mesh.name === wanted);
  const first = byName[0];
  if (byName.length === 1 && first !== undefined) return first;
  if (byName.length > 1) {
    throw cmError('CM_ERR_AMBIGUOUS', `${byName.length} of your meshes are called ${JSON.stringify(wanted)}: use the mesh id`, {
      details: { matches: byName.map((mesh) => ({ meshId: mesh.meshId, brokerUrl: mesh.brokerUrl })) },
    });
  }
  throw cmError('CM_ERR_MESH_UNKNOWN', `no mesh called ${JSON.stringify(wanted)} in your config`, { hint: 'claudemesh list shows your meshes' });
}

/**
 * One peer out of `candidates`: by exact name, else by unique key prefix (≥ 4 hex). A full
 * 64-hex key is always accepted, even when it is not in the list (e.g. banning a former member).
 */
export function resolvePeer(wanted: string, candidates: readonly Peer[], what: string): Peer {
  if (PUBLIC_KEY_HEX.test(wanted)) {
    return candidates.find((peer) => peer.key === wanted) ?? { name: `${wanted.slice(0, 12)}…`, key: wanted };
  }
  const named = candidates.filter((peer) => peer.name === wanted);
  const byName = named[0];
  if (named.length === 1 && byName !== undefined) return byName;
  const prefix = wanted.toLowerCase();
  const matches = named.length > 1 ? named : KEY_PREFIX.test(prefix) && prefix.length >= MIN_KEY_PREFIX ? candidates.filter((peer) => peer.key.startsWith(prefix)) : [];
  const only = matches[0];
  if (matches.length === 1 && only !== undefined) return only;
  if (matches.length > 1) {
    throw cmError('CM_ERR_AMBIGUOUS', `${JSON.stringify(wanted)} matches ${matches.length} ${what}s: ${matches.map((peer) => `${peer.name} (${peer.key.slice(0, 12)})`).join(', ')}`, {
      details: { matches: matches.map((peer) => ({ name: peer.name, pubkey: peer.key })) },
    });
  }
  throw cmError('CM_ERR_PEER_UNKNOWN', `no ${what} called ${JSON.stringify(wanted)}${KEY_PREFIX.test(prefix) ? ' or with a key starting with it' : ''}`, {
    hint: `name a ${what} exactly, or give at least ${MIN_KEY_PREFIX} hex characters of its key`,
  });
}
