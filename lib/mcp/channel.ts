// The channel: the session's daemon stream (GET /v1/stream, Server-Sent Events) turned into
// `notifications/claude/channel`, one per message. A message is marked surfaced only after
// its notification was written to stdout; a mark that fails is kept and sent again on the
// next connection. The stream is reopened after any failure with the last inbox id seen, and
// the daemon replays from there every message not surfaced yet, so a daemon restart or a
// broken socket loses nothing and shows nothing twice.
//
// Once, after the client's `initialized` and a short grace, a welcome says who this session
// is, who is online and how many messages wait (they follow as their own notifications).

import { request } from 'node:http';
import type { ClientRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { sessionHeader } from '../daemon-client.ts';
import type { DaemonSession } from './daemon-session.ts';
import { cleanMeta, frameContent, messageMeta } from './framing.ts';
import type { MessageRow } from './framing.ts';
import type { RpcWriter } from './rpc.ts';

const CHANNEL_METHOD = 'notifications/claude/channel';
const MAX_NAMES_IN_WELCOME = 8;

export interface ChannelTimings {
  /** first wait before reopening the stream; doubles per failure up to maxRetryMs */
  retryMs: number;
  maxRetryMs: number;
  /** after `initialized`, before the welcome */
  welcomeDelayMs: number;
}

export const DEFAULT_CHANNEL_TIMINGS: ChannelTimings = { retryMs: 500, maxRetryMs: 10_000, welcomeDelayMs: 1_000 };

export class Channel {
  readonly #session: DaemonSession;
  readonly #writer: RpcWriter;
  readonly #timings: ChannelTimings;
  readonly #log: (line: string) => void;
  readonly #pendingMarks = new Set<number>();
  #lastId = 0;
  #meshName: string | undefined;
  #request: ClientRequest | undefined;
  #closed = false;
  #queue: Promise<void> = Promise.resolve();

  constructor(session: DaemonSession, writer: RpcWriter, timings: ChannelTimings, log: (line: string) => void) {
    this.#session = session;
    this.#writer = writer;
    this.#timings = timings;
    this.#log = log;
  }

  /** Welcome, then keep the stream open until close(). Never rejects. */
  async run(): Promise<void> {
    let delay = this.#timings.retryMs;
    await sleep(this.#timings.welcomeDelayMs);
    let welcomed = false;
    while (!this.#closed) {
      try {
        const token = await this.#session.ensure();
        // One welcome at most: a failed one is not worth holding the messages back for.
        if (!welcomed) {
          welcomed = true;
          await this.#welcome().catch((error: unknown) => this.#log(`welcome skipped: ${error instanceof Error ? error.message : String(error)}`));
        }
        await this.#flushMarks();
        delay = this.#timings.retryMs;
        await this.#streamOnce(token);
      } catch (error) {
        this.#log(`channel: ${error instanceof Error ? error.message : String(error)}; retrying in ${delay} ms`);
        if ((error as { code?: unknown }).code === 'CM_ERR_UNAUTHORIZED') this.#session.forget();
      }
      if (this.#closed) break;
      await sleep(delay);
      delay = Math.min(delay * 2, this.#timings.maxRetryMs);
    }
  }

  close(): void {
    this.#closed = true;
    this.#request?.destroy();
  }

  async #welcome(): Promise<void> {
    const peers = await this.#session.ask('GET', '/v1/peers');
    this.#meshName = String(peers.body.mesh);
    const me = this.#session.facts;
    // Not this session, nor its own member's connection (the daemon of the same person).
    const online = ((peers.body.peers ?? []) as Array<Record<string, unknown>>).filter((peer) => peer.online === true && peer.key !== me?.sessionKey && peer.key !== me?.memberKey);
    const names = online.map((peer) => String(peer.name));
    const unread = (await this.#session.ask('GET', '/v1/inbox?unsurfaced=1&limit=1000')).body.items as unknown[];
    const shownNames = names.slice(0, MAX_NAMES_IN_WELCOME).join(', ') + (names.length > MAX_NAMES_IN_WELCOME ? ', …' : '');
    const content = `claudemesh is connected: you are "${me?.name ?? '?'}" in mesh ${this.#meshName} (key ${me?.sessionKey.slice(0, 12) ?? '?'}). `
      + `${online.length} peer${online.length === 1 ? '' : 's'} online${names.length > 0 ? `: ${shownNames}` : ''}. `
      + `${unread.length} unread message${unread.length === 1 ? '' : 's'}${unread.length > 0 ? ' (they follow)' : ''}. This notice needs no answer.`;
    await this.#writer.notify(CHANNEL_METHOD, {
      content,
      meta: cleanMeta({ kind: 'welcome', mesh: this.#meshName, peers_online: String(online.length), unread: String(unread.length) }),
    });
  }

  async #flushMarks(): Promise<void> {
    if (this.#pendingMarks.size === 0) return;
    const ids = [...this.#pendingMarks];
    await this.#session.ask('POST', '/v1/inbox/surfaced', { ids });
    for (const id of ids) this.#pendingMarks.delete(id);
  }

  /** Emit one message, then mark it surfaced (or keep the mark for later). */
  async #emit(row: MessageRow): Promise<void> {
    if (row.id <= this.#lastId) return;
    const written = await this.#writer.notify(CHANNEL_METHOD, { content: frameContent(row, this.#meshName), meta: messageMeta(row, this.#meshName ?? row.meshId) });
    if (!written) return;
    this.#lastId = row.id;
    this.#pendingMarks.add(row.id);
    await this.#flushMarks().catch((error: unknown) => this.#log(`surfaced mark for ${row.id} kept for later: ${error instanceof Error ? error.message : String(error)}`));
  }

  /** One stream connection; resolves when it ends (for any reason). */
  #streamOnce(token: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const headers = { ...sessionHeader(token), ...(this.#lastId > 0 ? { 'last-event-id': String(this.#lastId) } : {}) };
      const req = request({ socketPath: this.#session.socket, path: '/v1/stream', headers }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(Object.assign(new Error(`the daemon refused the stream (HTTP ${res.statusCode ?? 0})`), { code: res.statusCode === 401 ? 'CM_ERR_UNAUTHORIZED' : 'CM_ERR_INTERNAL' }));
          return;
        }
        this.#log('channel: stream open');
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          let end = buffer.indexOf('\n\n');
          while (end !== -1) {
            this.#onBlock(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            end = buffer.indexOf('\n\n');
          }
        });
        res.on('end', () => resolve());
        res.on('error', () => resolve());
        res.on('close', () => resolve());
      });
      this.#request = req;
      req.on('error', reject);
      req.end();
    });
  }

  #onBlock(block: string): void {
    let event = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    if (event !== 'message' || data === '') return;
    let row: MessageRow;
    try {
      row = JSON.parse(data) as MessageRow;
    } catch {
      return;
    }
    // In order, one at a time: a mark must follow its own write.
    this.#queue = this.#queue.then(() => this.#emit(row)).catch((error: unknown) => this.#log(`emit failed: ${String(error)}`));
  }
}
