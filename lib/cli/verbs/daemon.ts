// `claudemesh daemon up|down|status|outbox|install-service|uninstall-service`: the per-user
// daemon's lifecycle.
// `up` detaches by default (one component detaches: this one; the child runs --foreground),
// `up --foreground` is the daemon itself (service managers and the auto-start use it).

import { unlink } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureDaemonReady, GUARD_ENV, OPT_OUT_ENV } from '../../../daemon/autostart.ts';
import { processAlive, readPidFile } from '../../../daemon/lock.ts';
import { daemonPaths } from '../../../daemon/paths.ts';
import { callDaemon, probeDaemon } from '../../daemon-client.ts';
import { cmError } from '../../errors.ts';
import { parseCount, stringOption, usageError } from '../args.ts';
import { formatTable, printJson } from '../output.ts';
import type { CliContext, Verb } from '../verb.ts';
import { installService, uninstallService } from './daemon-service.ts';

const STOP_WAIT_MS = 10_000;
// The daemon lists at most this many outbox rows per request.
const MAX_OUTBOX_LIST = 500;
const STOP_POLL_MS = 50;
const ACTIONS = ['up', 'down', 'status', 'outbox', 'install-service', 'uninstall-service'] as const;
const OUTBOX_STATUSES = ['pending', 'inflight', 'done', 'dead'];

async function up(context: CliContext, foreground: boolean, json: boolean): Promise<void> {
  const paths = daemonPaths(context.home);
  if (foreground) {
    // Loaded here only: the daemon's code (SQLite, WebSocket) is not needed by any other verb.
    const { runDaemon } = await import('../../../daemon/main.ts');
    const running = await runDaemon({ home: context.home, env: context.env });
    await running.stopped;
    return;
  }
  const existing = await probeDaemon(paths.socket);
  if (existing !== undefined) {
    throw cmError('CM_ERR_DAEMON_RUNNING', `a daemon already runs: pid ${existing.pid}, version ${existing.version}, meshes ${existing.meshes.join(', ')}, socket ${existing.socket}`, { details: { ...existing } });
  }
  // An explicit start ignores the auto-start guards and a recent failure.
  await unlink(paths.spawnFailure).catch(() => {});
  const env = { ...context.env, [GUARD_ENV]: undefined, [OPT_OUT_ENV]: undefined };
  const ready = await ensureDaemonReady({ home: context.home, env, serviceUnit: undefined });
  const version = await probeDaemon(paths.socket);
  if (version === undefined) {
    throw cmError('CM_ERR_DAEMON_NOT_RUNNING', `the daemon did not start: ${ready.outcome}${ready.reason === undefined ? '' : ` (${ready.reason})`}`, {
      hint: `read ${paths.log}, or run claudemesh daemon up --foreground to see why`,
      details: { outcome: ready.outcome, log: paths.log },
    });
  }
  if (json) printJson(context, { ok: true, detached: true, pid: version.pid, socket: paths.socket, log: paths.log });
  else context.stdout(`daemon started: pid ${version.pid}, socket ${paths.socket}, log ${paths.log}\nstop it with claudemesh daemon down\n`);
}

