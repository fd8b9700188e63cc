// One connection to a broker, kept alive for as long as the daemon wants it:
//
//   connect → hello (or session_hello, with an attestation minted afresh for every connect,
//   so a stolen one expires on its own) → hello_ack within 5 s, else terminate → open: a
//   watchdog pings every 30 s and terminates a socket silent for 75 s (a NAT that dropped the
//   flow never closes it) → on close: every pending request fails at once, then a reconnect
//   after a delay drawn uniformly from [0, step] over the steps 1, 2, 4, 8, 16, 30 s (full
//   jitter), back to the first step once a connection proved itself with a hello_ack.
//
// Every frame from the broker is parsed against lib/protocol.ts before anything reads it.
// Terminal closes (the CLOSES table there: kicked, banned, refusals a retry cannot fix, left,
// replaced) stop the loop and stay visible in `status()`. The object always owns its current
// socket: there is no handle to hand out that could go stale.

import { WebSocket } from 'ws';
import { cmError } from '../lib/errors.ts';
import { sign } from '../lib/crypto.ts';
import {
  attestationSigningString, encodeFrame, helloSigningString, isTerminalClose, parseServerFrame, refusalOf, sessionHelloSigningString,
} from '../lib/protocol.ts';
import type { ClientFrame, HelloAckFrame, PushFrame, ServerFrame, ServerFrameOf, ServerFrameType } from '../lib/protocol.ts';
import { HeldRoster } from './held-roster.ts';
import { Latch } from './latch.ts';
import type { Roster } from './held-roster.ts';

const HELLO_ACK_TIMEOUT_MS = 5_000;
const BACKOFF_STEPS_MS: readonly number[] = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000];
const PING_INTERVAL_MS = 30_000;
const IDLE_TIMEOUT_MS = 75_000;
const REQUEST_TIMEOUT_MS = 15_000;
const ATTESTATION_TTL_MS = 12 * 3600 * 1000;
const CLOSE_NORMAL = 1000;

/** A request as the daemon writes it: the link adds the id that correlates the answer. */
type Request = ClientFrame extends infer F ? (F extends ClientFrame ? Omit<F, 'id'> : never) : never;
type Fields = Record<string, unknown>;
type LinkState = 'connecting' | 'open' | 'reconnecting' | 'stopped';

export interface LinkTimings {
  helloAckTimeoutMs: number;
  backoffStepsMs: readonly number[];
  pingIntervalMs: number;
  idleTimeoutMs: number;
  requestTimeoutMs: number;
}

const DEFAULT_LINK_TIMINGS: LinkTimings = {
  helloAckTimeoutMs: HELLO_ACK_TIMEOUT_MS,
  backoffStepsMs: BACKOFF_STEPS_MS,
  pingIntervalMs: PING_INTERVAL_MS,
  idleTimeoutMs: IDLE_TIMEOUT_MS,
  requestTimeoutMs: REQUEST_TIMEOUT_MS,
};

interface LinkIdentity {
  meshId: string;
  memberKey: string;
  memberSecret: Buffer;
  name?: string;
  /** present for a session connection: the session's own key pair and groups */
  session?: { sessionKey: string; sessionSecret: Buffer; groups?: string[] };
}

export interface LinkStatus {
  state: LinkState;
  since: number;
  /** reconnect attempts since the last proven connection */
  attempts: number;
  lastError: string | null;
  /** why the loop stopped for good (kicked, banned, refused) */
  terminal: { code: number; reason: string } | null;
  nextRetryAt: number | null;
}

export interface LinkHandlers {
  onOpen?(ack: HelloAckFrame): void;
  /** every roster the broker gives (hello_ack, peers), so the daemon can keep the last one */
  onRoster?(roster: Roster): void;
  onPush?(frame: PushFrame): void;
  onSystem?(frame: ServerFrameOf<'system'>): void;
  /** every state change and its reason, for the event ring and logs; also frames that did not parse */
  onEvent?(kind: string, fields: Fields): void;
}

