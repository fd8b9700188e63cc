// Who is in a mesh and in what state, as everyone sees it: the roster (current members and
// every proven key with status, summary and groups), read from Postgres — one source of
// truth for `list_peers` and for routing — and every change to it: connect, close, lease
// end, status (also from Claude Code hooks: hookRoute in http.ts), summary and groups.

import type { Context } from '../../broker.ts';
import { createHash } from 'node:crypto';
import { encodeFrame, MAX_GROUPS, ROSTER_DIGEST_LENGTH } from '../protocol.ts';
import type { MemberView, PeerView, Role, ServerFrameOf, Status } from '../protocol.ts';
import { Batcher } from '../batch.ts';
import { query } from './db.ts';
import type { Row } from './db.ts';
import { entryKey, SIGNAL_ROSTERS, SIGNAL_TAKEOVERS } from './hub.ts';
import type { Peer } from './hub.ts';

export const TTL_SWEEP_INTERVAL_MS = 15_000;
export const INSTANCE_BEAT_MS = 5_000;
// An instance silent for this many beats is dead (killed, machine gone).
const DEAD_AFTER_BEATS = 3;
const ROSTER_CACHE_MS = 1_000;
// Roster changes are told to the other instances in one notification per this many ms.
const ROSTER_SIGNAL_MS = 5;
// Offline keys stay routable (store-and-forward to a session key) this long.
export const OFFLINE_PRESENCE_SECONDS = 7 * 24 * 3600;

export interface Roster {
  members: Map<string, MemberView>;
  peers: Map<string, PeerView>;
}
type StatusSource = 'hook' | 'manual' | 'inferred';
type GoneReason = 'lease_expired' | 'kicked' | 'banned' | 'left';
type MemberRow = Omit<Row<'members_for_hello'>, 'n'>;
interface Connect { peer: Peer; here: boolean; groups: string[] | null }

// A roster is the same for every peer of its mesh until it changes: its JSON and digest are
// made once and spliced into each `hello_ack` and `peers` frame (a storm of a thousand hellos
// into one mesh would otherwise encode the same thousand peers a thousand times). A client
// that names the digest it holds gets the digest back without the lists: a daemon that
// refreshes before each send in an unchanged mesh of a thousand peers is not sent them again.
const rosterJson = new WeakMap<Roster, { json: string; digest: string }>();

/** A `hello_ack` or `peers` frame: its own fields, the roster's digest, and the roster unless `known` is that digest. */
export function encodeWithRoster<T extends 'hello_ack' | 'peers'>(
  type: T, fields: Omit<ServerFrameOf<T>, 'type' | 'peers' | 'members' | 'rosterDigest'>, roster: Roster, known: string | undefined,
): string {
  let encoded = rosterJson.get(roster);
  if (encoded === undefined) {
    const json = `"peers":${JSON.stringify([...roster.peers.values()])},"members":${JSON.stringify([...roster.members.values()])}`;
    encoded = { json, digest: createHash('sha256').update(json).digest('base64url').slice(0, ROSTER_DIGEST_LENGTH) };
    rosterJson.set(roster, encoded);
  }
  const head = encodeFrame(type, { ...fields, rosterDigest: encoded.digest } as Omit<ServerFrameOf<T>, 'type'>);
  return known === encoded.digest ? head : `${head.slice(0, -1)},${encoded.json}}`;
}

export class Presence {
  readonly #ctx: Context;
  readonly #cache = new Map<string, { roster: Roster; loadedAt: number }>();
  readonly #loading = new Map<string, Promise<Roster>>();
  readonly #versions = new Map<string, number>();
  readonly #sweep: NodeJS.Timeout;
  #beat: NodeJS.Timeout | undefined;
  readonly #changed = new Set<string>();
  #signalTimer: NodeJS.Timeout | undefined;
  // The hello path's database work, batched: the hellos of one moment (a broker restart
  // brings them all at once) share one statement per step.
  readonly #members = new Batcher<{ meshId: string; memberKey: string }, MemberRow | undefined>((asked) => this.#lookUpMembers(asked));
  readonly #names = new Batcher<{ meshId: string; name: string; memberKey: string }, boolean>((asked) => this.#namesTaken(asked));
  readonly #connects = new Batcher<Connect, { fresh: boolean; batchMates: ReadonlySet<string> }>((connects) => this.#record(connects));

