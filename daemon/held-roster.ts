// The roster a broker link holds, named by the broker's digest of it.
//
// The broker gives its digest with every roster (hello_ack, peers). A link sends the digest
// of the roster it holds with its next hello and list_peers; when the mesh has not changed
// the answer is the digest alone, and the roster held is current again. In a mesh of a
// thousand peers that spares each send's roster refresh about 410 KB while the mesh does not
// change (and a reconnect, when nothing changed since the roster held). A list-less answer
// naming any other digest is a broker fault: it is not taken, and the next request asks for
// the lists again.

import type { MemberView, PeerView } from '../lib/protocol.ts';

export interface Roster {
  peers: PeerView[];
  members: MemberView[];
}

/** what hello_ack and peers carry of the roster */
interface RosterFields {
  peers?: PeerView[];
  members?: MemberView[];
  rosterDigest?: string;
}

export class HeldRoster {
  #roster: Roster | undefined;
  #digest: string | undefined;

  get roster(): Roster | undefined {
    return this.#roster;
  }

  /** What a hello or list_peers says of the roster held. */
  known(): { rosterDigest?: string } {
    return this.#roster === undefined || this.#digest === undefined ? {} : { rosterDigest: this.#digest };
  }

  /** Take what a frame gives; the roster it makes current, or undefined (with why) when it gives none. */
  take(frame: RosterFields): { roster: Roster } | { error: string } {
    if (frame.peers !== undefined && frame.members !== undefined) {
      this.#roster = { peers: frame.peers, members: frame.members };
      this.#digest = frame.rosterDigest;
      return { roster: this.#roster };
    }
    if (this.#roster !== undefined && frame.rosterDigest !== undefined && frame.rosterDigest === this.#digest) return { roster: this.#roster };
    this.#digest = undefined;
    return { error: `a ${frame.rosterDigest === undefined ? 'roster' : `roster ${frame.rosterDigest}`} without its lists, for a digest this link did not send` };
  }
}
