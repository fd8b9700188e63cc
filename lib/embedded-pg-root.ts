// The embedded Postgres started by root. Postgres refuses to run as root, so it runs as the
// `postgres` system user (made when missing), which must be able to walk down to its
// binaries and to its cluster. A clone under a home only its owner may enter (/root is 0700
// on most servers) is out of that user's reach; then the binaries are copied, and a new
// cluster made, under a directory it can reach (/var/lib/claudemesh by default), and a
// pointer file in the data dir says where the cluster went, so every later start finds it.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { chmod, chown, cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { cmError } from './errors.ts';

const POSTGRES_USER = 'postgres';
/** In the data dir: the absolute path of a cluster kept elsewhere. */
export const LOCATION_FILE = 'postgres-location';
/** In a copy of the binaries: written last, so a copy cut short is never used. */
const COPY_COMPLETE = '.copy-complete';
/** PGDATA inside the data dir, when the cluster lives there. */
export const CLUSTER_SUBDIR = 'postgres';
const TRAVERSE_ONLY = 0o711;
const SHARED_DIR_MODE = 0o755;
const OWNER_ONLY = 0o700;
const NAME_HASH_CHARS = 8;

interface PgUser { uid: number; gid: number }

interface RootPlacement {
  user: PgUser;
  /** the native dir whose bin/postgres is run */
  nativeDir: string;
  /** PGDATA */
  dataDir: string;
  /** why anything is not where it would be for a plain user; empty when nothing moved */
  notes: string[];
}

export interface Relocation {
  /** where copies of the binaries and moved clusters go */
  dir: string;
  /** may a new cluster go there (false: BROKER_DATA_DIR was chosen by the operator, honour it) */
  cluster: boolean;
}

function idOf(flag: '-u' | '-g'): number | undefined {
  const result = spawnSync('id', [flag, POSTGRES_USER], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const id = Number(result.stdout?.trim());
  return result.status === 0 && Number.isSafeInteger(id) ? id : undefined;
}

/** The `postgres` system user, made when missing (as embedded Postgres has always done). */
function postgresUser(): PgUser {
  let uid = idOf('-u');
  if (uid === undefined) {
    spawnSync('groupadd', ['--system', POSTGRES_USER], { stdio: 'ignore' });
    const made = spawnSync('useradd', ['--system', '--gid', POSTGRES_USER, '--no-create-home', '--shell', '/usr/sbin/nologin', POSTGRES_USER], { encoding: 'utf8' });
    uid = idOf('-u');
    if (uid === undefined) {
      throw cmError('CM_ERR_EMBEDDED_PG_START', `as root the embedded Postgres runs as a "${POSTGRES_USER}" user; there is none and useradd failed: ${(made.stderr ?? made.error?.message ?? '').trim() || `exit ${made.status}`}`, {
        hint: `create it (useradd --system ${POSTGRES_USER}), run the broker as a plain user, or set DATABASE_URL to your own Postgres`,
      });
    }
  }
  return { uid, gid: idOf('-g') ?? uid };
}

/** Asked of the kernel as that user (modes, ACLs and all): can it reach `path` and use it? */
function reachable(path: string, user: PgUser): boolean {
  return spawnSync('/bin/sh', ['-c', 'test -x "$1"', 'sh', path], { uid: user.uid, gid: user.gid, cwd: '/', stdio: 'ignore' }).status === 0;
}

/** The first directory on the way to `path` that `user` may not enter, for the message. */
function blockerOf(path: string, user: PgUser): string | undefined {
  const chain: string[] = [];
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    chain.unshift(dir);
    if (dir === dirname(dir)) break;
  }
  for (const dir of chain) {
    let info;
    try {
      info = statSync(dir);
    } catch {
      return undefined;
    }
    const bit = info.uid === user.uid ? 0o100 : info.gid === user.gid ? 0o010 : 0o001;
    if ((info.mode & bit) === 0) return `${dir} (mode ${(info.mode & 0o777).toString(8)}, owner uid ${info.uid})`;
  }
  return undefined;
}

const outOfReach = (path: string, user: PgUser): string => {
  const blocker = blockerOf(path, user);
  return blocker === undefined ? `the "${POSTGRES_USER}" user cannot reach ${path}` : `the "${POSTGRES_USER}" user cannot enter ${blocker} on the way to ${path}`;
};

/** Directories 0755 and files readable by all: the postgres user runs these binaries. */
async function openToAll(dir: string): Promise<void> {
  await chmod(dir, SHARED_DIR_MODE);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await openToAll(path);
    else if (entry.isFile()) await chmod(path, ((await stat(path)).mode & 0o777) | 0o444);
  }
}

/** A copy of the binaries under `relocateDir`, one per package version, reused once complete. */
async function copyBinaries(nativeDir: string, relocateDir: string): Promise<string> {
  const version = await readFile(join(nativeDir, '..', 'package.json'), 'utf8').then((text) => String((JSON.parse(text) as { version?: unknown }).version ?? 'unknown'), () => 'unknown');
  const target = join(relocateDir, `postgres-${version.replace(/[^A-Za-z0-9._-]/g, '_')}`);
  if (existsSync(join(target, COPY_COMPLETE))) return target;
  const partial = `${target}.partial-${process.pid}`;
  await rm(partial, { recursive: true, force: true });
  await cp(nativeDir, partial, { recursive: true, verbatimSymlinks: true });
  await openToAll(partial);
  await writeFile(join(partial, COPY_COMPLETE), `${version}\n`);
  await rm(target, { recursive: true, force: true });
  try {
    await rename(partial, target);
  } catch (error) {
    // another broker finished the same copy first: use theirs
    await rm(partial, { recursive: true, force: true });
    if (!existsSync(join(target, COPY_COMPLETE))) throw error;
  }
  return target;
}

