// A real protocol client for tests: real keys, real signatures, real crypto_box envelopes,
// a real WebSocket. Meshes and members are seeded straight into the test database (the
// membership routes have their own tests).

import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { WebSocket } from 'ws';
import { generateKeyPair, open, seal, sign } from '../../lib/crypto.ts';
import type { SigningKeyPair } from '../../lib/crypto.ts';
import { attestationSigningString, groupMatches, helloSigningString, sessionHelloSigningString } from '../../lib/protocol.ts';

const WAIT_MS = 5_000;
export type Frame = Record<string, any>;

export interface SeededMesh {
  meshId: string;
  members: SigningKeyPair[];
}

/** A mesh with `count` members; the first is the owner. */
export async function seedMesh(pool: pg.Pool, count: number, names: string[] = []): Promise<SeededMesh> {
  const members = Array.from({ length: count }, () => generateKeyPair());
  const meshId = `mesh_${randomUUID().slice(0, 8)}`;
  await pool.query('INSERT INTO meshes (id, name, owner_key) VALUES ($1, $2, $3)', [meshId, meshId, members[0]?.publicKey]);
  for (const [index, member] of members.entries()) {
    await pool.query('INSERT INTO members (mesh_id, key, name, role) VALUES ($1, $2, $3, $4)', [
      meshId, member.publicKey, names[index] ?? `member${index}`, index === 0 ? 'owner' : 'member',
    ]);
  }
  return { meshId, members };
}

interface ConnectOptions {
  meshId: string;
  member: SigningKeyPair;
  /** present → session_hello with this session key */
  session?: SigningKeyPair;
  name?: string;
  groups?: string[];
  timestamp?: number;
  attestationExpiresAt?: number;
  /** sign the attestation with this key instead of the member's */
  attestationSigner?: SigningKeyPair;
  /** sign the session hello with this key instead of the session's */
  helloSigner?: SigningKeyPair;
  /** don't wait for hello_ack */
  noWait?: boolean;
  /** sign this challenge instead of the one the broker sent (a replay) */
  challenge?: string;
  /** the digest of a roster this client holds (the broker then leaves the lists out if it is current) */
  rosterDigest?: string;
}

export class TestPeer {
  readonly socket: WebSocket;
  readonly frames: Frame[] = [];
  readonly member: SigningKeyPair;
  readonly session: SigningKeyPair | undefined;
  readonly meshId: string;
  readonly closed: Promise<{ code: number; reason: string }>;
  ack: Frame | undefined;
  /** the challenge its hello signed */
  challenge = '';
  #waiters: Array<{ match: (frame: Frame) => boolean; resolve: (frame: Frame) => void }> = [];