async function down(context: CliContext, json: boolean): Promise<void> {
  const paths = daemonPaths(context.home);
  const running = await probeDaemon(paths.socket);
  const pid = running?.pid ?? (await readPidFile(paths.pid));
  if (pid === undefined || !processAlive(pid)) {
    if (json) printJson(context, { ok: true, wasRunning: false });
    else context.stdout('the daemon was not running\n');
    return;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + STOP_WAIT_MS;
  while (processAlive(pid) && Date.now() < deadline) await sleep(STOP_POLL_MS);
  if (processAlive(pid)) throw cmError('CM_ERR_DAEMON_RUNNING', `the daemon (pid ${pid}) did not stop within ${STOP_WAIT_MS / 1000} s`, { hint: `kill ${pid}` });
  if (json) printJson(context, { ok: true, wasRunning: true, pid });
  else context.stdout(`daemon stopped (pid ${pid})\n`);
}

async function status(context: CliContext, json: boolean): Promise<void> {
  const paths = daemonPaths(context.home);
  const version = await probeDaemon(paths.socket);
  if (version === undefined) {
    throw cmError('CM_ERR_DAEMON_NOT_RUNNING', `no daemon answers on ${paths.socket}`, { details: { outcome: 'down', socket: paths.socket } });
  }
  const health = (await callDaemon(paths.socket, 'GET', '/v1/health')).body;
  const outbox = (await callDaemon(paths.socket, 'GET', '/v1/outbox?limit=1')).body.counts as Record<string, number>;
  if (json) {
    printJson(context, { ...version, meshes: health.meshes, outbox });
    return;
  }
  context.stdout(`daemon ${version.version}, pid ${version.pid}, up ${Math.round(version.uptimeMs / 1000)} s, socket ${version.socket}\n`);
  context.stdout(`outbox: ${outbox.pending ?? 0} pending, ${outbox.inflight ?? 0} inflight, ${outbox.done ?? 0} done, ${outbox.dead ?? 0} dead\n`);
  const meshes = (health.meshes ?? []) as Array<Record<string, any>>;
  const sessions = (health.sessions ?? []) as Array<Record<string, any>>;
  const detail = (link: Record<string, any>): string => {
    if (link.terminal !== null && link.terminal !== undefined) return `stopped for good: ${link.terminal.code} ${link.terminal.reason}`;
    return String(link.lastError ?? (typeof link.nextRetryAt === 'number' ? `retry at ${new Date(link.nextRetryAt).toISOString()}` : ''));
  };
  const since = (link: Record<string, any>) => (typeof link.since === 'number' ? new Date(link.since).toISOString() : '-');
  // A mesh whose membership the broker ended shows that, not a connection state.
  const state = (mesh: Record<string, any>) => (mesh.membership?.state === 'removed' || mesh.membership?.state === 'banned' ? String(mesh.membership.state) : String(mesh.state));
  context.stdout(formatTable(['MESH', 'STATE', 'SINCE', 'DETAIL'], meshes.map((mesh) => [String(mesh.name), state(mesh), since(mesh), detail(mesh)])));
  if (sessions.length > 0) {
    context.stdout(formatTable(['SESSION', 'STATE', 'SINCE', 'DETAIL'], sessions.map((session) => [String(session.name), String(session.state ?? '-'), since(session), detail(session)])));
  }
}

async function outbox(context: CliContext, values: Record<string, string | boolean | undefined>, json: boolean): Promise<void> {
  const paths = daemonPaths(context.home);
  const requeue = stringOption(values, 'requeue');
  if (requeue !== undefined) {
    const answer = await callDaemon(paths.socket, 'POST', '/v1/outbox/requeue', { clientMessageId: requeue });
    if (json) printJson(context, answer.body);
    else context.stdout(`requeued ${requeue}\n`);
    return;
  }
  const wanted = stringOption(values, 'status');
  if (wanted !== undefined && !OUTBOX_STATUSES.includes(wanted)) throw usageError('daemon', `--status must be one of ${OUTBOX_STATUSES.join(', ')}, received ${JSON.stringify(wanted)}`);
  const limitText = stringOption(values, 'limit');
  const limit = limitText === undefined ? undefined : parseCount(limitText, 1, MAX_OUTBOX_LIST);
  if (limitText !== undefined && limit === undefined) throw usageError('daemon', `--limit must be 1 to ${MAX_OUTBOX_LIST}, received ${JSON.stringify(limitText)}`);
  const params = new URLSearchParams();
  if (wanted !== undefined) params.set('status', wanted);
  if (limit !== undefined) params.set('limit', String(limit));
  const answer = await callDaemon(paths.socket, 'GET', `/v1/outbox?${params.toString()}`);
  if (json) {
    printJson(context, answer.body);
    return;
  }
  const rows = (answer.body.rows ?? []) as Array<Record<string, any>>;
  context.stdout(formatTable(['ID', 'STATUS', 'ATTEMPTS', 'TO', 'ENQUEUED', 'LAST ERROR'], rows.map((row) => [
    String(row.clientMessageId), String(row.status), String(row.attempts), String(row.to), new Date(row.enqueuedAt).toISOString(), String(row.lastError ?? ''),
  ])));
}

export const daemonVerb: Verb = {
  name: 'daemon',
  argument: 'up|down|status|outbox|install-service|uninstall-service',
  summary: 'the per-user daemon that holds the keys, the outbox and the inbox',
  help: `usage: claudemesh daemon <action> [options]

actions:
  up [--foreground]   start the daemon (detached; --foreground runs it in this process,
                      for systemd/launchd); refuses when one already answers
  down                stop it (SIGTERM: sockets closed, outbox kept, socket removed)
  status              pid, version, uptime, each mesh's connection state, outbox counts
  outbox [--status pending|inflight|done|dead] [--limit N] [--requeue ID]
                      list the outbox; --requeue sends a dead message again, unchanged
  install-service     write a systemd user unit (Linux) or launchd agent (macOS) that
                      runs "daemon up --foreground" for this CLAUDEMESH_HOME
  uninstall-service   stop and disable that unit and remove it (auto-start then spawns
                      the daemon itself again)

Files live in $CLAUDEMESH_HOME/daemon/ (default ~/.claudemesh/daemon): daemon.sock,
daemon.pid, outbox.db, inbox.db, daemon.log.
`,
  options: { foreground: { type: 'boolean' }, status: { type: 'string' }, limit: { type: 'string' }, requeue: { type: 'string' } },
  positionals: { min: 1, max: 1 },
  async run(context, args) {
    const action = args.positionals[0] ?? '';
    if (!(ACTIONS as readonly string[]).includes(action)) throw usageError('daemon', `unknown daemon action ${JSON.stringify(action)}: use ${ACTIONS.join(', ')}`);
    const json = args.values.json === true;
    if (action === 'up') await up(context, args.values.foreground === true, json);
    else if (action === 'down') await down(context, json);
    else if (action === 'status') await status(context, json);
    else if (action === 'outbox') await outbox(context, args.values, json);
    else if (action === 'install-service') await installService(context, json);
    else await uninstallService(context, json);
  },
};