  constructor(ctx: Context) {
    this.#ctx = ctx;
    this.#sweep = setInterval(() => void this.ttlSweep(), ctx.timings.ttlSweepIntervalMs);
    this.#sweep.unref();
  }

  // ---- instances ----

  /**
   * Announce this instance and take back what a former life of the same instance id left
   * (a broker killed and restarted on the same host and port): its claims go back at once,
   * its presences keep their lease for whoever they reconnect to. Then beat.
   */
  async startInstance(): Promise<void> {
    const { pool, instanceId, timings } = this.#ctx;
    await query(pool, 'instance_beat', [instanceId]);
    await query(pool, 'release_instance_claims', [instanceId]);
    await query(pool, 'presence_orphan_instance', [instanceId, timings.leaseMs / 1000]);
    this.#beat = setInterval(() => void this.instanceTick(), timings.instanceBeatMs);
    this.#beat.unref();
  }

  /**
   * Periodic: this instance is alive; instances silent for DEAD_AFTER_BEATS beats are not
   * (their claims go back, their presences keep a lease); and leases that no instance holds
   * any more and that ran out end here, with `peer_left`.
   */
  async instanceTick(): Promise<void> {
    const { pool, instanceId, timings, log } = this.#ctx;
    try {
      await query(pool, 'instance_beat', [instanceId]);
      const reaped = (await query(pool, 'reap_instances', [(timings.instanceBeatMs * DEAD_AFTER_BEATS) / 1000, instanceId, timings.leaseMs / 1000])).rows[0];
      if (reaped !== undefined && reaped.instances > 0) {
        log.warn('dead broker instances reaped', { instances: reaped.instances, claimsReleased: reaped.claims, presencesInLease: reaped.presences });
      }
      const { rows } = await query(pool, 'presence_expire_orphans', [instanceId]);
      for (const row of rows) {
        this.invalidate(row.mesh_id);
        if (row.current) this.#announceLeft({ meshId: row.mesh_id, key: row.key, memberKey: row.member_key, name: row.name, kind: row.kind, role: row.role }, 'lease_expired');
      }
    } catch (error) {
      log.warn('instance heartbeat failed', { error });
    }
  }

  // ---- the roster ----

  /** The roster of a mesh changed: forget it here, and tell the other instances (coalesced). */
  invalidate(meshId: string): void {
    this.forget(meshId);
    this.#changed.add(meshId);
    this.#signalTimer ??= setTimeout(() => this.#signal(), ROSTER_SIGNAL_MS);
  }

  /** Forget a cached roster (another instance said it changed). */
  forget(meshId: string): void {
    this.#cache.delete(meshId);
    this.#loading.delete(meshId);
    this.#versions.set(meshId, (this.#versions.get(meshId) ?? 0) + 1);
  }

  #signal(): void {
    this.#signalTimer = undefined;
    const meshes = [...this.#changed];
    this.#changed.clear();
    this.#ctx.hub.tell(SIGNAL_ROSTERS, meshes, 'a roster change');
  }

  /** The roster, cached briefly; concurrent readers share one load. */
  /** The roster when a fresh one is cached (no promise: the send path asks for it per message). */
  cachedRoster(meshId: string): Roster | undefined {
    const cached = this.#cache.get(meshId);
    return cached !== undefined && this.#ctx.now() - cached.loadedAt < ROSTER_CACHE_MS ? cached.roster : undefined;
  }

