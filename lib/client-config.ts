// The client's identities: ~/.claudemesh/config.json (CLAUDEMESH_HOME replaces ~/.claudemesh).
//
// It holds one entry per mesh this machine's user belongs to, with the member's secret key,
// so the directory is 0700 and the file 0600 (both repaired when found looser). Every write
// goes to a temporary file in the same directory, is fsynced, then renamed over the old file:
// a crash leaves the old config or the new one, never half of one. Read-modify-write cycles
// take a lock file so two claudemesh processes cannot lose each other's changes.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isPublicKey, keyPairFromSecret, SECRET_KEY_BYTES } from './crypto.ts';
import { cmError } from './errors.ts';
import { normaliseBrokerUrl } from './invite.ts';
import { isMemberName, isMeshId, isMeshName } from './protocol.ts';

export const CONFIG_FILE = 'config.json';
const CONFIG_VERSION = 1;
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const LOOSER_THAN_OWNER = 0o077;
const LOCK_FILE = 'config.lock';
const LOCK_RETRY_MS = 20;
const LOCK_TIMEOUT_MS = 5_000;
// A lock older than this was left by a process that died mid-update.
const LOCK_STALE_MS = 30_000;
const ROLES = ['owner', 'admin', 'member'] as const;
const STATUSES = ['active', 'pending'] as const;
const SECRET_KEY_HEX = /^[0-9a-f]{128}$/;

type MemberRole = (typeof ROLES)[number];

export interface MeshIdentity {
  meshId: string;
  /** the mesh's name, as people call it */
  name: string;
  /** broker origin, e.g. http://127.0.0.1:7900 */
  brokerUrl: string;
  role: MemberRole;
  /** this member's name inside the mesh */
  memberName: string;
  publicKey: string;
  /** 128 hex characters; never printed, never sent */
  secretKey: string;
  /** null until the broker confirmed a join (it answers with the owner's key) */
  ownerPubkey: string | null;
  /** ISO time the identity was saved */
  createdAt: string;
  /** pending: the key is made and saved, the broker has not confirmed the join yet */
  status: (typeof STATUSES)[number];
}

export interface ClientConfig {
  version: typeof CONFIG_VERSION;
  meshes: MeshIdentity[];
}

export function configPath(home: string): string {
  return join(home, CONFIG_FILE);
}

function emptyConfig(): ClientConfig {
  return { version: CONFIG_VERSION, meshes: [] };
}

function invalid(path: string, why: string): Error {
  return cmError('CM_ERR_CLIENT_CONFIG', `${path} is not a valid claudemesh config: ${why}`, { details: { path } });
}

function parseIdentity(value: unknown, path: string, index: number): MeshIdentity {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid(path, `meshes[${index}] is not an object`);
  const entry = Object.assign(Object.create(null) as Record<string, unknown>, value);
  const where = `meshes[${index}]`;
  if (!isMeshId(entry.meshId)) throw invalid(path, `${where}.meshId is not a mesh id`);
  if (!isMeshName(entry.name)) throw invalid(path, `${where}.name is not a mesh name`);
  if (typeof entry.brokerUrl !== 'string' || normaliseBrokerUrl(entry.brokerUrl) !== entry.brokerUrl) throw invalid(path, `${where}.brokerUrl is not an http(s) origin`);
  if (!(ROLES as readonly unknown[]).includes(entry.role)) throw invalid(path, `${where}.role is not owner, admin or member`);
  if (!isMemberName(entry.memberName)) throw invalid(path, `${where}.memberName is not a member name`);
  if (!isPublicKey(entry.publicKey)) throw invalid(path, `${where}.publicKey is not 64 hex characters`);
  if (typeof entry.secretKey !== 'string' || !SECRET_KEY_HEX.test(entry.secretKey)) throw invalid(path, `${where}.secretKey is not ${SECRET_KEY_BYTES * 2} hex characters`);
  if (keyPairFromSecret(Buffer.from(entry.secretKey, 'hex')).publicKey !== entry.publicKey) throw invalid(path, `${where}.secretKey does not belong to its publicKey`);
  if (entry.ownerPubkey !== null && !isPublicKey(entry.ownerPubkey)) throw invalid(path, `${where}.ownerPubkey is neither null nor 64 hex characters`);
  if (typeof entry.createdAt !== 'string') throw invalid(path, `${where}.createdAt is not a time`);
  if (!(STATUSES as readonly unknown[]).includes(entry.status)) throw invalid(path, `${where}.status is not active or pending`);
  return {
    meshId: entry.meshId,
    name: entry.name,
    brokerUrl: entry.brokerUrl,
    role: entry.role as MemberRole,
    memberName: entry.memberName,
    publicKey: entry.publicKey,
    secretKey: entry.secretKey,
    ownerPubkey: entry.ownerPubkey,
    createdAt: entry.createdAt,
    status: entry.status as MeshIdentity['status'],
  };
}

