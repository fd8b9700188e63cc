// The checks of `claudemesh doctor`, each `{name, ok, detail, hint}` and each able to fail
// on its own: the config and the modes of every file holding a key or a message, the
// daemon (a stale socket, a version other than this CLI's), and for each mesh its broker's
// /health, a WebSocket upgrade, the clock against the broker's Date header, the broker
// accepting a request signed by the member key, and the service unit for this home.
//
// The identity check is a signed GET /mesh/members, not a second hello: a hello with the
// member key would replace the daemon's own connection (the broker keeps one per key). It
// proves the same three things a hello needs — the signature, the membership, the clock —
// and the daemon's connection state, when it runs, is shown with it.

import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { callBroker } from '../broker-client.ts';
import { channelBlockers } from '../claude/channels.ts';
import { configPath, readConfig } from '../client-config.ts';
import type { ClientConfig, MeshIdentity } from '../client-config.ts';
import { callDaemon, probeDaemon } from '../daemon-client.ts';
import { isCmError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { daemonPaths } from '../../daemon/paths.ts';
import { serviceFor, unitEnabled } from '../../daemon/service.ts';
import type { CliContext } from './verb.ts';
import { signingIdentity } from './verb.ts';

const NETWORK_TIMEOUT_MS = 3_000;
const PROBE_TIMEOUT_MS = 1_000;
// The broker refuses a hello more than 60 s off; Date has 1 s resolution and the answer
// takes a while to arrive, so half of that is the most a healthy machine shows.
const CLOCK_SKEW_LIMIT_MS = 30_000;
const OWNER_ONLY = 0o077;

interface Check {
  name: string;
  ok: boolean;
  detail: string;
  hint: string;
}

const pass = (name: string, detail: string): Check => ({ name, ok: true, detail, hint: '' });
const fail = (name: string, detail: string, hint: string): Check => ({ name, ok: false, detail, hint });
const reason = (error: unknown) => (error instanceof Error ? error.message : String(error));

async function configCheck(home: string): Promise<{ check: Check; config?: ClientConfig }> {
  try {
    const config = await readConfig(home);
    const active = config.meshes.filter((mesh) => mesh.status === 'active');
    if (active.length === 0) return { check: fail('config', `${configPath(home)} holds no active mesh`, 'run claudemesh new NAME, or claudemesh join <token>'), config };
    return { check: pass('config', `${configPath(home)}: ${active.length} active mesh${active.length === 1 ? '' : 'es'} (${active.map((mesh) => mesh.name).join(', ')})`), config };
  } catch (error) {
    return { check: fail('config', reason(error), isCmError(error) ? error.hint : 'fix or move away the config file') };
  }
}

/** The config, the daemon's databases (-wal, -shm) and every session key file: owner only. */
async function fileModes(home: string): Promise<Check> {
  const paths = daemonPaths(home);
  const files = [configPath(home)];
  for (const db of [paths.outbox, paths.inbox, paths.roster]) files.push(db, `${db}-wal`, `${db}-shm`);
  const sessions = join(paths.dir, 'sessions');
  for (const mesh of await readdir(sessions).catch(() => [])) {
    for (const file of await readdir(join(sessions, mesh)).catch(() => [])) files.push(join(sessions, mesh, file));
  }
  const loose: string[] = [];
  for (const path of [home, paths.dir, ...files]) {
    const info = await stat(path).catch(() => undefined);
    if (info !== undefined && (info.mode & OWNER_ONLY) !== 0) loose.push(`${path} (${(info.mode & 0o777).toString(8)})`);
  }
  if (loose.length > 0) return fail('file-modes', `readable by others: ${loose.join(', ')}`, `chmod 600 the files and 700 the directories (claudemesh repairs them when it next writes): chmod -R go-rwx ${home}`);
  return pass('file-modes', `${home} and the keys and messages in it are owner-only`);
}

async function daemonChecks(home: string): Promise<Check[]> {
  const paths = daemonPaths(home);
  const running = await probeDaemon(paths.socket, PROBE_TIMEOUT_MS);
  if (running === undefined) {
    if (existsSync(paths.socket)) {
      return [fail('daemon', `${paths.socket} exists but no daemon answers on it (a stale socket from a daemon that died)`, 'claudemesh daemon up (it removes a stale socket), or any messaging verb')];
    }
    return [pass('daemon', 'not running; the messaging verbs start it when needed')];
  }
  const checks = [pass('daemon', `pid ${running.pid}, up ${Math.round(running.uptimeMs / 1000)} s, socket ${paths.socket}`)];
  checks.push(running.version === VERSION
    ? pass('daemon-version', `daemon and CLI are both ${VERSION}`)
    : fail('daemon-version', `the daemon runs ${running.version}, this CLI is ${VERSION}`, 'restart it: claudemesh daemon down, then any command'));
  return checks;
}

async function brokerHealth(mesh: MeshIdentity, now: number): Promise<Check[]> {
  const name = (what: string) => `${what}:${mesh.name}`;
  let response: Response;
  try {
    response = await fetch(`${mesh.brokerUrl}/health`, { signal: AbortSignal.timeout(NETWORK_TIMEOUT_MS) });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? reason(error);
    return [fail(name('broker'), `${mesh.brokerUrl}/health: unreachable (${cause})`, `start the broker, or check the address ${mesh.brokerUrl} and the network`)];
  }
  const body = (await response.json().catch(() => ({}))) as Record<string, unknown>;
  const checks = [response.status === 200
    ? pass(name('broker'), `${mesh.brokerUrl} answers: version ${String(body.version)}, database ${String(body.db)}`)
    : fail(name('broker'), `${mesh.brokerUrl}/health answered ${response.status} (${String(body.status ?? 'not claudemesh')}, database ${String(body.db ?? '?')})`, 'the broker is up but not ready: check its log and its Postgres')];
  const date = Date.parse(response.headers.get('date') ?? '');
  if (Number.isNaN(date)) checks.push(fail(name('clock'), 'the broker sent no Date header to compare with', 'is this a claudemesh broker?'));
  else {
    const skew = now - date;
    const text = `this machine is ${Math.abs(Math.round(skew / 1000))} s ${skew >= 0 ? 'ahead of' : 'behind'} the broker`;
    checks.push(Math.abs(skew) <= CLOCK_SKEW_LIMIT_MS ? pass(name('clock'), text) : fail(name('clock'), text, "sync this machine's clock (NTP): the broker refuses a hello more than 60 s off"));
  }
  return checks;
}

async function websocketCheck(mesh: MeshIdentity): Promise<Check> {
  const { WebSocket } = await import('ws');
  const url = `${mesh.brokerUrl.replace(/^http/, 'ws')}/ws`;
  return new Promise((resolve) => {
    const socket = new WebSocket(url, { handshakeTimeout: NETWORK_TIMEOUT_MS });
    socket.on('open', () => {
      socket.close(1000, 'doctor');
      resolve(pass(`websocket:${mesh.name}`, `${url} upgrades`));
    });
    socket.on('unexpected-response', (_request, response) => {
      socket.terminate();
      resolve(fail(`websocket:${mesh.name}`, `${url} answered HTTP ${response.statusCode} instead of upgrading`, 'a proxy in front of the broker must pass WebSocket upgrades (Upgrade and Connection headers)'));
    });
    socket.on('error', (error) => resolve(fail(`websocket:${mesh.name}`, `${url}: ${error.message}`, 'start the broker, or let WebSocket upgrades through to it')));
  });
}

async function identityCheck(mesh: MeshIdentity, link: Record<string, any> | undefined): Promise<Check> {
  const name = `identity:${mesh.name}`;
  const daemonSays = link === undefined ? '' : `; the daemon's connection is ${String(link.membership?.state === 'active' || link.membership === null ? link.state : link.membership.state)}`;
  try {
    const answer = await callBroker({ brokerUrl: mesh.brokerUrl, method: 'GET', path: '/mesh/members', identity: signingIdentity(mesh), meshId: mesh.meshId, timeoutMs: NETWORK_TIMEOUT_MS });
    const members = (answer.body.members ?? []) as Array<Record<string, unknown>>;
    const me = members.find((member) => member.key === mesh.publicKey);
    return pass(name, `the broker accepts requests signed by ${mesh.publicKey.slice(0, 12)}…: member ${String(me?.name ?? mesh.memberName)} (${String(me?.role ?? mesh.role)})${daemonSays}`);
  } catch (error) {
    const code = isCmError(error) || error instanceof Error && 'code' in error ? String((error as { code: unknown }).code) : 'error';
    const hint = code === 'CM_ERR_FORBIDDEN' ? 'this key is not a member of the mesh any more (kicked, banned or left): ask for a new invite and claudemesh join it'
      : code === 'CM_ERR_TIMESTAMP_SKEW' ? "sync this machine's clock (NTP)" : (error as { hint?: string }).hint ?? 'see claudemesh events';
    return fail(name, `${code}: ${reason(error)}${daemonSays}`, hint);
  }
}

async function serviceCheck(context: CliContext): Promise<Check> {
  const service = serviceFor(context.home, context.env);
  if (service === undefined) return pass('service', `no service manager support on ${process.platform}; auto-start spawns the daemon`);
  if (!existsSync(service.path)) return pass('service', `no unit installed for ${context.home}; auto-start spawns the daemon (claudemesh daemon install-service installs one)`);
  if (!(await unitEnabled(service))) return pass('service', `${service.path} is installed for ${context.home} but not enabled; auto-start spawns the daemon itself (systemctl --user enable --now ${service.name} hands it to systemd)`);
  return pass('service', `${service.path} is installed and enabled for ${context.home} (${service.name})`);
}

/** Every check, in a stable order; network checks of all meshes run at once. */
/**
 * Whether a Claude session here can get messages pushed as channel notifications, and if
 * not, why. Never a failure: without channels messages still reach Claude through the
 * hook's unread line and the MCP tools (docs/claude-code.md).
 */
function channelsCheck(context: CliContext): Check {
  const pid = Number(context.env.CLAUDE_PID);
  const blockers = channelBlockers(context.env, Number.isSafeInteger(pid) && pid > 0 ? pid : undefined);
  return blockers.length === 0
    ? { name: 'channels', ok: true, detail: 'nothing here blocks channel push into a Claude session', hint: '' }
    : {
      name: 'channels', ok: true, detail: `off: ${blockers.join('; ')} (messages still arrive as the unread line and through the MCP tools)`,
      hint: 'start Claude Code with claudemesh launch, or install the plugin (claudemesh install --plugin); see docs/claude-code.md',
    };
}

export async function runChecks(context: CliContext): Promise<Check[]> {
  const { check, config } = await configCheck(context.home);
  const checks: Check[] = [check, await fileModes(context.home), ...(await daemonChecks(context.home))];
  const paths = daemonPaths(context.home);
  const health = checks.some((each) => each.name === 'daemon-version')
    ? await callDaemon(paths.socket, 'GET', '/v1/health', undefined, PROBE_TIMEOUT_MS).then((answer) => answer.body, () => undefined)
    : undefined;
  const links = new Map(((health?.meshes ?? []) as Array<Record<string, any>>).map((link) => [link.meshId, link]));
  const meshes = (config?.meshes ?? []).filter((mesh) => mesh.status === 'active');
  const perMesh = await Promise.all(meshes.map(async (mesh) => [
    ...(await brokerHealth(mesh, context.now())), await websocketCheck(mesh), await identityCheck(mesh, links.get(mesh.meshId)),
  ]));
  return [...checks, ...perMesh.flat(), await serviceCheck(context), channelsCheck(context)];
}
