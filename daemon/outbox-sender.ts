// The outbox sender: every 500 ms, and at once when woken (a new enqueue, a link that just
// opened), it claims the due rows of each open link's key and sends them on that link only.
// A row leaves through the connection of the key that encrypted it — never through another:
// the broker takes the sender from the connection, so another socket would name the wrong
// sender and the recipient could not open the envelope. A row whose link is down simply
// stays pending.
//
// Sends are pipelined: claiming does not wait for acks, so one slow mesh never holds another.
// The answer decides the row's fate (outbox.ts): ack queued → done; a refusal the same
// request can never pass → dead; anything else (rate limit, broker down, timeout, closed
// socket) → pending with backoff. A deferred row (queued before the daemon had any roster
// that named its target) is resolved and encrypted here first, against the roster of the
// connection that sends it; a target that roster does not know makes it dead, with why.

import { isCmError } from '../lib/errors.ts';
import type { BrokerLink } from './broker-link.ts';
import type { ServerFrame } from '../lib/protocol.ts';
import { CLAIM_BATCH, DEFERRED_TARGET, MAX_ATTEMPTS } from './outbox.ts';
import type { Outbox, OutboxRow } from './outbox.ts';
import { encryptFor, resolveTarget } from './router.ts';

const POLL_INTERVAL_MS = 500;
// Sends on the wire at once, over all links: a large outbox leaves in steps, never all at once.
const MAX_IN_FLIGHT = 256;
// Refusals that a resend of the very same request cannot change.
const PERMANENT_CODES: ReadonlySet<string> = new Set([
  'CM_ERR_UNKNOWN_RECIPIENT', 'CM_ERR_ENVELOPES_MISMATCH', 'CM_ERR_IDEMPOTENCY_CONFLICT', 'CM_ERR_BAD_FRAME',
  'CM_ERR_PAYLOAD_TOO_LARGE', 'CM_ERR_FORBIDDEN', 'CM_ERR_UNKNOWN_TYPE',
  // a deferred row whose target the broker's roster does not name
  'CM_ERR_PEER_UNKNOWN', 'CM_ERR_AMBIGUOUS', 'CM_ERR_INVALID_KEY',
]);

interface OutboxSenderOptions {
  outbox: Outbox;
  links: () => Iterable<BrokerLink>;
  pollIntervalMs?: number;
  onEvent?(kind: string, fields: Record<string, unknown>): void;
}

export class OutboxSender {
  readonly #outbox: Outbox;
  readonly #links: () => Iterable<BrokerLink>;
  readonly #pollMs: number;
  readonly #onEvent: (kind: string, fields: Record<string, unknown>) => void;
  readonly #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #stopped = true;
  #again = false;
  // A send whose outcome could not be written (a full disk) leaves its row in flight with
  // nobody waiting for it: once nothing is in flight, such rows go back to pending.
  #orphans = false;
  #lastError: string | undefined;

  constructor(options: OutboxSenderOptions) {
    this.#outbox = options.outbox;
    this.#links = options.links;
    this.#pollMs = options.pollIntervalMs ?? POLL_INTERVAL_MS;
    this.#onEvent = options.onEvent ?? (() => {});
  }

  start(): void {
    this.#stopped = false;
    this.wake();
  }

  /** Run a pass now (or right after the one running). */
  wake(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#running = true;
    try {
      this.#pass();
      this.#lastError = undefined;
    } catch (error) {
      // A database error must not kill the timer loop: report it and try again next poll.
      this.#report(error);
    } finally {
      this.#running = false;
    }
    if (this.#again) {
      this.#again = false;
      queueMicrotask(() => this.wake());
      return;
    }
    this.#timer = setTimeout(() => this.wake(), this.#pollMs);
  }