  async roster(meshId: string): Promise<Roster> {
    const cached = this.cachedRoster(meshId);
    if (cached !== undefined) return cached;
    const inFlight = this.#loading.get(meshId);
    if (inFlight !== undefined) return inFlight;
    const version = this.#versions.get(meshId) ?? 0;
    const loading = this.#load(meshId).then((roster) => {
      // A change made while this load ran may not be in it: do not cache it then.
      if ((this.#versions.get(meshId) ?? 0) === version) this.#cache.set(meshId, { roster, loadedAt: this.#ctx.now() });
      return roster;
    }).finally(() => {
      if (this.#loading.get(meshId) === loading) this.#loading.delete(meshId);
    });
    this.#loading.set(meshId, loading);
    return loading;
  }

  async #load(meshId: string): Promise<Roster> {
    // Presences first: a member row is written before any presence of it, so every presence
    // read here finds its member in the read after, unless that member has left since.
    const peers = await query(this.#ctx.pool, 'roster_presences', [meshId, OFFLINE_PRESENCE_SECONDS]);
    const members = await query(this.#ctx.pool, 'roster_members', [meshId]);
    const roster: Roster = { members: new Map(), peers: new Map() };
    const current = new Map<string, { key: string; role: Role }>();
    for (const row of members.rows) {
      roster.members.set(row.key, { key: row.key, name: row.name, role: row.role });
      current.set(row.id, row);
    }
    for (const row of peers.rows) {
      // a key of a member who left or was banned is not in the roster
      const member = current.get(row.member_id);
      if (member === undefined) continue;
      roster.peers.set(row.key, {
        key: row.key, memberKey: member.key, name: row.name, kind: row.kind, role: member.role, status: row.status,
        summary: row.summary, groups: row.groups, connectedAt: row.connected_at.toISOString(), online: row.online,
      });
    }
    return roster;
  }

  /** The status a recipient has now, for the hold rule (lib/broker/delivery.ts). */
  async statusOf(meshId: string, key: string): Promise<Status> {
    return (await this.roster(meshId)).peers.get(key)?.status ?? 'idle';
  }

  // ---- a connection's life ----

  // ---- a hello ----

  /** The member a hello names, as stored (undefined: no such member of that mesh). */
  member(meshId: string, memberKey: string): Promise<MemberRow | undefined> {
    return this.#members.run({ meshId, memberKey });
  }

  /** Whether another current member holds `name` in the mesh, as its own or for a session. */
  nameTaken(meshId: string, name: string, memberKey: string): Promise<boolean> {
    return this.#names.run({ meshId, name, memberKey });
  }

  /**
   * Record a proven connection. A fresh one starts idle and is announced; a reattach — here,
   * or to a key another instance held inside its lease — changes nothing others see, so the
   * cached roster stays (a reconnect storm does not reload it per hello).
   */
  async connected(peer: Peer, reattachedHere: boolean, groups: string[] | null): Promise<{ roster: Roster; fresh: boolean; batchMates: ReadonlySet<string> }> {
    const { fresh, batchMates } = await this.#connects.run({ peer, here: reattachedHere, groups });
    return { roster: await this.roster(peer.meshId), fresh, batchMates };
  }

  async #lookUpMembers(asked: Array<{ meshId: string; memberKey: string }>): Promise<Array<MemberRow | undefined>> {
    const { rows } = await query(this.#ctx.pool, 'members_for_hello', [asked.map((each) => each.meshId), asked.map((each) => each.memberKey), this.#ctx.instanceId]);
    const found: Array<MemberRow | undefined> = asked.map(() => undefined);
    for (const { n, ...row } of rows) found[n - 1] = row;
    return found;
  }

  async #namesTaken(asked: Array<{ meshId: string; name: string; memberKey: string }>): Promise<boolean[]> {
    const { rows } = await query(this.#ctx.pool, 'names_in_use', [asked.map((each) => each.meshId), asked.map((each) => each.name), asked.map((each) => each.memberKey)]);
    const taken = new Set(rows.map((row) => row.n - 1));
    return asked.map((_, index) => taken.has(index));
  }

  /** One statement per round; a key that comes twice in a batch waits for the next round. */
  async #record(connects: Connect[]): Promise<Array<{ fresh: boolean; batchMates: ReadonlySet<string> }>> {
    const fresh = new Map<Connect, boolean>();
    for (let left = connects; left.length > 0;) {
      const round: Connect[] = [];
      const later: Connect[] = [];
      const seen = new Set<string>();
      for (const each of left) {
        const key = entryKey(each.peer.meshId, each.peer.key);
        (seen.has(key) ? later : round).push(each);
        seen.add(key);
      }
      left = later;
      const { rows } = await query(this.#ctx.pool, 'presence_connect', [
        round.map((c) => c.peer.meshId), round.map((c) => c.peer.memberId), round.map((c) => c.peer.key), round.map((c) => c.peer.kind),
        round.map((c) => c.peer.name), round.map((c) => (c.groups === null ? null : JSON.stringify(c.groups))), round.map((c) => c.here), this.#ctx.instanceId,
      ]);
      const freshKeys = new Set(rows.filter((row) => row.fresh).map((row) => entryKey(row.mesh_id, row.key)));
      // The same key still connected on another instance (a client that reconnected before
      // that instance saw its socket close): the newer connection wins there too.
      const taken = rows.filter((row) => row.connected_elsewhere !== null).map((row) => [row.mesh_id, row.key]);
      if (taken.length > 0) this.#ctx.hub.tell(SIGNAL_TAKEOVERS, { by: this.#ctx.instanceId, taken }, 'a connection taken over');
      for (const each of round) fresh.set(each, freshKeys.has(entryKey(each.peer.meshId, each.peer.key)));
    }
    // Once per mesh for the whole batch, before anyone reads the roster: the hellos of this
    // batch then share one roster load.
    const mates = new Map<string, Set<string>>();
    for (const each of connects) {
      if (fresh.get(each) !== true) continue;
      const keys = mates.get(each.peer.meshId) ?? new Set<string>();
      keys.add(each.peer.key);
      mates.set(each.peer.meshId, keys);
    }
    for (const meshId of mates.keys()) this.invalidate(meshId);
    return connects.map((each) => ({ fresh: fresh.get(each) ?? false, batchMates: mates.get(each.peer.meshId) ?? new Set() }));
  }