/** A stable directory name per data dir: readable, and distinct for two clones. */
function clusterName(baseDir: string): string {
  const readable = `${basename(dirname(baseDir))}-${basename(baseDir)}`.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[.-]+/, '');
  return `${readable}-${createHash('sha256').update(baseDir).digest('hex').slice(0, NAME_HASH_CHARS)}`;
}

async function sharedDir(relocateDir: string, user: PgUser): Promise<void> {
  try {
    await mkdir(relocateDir, { recursive: true, mode: SHARED_DIR_MODE });
  } catch (error) {
    throw cmError('CM_ERR_EMBEDDED_PG_START', `could not make ${relocateDir} for the embedded Postgres: ${(error as Error).message}`, {
      hint: 'set EMBEDDED_PG_RELOCATE_DIR to a directory root can write and the postgres user can enter, or set DATABASE_URL to your own Postgres',
    });
  }
  if (!reachable(relocateDir, user)) {
    throw cmError('CM_ERR_EMBEDDED_PG_START', `${outOfReach(relocateDir, user)} (EMBEDDED_PG_RELOCATE_DIR)`, {
      hint: 'set EMBEDDED_PG_RELOCATE_DIR to a directory the postgres user can enter (e.g. /var/lib/claudemesh), or set DATABASE_URL to your own Postgres',
    });
  }
}

/**
 * Where, as root, the binaries and the cluster of `baseDir` are used from. An existing
 * cluster stays where it is (its data is never moved behind the operator's back); a new
 * one goes under the data dir when the postgres user can reach it, else under the
 * relocation dir when that is allowed, else the start stops with what to change.
 */
export async function placeAsRoot(baseDir: string, nativeDir: string, relocation: Relocation | undefined): Promise<RootPlacement> {
  const user = postgresUser();
  const notes: string[] = [];
  const binariesWhy = reachable(join(nativeDir, 'bin', 'postgres'), user) ? undefined : outOfReach(nativeDir, user);
  if (binariesWhy !== undefined && relocation === undefined) {
    throw cmError('CM_ERR_EMBEDDED_PG_START', binariesWhy, { hint: 'run from a directory others may traverse, run as a plain user, or set DATABASE_URL to your own Postgres' });
  }
  // The binaries are copied only once the cluster's place is settled: a refusal below leaves
  // nothing behind anywhere.
  const placed = async (dataDir: string): Promise<RootPlacement> => {
    if (binariesWhy === undefined || relocation === undefined) return { user, nativeDir, dataDir, notes };
    await sharedDir(relocation.dir, user);
    const binaries = await copyBinaries(nativeDir, relocation.dir);
    return { user, nativeDir: binaries, dataDir, notes: [`binaries run from a copy in ${binaries}: ${binariesWhy}`, ...notes] };
  };
  const inPlace = join(baseDir, CLUSTER_SUBDIR);
  const inPlaceResult = async (): Promise<RootPlacement> => {
    await chmod(baseDir, TRAVERSE_ONLY);
    await mkdir(inPlace, { recursive: true, mode: OWNER_ONLY });
    await chown(inPlace, user.uid, user.gid);
    return placed(inPlace);
  };
  if (existsSync(join(inPlace, 'PG_VERSION'))) {
    if (!reachable(dirname(baseDir), user)) {
      throw cmError('CM_ERR_EMBEDDED_PG_START', `the existing cluster in ${inPlace} is out of reach: ${outOfReach(dirname(baseDir), user)}`, {
        hint: `let the postgres user traverse that directory (chmod o+x), move the data dir and set BROKER_DATA_DIR to it, or set DATABASE_URL`,
      });
    }
    return inPlaceResult();
  }
  const recorded = (await readFile(join(baseDir, LOCATION_FILE), 'utf8').catch(() => '')).trim();
  if (recorded !== '' && existsSync(join(recorded, 'PG_VERSION'))) {
    notes.push(`cluster kept in ${recorded} (recorded in ${join(baseDir, LOCATION_FILE)})`);
    return placed(recorded);
  }
  if (recorded !== '') notes.push(`the cluster recorded in ${join(baseDir, LOCATION_FILE)} (${recorded}) is gone: a new one is made`);
  if (reachable(dirname(baseDir), user)) return inPlaceResult();
  const why = outOfReach(baseDir, user);
  if (relocation === undefined || !relocation.cluster) {
    throw cmError('CM_ERR_EMBEDDED_PG_START', `BROKER_DATA_DIR ${baseDir} is out of reach of the embedded Postgres: ${why}`, {
      hint: 'set BROKER_DATA_DIR to a directory the postgres user can enter (e.g. /var/lib/claudemesh/data), unset it to let the broker choose, or set DATABASE_URL',
    });
  }
  await sharedDir(relocation.dir, user);
  const moved = join(relocation.dir, clusterName(baseDir));
  await mkdir(moved, { recursive: true, mode: OWNER_ONLY });
  await chmod(moved, OWNER_ONLY);
  await chown(moved, user.uid, user.gid);
  await writeFile(join(baseDir, LOCATION_FILE), `${moved}\n`);
  notes.push(`cluster kept in ${moved} (recorded in ${join(baseDir, LOCATION_FILE)}): ${why}`);
  return placed(moved);
}