interface BrokerLinkOptions {
  brokerUrl: string;
  identity: LinkIdentity;
  handlers?: LinkHandlers;
  timings?: Partial<LinkTimings>;
  now?: () => number;
  random?: () => number;
}

interface Pending {
  resolve(frame: ServerFrame): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/** ws(s)://host/ws for an http(s) broker origin. */
const wsUrlOf = (brokerUrl: string): string => `${brokerUrl.replace(/^http/, 'ws')}/ws`;

/** Full jitter: a delay uniformly in [0, step], the step growing with each failed attempt. */
export function backoffDelay(attempt: number, steps: readonly number[], random: () => number): number {
  const step = steps[Math.min(attempt, steps.length - 1)] ?? 0;
  return Math.floor(random() * step);
}

export class BrokerLink {
  readonly identity: LinkIdentity;
  readonly #url: string;
  readonly #handlers: LinkHandlers;
  readonly #timings: LinkTimings;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #pending = new Map<string, Pending>();
  #socket: WebSocket | undefined;
  #status: LinkStatus;
  readonly #roster = new HeldRoster();
  #helloTimer: NodeJS.Timeout | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #lastSeen = 0;
  #requestCounter = 0;
  #stopping = false;
  readonly #attempted = new Latch();
  readonly #caughtUp = new Latch(); // `caught_up` on this connection (or it closed, or a wait gave up)

  constructor(options: BrokerLinkOptions) {
    this.identity = options.identity;
    this.#url = wsUrlOf(options.brokerUrl);
    this.#handlers = options.handlers ?? {};
    this.#timings = { ...DEFAULT_LINK_TIMINGS, ...options.timings };
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#status = { state: 'connecting', since: this.#now(), attempts: 0, lastError: null, terminal: null, nextRetryAt: null };
  }

  /** The key messages are routed to and sent from: the session key, else the member key. */
  get key(): string {
    return this.identity.session?.sessionKey ?? this.identity.memberKey;
  }

  /** The secret that opens envelopes sealed to `key` and seals this link's sends. */
  get secret(): Buffer {
    return this.identity.session?.sessionSecret ?? this.identity.memberSecret;
  }

  get isOpen(): boolean {
    return this.#status.state === 'open';
  }

  status(): LinkStatus {
    return { ...this.#status };
  }

  /** The last roster the broker gave (hello_ack or list_peers); undefined before the first. */
  get roster(): Roster | undefined {
    return this.#roster.roster;
  }

  start(): void {
    this.#stopping = false;
    this.#connect();
  }

  #setState(state: LinkState, fields: Fields = {}): void {
    this.#status = { ...this.#status, state, since: this.#now() };
    this.#handlers.onEvent?.(`link_${state}`, { meshId: this.identity.meshId, key: this.key, ...fields });
  }

