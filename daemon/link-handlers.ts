// What the daemon does with what one broker link reports: a connection proven, a roster, a
// pushed message, a mesh event, the link's own state changes. The member link of a mesh
// speaks for the mesh (its roster, its joins and leaves); a session link only for itself.
// Handlers that write to disk report a failure (storage.ts) rather than end the process.

import type { MeshIdentity } from '../lib/client-config.ts';
import type { BrokerLink, LinkHandlers } from './broker-link.ts';
import type { EventRing } from './events.ts';
import type { Inbox } from './inbox.ts';
import type { MeshState } from './mesh-state.ts';
import { receivePush } from './receive.ts';
import type { SessionRecord } from './sessions.ts';
import { reported } from './storage.ts';

interface LinkOwner {
  events: EventRing;
  inbox: Inbox;
  meshState: MeshState;
  /** the daemon's directory, named in storage failures */
  dir: string;
  now: () => number;
  /** a link opened: the outbox may have work for it */
  wake(): void;
  /** the broker ended this membership for good */
  ended(mesh: MeshIdentity, link: BrokerLink): void;
}

/** The handlers of the link of `mesh` (and of `session`, when it is a session's); `link` is read when they run. */
export function linkHandlers(owner: LinkOwner, mesh: MeshIdentity, session: SessionRecord | undefined, link: () => BrokerLink): LinkHandlers {
  const { events, dir } = owner;
  return {
    onOpen: reported(events, dir, 'recording the membership', () => {
      owner.wake();
      if (session === undefined) owner.meshState.opened(mesh);
    }),
    onRoster: reported(events, dir, 'keeping the roster', (roster) => void (session === undefined && owner.meshState.rosterSeen(mesh.meshId, roster))),
    // Not stored means not acknowledged: the broker pushes it again.
    onPush: reported(events, dir, 'storing a pushed message (not acknowledged: the broker pushes it again)',
      (frame) => receivePush({ link: link(), meshId: mesh.meshId, frame, inbox: owner.inbox, events, now: owner.now })),
    // System events are the mesh's, not a connection's: take them from the member link only.
    onSystem: (frame) => {
      if (session !== undefined) return;
      if (frame.event === 'peer_left') events.push('peer_left', { meshId: mesh.meshId, peer: frame.peer, reason: frame.reason });
      else for (const peer of frame.peers ?? (frame.peer === undefined ? [] : [frame.peer])) events.push('peer_joined', { meshId: mesh.meshId, peer });
    },
    onEvent: reported(events, dir, 'recording the end of a membership', (kind, fields) => {
      events.push(kind, { ...fields, mesh: mesh.name, ...(session === undefined ? {} : { session: session.name }) });
      if (session === undefined && kind === 'link_stopped' && fields.terminal === true) owner.ended(mesh, link());
    }),
  };
}
