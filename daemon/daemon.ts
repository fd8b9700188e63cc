// The daemon's core, without transport: one member link per mesh of the config and one
// session link per registered session, the outbox and its sender, the inbox (filled by
// receive.ts). ipc.ts exposes these methods over the socket; main.ts owns the process (lock,
// signals, config watching). Keys stay in here: nothing returned carries a secret.

import { cmError, isCmError } from '../lib/errors.ts';
import type { ClientConfig, MeshIdentity } from '../lib/client-config.ts';
import { selectMesh } from '../lib/select.ts';
import { BrokerLink } from './broker-link.ts';
import type { LinkStatus, LinkTimings } from './broker-link.ts';
import type { Status } from '../lib/protocol.ts';
import { OutboxSender } from './outbox-sender.ts';
import { EventRing } from './events.ts';
import { Inbox } from './inbox.ts';
import type { InboxQuery, InboxRow } from './inbox.ts';
import { Outbox } from './outbox.ts';
import { linkHandlers } from './link-handlers.ts';
import { checkSendInput } from './send-input.ts';
import type { SendInput } from './send-input.ts';
import type { OutboxRow, OutboxStatus, SendRequest } from './outbox.ts';
import type { DaemonPaths } from './paths.ts';
import { peersAnswer, publicRow, sendOutcome, withNames } from './answers.ts';
import type { SendOutcome } from './answers.ts';
import { deleteInbox, FIRST_CONNECT_WAIT_MS, listInbox, markInbox } from './inbox-access.ts';
import { refuseIfRemoved } from './membership.ts';
import { MeshState } from './mesh-state.ts';
import type { MembershipRecord } from './roster-store.ts';
import { meshForTarget, planSend } from './send-plan.ts';
import type { RosterView } from './send-plan.ts';
import { publicSession, sessionAlive, SessionRegistry } from './sessions.ts';
import { storing } from './storage.ts';
import type { SessionRecord } from './sessions.ts';

const PRUNE_INTERVAL_MS = 3600 * 1000;
const ROSTER_REFRESH_TIMEOUT_MS = 3_000;
const REAP_INTERVAL_MS = 5_000;
// A request right after the daemon started waits this long at most for the first connect
// attempt to end, so it is answered from the broker's roster rather than "offline".

export interface DaemonTimings {
  link?: Partial<LinkTimings>;
  pollIntervalMs?: number;
  pruneIntervalMs?: number;
  reapIntervalMs?: number;
  /** first retry delay of the outbox (doubles per attempt, capped at 30 s) */
  backoffBaseMs?: number;
}

interface DaemonOptions {
  paths: DaemonPaths;
  config: ClientConfig;
  timings?: DaemonTimings;
  now?: () => number;
}

export class Daemon {
  readonly paths: DaemonPaths;
  #config: ClientConfig;
  readonly events: EventRing;
  readonly outbox: Outbox;
  readonly inbox: Inbox;
  readonly startedAt: number;
  /** member links by mesh id */
  readonly links = new Map<string, BrokerLink>();
  /** session links by session token */
  readonly sessionLinks = new Map<string, BrokerLink>();
  readonly sessions: SessionRegistry;
  /** the last roster of each mesh and the broker's word on each membership, kept across runs */
  readonly meshState: MeshState;
  readonly #sender: OutboxSender;
  readonly #now: () => number;
  readonly #timings: DaemonTimings;
  #pruneTimer: NodeJS.Timeout | undefined;
  #reapTimer: NodeJS.Timeout | undefined;