  /**
   * Tell the mesh a fresh peer joined (lib/broker/hub.ts gathers the joins of a turn into
   * shared frames). Peers that joined in the same batch are not told of each other: the
   * roster in their `hello_ack` was read after the whole batch was recorded, so it lists them.
   */
  announceJoined(peer: Peer, roster: Roster, batchMates: ReadonlySet<string>): void {
    const view = roster.peers.get(peer.key);
    if (view !== undefined) this.#ctx.hub.announceJoined(peer.meshId, peer.key, view, batchMates);
  }

  /** A socket closed: inside its lease a peer still lists as online, so the roster stands. */
  detached(peer: Peer): void {
    const { pool, log, instanceId, timings } = this.#ctx;
    void query(pool, 'presence_disconnect', [peer.meshId, peer.key, instanceId, timings.leaseMs / 1000])
      .catch((error: unknown) => log.warn('could not record disconnect', { error }));
    void this.#ctx.delivery.releaseClaims(peer);
  }

  /**
   * The peer is gone for good. Recorded first, then told: list_peers never contradicts
   * peer_left. A lease that ran out on a row another connection took over (here or on another
   * instance) tells nothing: that peer is still there.
   */
  gone(peer: Peer, reason: GoneReason): void {
    const { pool, log, instanceId } = this.#ctx;
    void query(pool, 'presence_gone', [peer.meshId, peer.key, instanceId, reason !== 'lease_expired'])
      .then((result) => (result.rowCount ?? 0) > 0, (error: unknown) => {
        log.warn('could not record departure', { error });
        return true;
      })
      .then((ended) => {
        if (!ended && reason === 'lease_expired') return;
        this.invalidate(peer.meshId);
        this.#announceLeft(peer, reason);
      });
  }

