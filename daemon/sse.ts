// A session's event stream (Server-Sent Events on GET /v1/stream): the messages addressed to
// that session's key or its member's key — never another session's, so two Claude sessions
// on one machine never see (or echo) each other's messages — and the mesh's peer_joined /
// peer_left. On (re)connect it first replays every message not surfaced yet after
// `Last-Event-ID` (the inbox id), oldest first, so nothing that arrived while the reader was
// away is lost; a message counts as surfaced only when the reader says so
// (POST /v1/inbox/surfaced). Subscribing and replaying happen in one synchronous step, so no
// message can fall between the two.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Daemon } from './daemon.ts';
import type { InboxRow } from './inbox.ts';
import type { SessionRecord } from './sessions.ts';

const KEEPALIVE_MS = 15_000;
const MAX_REPLAY = 1_000;
// Streams open now, per session token: a hook asks whether anything reads this session's
// channel before it tells the model about unread messages itself (daemon/hook.ts).
const OPEN_STREAMS = new Map<string, number>();

/** How many streams read this session's messages right now. */
export function openStreams(token: string): number {
  return OPEN_STREAMS.get(token) ?? 0;
}

export function openStream(daemon: Daemon, session: SessionRecord, req: IncomingMessage, res: ServerResponse, keepaliveMs = KEEPALIVE_MS): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
  res.write(': connected\n\n');
  const scope = new Set(daemon.scopeOf(session));
  const header = req.headers['last-event-id'];
  const lastId = typeof header === 'string' && /^\d{1,15}$/.test(header) ? Number(header) : 0;
  let sentUpTo = lastId;
  const writeMessage = (row: InboxRow) => {
    if (row.id <= sentUpTo) return;
    sentUpTo = row.id;
    res.write(`id: ${row.id}\nevent: message\ndata: ${JSON.stringify(row)}\n\n`);
  };
  const unsubscribe = daemon.events.subscribe((event) => {
    if (event.kind === 'message' && typeof event.recipientKey === 'string' && scope.has(event.recipientKey) && typeof event.inboxId === 'number') {
      const row = daemon.inbox.get(event.inboxId);
      if (row !== undefined) writeMessage(row);
    } else if ((event.kind === 'peer_joined' || event.kind === 'peer_left') && event.meshId === session.meshId) {
      res.write(`event: ${event.kind}\ndata: ${JSON.stringify({ peer: event.peer, reason: event.reason ?? null })}\n\n`);
    }
  });
  for (const row of daemon.listInbox({ unsurfacedOnly: true, afterId: lastId, limit: MAX_REPLAY }, session)) writeMessage(row);
  const keepalive = setInterval(() => res.write(': keepalive\n\n'), keepaliveMs);
  OPEN_STREAMS.set(session.token, openStreams(session.token) + 1);
  res.on('close', () => {
    const left = openStreams(session.token) - 1;
    if (left > 0) OPEN_STREAMS.set(session.token, left);
    else OPEN_STREAMS.delete(session.token);
    unsubscribe();
    clearInterval(keepalive);
  });
}