  /** The hello for this connection: it signs the challenge the broker just sent on it. */
  #hello(challenge: string): string {
    const { meshId, memberKey, memberSecret, name, session } = this.identity;
    const timestamp = this.#now();
    const named = name === undefined ? {} : { name };
    if (session === undefined) {
      const signature = sign(helloSigningString(meshId, memberKey, timestamp, challenge), memberSecret);
      return encodeFrame('hello', { id: 'hello', meshId, memberKey, timestamp, challenge, signature, ...named, ...this.#roster.known() });
    }
    const expiresAt = timestamp + ATTESTATION_TTL_MS;
    return encodeFrame('session_hello', {
      id: 'hello', meshId, memberKey, sessionKey: session.sessionKey, timestamp, challenge, ...named,
      attestation: { expiresAt, signature: sign(attestationSigningString(meshId, memberKey, session.sessionKey, expiresAt), memberSecret) },
      signature: sign(sessionHelloSigningString(meshId, memberKey, session.sessionKey, timestamp, challenge), session.sessionSecret),
      ...(session.groups === undefined ? {} : { groups: session.groups }), ...this.#roster.known(),
    });
  }

  #connect(): void {
    this.#retryTimer = undefined;
    this.#status.nextRetryAt = null;
    if (this.#status.attempts > 0) this.#setState('reconnecting', { attempt: this.#status.attempts });
    const socket = new WebSocket(this.#url, { handshakeTimeout: this.#timings.helloAckTimeoutMs });
    this.#socket = socket;
    socket.on('open', () => {
      this.#lastSeen = this.#now();
      // The hello goes out when the broker's challenge arrives (#onMessage).
      this.#helloTimer = setTimeout(() => {
        this.#status.lastError = `no hello_ack within ${this.#timings.helloAckTimeoutMs} ms`;
        socket.terminate();
      }, this.#timings.helloAckTimeoutMs);
    });
    socket.on('message', (data) => this.#onMessage(socket, String(data)));
    socket.on('ping', () => void (this.#lastSeen = this.#now()));
    socket.on('pong', () => void (this.#lastSeen = this.#now()));
    socket.on('error', (error) => void (this.#status.lastError = error.message));
    socket.on('close', (code, reason) => this.#onClose(socket, code, reason.toString()));
  }

  #onMessage(socket: WebSocket, text: string): void {
    if (socket !== this.#socket) return;
    this.#lastSeen = this.#now();
    let frame: ServerFrame;
    try {
      frame = parseServerFrame(text);
    } catch (error) {
      // A frame outside the contract (a newer broker, a bug) is reported, not worth a reconnect.
      this.#handlers.onEvent?.('frame_refused', { meshId: this.identity.meshId, error: error instanceof Error ? error.message : String(error) });
      return;
    }
    const id = 'id' in frame ? frame.id : undefined;
    if (frame.type === 'challenge') {
      if (this.#status.state !== 'open') socket.send(this.#hello(frame.nonce));
      return;
    }
    if (frame.type === 'hello_ack') {
      this.#onHelloAck(frame);
      return;
    }
    if (frame.type === 'error' && (id === 'hello' || this.#status.state !== 'open')) {
      this.#status.lastError = `${frame.code}: ${frame.message}`;
      return; // the broker closes the socket next; the close code decides what follows
    }
    if (id !== undefined) {
      const pending = this.#pending.get(id);
      if (pending !== undefined) {
        this.#pending.delete(id);
        clearTimeout(pending.timer);
        pending.resolve(frame);
        return;
      }
    }
    if (frame.type === 'caught_up') this.#caughtUp.open();
    else if (frame.type === 'push') this.#handlers.onPush?.(frame);
    else if (frame.type === 'system') this.#handlers.onSystem?.(frame);
  }

  #onHelloAck(frame: HelloAckFrame): void {
    clearTimeout(this.#helloTimer);
    this.#caughtUp.close();
    this.#setRoster(frame);
    // A proven connection: the next failure starts the backoff from its first step again.
    this.#status = { ...this.#status, attempts: 0, lastError: null, terminal: null };
    this.#setState('open', { reattached: frame.reattached });
    this.#watchdog = setInterval(() => this.#watch(), this.#timings.pingIntervalMs);
    this.#handlers.onOpen?.(frame);
    this.#attempted.open();
  }

  /** The roster a hello_ack or peers frame gives (undefined when it gives none: reported). */
  #setRoster(frame: ServerFrameOf<'hello_ack'> | ServerFrameOf<'peers'>): Roster | undefined {
    const taken = this.#roster.take(frame);
    if ('error' in taken) {
      this.#handlers.onEvent?.('frame_refused', { meshId: this.identity.meshId, error: taken.error });
      return undefined;
    }
    this.#handlers.onRoster?.(taken.roster);
    return taken.roster;
  }

  /**
   * Resolves once the first connect attempt has ended (a hello_ack, or a close of any kind),
   * or after `timeoutMs`: a request right after the daemon started waits for the broker's
   * answer instead of being told the mesh is offline while the connect is still under way.
   */
  async firstAttempt(timeoutMs: number): Promise<void> {
    await this.#attempted.wait(timeoutMs);
  }

  /**
   * Resolves once this connection's catch-up arrived (`caught_up`), or the link is not open,
   * or after `timeoutMs` (then not waited for again on this connection: an older broker).
   */
  async caughtUp(timeoutMs: number): Promise<void> {
    if (!this.isOpen) return;
    if (!(await this.#caughtUp.wait(timeoutMs))) this.#caughtUp.open();
  }

  #watch(): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    if (this.#now() - this.#lastSeen > this.#timings.idleTimeoutMs) {
      this.#status.lastError = `nothing heard for ${this.#timings.idleTimeoutMs} ms`;
      socket.terminate();
      return;
    }
    socket.ping();
  }

  #onClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.#socket) return;
    this.#socket = undefined;
    clearTimeout(this.#helloTimer);
    clearInterval(this.#watchdog);
    this.#failPending(`connection to the broker closed (${code}${reason === '' ? '' : ` ${reason}`})`);
    this.#attempted.open();
    this.#caughtUp.open();
    if (this.#stopping) {
      this.#setState('stopped', { code, reason });
      return;
    }
    if (isTerminalClose(code, reason)) {
      this.#status.terminal = { code, reason };
      this.#setState('stopped', { code, reason, terminal: true });
      return;
    }
    const delay = backoffDelay(this.#status.attempts, this.#timings.backoffStepsMs, this.#random);
    this.#status.attempts += 1;
    this.#status.nextRetryAt = this.#now() + delay;
    this.#status.state = 'reconnecting';
    this.#handlers.onEvent?.('link_retry', { meshId: this.identity.meshId, key: this.key, code, reason, delayMs: delay, error: this.#status.lastError });
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #failPending(why: string): void {
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(cmError('CM_ERR_BROKER_UNREACHABLE', why));
    }
  }

  /** Send a request and wait for the frame that answers it (ack, ok, peers, error …). */
  request(frame: Request, timeoutMs = this.#timings.requestTimeoutMs): Promise<ServerFrame> {
    const socket = this.#socket;
    if (socket === undefined || !this.isOpen) {
      return Promise.reject(cmError('CM_ERR_BROKER_UNREACHABLE', `mesh ${this.identity.meshId}: not connected to the broker (${this.#status.state})`));
    }
    this.#requestCounter += 1;
    const id = `r${this.#requestCounter}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(cmError('CM_ERR_BROKER_UNREACHABLE', `the broker did not answer ${frame.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** A request whose answer must be of type `expected`; an `error` frame (or any other answer) throws it as a CmError. */
  async call<T extends ServerFrameType>(frame: Request, expected: T, timeoutMs?: number): Promise<ServerFrameOf<T>> {
    const answer = await this.request(frame, timeoutMs);
    if (answer.type === expected) return answer as ServerFrameOf<T>;
    throw refusalOf(answer, frame.type);
  }

  /** A frame without an answer (client_ack, mark); false when not connected. */
  notify(frame: Request): boolean {
    const socket = this.#socket;
    if (socket === undefined || !this.isOpen) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  /**
   * The roster as the broker gives it now; undefined when it cannot (not connected, or the
   * broker could not answer — its database down, say). A stale roster is never passed off
   * as fresh: a name it lacks may just be newer than it.
   */
  async refreshRoster(timeoutMs?: number): Promise<Roster | undefined> {
    if (!this.isOpen) return undefined;
    try {
      const answer = await this.request({ type: 'list_peers', ...this.#roster.known() }, timeoutMs);
      return answer.type === 'peers' ? this.#setRoster(answer) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Stop for good: close 1000, fail what waits, no reconnect. Safe to call twice. */
  close(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#retryTimer);
    const socket = this.#socket;
    if (socket === undefined) {
      if (this.#status.state !== 'stopped') this.#setState('stopped');
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      socket.once('close', () => resolve());
      socket.close(CLOSE_NORMAL, 'daemon stopping');
      // A broker that does not finish the closing handshake must not hold the shutdown.
      setTimeout(() => socket.terminate(), this.#timings.helloAckTimeoutMs).unref();
    });
  }
}
