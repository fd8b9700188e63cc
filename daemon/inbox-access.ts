// Reading and marking the inbox on behalf of a caller: a session sees, marks and deletes
// only the rows for its own key and its member's; marks go back to the broker on the
// connection of the key each row was addressed to (the broker marks per recipient). A read
// right after a connect first waits for the catch-up (caughtUp).

import type { BrokerLink } from './broker-link.ts';
import type { Inbox, InboxQuery, InboxRow } from './inbox.ts';

/** The keys whose rows a caller may touch; undefined: all (the member, outside a session). */
type Scope = readonly string[] | undefined;

// A call right after the daemon started (a send, a read) waits at most this long for its
// link's first connect attempt; a read then waits at most CATCH_UP_WAIT_MS for what the broker
// pushes after the hello: "no messages" must not mean "not arrived yet".
export const FIRST_CONNECT_WAIT_MS = 3_000;
const CATCH_UP_WAIT_MS = 2_000;

/** Once each link has connected (or failed to) and received its catch-up; at once when they have. */
export async function caughtUp(links: Iterable<BrokerLink>): Promise<void> {
  await Promise.all([...links].map(async (link) => {
    await link.firstAttempt(FIRST_CONNECT_WAIT_MS);
    await link.caughtUp(CATCH_UP_WAIT_MS);
  }));
}

/** The inbox, each row with its mesh's name. */
export function listInbox(inbox: Inbox, query: InboxQuery, scope: Scope, meshNames: ReadonlyMap<string, string>): Array<InboxRow & { mesh: string | null }> {
  const rows = inbox.list(scope === undefined ? query : { ...query, recipientKeys: [...scope] });
  return rows.map((row) => ({ ...row, mesh: meshNames.get(row.meshId) ?? null }));
}

/** Mark rows surfaced (shown to the recipient) or read; tell the broker on each row's own connection. */
export function markInbox(inbox: Inbox, links: Iterable<BrokerLink>, ids: readonly number[], state: 'surfaced' | 'read', scope: Scope): number {
  const changed = state === 'read' ? inbox.markRead(ids, scope) : inbox.markSurfaced(ids, scope);
  for (const link of links) {
    const mine = changed.filter((row) => row.recipientKey === link.key).map((row) => row.brokerMessageId);
    // Best effort: a mark lost to a closed socket only leaves the sender's view one step behind.
    if (mine.length > 0) void link.request({ type: 'mark', messageIds: mine, state }).catch(() => {});
  }
  return changed.length;
}

/** Delete rows the caller may touch; the others are left alone. */
export function deleteInbox(inbox: Inbox, ids: readonly number[], scope: Scope): number {
  const allowed = new Set(scope);
  return inbox.delete(ids.filter((id) => {
    const row = inbox.get(id);
    return row !== undefined && (scope === undefined || allowed.has(row.recipientKey));
  }));
}
