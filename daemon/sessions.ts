// The session registry: one entry per Claude Code session that registered with this daemon.
//
// - A session's key pair is stable per (mesh, Claude session id): relaunching or resuming the
//   same session gets the same key, so messages queued for it stay readable and no ghost
//   presence appears. (A fresh key per launch would leave messages sealed to a key nobody
//   holds any more, and an old presence of the same name lingering beside the new one.)
//   Keys live in daemon/sessions/<mesh>/<sha256 of the session id>.json (0600); hashing the
//   id means no path ever comes from caller input.
// - A session token (32 random bytes, hex) scopes every session call; registering the same
//   session again returns the same token.
// - The registry is persisted to daemon/sessions.json (0600, atomic rename) so a restarted
//   daemon reattaches its sessions without a leave/join: peers see nothing, because the
//   broker holds a presence for 90 s after its connection closes (the lease). It holds tokens
//   and keys, never secrets.
// - Liveness is the registered pid (and its start time where the OS tells it, so a reused
//   pid does not keep a session alive). There is deliberately no time-to-live: a session
//   that runs for days is still alive, and evicting it would silently cut it off.

import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, keyPairFromSecret } from '../lib/crypto.ts';
import type { SigningKeyPair } from '../lib/crypto.ts';
import { cmError } from '../lib/errors.ts';
import { MAX_GROUPS } from '../lib/protocol.ts';
import { processAlive, processStartTime } from './lock.ts';
import { DAEMON_DIR_MODE, DAEMON_FILE_MODE } from './paths.ts';

const TOKEN_BYTES = 32;
export const MAX_SESSIONS = 256;
const REGISTRY_VERSION = 1;
const TOKEN_HEX = /^[0-9a-f]{64}$/;

interface RegisterInput {
  sessionId: string;
  meshId: string;
  name: string;
  pid: number | null;
  cwd: string | null;
  groups: string[];
}

export interface SessionRecord extends RegisterInput {
  token: string;
  sessionKey: string;
  registeredAt: number;
  /** the registered process's start time (Linux), so a reused pid is not taken for it */
  pidStartTime: string | null;
}

export class SessionRegistry {
  readonly #file: string;
  readonly #keysDir: string;
  readonly #now: () => number;
  readonly #byToken = new Map<string, SessionRecord>();

  constructor(dir: string, options: { now?: () => number } = {}) {
    this.#file = join(dir, 'sessions.json');
    this.#keysDir = join(dir, 'sessions');
    this.#now = options.now ?? Date.now;
    this.#load();
  }

  #load(): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.#file, 'utf8'));
    } catch {
      return; // none yet, or unreadable: start empty rather than refuse to start
    }
    const sessions = (parsed as { sessions?: unknown }).sessions;
    if (!Array.isArray(sessions)) return;
    for (const entry of sessions as SessionRecord[]) {
      if (typeof entry?.token === 'string' && TOKEN_HEX.test(entry.token) && typeof entry.sessionKey === 'string') this.#byToken.set(entry.token, entry);
    }
  }

  #persist(): void {
    const temporary = `${this.#file}.${process.pid}.tmp`;
    writeFileSync(temporary, `${JSON.stringify({ version: REGISTRY_VERSION, sessions: [...this.#byToken.values()] }, null, 2)}\n`, { mode: DAEMON_FILE_MODE });
    renameSync(temporary, this.#file);
  }

  #keyPath(meshId: string, sessionId: string): string {
    const meshDir = createHash('sha256').update(meshId).digest('hex').slice(0, 32);
    return join(this.#keysDir, meshDir, `${createHash('sha256').update(sessionId).digest('hex')}.json`);
  }

  /** The session's stable key pair: loaded, or made and saved on first use. */
  keyPair(meshId: string, sessionId: string): SigningKeyPair {
    const path = this.#keyPath(meshId, sessionId);
    try {
      const stored = JSON.parse(readFileSync(path, 'utf8')) as { secretKey?: unknown };
      if (typeof stored.secretKey === 'string') return keyPairFromSecret(Buffer.from(stored.secretKey, 'hex'));
    } catch {
      // not made yet
    }
    const pair = generateKeyPair();
    mkdirSync(join(path, '..'), { recursive: true, mode: DAEMON_DIR_MODE });
    const temporary = `${path}.${process.pid}.tmp`;
    writeFileSync(temporary, JSON.stringify({ meshId, sessionId, publicKey: pair.publicKey, secretKey: pair.secretKey.toString('hex') }), { mode: DAEMON_FILE_MODE });
    renameSync(temporary, path);
    return pair;
  }

  /** Register (or refresh) a session; the same (mesh, session id) keeps its token and key. */
  register(input: RegisterInput): { record: SessionRecord; created: boolean } {
    const existing = [...this.#byToken.values()].find((record) => record.meshId === input.meshId && record.sessionId === input.sessionId);
    if (existing === undefined && this.#byToken.size >= MAX_SESSIONS) {
      throw cmError('CM_ERR_SESSION_LIMIT', `this daemon already holds ${this.#byToken.size} sessions, the most it keeps; session ${JSON.stringify(input.sessionId)} was not registered`, {
        details: { sessions: this.#byToken.size, max: MAX_SESSIONS, sessionId: input.sessionId },
      });
    }
    const record: SessionRecord = {
      token: existing?.token ?? randomBytes(TOKEN_BYTES).toString('hex'),
      sessionId: input.sessionId,
      meshId: input.meshId,
      name: input.name,
      pid: input.pid,
      cwd: input.cwd,
      groups: input.groups.slice(0, MAX_GROUPS),
      sessionKey: this.keyPair(input.meshId, input.sessionId).publicKey,
      registeredAt: existing?.registeredAt ?? this.#now(),
      pidStartTime: input.pid === null ? null : processStartTime(input.pid) ?? null,
    };
    this.#byToken.set(record.token, record);
    this.#persist();
    return { record, created: existing === undefined };
  }

  get(token: string): SessionRecord | undefined {
    return TOKEN_HEX.test(token) ? this.#byToken.get(token) : undefined;
  }

  unregister(token: string): SessionRecord | undefined {
    const record = this.#byToken.get(token);
    if (record === undefined) return undefined;
    this.#byToken.delete(token);
    this.#persist();
    return record;
  }

  list(): SessionRecord[] {
    return [...this.#byToken.values()];
  }
}

/** Is the session's process still the one that registered? (No pid: kept until unregistered.) */
export function sessionAlive(record: SessionRecord): boolean {
  if (record.pid === null) return true;
  if (!processAlive(record.pid)) return false;
  return record.pidStartTime === null || record.pidStartTime === undefined || processStartTime(record.pid) === record.pidStartTime;
}

/** What IPC may show about a session: no token (only its prefix), no secret. */
export function publicSession(record: SessionRecord): Record<string, unknown> {
  const { token, ...rest } = record;
  return { ...rest, tokenPrefix: token.slice(0, 8) };
}
