// A lean protocol client for the benchmark: signed hello, pre-encrypted sends, and pushes
// acknowledged the way the daemon does (batched client_ack after the push is recorded).

import { WebSocket } from 'ws';
import { open, seal, sign } from '../lib/crypto.ts';
import type { SigningKeyPair } from '../lib/crypto.ts';
import { helloSigningString } from '../lib/protocol.ts';

const ACK_FLUSH_MS = 5;
// BENCH_ROSTER_DIGEST=0 reconnects without naming the roster held (as before the digest).
const SEND_ROSTER_DIGEST = process.env.BENCH_ROSTER_DIGEST !== '0';
const HELLO_TIMEOUT_MS = 30_000;
// Presence deltas about the rest of the mesh (`system` frames) are counted, not parsed: the
// bench uses none of them, and the 1,000 peers of a storm share this one process where each
// daemon would parse its own on its own machine. Parsing them all made the harness, not the
// broker, what the connect storm waited for (docs/benchmarks.md, round five).
const SYSTEM_PREFIX = Buffer.from('{"type":"system"');
// A hello_ack's lists (the whole roster, about 400 KB in a mesh of 1,000) are not parsed either,
// for the same reason: its head (type, id, digest) is, and whether the lists follow it.
const HELLO_ACK_PREFIX = Buffer.from('{"type":"hello_ack"');
const LISTS_MARK = Buffer.from(',"peers":');
const startsWith = (data: unknown, prefix: Buffer): boolean => Buffer.isBuffer(data) && data.length > prefix.length && prefix.equals(data.subarray(0, prefix.length));

interface Received { clientMessageId: string; messageId: string; at: number }

export class BenchPeer {
  readonly member: SigningKeyPair;
  readonly meshId: string;
  socket: WebSocket | undefined;
  readonly received: Received[] = [];
  readonly acks = new Map<string, { at: number; queued: boolean; code?: string }>();
  readonly seen = new Set<string>();
  duplicates = 0;
  decryptFailures = 0;
  decrypt = true;
  /** the size of the last hello_ack, and whether it carried the roster */
  helloAck: { bytes: number; lists: boolean } | undefined;
  /** bytes of presence deltas received (not parsed) */
  systemBytes = 0;
  #rosterDigest: string | undefined;
  #pendingAcks: string[] = [];
  #ackTimer: NodeJS.Timeout | undefined;
  #onHelloAck: ((frame: Record<string, unknown>) => void) | undefined;
  onPush: ((received: Received) => void) | undefined;

  constructor(meshId: string, member: SigningKeyPair) {
    this.meshId = meshId;
    this.member = member;
  }

  get key(): string {
    return this.member.publicKey;
  }

  async connect(wsUrl: string): Promise<Record<string, unknown>> {
    const socket = new WebSocket(wsUrl, { perMessageDeflate: false });
    this.socket = socket;
    socket.on('error', () => {});
    // The broker's first frame is the challenge the hello signs; the rest go to #onFrame.
    const challenged = new Promise<string>((resolve) => socket.once('message', (data) => {
      resolve(String((JSON.parse(String(data)) as { nonce?: unknown }).nonce));
      socket.on('message', (more) => {
        if (startsWith(more, SYSTEM_PREFIX)) {
          this.systemBytes += (more as Buffer).length;
          return;
        }
        const lists = startsWith(more, HELLO_ACK_PREFIX) ? (more as Buffer).indexOf(LISTS_MARK) : -1;
        const text = lists > 0 ? `${(more as Buffer).toString('utf8', 0, lists)}}` : String(more);
        const frame = JSON.parse(text) as Record<string, any>;
        if (frame.type === 'hello_ack') this.helloAck = { bytes: Buffer.isBuffer(more) ? more.length : Buffer.byteLength(text), lists: lists > 0 || frame.peers !== undefined };
        this.#onFrame(frame);
      });
    }));
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    const challenge = await challenged;
    const timestamp = Date.now();
    const answer = new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no hello_ack')), HELLO_TIMEOUT_MS);
      this.#onHelloAck = (frame) => {
        clearTimeout(timer);
        resolve(frame);
      };
    });
    socket.send(JSON.stringify({
      type: 'hello', id: 'hello', meshId: this.meshId, memberKey: this.key, timestamp, challenge,
      signature: sign(helloSigningString(this.meshId, this.key, timestamp, challenge), this.member.secretKey),
      // As the daemon does: name the roster held, so an unchanged one is not sent again.
      ...(this.#rosterDigest === undefined || !SEND_ROSTER_DIGEST ? {} : { rosterDigest: this.#rosterDigest }),
    }));
    return answer;
  }

  /** One encrypted send frame, ready to go (encryption is done before the clock starts). */
  frame(to: string, clientMessageId: string, text: string, priority: 'now' | 'next' = 'now'): string {
    const envelope = seal(Buffer.from(text), to, this.member.secretKey);
    return JSON.stringify({
      type: 'send', id: clientMessageId, clientMessageId, target: to, priority,
      envelopes: [{ to, nonce: envelope.nonce.toString('base64'), ciphertext: envelope.ciphertext.toString('base64') }],
    });
  }

  sendRaw(frame: string): void {
    this.socket?.send(frame);
  }

  setStatus(status: 'idle' | 'working'): void {
    this.socket?.send(JSON.stringify({ type: 'set_status', status }));
  }

  drop(): void {
    this.socket?.terminate();
  }

  async close(): Promise<void> {
    const socket = this.socket;
    if (socket === undefined || socket.readyState === socket.CLOSED) return;
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.close(1000);
    await closed;
  }

  #onFrame(frame: Record<string, any>): void {
    const now = performance.now();
    if (frame.type === 'hello_ack' && this.helloAck?.lists === true) this.#rosterDigest = frame.rosterDigest;
    if (frame.type === 'hello_ack' || (frame.type === 'error' && frame.id === 'hello')) {
      this.#onHelloAck?.(frame);
      return;
    }
    if (frame.type === 'ack') {
      this.acks.set(frame.id, { at: now, queued: frame.queued, ...(frame.code === undefined ? {} : { code: frame.code }) });
      return;
    }
    if (frame.type !== 'push') return;
    if (this.decrypt) {
      const plaintext = open({ nonce: Buffer.from(frame.envelope.nonce, 'base64'), ciphertext: Buffer.from(frame.envelope.ciphertext, 'base64') }, frame.senderKey, this.member.secretKey);
      if (plaintext === undefined) this.decryptFailures += 1;
    }
    if (this.seen.has(frame.messageId)) this.duplicates += 1;
    else {
      this.seen.add(frame.messageId);
      const received = { clientMessageId: frame.clientMessageId, messageId: frame.messageId, at: now };
      this.received.push(received);
      this.onPush?.(received);
    }
    this.#pendingAcks.push(frame.messageId);
    this.#ackTimer ??= setTimeout(() => this.#flushAcks(), ACK_FLUSH_MS);
  }

  #flushAcks(): void {
    this.#ackTimer = undefined;
    const ids = this.#pendingAcks.splice(0, 1000);
    if (ids.length > 0 && this.socket?.readyState === this.socket?.OPEN) this.socket?.send(JSON.stringify({ type: 'client_ack', messageIds: ids }));
    if (this.#pendingAcks.length > 0) this.#ackTimer = setTimeout(() => this.#flushAcks(), 0);
  }
}