  /** Once per distinct failure: a disk that stays full would otherwise log every poll. */
  #report(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    if (message === this.#lastError) return;
    this.#lastError = message;
    this.#onEvent('outbox_sender_error', { message });
  }

  #pass(): void {
    if (this.#orphans && this.#inFlight.size === 0) {
      this.#outbox.resetInflight();
      this.#orphans = false;
    }
    for (const link of this.#links()) {
      const room = MAX_IN_FLIGHT - this.#inFlight.size;
      if (!link.isOpen || room <= 0) continue;
      for (const row of this.#outbox.claim(link.key, Math.min(CLAIM_BATCH, room))) {
        const sending = this.#send(link, row).catch((error: unknown) => {
          this.#orphans = true;
          this.#report(error);
        });
        this.#inFlight.add(sending);
        void sending.finally(() => {
          this.#inFlight.delete(sending);
          // Room again after being full: claim more now rather than at the next poll.
          if (this.#inFlight.size === MAX_IN_FLIGHT - 1) this.wake();
        });
      }
    }
  }

  async #send(link: BrokerLink, claimed: OutboxRow): Promise<void> {
    if (!link.isOpen) {
      this.#outbox.release(claimed.clientMessageId);
      return;
    }
    const row = claimed.target === DEFERRED_TARGET ? await this.#resolve(link, claimed) : claimed;
    if (row === undefined) return;
    let answer: ServerFrame;
    try {
      answer = await link.request({ type: 'send', clientMessageId: row.clientMessageId, target: row.target, priority: row.priority, envelopes: row.envelopes, hops: 0 });
    } catch (error) {
      this.#failed(row, isCmError(error) ? error.code : 'CM_ERR_INTERNAL', error instanceof Error ? error.message : String(error));
      return;
    }
    if (answer.type === 'ack' && answer.queued) {
      this.#outbox.markDone(row.clientMessageId, answer.messageId, answer.recipients);
      this.#onEvent('sent', { clientMessageId: row.clientMessageId, messageId: answer.messageId, duplicate: answer.duplicate === true, meshId: row.meshId });
      return;
    }
    const { code, message } = answer.type === 'ack' || answer.type === 'error' ? answer : { code: 'CM_ERR_INTERNAL', message: `the broker answered send with a ${answer.type} frame` };
    if (code === 'CM_ERR_ENVELOPES_MISMATCH' && (await this.#reencrypt(link, row, message))) return;
    this.#failed(row, code, message);
  }

  /** A deferred row resolved and encrypted against the link's roster; undefined when it failed. */
  async #resolve(link: BrokerLink, row: OutboxRow): Promise<OutboxRow | undefined> {
    const roster = await link.refreshRoster();
    if (roster === undefined || row.text === null) {
      this.#outbox.release(row.clientMessageId);
      return undefined;
    }
    try {
      const resolved = resolveTarget(row.to, roster, { key: link.key, memberKey: link.identity.memberKey, secret: link.secret });
      const encrypted = { target: resolved.target, envelopes: encryptFor(row.text, resolved.recipients, link.secret) };
      this.#outbox.resolved(row.clientMessageId, encrypted);
      this.#onEvent('send_resolved', { clientMessageId: row.clientMessageId, to: row.to, target: resolved.target, meshId: row.meshId });
      return { ...row, ...encrypted };
    } catch (error) {
      this.#failed(row, isCmError(error) ? error.code : 'CM_ERR_INTERNAL', error instanceof Error ? error.message : String(error));
      return undefined;
    }
  }

  /**
   * The recipients of a `*` or `@group` message changed since it was encrypted: resolve the
   * same target against a fresh roster and encrypt again (outbox.ts explains why it is safe).
   * False when that is not possible (a direct message, no text kept, nobody left to reach).
   */
  async #reencrypt(link: BrokerLink, row: OutboxRow, why: string): Promise<boolean> {
    if (row.text === null || row.attempts >= MAX_ATTEMPTS || !(row.target === '*' || row.target.startsWith('@'))) return false;
    const roster = await link.refreshRoster();
    if (roster === undefined) return false;
    try {
      const resolved = resolveTarget(row.target, roster, { key: link.key, memberKey: link.identity.memberKey, secret: link.secret });
      this.#outbox.reencrypted(row.clientMessageId, encryptFor(row.text, resolved.recipients, link.secret), `CM_ERR_ENVELOPES_MISMATCH: ${why}`);
    } catch {
      return false; // nobody in the group any more: the refusal stands
    }
    this.#onEvent('send_reencrypted', { clientMessageId: row.clientMessageId, target: row.target, meshId: row.meshId });
    this.wake();
    return true;
  }

  #failed(row: OutboxRow, code: string, message: string): void {
    const status = this.#outbox.markFailed(row.clientMessageId, `${code}: ${message}`, PERMANENT_CODES.has(code));
    this.#onEvent(status === 'dead' ? 'send_dead' : 'send_retry', { clientMessageId: row.clientMessageId, code, message, attempts: row.attempts, meshId: row.meshId });
  }

  /** Stop claiming; wait for the sends already on the wire to be answered or failed. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await Promise.allSettled([...this.#inFlight]);
  }
}
