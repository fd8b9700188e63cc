// What the daemon answers about messages, shaped for people and scripts: the outbox row
// without its envelopes or text, the answer to a send, and the broker's message status —
// each with names from the mesh's last roster where it has them, so nobody has to read keys.

import type { MeshIdentity } from '../lib/client-config.ts';
import { cmError } from '../lib/errors.ts';
import type { LinkStatus } from './broker-link.ts';
import type { Roster } from './held-roster.ts';
import type { RosterView } from './send-plan.ts';
import type { OutboxRow, OutboxStatus } from './outbox.ts';
import { DEFERRED_TARGET } from './outbox.ts';

export interface SendOutcome {
  /** 202 queued now, 200 the same request was already queued */
  status: 202 | 200;
  body: {
    clientMessageId: string; status: OutboxStatus; meshId: string; mesh: string; target: string; targetName: string | null; recipients: number;
    brokerMessageId: string | null; duplicate: boolean;
    /** false: queued before any roster named the target; resolved when the broker is reached */
    resolved: boolean;
    /** whether the connection that sends it is open right now */
    connected: boolean;
  };
}

function namesOf(roster: Roster | undefined): Map<string, string> {
  return new Map([...(roster?.members ?? []), ...(roster?.peers ?? [])].map((peer) => [peer.key, peer.name]));
}

/** An outbox row as the IPC shows it: never the envelopes, never the text. */
export function publicRow(row: OutboxRow): Record<string, unknown> {
  const { envelopes, text: _text, ...rest } = row;
  return { ...rest, recipients: row.recipients ?? envelopes.length };
}

export function sendOutcome(status: 202 | 200, row: OutboxRow, meshName: string, connected: boolean, roster: Roster | undefined): SendOutcome {
  const resolved = row.target !== DEFERRED_TARGET;
  return {
    status,
    body: {
      clientMessageId: row.clientMessageId, status: row.status, meshId: row.meshId, mesh: meshName, target: row.target,
      targetName: resolved ? namesOf(roster).get(row.target) ?? row.target : null, recipients: row.envelopes.length,
      brokerMessageId: row.brokerMessageId, duplicate: status === 200, resolved, connected,
    },
  };
}

/** The broker's message status with a name for the target and each recipient, where the roster has one. */
export function withNames(broker: Record<string, unknown>, roster: Roster | undefined): Record<string, unknown> {
  const names = namesOf(roster);
  const recipients = Array.isArray(broker.recipients) ? (broker.recipients as Array<Record<string, unknown>>) : [];
  return {
    ...broker, targetName: names.get(String(broker.target)) ?? null,
    recipients: recipients.map((recipient) => ({ ...recipient, name: names.get(String(recipient.key)) ?? null })),
  };
}

/** `peer list`'s answer: the roster, whose it is and how old; CM_ERR_MESH_OFFLINE when there is none at all. */
export function peersAnswer(mesh: MeshIdentity, view: RosterView | undefined, link: LinkStatus): Record<string, unknown> {
  if (view === undefined) {
    throw cmError('CM_ERR_MESH_OFFLINE', `mesh ${mesh.name}: the broker at ${mesh.brokerUrl} has never been reached by this daemon, so it knows no peers yet (${link.lastError ?? link.state})`, {
      details: { mesh: mesh.name, link },
    });
  }
  return {
    meshId: mesh.meshId, mesh: mesh.name, connected: view.fresh, asOf: new Date(view.at).toISOString(), you: mesh.publicKey,
    peers: view.roster.peers, members: view.roster.members,
  };
}
