// The benchmark's points (docs/benchmarks.md): bursts of direct messages, a steady offered rate, held
// `next` priority released by idle, and a reconnect storm. Each returns plain figures.

import { BenchPeer } from './peer.ts';
import type { Postgres, RunWorld } from './harness.ts';
import { startRun } from './harness.ts';
import { seedMesh } from './mesh.ts';
import type { Usage } from './sampler.ts';
import { distribution, seededRandom } from './stats.ts';
import type { Distribution } from './stats.ts';

const WARMUP_PER_PEER = 3;
const POLL_MS = 20;
const YIELD_EVERY = 200;
const DELIVERY_LIMIT_MS = 120_000;
const MB = 1024 * 1024;

export interface BurstResult {
  point: string;
  peers: number;
  perPeer: number;
  expected: number;
  delivered: number;
  deliveredPercent: number;
  lost: number;
  duplicates: number;
  decryptFailures: number;
  refused: number;
  sendToAckMs: Distribution;
  sendToPushMs: Distribution;
  totalMs: number;
  /** from the last push until every ack was applied (inside the CPU window); null if never */
  ackLagMs: number | null;
  messagesPerSecond: number;
  brokerPeakRssMb: number;
  brokerCpuSeconds: number;
  postgresCpuSeconds: number | null;
  eventLoopP99Ms: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const yieldToLoop = () => new Promise((resolve) => setImmediate(resolve));

/** Connect in groups of 50; with several instances, peers are spread across them in turn. */
async function connectAll(peers: BenchPeer[], wsUrl: string | readonly string[]): Promise<void> {
  const urls = typeof wsUrl === 'string' ? [wsUrl] : wsUrl;
  for (let start = 0; start < peers.length; start += 50) {
    await Promise.all(peers.slice(start, start + 50).map((peer, index) => peer.connect(urls[(start + index) % urls.length]!)));
  }
}

async function waitUntil(done: () => boolean, limitMs: number): Promise<void> {
  const deadline = performance.now() + limitMs;
  while (!done() && performance.now() < deadline) await sleep(POLL_MS);
}

interface Plan { from: BenchPeer; frame: string; cmid: string; to: string }

/** A fresh mesh of `count` members, each with a connected socket. */
async function connectedPeers(world: RunWorld, count: number, label: string): Promise<BenchPeer[]> {
  const mesh = await seedMesh(world.brokerUrl, count, label);
  const peers = mesh.members.map((member) => new BenchPeer(mesh.meshId, member));
  await connectAll(peers, world.wsUrls);
  return peers;
}

/** `count` rounds in which every peer sends one message to a uniformly random other peer. */
function planMessages(peers: readonly BenchPeer[], random: () => number, round: string, count: number): Plan[] {
  const pick = (self: number) => {
    const other = Math.floor(random() * (peers.length - 1));
    return other >= self ? other + 1 : other;
  };
  const plans: Plan[] = [];
  for (let k = 0; k < count; k += 1) {
    for (const [index, from] of peers.entries()) {
      const to = peers[pick(index)]!.key;
      const cmid = `${round}-${index}-${k}`;
      plans.push({ from, to, cmid, frame: from.frame(to, cmid, `${round} message ${k} from ${index}`) });
    }
  }
  return plans;
}

/** Send every plan, recording when: all at once (yielding now and then), or paced at `rate` msg/s from `started`. */
async function sendPlans(plans: readonly Plan[], rate: number | undefined, started: number, sentAt: Map<string, number>): Promise<void> {
  if (rate === undefined) {
    for (const [index, plan] of plans.entries()) {
      sentAt.set(plan.cmid, performance.now());
      plan.from.sendRaw(plan.frame);
      if (index % YIELD_EVERY === YIELD_EVERY - 1) await yieldToLoop();
    }
    return;
  }
  // Offered load: keep the number sent equal to rate × elapsed, correcting for drift.
  let next = 0;
  while (next < plans.length) {
    const due = Math.min(plans.length, Math.floor(((performance.now() - started) / 1000) * rate));
    for (; next < due; next += 1) {
      const plan = plans[next]!;
      sentAt.set(plan.cmid, performance.now());
      plan.from.sendRaw(plan.frame);
    }
    await sleep(2);
  }
}

interface BurstRun {
  options: { peers: number; perPeer: number; point: string };
  peers: readonly BenchPeer[];
  plans: readonly Plan[];
  sentAt: ReadonlyMap<string, number>;
  pushAt: ReadonlyMap<string, number>;
  /** from the last push until the broker had applied every ack; null if it never did */
  ackLagMs: number | null;
  totalMs: number;
  usage: { broker: Usage; postgres: Usage | undefined };
  eventLoopP99Ms: number;
}

/** The figures of one run: ack and push latencies per message, losses, duplicates, resources. */
function burstResult(run: BurstRun): BurstResult {
  const { options, peers, plans, sentAt, pushAt, totalMs, ackLagMs, usage } = run;
  const acks: number[] = [];
  let refused = 0;
  for (const plan of plans) {
    const ack = plan.from.acks.get(plan.cmid);
    if (ack === undefined) continue;
    if (!ack.queued) refused += 1;
    else acks.push(ack.at - (sentAt.get(plan.cmid) ?? ack.at));
  }
  const pushes = plans.filter((plan) => pushAt.has(plan.cmid)).map((plan) => (pushAt.get(plan.cmid) ?? 0) - (sentAt.get(plan.cmid) ?? 0));
  const delivered = pushes.length;
  const expected = plans.length;
  return {
    point: options.point,
    peers: options.peers,
    perPeer: options.perPeer,
    expected,
    delivered,
    deliveredPercent: (100 * delivered) / expected,
    lost: expected - delivered,
    duplicates: peers.reduce((sum, peer) => sum + peer.duplicates, 0),
    decryptFailures: peers.reduce((sum, peer) => sum + peer.decryptFailures, 0),
    refused,
    sendToAckMs: distribution(acks),
    sendToPushMs: distribution(pushes),
    totalMs,
    ackLagMs,
    messagesPerSecond: delivered / (totalMs / 1000),
    brokerPeakRssMb: usage.broker.peakRssBytes / MB,
    brokerCpuSeconds: usage.broker.cpuSeconds,
    postgresCpuSeconds: usage.postgres?.cpuSeconds ?? null,
    eventLoopP99Ms: run.eventLoopP99Ms,
  };
}

/** Every peer sends `perPeer` messages to uniformly random others; `rate` (msg/s) paces them, else all at once. */
export async function directTraffic(postgres: Postgres, options: { peers: number; perPeer: number; seed: number; point: string; rate?: number; instances?: number }): Promise<BurstResult> {
  const world = await startRun(postgres, {}, options.instances);
  try {
    const peers = await connectedPeers(world, options.peers, options.point);
    const random = seededRandom(options.seed);
    const received = () => peers.reduce((sum, peer) => sum + peer.received.length, 0);
    // Warm-up: JIT, prepared statements, pool connections. Not counted.
    const warmup = planMessages(peers, random, 'warm', WARMUP_PER_PEER);
    for (const plan of warmup) plan.from.sendRaw(plan.frame);
    await waitUntil(() => received() >= warmup.length, DELIVERY_LIMIT_MS);
    const warmReceived = received();

    const plans = planMessages(peers, random, 'run', options.perPeer);
    const sentAt = new Map<string, number>();
    const pushAt = new Map<string, number>();
    for (const peer of peers) peer.onPush = (item) => pushAt.set(item.clientMessageId, item.at);
    const stop = world.measure();
    const started = performance.now();
    await sendPlans(plans, options.rate, started, sentAt);
    await waitUntil(() => received() - warmReceived >= plans.length, DELIVERY_LIMIT_MS);
    const finished = Math.max(...[...pushAt.values()], started);
    // The CPU window closes once every ack is applied (harness.ts, settled), then a little
    // later, to let late duplicates show.
    const ackLagMs = (await world.settled(DELIVERY_LIMIT_MS)) ? performance.now() - finished : null;
    await sleep(200);
    const usage = stop();
    const result = burstResult({ options, peers, plans, sentAt, pushAt, totalMs: finished - started, ackLagMs, usage, eventLoopP99Ms: await world.eventLoopP99Ms() });
    await Promise.all(peers.map((peer) => peer.close()));
    return result;
  } finally {
    await world.close();
  }
}

export interface HeldResult { point: string; held: number; pushedWhileWorking: number; delivered: number; lost: number; releaseToPushMs: Distribution }

/** `next` messages to working recipients: none may arrive until they turn idle; then all must. */
export async function heldPriority(postgres: Postgres, options: { peers: number; perPeer: number; holdMs: number }): Promise<HeldResult> {
  const world = await startRun(postgres);
  try {
    const peers = await connectedPeers(world, options.peers, 'held');
    const half = Math.floor(peers.length / 2);
    const senders = peers.slice(0, half);
    const receivers = peers.slice(half);
    for (const receiver of receivers) receiver.setStatus('working');
    await sleep(200);
    let sent = 0;
    for (const [index, sender] of senders.entries()) {
      for (let k = 0; k < options.perPeer; k += 1) {
        const to = receivers[(index + k) % receivers.length]!;
        sender.sendRaw(sender.frame(to.key, `held-${index}-${k}`, 'when you are free', 'next'));
        sent += 1;
      }
    }
    await sleep(options.holdMs);
    const pushedWhileWorking = receivers.reduce((sum, peer) => sum + peer.received.length, 0);
    const released = performance.now();
    for (const receiver of receivers) receiver.setStatus('idle');
    const count = () => receivers.reduce((sum, peer) => sum + peer.received.length, 0);
    await waitUntil(() => count() >= sent, DELIVERY_LIMIT_MS);
    const delays = receivers.flatMap((peer) => peer.received.map((item) => item.at - released));
    await Promise.all(peers.map((peer) => peer.close()));
    return { point: `next held ${options.holdMs} ms`, held: sent, pushedWhileWorking, delivered: count(), lost: sent - count(), releaseToPushMs: distribution(delays) };
  } finally {
    await world.close();
  }
}

export interface StormResult {
  point: string; sockets: number; reattachedMs: number; reattached: number; messagesDuringStorm: number; lost: number; duplicates: number; brokerPeakRssMb: number;
  /** what the reconnects' hello_acks weighed, and how many carried the whole roster */
  helloAckMb: number; rosterResent: number;
}

/** Drop every socket at once, send to the dropped peers meanwhile, reconnect all: time and losses. */
export async function reconnectStorm(postgres: Postgres, options: { sockets: number; senders: number }): Promise<StormResult> {
  const world = await startRun(postgres);
  try {
    const mesh = await seedMesh(world.brokerUrl, options.sockets + options.senders, 'storm');
    const all = mesh.members.map((member) => new BenchPeer(mesh.meshId, member));
    for (const peer of all) peer.decrypt = false;
    const senders = all.slice(0, options.senders);
    const targets = all.slice(options.senders);
    await connectAll(all, world.wsUrl);
    const stop = world.measure();
    const dropped = performance.now();
    for (const peer of targets) peer.drop();
    let sent = 0;
    for (const [index, target] of targets.entries()) {
      const sender = senders[index % senders.length]!;
      sender.sendRaw(sender.frame(target.key, `storm-${index}`, 'sent while you were gone'));
      sent += 1;
    }
    const acks = await Promise.all(targets.map((peer) => peer.connect(world.wsUrl)));
    const reattachedMs = performance.now() - dropped;
    const count = () => targets.reduce((sum, peer) => sum + peer.received.length, 0);
    await waitUntil(() => count() >= sent, DELIVERY_LIMIT_MS);
    const usage = stop();
    const result: StormResult = {
      point: `reconnect storm ${options.sockets}`,
      sockets: options.sockets,
      reattachedMs,
      reattached: acks.filter((ack) => ack.reattached === true).length,
      messagesDuringStorm: sent,
      lost: sent - count(),
      duplicates: targets.reduce((sum, peer) => sum + peer.duplicates, 0),
      brokerPeakRssMb: usage.broker.peakRssBytes / MB,
      helloAckMb: targets.reduce((sum, peer) => sum + (peer.helloAck?.bytes ?? 0), 0) / MB,
      rosterResent: targets.filter((peer) => peer.helloAck?.lists === true).length,
    };
    await Promise.all(all.map((peer) => peer.close()));
    return result;
  } finally {
    await world.close();
  }
}