  constructor(options: DaemonOptions) {
    this.paths = options.paths;
    this.#config = options.config;
    this.#now = options.now ?? Date.now;
    this.#timings = options.timings ?? {};
    this.startedAt = this.#now();
    this.events = new EventRing({ now: this.#now });
    this.outbox = new Outbox(this.paths.outbox, { now: this.#now, ...(this.#timings.backoffBaseMs === undefined ? {} : { backoffBaseMs: this.#timings.backoffBaseMs }) });
    this.inbox = new Inbox(this.paths.inbox, { now: this.#now });
    this.sessions = new SessionRegistry(this.paths.dir, { now: this.#now });
    this.meshState = new MeshState(this.paths.roster, this.#now);
    this.#sender = new OutboxSender({
      outbox: this.outbox,
      links: () => [...this.links.values(), ...this.sessionLinks.values()],
      ...(this.#timings.pollIntervalMs === undefined ? {} : { pollIntervalMs: this.#timings.pollIntervalMs }),
      onEvent: (kind, fields) => this.events.push(kind, fields),
    });
  }

  #createLink(mesh: MeshIdentity, session?: SessionRecord): BrokerLink {
    const pair = session === undefined ? undefined : this.sessions.keyPair(mesh.meshId, session.sessionId);
    const sessionPart = pair === undefined ? undefined : { sessionKey: pair.publicKey, sessionSecret: pair.secretKey, groups: session?.groups ?? [] };
    const link: BrokerLink = new BrokerLink({
      brokerUrl: mesh.brokerUrl,
      identity: {
        meshId: mesh.meshId, memberKey: mesh.publicKey, memberSecret: Buffer.from(mesh.secretKey, 'hex'),
        name: session?.name ?? mesh.memberName, ...(sessionPart === undefined ? {} : { session: sessionPart }),
      },
      ...(this.#timings.link === undefined ? {} : { timings: this.#timings.link }),
      now: this.#now,
      handlers: linkHandlers({
        events: this.events, inbox: this.inbox, meshState: this.meshState, dir: this.paths.dir, now: this.#now,
        wake: () => this.#sender.wake(), ended: (ended, endedLink) => this.#ended(ended, endedLink),
      }, mesh, session, () => link),
    });
    link.start();
    return link;
  }

  /**
   * The broker ended this membership (kicked, banned, left): say so from now on, and make
   * what waits in the outbox for it dead with that reason rather than pending forever.
   */
  #ended(mesh: MeshIdentity, link: BrokerLink): void {
    const record = this.meshState.ended(mesh, link.status().terminal);
    if (record === undefined) return;
    const keys = [link.key, ...this.sessions.list().filter((each) => each.meshId === mesh.meshId).map((each) => each.sessionKey)];
    const abandoned = keys.reduce((sum, key) => sum + this.outbox.abandon(key, `mesh ${mesh.name}: ${record.state} (${record.reason ?? ''}) before the message left`), 0);
    if (abandoned > 0) this.events.push('send_dead', { meshId: mesh.meshId, abandoned, membership: record.state });
  }

  start(): void {
    this.meshState.load(this.#config.meshes.map((mesh) => mesh.meshId));
    for (const mesh of this.#config.meshes) {
      if (mesh.status === 'active') this.links.set(mesh.meshId, this.#createLink(mesh));
    }
    // Reattach the sessions of the previous run whose process still lives.
    for (const record of this.sessions.list()) {
      const mesh = this.#config.meshes.find((each) => each.meshId === record.meshId && each.status === 'active');
      if (mesh !== undefined && sessionAlive(record)) {
        this.sessionLinks.set(record.token, this.#createLink(mesh, record));
        continue;
      }
      this.sessions.unregister(record.token);
      this.outbox.abandon(record.sessionKey, `session ${record.name} ended before the message left`);
    }
    this.#sender.start();
    this.#prune();
    this.#pruneTimer = setInterval(() => this.#prune(), this.#timings.pruneIntervalMs ?? PRUNE_INTERVAL_MS);
    this.#pruneTimer.unref();
    this.#reapTimer = setInterval(() => this.#reap(), this.#timings.reapIntervalMs ?? REAP_INTERVAL_MS);
    this.#reapTimer.unref();
  }

  /** Sessions whose registered process is gone are unregistered (never by age: sessions.ts). */
  #reap(): void {
    for (const record of this.sessions.list()) {
      if (!sessionAlive(record)) {
        this.unregisterSession(record.token).catch((error: unknown) => this.events.push('reap_error', { message: error instanceof Error ? error.message : String(error) }));
      }
    }
  }

  registerSession(input: { sessionId: string; mesh?: string; name?: string; pid?: number; cwd?: string; groups?: string[] }): { status: 201 | 200; body: Record<string, unknown> } {
    const mesh = this.mesh(input.mesh);
    if (mesh.status !== 'active') {
      throw cmError('CM_ERR_MESH_UNKNOWN', `mesh ${mesh.name} is ${mesh.status}, not active: its join has not completed`, { hint: 'run the same claudemesh join again, then register the session' });
    }
    const previous = this.sessions.list().find((record) => record.meshId === mesh.meshId && record.sessionId === input.sessionId);
    const { record, created } = this.sessions.register({
      sessionId: input.sessionId, meshId: mesh.meshId, name: input.name ?? mesh.memberName,
      pid: input.pid ?? null, cwd: input.cwd ?? null, groups: input.groups ?? [],
    });
    const current = this.sessionLinks.get(record.token);
    const changed = previous === undefined || previous.name !== record.name || previous.groups.join('\n') !== record.groups.join('\n');
    if (current === undefined || changed) {
      void current?.close();
      this.sessionLinks.set(record.token, this.#createLink(mesh, record));
    }
    this.events.push('session_registered', { meshId: mesh.meshId, session: record.name, sessionKey: record.sessionKey });
    return { status: created ? 201 : 200, body: { ...publicSession(record), token: record.token } };
  }

  async unregisterSession(token: string): Promise<Record<string, unknown> | undefined> {
    const record = this.sessions.unregister(token);
    if (record === undefined) return undefined;
    const link = this.sessionLinks.get(token);
    this.sessionLinks.delete(token);
    this.events.push('session_unregistered', { meshId: record.meshId, session: record.name });
    // Before closing: an ack that the close fails then finds its row already dead.
    const abandoned = this.outbox.abandon(record.sessionKey, `session ${record.name} ended before the message left`);
    if (abandoned > 0) this.events.push('send_dead', { session: record.name, abandoned });
    await link?.close();
    return publicSession(record);
  }

  /** The session a token names; CM_ERR_UNAUTHORIZED when none. */
  session(token: string): SessionRecord {
    const record = this.sessions.get(token);
    if (record === undefined) throw cmError('CM_ERR_UNAUTHORIZED', 'unknown session token', { hint: 'register the session again (POST /v1/sessions/register)' });
    return record;
  }

  /** The keys whose messages a session may read: its own and its member's. */
  scopeOf(session: SessionRecord): string[] {
    const mesh = this.#config.meshes.find((each) => each.meshId === session.meshId);
    return mesh === undefined ? [session.sessionKey] : [session.sessionKey, mesh.publicKey];
  }

  #prune(): void {
    const outbox = this.outbox.prune();
    const inbox = this.inbox.prune();
    if (outbox + inbox > 0) this.events.push('pruned', { outbox, inbox });
  }

  get config(): ClientConfig {
    return this.#config;
  }

  /**
   * Take a new config (after join or leave): links for meshes that became active, closed
   * links (member and sessions) for meshes that are gone. Existing links are kept as they are.
   */
  async reload(config: ClientConfig): Promise<{ added: string[]; removed: string[] }> {
    const active = new Map(config.meshes.filter((mesh) => mesh.status === 'active').map((mesh) => [mesh.meshId, mesh]));
    const removed: string[] = [];
    for (const [meshId, link] of this.links) {
      const next = active.get(meshId);
      // A link the broker stopped for good (kicked, banned) or whose key changed starts
      // afresh: a rejoin after an unban rewrites the config, and that is the signal.
      if (next !== undefined && (link.status().terminal !== null || next.publicKey !== link.identity.memberKey)) {
        this.links.delete(meshId);
        await link.close();
        continue;
      }
      if (next !== undefined) continue;
      this.links.delete(meshId);
      this.outbox.abandon(link.key, `mesh ${meshId} is no longer in the config`);
      await link.close();
      for (const record of this.sessions.list().filter((each) => each.meshId === meshId)) await this.unregisterSession(record.token);
      removed.push(meshId);
    }
    this.#config = config;
    const added: string[] = [];
    for (const [meshId, mesh] of active) {
      if (this.links.has(meshId)) continue;
      this.links.set(meshId, this.#createLink(mesh));
      added.push(meshId);
    }
    this.events.push('config_reloaded', { added, removed });
    return { added, removed };
  }

  /** set_status / set_summary on the caller's connection: its session's, else the member's. */
  async setPresence(frame: { type: 'set_status'; status: Status } | { type: 'set_summary'; summary: string }, wanted: string | undefined, session?: SessionRecord): Promise<Record<string, unknown>> {
    const { mesh, link } = await this.#callerLink(wanted, session);
    const { type: _type, id: _id, of: _of, ...result } = await link.call(frame, 'ok');
    return { mesh: mesh.name, ...result };
  }

  /** The caller's connection (its session's, else the member's), once its first connect attempt ended; refused when removed. */
  async #callerLink(wanted: string | undefined, session: SessionRecord | undefined): Promise<{ mesh: MeshIdentity; link: BrokerLink }> {
    const mesh = this.mesh(wanted ?? session?.meshId);
    refuseIfRemoved(mesh.name, this.meshState.membership(mesh));
    const link = (session?.meshId === mesh.meshId ? this.sessionLinks.get(session.token) : undefined) ?? this.#link(mesh);
    await link.firstAttempt(FIRST_CONNECT_WAIT_MS);
    refuseIfRemoved(mesh.name, this.meshState.membership(mesh));
    return { mesh, link };
  }

  mesh(wanted: string | undefined): MeshIdentity {
    return selectMesh(this.#config, wanted === '' ? undefined : wanted);
  }

  #link(mesh: MeshIdentity): BrokerLink {
    const link = this.links.get(mesh.meshId);
    if (link === undefined) throw cmError('CM_ERR_MESH_UNKNOWN', `mesh ${mesh.name} is not attached (join still pending?)`, { hint: 'claudemesh list shows its status' });
    return link;
  }

  /**
   * Resolve, encrypt and enqueue; answers after the SQLite commit. From a session, the
   * message leaves as that session (its key, its socket), in its mesh unless told otherwise.
   * With the broker unreachable it still queues: encrypted from the last roster kept, or
   * deferred until a roster names the target (send-plan.ts); the answer says which.
   */
  async send(input: SendInput, session?: SessionRecord): Promise<SendOutcome> {
    const mesh = this.#meshFor(input, session);
    refuseIfRemoved(mesh.name, this.meshState.membership(mesh));
    const sessionLink = session !== undefined && session.meshId === mesh.meshId ? this.sessionLinks.get(session.token) : undefined;
    const link = sessionLink ?? this.#link(mesh);
    const { priority, clientMessageId } = checkSendInput(input);
    const request: SendRequest = { meshId: mesh.meshId, senderKey: link.key, to: input.to, priority, text: input.text };
    const existing = this.outbox.check(clientMessageId, request);
    if (existing !== undefined) return sendOutcome(existing.status, existing.row, mesh.name, link.isOpen, this.meshState.known(mesh.meshId)?.roster);
    await link.firstAttempt(FIRST_CONNECT_WAIT_MS);
    // The first attempt may have ended the membership (a kicked member's daemon restarted).
    refuseIfRemoved(mesh.name, this.meshState.membership(mesh));
    const view = await this.rosterView(mesh, link);
    const encrypted = planSend(input.to, input.text, view, { key: link.key, memberKey: mesh.publicKey, secret: link.secret });
    const result = storing(this.paths.dir, `message ${clientMessageId} was not queued`, () => this.outbox.enqueue(clientMessageId, request, encrypted));
    if (result.status === 202) this.#sender.wake();
    return sendOutcome(result.status, result.row, mesh.name, link.isOpen, this.meshState.known(mesh.meshId)?.roster);
  }

  /** The mesh a send goes to: asked for, the session's, the only one, or the one that knows the target. */
  #meshFor(input: SendInput, session: SessionRecord | undefined): MeshIdentity {
    const wanted = input.mesh ?? session?.meshId;
    const active = this.#config.meshes.filter((mesh) => mesh.status === 'active');
    if (wanted !== undefined || this.#config.meshes.length < 2 || active.length === 0) return this.mesh(wanted);
    return meshForTarget(input.to, active.map((mesh) => ({ mesh, roster: this.meshState.known(mesh.meshId)?.roster })));
  }

  /** The roster to resolve against: fresh from the broker when connected, else the last one kept. */
  async rosterView(mesh: MeshIdentity, link: BrokerLink): Promise<RosterView | undefined> {
    const member = this.links.get(mesh.meshId);
    for (const each of [link, member]) {
      if (each === undefined || !each.isOpen) continue;
      const roster = await each.refreshRoster(ROSTER_REFRESH_TIMEOUT_MS);
      if (roster !== undefined && each.isOpen) return { roster, fresh: true, at: this.#now() };
    }
    const kept = this.meshState.known(mesh.meshId);
    return kept === undefined ? undefined : { ...kept, fresh: false };
  }

  /** The roster: fresh, or the last one kept (connected: false); none is CM_ERR_MESH_OFFLINE. A session's call waits for its own connection. */
  async peers(wanted: string | undefined, session?: SessionRecord): Promise<Record<string, unknown>> {
    const { mesh, link } = await this.#callerLink(wanted, session);
    return peersAnswer(mesh, await this.rosterView(mesh, link), link.status());
  }

  /** join_group / leave_group on the caller's connection (its session's, else the member's). */
  async group(action: 'join' | 'leave', group: string, wanted: string | undefined, session?: SessionRecord): Promise<Record<string, unknown>> {
    const { mesh, link } = await this.#callerLink(wanted, session);
    const answer = await link.call({ type: action === 'join' ? 'join_group' : 'leave_group', group }, 'ok');
    return { mesh: mesh.name, group, groups: answer.groups ?? [] };
  }

  async messageStatus(id: string, wanted: string | undefined): Promise<Record<string, unknown>> {
    const row = this.outbox.get(id);
    const mesh = this.mesh(wanted ?? row?.meshId);
    const local = row === undefined ? null : publicRow(row);
    const brokerId = row === undefined ? id : row.brokerMessageId;
    if (brokerId === null) return { outbox: local, broker: null };
    const { type: _type, id: _id, ...broker } = await this.#link(mesh).call({ type: 'message_status', messageId: brokerId }, 'message_status').catch((error: unknown) => {
      throw isCmError(error) && error.code === 'CM_ERR_NOT_FOUND' ? cmError('CM_ERR_NOT_FOUND', error.message, { hint: 'give a message id printed by claudemesh send (or its client message id)' }) : error;
    });
    return { outbox: local, broker: withNames(broker, this.meshState.known(mesh.meshId)?.roster) };
  }

  /** Every connection's state: one per mesh, one per session (by name and key, never token). */
  health(): { ok: true; pid: number; meshes: Array<{ meshId: string; name: string; membership: MembershipRecord | null } & LinkStatus>; sessions: Array<Record<string, unknown>> } {
    const meshes = this.#config.meshes.map((mesh) => {
      const link = this.links.get(mesh.meshId);
      const status: LinkStatus = link?.status() ?? { state: 'stopped', since: this.startedAt, attempts: 0, lastError: `join ${mesh.status}`, terminal: null, nextRetryAt: null };
      return { meshId: mesh.meshId, name: mesh.name, ...status, membership: this.meshState.membership(mesh) ?? null };
    });
    const sessions = this.sessions.list().map((record) => ({
      name: record.name, meshId: record.meshId, sessionKey: record.sessionKey, pid: record.pid, ...this.sessionLinks.get(record.token)?.status(),
    }));
    return { ok: true, pid: process.pid, meshes, sessions };
  }

  /** The inbox; a session sees only rows for its own key and its member's (inbox-access.ts). */
  listInbox(query: InboxQuery, session?: SessionRecord): Array<InboxRow & { mesh: string | null }> {
    return listInbox(this.inbox, query, session === undefined ? undefined : this.scopeOf(session), new Map(this.#config.meshes.map((mesh) => [mesh.meshId, mesh.name])));
  }

  mark(ids: readonly number[], state: 'surfaced' | 'read', session?: SessionRecord): number {
    return markInbox(this.inbox, [...this.links.values(), ...this.sessionLinks.values()], ids, state, session === undefined ? undefined : this.scopeOf(session));
  }

  deleteInbox(ids: readonly number[], session?: SessionRecord): number {
    return deleteInbox(this.inbox, ids, session === undefined ? undefined : this.scopeOf(session));
  }

  listOutbox(status: OutboxStatus | undefined, limit: number | undefined): Record<string, unknown> {
    const rows = this.outbox.list({ ...(status === undefined ? {} : { status }), ...(limit === undefined ? {} : { limit }) });
    return { counts: this.outbox.counts(), rows: rows.map(publicRow) };
  }

  requeue(clientMessageId: string): Record<string, unknown> {
    const row = this.outbox.requeue(clientMessageId);
    this.#sender.wake();
    return publicRow(row);
  }

  /** Close every link (1000), let the sends on the wire finish, close the databases. */
  async close(): Promise<void> {
    clearInterval(this.#pruneTimer);
    clearInterval(this.#reapTimer);
    // Stop claiming first; closing the links then fails whatever still waits for an ack
    // (those rows go back to pending and are resent, deduplicated, by the next start).
    const stopped = this.#sender.stop();
    await Promise.all([...this.links.values(), ...this.sessionLinks.values()].map((link) => link.close()));
    await stopped;
    // Whatever still waited for an ack is pending again: the next start resends it.
    this.outbox.resetInflight();
    this.outbox.close();
    this.inbox.close();
    this.meshState.close();
  }
}