  private constructor(socket: WebSocket, options: ConnectOptions) {
    this.socket = socket;
    this.member = options.member;
    this.session = options.session;
    this.meshId = options.meshId;
    this.closed = new Promise((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Frame;
      this.frames.push(frame);
      for (const waiter of [...this.#waiters]) {
        if (waiter.match(frame)) {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          waiter.resolve(frame);
        }
      }
    });
  }

  /** Open a socket and say hello (or session_hello); resolves after hello_ack unless noWait. */
  static async connect(url: string, options: ConnectOptions): Promise<TestPeer> {
    const socket = new WebSocket(url);
    // The broker's first frame is the challenge the hello must sign; listen before it can arrive.
    const challenged = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String((JSON.parse(String(data)) as Frame).nonce))));
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    socket.on('error', () => {});
    const peer = new TestPeer(socket, options);
    const challenge = options.challenge ?? (await challenged);
    peer.challenge = challenge;
    const timestamp = options.timestamp ?? Date.now();
    const memberKey = options.member.publicKey;
    let hello: Frame;
    if (options.session === undefined) {
      hello = { type: 'hello', id: 'hello', meshId: options.meshId, memberKey, timestamp, challenge, signature: sign(helloSigningString(options.meshId, memberKey, timestamp, challenge), options.member.secretKey) };
    } else {
      const sessionKey = options.session.publicKey;
      const expiresAt = options.attestationExpiresAt ?? Date.now() + 3_600_000;
      hello = {
        type: 'session_hello', id: 'hello', meshId: options.meshId, memberKey, sessionKey, timestamp, challenge,
        attestation: { expiresAt, signature: sign(attestationSigningString(options.meshId, memberKey, sessionKey, expiresAt), (options.attestationSigner ?? options.member).secretKey) },
        signature: sign(sessionHelloSigningString(options.meshId, memberKey, sessionKey, timestamp, challenge), (options.helloSigner ?? options.session).secretKey),
        ...(options.groups === undefined ? {} : { groups: options.groups }),
      };
    }
    if (options.name !== undefined) hello.name = options.name;
    if (options.rosterDigest !== undefined) hello.rosterDigest = options.rosterDigest;
    socket.send(JSON.stringify(hello));
    if (options.noWait !== true) {
      peer.ack = await peer.waitFor((frame) => frame.id === 'hello');
      if (peer.ack.type !== 'hello_ack') throw new Error(`hello refused: ${JSON.stringify(peer.ack)}`);
    }
    return peer;
  }

  get key(): string {
    return (this.session ?? this.member).publicKey;
  }

  get secretKey(): Buffer {
    return (this.session ?? this.member).secretKey;
  }

  waitFor(match: (frame: Frame) => boolean, timeoutMs = WAIT_MS): Promise<Frame> {
    const seen = this.frames.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`)), timeoutMs);
      this.#waiters.push({ match, resolve: (frame) => {
        clearTimeout(timer);
        resolve(frame);
      } });
    });
  }

  /** Send a frame with a fresh id and wait for the frame answering it. */
  async request(frame: Frame, timeoutMs = WAIT_MS): Promise<Frame> {
    const id = frame.id ?? randomUUID();
    this.socket.send(JSON.stringify({ ...frame, id }));
    return this.waitFor((reply) => reply.id === id, timeoutMs);
  }

  /** Encrypt `text` for each recipient key and send; resolves with the ack. */
  send(target: string, recipients: readonly string[], text: string, extra: Frame = {}): Promise<Frame> {
    const envelopes = recipients.map((to) => {
      const envelope = seal(Buffer.from(text), to, this.secretKey);
      return { to, nonce: envelope.nonce.toString('base64'), ciphertext: envelope.ciphertext.toString('base64') };
    });
    return this.request({ type: 'send', clientMessageId: randomUUID(), target, priority: 'now', envelopes, ...extra });
  }

  pushes(): Frame[] {
    return this.frames.filter((frame) => frame.type === 'push');
  }

  /** Decrypt a push addressed to this peer's key. */
  read(push: Frame): string | undefined {
    const plaintext = open({ nonce: Buffer.from(push.envelope.nonce, 'base64'), ciphertext: Buffer.from(push.envelope.ciphertext, 'base64') }, push.senderKey, this.secretKey);
    return plaintext?.toString();
  }

  clientAck(messageIds: string[]): void {
    this.socket.send(JSON.stringify({ type: 'client_ack', messageIds }));
  }

  async close(code = 1000): Promise<void> {
    if (this.socket.readyState === this.socket.CLOSED) return;
    this.socket.close(code);
    await this.closed;
  }

  /** Drop the connection without a close handshake, as a crash would. */
  crash(): void {
    this.socket.terminate();
  }
}

/** Recipient keys of a roster for a target, as a client would compute them. */
export function recipientsOf(roster: Frame, target: string, selfKey: string): string[] {
  if (target === '*') return (roster.members as Frame[]).map((member) => member.key as string).filter((key) => key !== selfKey);
  if (target.startsWith('@')) return (roster.peers as Frame[]).filter((peer) => groupMatches(peer.groups, target)).map((peer) => peer.key as string).filter((key) => key !== selfKey);
  return [target];
}