  #announceLeft(peer: Pick<Peer, 'meshId' | 'key' | 'memberKey' | 'name' | 'kind' | 'role'>, reason: GoneReason): void {
    const left = { key: peer.key, memberKey: peer.memberKey, name: peer.name, kind: peer.kind, role: peer.role };
    this.#ctx.hub.announce(peer.meshId, encodeFrame('system', { event: 'peer_left', meshId: peer.meshId, reason, at: this.#at(), peer: left }));
  }

  /**
   * Shutdown: this instance's presences keep their lease with no instance behind them, so
   * peers that reconnect to another instance inside it are a silent reattach (a rolling
   * restart tells nobody anything); a living instance ends the rest after the lease.
   */
  async leaveInstance(): Promise<number> {
    clearInterval(this.#beat);
    const released = (await query(this.#ctx.pool, 'presence_orphan_instance', [this.#ctx.instanceId, this.#ctx.timings.leaseMs / 1000])).rowCount ?? 0;
    await query(this.#ctx.pool, 'instance_gone', [this.#ctx.instanceId]);
    return released;
  }

  // ---- status, summary, groups ----

  /**
   * Apply a status from a source (hook > manual > inferred, enforced atomically by the
   * query); returns the status in force afterwards. Turning idle releases held deliveries.
   */
  async setStatus(meshId: string, key: string, status: Status, source: StatusSource): Promise<{ applied: boolean; status: Status }> {
    const result = await query(this.#ctx.pool, 'set_status', [meshId, key, status, source, this.#ctx.config.hookFreshWindowSeconds]);
    const applied = (result.rowCount ?? 0) > 0;
    if (!applied) return { applied, status: await this.statusOf(meshId, key) };
    this.invalidate(meshId);
    const peer = this.#ctx.hub.get(meshId, key);
    if (status === 'idle' && peer !== undefined) void this.#ctx.delivery.catchUp(peer);
    return { applied, status };
  }

  async setSummary(meshId: string, key: string, summary: string): Promise<void> {
    await query(this.#ctx.pool, 'set_summary', [meshId, key, summary]);
    this.invalidate(meshId);
  }

  /** The groups afterwards, or undefined when the peer is already in MAX_GROUPS groups. */
  async joinGroup(meshId: string, key: string, group: string): Promise<string[] | undefined> {
    const result = await query(this.#ctx.pool, 'join_group', [meshId, key, group, MAX_GROUPS]);
    this.invalidate(meshId);
    return result.rows[0]?.groups;
  }

  async leaveGroup(meshId: string, key: string, group: string): Promise<string[]> {
    const result = await query(this.#ctx.pool, 'leave_group', [meshId, key, group]);
    this.invalidate(meshId);
    return result.rows[0]?.groups ?? [];
  }

  /** Periodic: `working` older than STATUS_TTL_SECONDS turns idle (a hook may have been lost). */
  async ttlSweep(): Promise<number> {
    const { pool, hub, delivery, metrics, log, config } = this.#ctx;
    try {
      const { rows } = await query(pool, 'status_ttl_sweep', [config.statusTtlSeconds]);
      metrics.ttlSweeps.inc({ flipped: rows.length > 0 ? 'true' : 'false' });
      for (const meshId of new Set(rows.map((row) => row.mesh_id))) this.invalidate(meshId);
      for (const row of rows) {
        const peer = hub.get(row.mesh_id, row.key);
        if (peer !== undefined) void delivery.catchUp(peer);
      }
      return rows.length;
    } catch (error) {
      log.warn('status TTL sweep failed', { error });
      return 0;
    }
  }

  close(): void {
    clearInterval(this.#sweep);
    clearInterval(this.#beat);
    clearTimeout(this.#signalTimer);
  }

  #at(): string {
    return new Date(this.#ctx.now()).toISOString();
  }
}