function parseConfig(text: string, path: string): ClientConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw invalid(path, `not JSON (${(error as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw invalid(path, 'not a JSON object');
  const root = Object.assign(Object.create(null) as Record<string, unknown>, parsed);
  if (root.version !== CONFIG_VERSION) throw invalid(path, `version ${JSON.stringify(root.version)} is not ${CONFIG_VERSION} (written by another claudemesh version?)`);
  if (!Array.isArray(root.meshes)) throw invalid(path, '"meshes" is not a list');
  const meshes = root.meshes.map((entry, index) => parseIdentity(entry, path, index));
  const ids = new Set<string>();
  for (const mesh of meshes) {
    if (ids.has(mesh.meshId)) throw invalid(path, `mesh ${mesh.meshId} is listed twice`);
    ids.add(mesh.meshId);
  }
  return { version: CONFIG_VERSION, meshes };
}

async function ensureDir(home: string): Promise<void> {
  try {
    await mkdir(home, { recursive: true, mode: DIR_MODE });
    const info = await stat(home);
    if ((info.mode & LOOSER_THAN_OWNER) !== 0) await chmod(home, DIR_MODE);
  } catch (error) {
    throw cmError('CM_ERR_CLIENT_CONFIG', `cannot prepare the claudemesh directory ${home}: ${(error as Error).message}`, { cause: error });
  }
}

/** Read the config; a missing file is an empty config. A file readable by others is made 0600. */
export async function readConfig(home: string): Promise<ClientConfig> {
  const path = configPath(home);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyConfig();
    throw cmError('CM_ERR_CLIENT_CONFIG', `cannot read ${path}: ${(error as Error).message}`, { cause: error, details: { path } });
  }
  const info = await stat(path);
  if ((info.mode & LOOSER_THAN_OWNER) !== 0) await chmod(path, FILE_MODE).catch(() => {});
  return parseConfig(text, path);
}

/** Replace the config file atomically: temp file (0600) → fsync → rename → fsync the directory. */
export async function writeConfig(home: string, config: ClientConfig): Promise<void> {
  await ensureDir(home);
  const path = configPath(home);
  const temporary = join(home, `.${CONFIG_FILE}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const file = await open(temporary, 'wx', FILE_MODE);
    try {
      await file.writeFile(`${JSON.stringify(config, null, 2)}\n`, 'utf8');
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
    const dir = await open(home, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (error) {
    await unlink(temporary).catch(() => {});
    throw cmError('CM_ERR_CLIENT_CONFIG', `cannot write ${path}: ${(error as Error).message}`, { cause: error, details: { path } });
  }
}

async function acquireLock(home: string, timeoutMs: number): Promise<() => Promise<void>> {
  const lock = join(home, LOCK_FILE);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const handle = await open(lock, 'wx', FILE_MODE);
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => unlink(lock).catch(() => {});
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw cmError('CM_ERR_CLIENT_CONFIG', `cannot lock ${lock}: ${(error as Error).message}`, { cause: error });
      }
    }
    const age = await stat(lock).then((info) => Date.now() - info.mtimeMs, () => 0);
    if (age > LOCK_STALE_MS) {
      await unlink(lock).catch(() => {});
      continue;
    }
    if (Date.now() >= deadline) {
      throw cmError('CM_ERR_CLIENT_CONFIG', `another claudemesh process holds ${lock}`, {
        hint: `wait for it to finish; if none runs, delete ${lock}`,
      });
    }
    await sleep(LOCK_RETRY_MS);
  }
}

/**
 * Read, change and write the config under the lock. `change` edits the config it is given
 * (or returns a new one); whatever it throws aborts the update and leaves the file untouched.
 */
export async function updateConfig(
  home: string,
  change: (config: ClientConfig) => ClientConfig | void,
  options: { lockTimeoutMs?: number } = {},
): Promise<ClientConfig> {
  await ensureDir(home);
  const release = await acquireLock(home, options.lockTimeoutMs ?? LOCK_TIMEOUT_MS);
  try {
    const current = await readConfig(home);
    const next = change(current) ?? current;
    await writeConfig(home, next);
    return next;
  } finally {
    await release();
  }
}
