// Broker configuration: every environment variable (README table) parsed and validated here
// and nowhere else. All problems are collected and reported at once, each with the value
// received and an example fix, so an operator fixes the environment in one round.

import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';

export const DEFAULTS = {
  BROKER_HOST: '127.0.0.1',
  BROKER_PORT: 7900,
  BROKER_DATA_DIR: './data',
  EMBEDDED_PG_PORT: 7901,
  // As root, where the embedded Postgres's binaries and a new cluster go when the postgres
  // user cannot reach the data dir or the clone (a clone under /root).
  EMBEDDED_PG_RELOCATE_DIR: '/var/lib/claudemesh',
  STATUS_TTL_SECONDS: 60,
  HOOK_FRESH_WINDOW_SECONDS: 30,
  MAX_CONNECTIONS_PER_MESH: 100,
  // One member cannot fill a mesh: its member connection plus this many sessions, at most.
  MAX_CONNECTIONS_PER_MEMBER: 32,
  // Postgres statements over this are cancelled and answered as retryable (a frozen database).
  DB_STATEMENT_TIMEOUT_MS: 5_000,
  MAX_MESSAGE_BYTES: 65_536,
  HOOK_RATE_LIMIT_PER_MIN: 30,
  MESSAGE_TTL_SECONDS: 7 * 24 * 3600,
  SEND_BURST: 1_000,
  SEND_RATE_PER_SECOND: 100,
  // Loop guard: generous for people and agents, fatal for two bots answering each other.
  LOOP_GUARD_BURST: 120,
  LOOP_GUARD_RATE_PER_SECOND: 1,
  NODE_ENV: 'development',
  LOG_LEVEL: 'info',
} as const;

const NODE_ENVS = ['development', 'production', 'test'] as const;
const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
const GIT_SHA_PATTERN = /^[0-9a-f]{7,40}$/;
const MIN_ADMIN_TOKEN_LENGTH = 16;

type NodeEnv = (typeof NODE_ENVS)[number];
type LogLevel = (typeof LOG_LEVELS)[number];

export interface BrokerConfig {
  /** undefined → embedded Postgres under `dataDir` */
  databaseUrl: string | undefined;
  host: string;
  port: number;
  dataDir: string;
  /** BROKER_DATA_DIR was set: the embedded cluster is kept there or the start stops, never moved */
  dataDirChosen: boolean;
  embeddedPgPort: number;
  embeddedPgRelocateDir: string;
  statusTtlSeconds: number;
  hookFreshWindowSeconds: number;
  maxConnectionsPerMesh: number;
  maxConnectionsPerMember: number;
  dbStatementTimeoutMs: number;
  /** behind a proxy we run: trust its X-Forwarded-Host and X-Forwarded-For */
  trustProxy: boolean;
  /** this instance's id among brokers on one database (default: host:port) */
  instanceId: string | undefined;
  maxMessageBytes: number;
  hookRateLimitPerMin: number;
  messageTtlSeconds: number;
  /** per member: sends allowed at once, then per second */
  sendBurst: number;
  sendRatePerSecond: number;
  /** per (sender key, target): messages allowed at once, then per second */
  loopGuardBurst: number;
  loopGuardRatePerSecond: number;
  nodeEnv: NodeEnv;
  logLevel: LogLevel;
  /** undefined → read from `git rev-parse` at start */
  gitSha: string | undefined;
  /** undefined → anyone who reaches the broker may create a mesh; else `Bearer <token>` is required */
  adminToken: string | undefined;
}

interface ConfigProblem {
  variable: string;
  received: string;
  problem: string;
  fix: string;
}

type ConfigResult = { ok: true; config: BrokerConfig } | { ok: false; problems: ConfigProblem[] };

type Env = Readonly<Record<string, string | undefined>>;

/** Parse one integer variable within [min, max]; records a problem and returns the default otherwise. */
function integer(env: Env, name: keyof typeof DEFAULTS, min: number, max: number, problems: ConfigProblem[]): number {
  const fallback = DEFAULTS[name] as number;
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const trimmed = raw.trim();
  const value = /^-?\d+$/.test(trimmed) ? Number(trimmed) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    problems.push({
      variable: name,
      received: raw,
      problem: `must be a whole number from ${min} to ${max}`,
      fix: `${name}=${fallback}`,
    });
    return fallback;
  }
  return value;
}

const INSTANCE_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const TRUE_WORDS = ['1', 'true', 'yes', 'on'];

function instanceIdOf(env: Env, problems: ConfigProblem[]): string | undefined {
  const raw = env.BROKER_INSTANCE_ID;
  if (raw === undefined || raw === '') return undefined;
  if (!INSTANCE_ID.test(raw)) problems.push({ variable: 'BROKER_INSTANCE_ID', received: raw.slice(0, 80), problem: 'must be 1–128 of A-Z a-z 0-9 _ . : -', fix: 'BROKER_INSTANCE_ID=broker-1' });
  return raw;
}
const FALSE_WORDS = ['', '0', 'false', 'no', 'off'];

/** A boolean switch: 1/true/yes/on or 0/false/no/off (unset is off). */
function flag(env: Env, name: string, problems: ConfigProblem[]): boolean {
  const raw = (env[name] ?? '').trim().toLowerCase();
  if (TRUE_WORDS.includes(raw)) return true;
  if (!FALSE_WORDS.includes(raw)) problems.push({ variable: name, received: env[name] ?? '', problem: 'must be 1, true, yes or on (or 0, false, no, off)', fix: `${name}=1` });
  return false;
}

function oneOf<T extends string>(env: Env, name: keyof typeof DEFAULTS, allowed: readonly T[], problems: ConfigProblem[]): T {
  const fallback = DEFAULTS[name] as T;
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    problems.push({ variable: name, received: raw, problem: `must be one of ${allowed.join(', ')}`, fix: `${name}=${fallback}` });
    return fallback;
  }
  return raw as T;
}

function databaseUrl(env: Env, problems: ConfigProblem[]): string | undefined {
  const raw = env.DATABASE_URL;
  if (raw === undefined || raw === '') return undefined;
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') || url.hostname === '') {
    problems.push({
      variable: 'DATABASE_URL',
      received: redactUrl(raw),
      problem: 'must be a postgres:// or postgresql:// URL with a host, or unset to use the embedded Postgres',
      fix: 'DATABASE_URL=postgres://user:password@localhost:5432/claudemesh',
    });
    return undefined;
  }
  return raw;
}

/** What is wrong with a BROKER_HOST value, or undefined: an IP address or a host name (not resolved here). */
function hostProblem(host: string): string | undefined {
  if (isIP(host) !== 0) return undefined;
  if (/^[\d.]+$/.test(host)) return 'is not an IPv4 address: four numbers from 0 to 255 separated by dots';
  if (host.startsWith('[')) return 'must be an IPv6 address without brackets (BROKER_HOST=::1)';
  if (host.includes(':')) return 'is not a valid IPv6 address';
  const labels = host.split('.');
  if (host.length > 253 || !labels.every((label) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label))) {
    return 'must be an IP address (127.0.0.1 for this machine only, 0.0.0.0 for every interface) or a host name (letters, digits, hyphens, dots)';
  }
  return undefined;
}

function hostOf(env: Env, problems: ConfigProblem[]): string {
  const raw = env.BROKER_HOST;
  if (raw === undefined || raw === '') return DEFAULTS.BROKER_HOST;
  const problem = hostProblem(raw);
  if (problem === undefined) return raw;
  problems.push({ variable: 'BROKER_HOST', received: raw.slice(0, 80), problem, fix: 'BROKER_HOST=127.0.0.1' });
  return DEFAULTS.BROKER_HOST;
}

function relocateDirOf(env: Env, problems: ConfigProblem[]): string {
  const raw = env.EMBEDDED_PG_RELOCATE_DIR;
  if (raw === undefined || raw === '') return DEFAULTS.EMBEDDED_PG_RELOCATE_DIR;
  if (isAbsolute(raw)) return raw;
  problems.push({ variable: 'EMBEDDED_PG_RELOCATE_DIR', received: raw, problem: 'must be an absolute path', fix: `EMBEDDED_PG_RELOCATE_DIR=${DEFAULTS.EMBEDDED_PG_RELOCATE_DIR}` });
  return DEFAULTS.EMBEDDED_PG_RELOCATE_DIR;
}

/** Validate the whole environment. Pure: reads only `env` (and the cwd to resolve paths). */
export function loadConfig(env: Env, cwd: string = process.cwd()): ConfigResult {
  const problems: ConfigProblem[] = [];
  const host = hostOf(env, problems);
  const gitSha = env.GIT_SHA === undefined || env.GIT_SHA === '' ? undefined : env.GIT_SHA.trim().toLowerCase();
  // A short operator token could be guessed by anyone who can reach the broker.
  const adminToken = env.BROKER_ADMIN_TOKEN === undefined || env.BROKER_ADMIN_TOKEN === '' ? undefined : env.BROKER_ADMIN_TOKEN;
  if (adminToken !== undefined && (adminToken.length < MIN_ADMIN_TOKEN_LENGTH || /\s/.test(adminToken))) {
    problems.push({
      variable: 'BROKER_ADMIN_TOKEN',
      received: `(${adminToken.length} characters, not shown)`,
      problem: `must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters without spaces, or unset to let anyone create meshes`,
      fix: 'BROKER_ADMIN_TOKEN=$(openssl rand -hex 32)',
    });
  }
  if (gitSha !== undefined && !GIT_SHA_PATTERN.test(gitSha)) {
    problems.push({ variable: 'GIT_SHA', received: env.GIT_SHA ?? '', problem: 'must be 7 to 40 hex digits', fix: 'GIT_SHA=$(git rev-parse HEAD)' });
  }
  const config: BrokerConfig = {
    databaseUrl: databaseUrl(env, problems),
    host,
    port: integer(env, 'BROKER_PORT', 0, 65_535, problems),
    dataDir: resolve(cwd, env.BROKER_DATA_DIR === undefined || env.BROKER_DATA_DIR === '' ? DEFAULTS.BROKER_DATA_DIR : env.BROKER_DATA_DIR),
    dataDirChosen: env.BROKER_DATA_DIR !== undefined && env.BROKER_DATA_DIR !== '',
    embeddedPgPort: integer(env, 'EMBEDDED_PG_PORT', 1, 65_535, problems),
    embeddedPgRelocateDir: relocateDirOf(env, problems),
    statusTtlSeconds: integer(env, 'STATUS_TTL_SECONDS', 1, 86_400, problems),
    hookFreshWindowSeconds: integer(env, 'HOOK_FRESH_WINDOW_SECONDS', 1, 86_400, problems),
    maxConnectionsPerMesh: integer(env, 'MAX_CONNECTIONS_PER_MESH', 1, 1_000_000, problems),
    maxConnectionsPerMember: integer(env, 'MAX_CONNECTIONS_PER_MEMBER', 1, 1_000_000, problems),
    dbStatementTimeoutMs: integer(env, 'DB_STATEMENT_TIMEOUT_MS', 100, 600_000, problems),
    trustProxy: flag(env, 'TRUST_PROXY', problems),
    instanceId: instanceIdOf(env, problems),
    maxMessageBytes: integer(env, 'MAX_MESSAGE_BYTES', 1_024, 16 * 1024 * 1024, problems),
    hookRateLimitPerMin: integer(env, 'HOOK_RATE_LIMIT_PER_MIN', 1, 100_000, problems),
    messageTtlSeconds: integer(env, 'MESSAGE_TTL_SECONDS', 60, 365 * 24 * 3600, problems),
    sendBurst: integer(env, 'SEND_BURST', 1, 100_000_000, problems),
    sendRatePerSecond: integer(env, 'SEND_RATE_PER_SECOND', 1, 1_000_000, problems),
    loopGuardBurst: integer(env, 'LOOP_GUARD_BURST', 1, 100_000_000, problems),
    loopGuardRatePerSecond: integer(env, 'LOOP_GUARD_RATE_PER_SECOND', 1, 1_000_000, problems),
    nodeEnv: oneOf(env, 'NODE_ENV', NODE_ENVS, problems),
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, problems),
    gitSha,
    adminToken,
  };
  // A hook signal that stays authoritative longer than a `working` status lives would let
  // the TTL sweep flip a status the hook still vouches for: the two must be ordered.
  if (config.hookFreshWindowSeconds > config.statusTtlSeconds) {
    problems.push({
      variable: 'HOOK_FRESH_WINDOW_SECONDS',
      received: String(config.hookFreshWindowSeconds),
      problem: `must not exceed STATUS_TTL_SECONDS (${config.statusTtlSeconds})`,
      fix: `HOOK_FRESH_WINDOW_SECONDS=${Math.min(DEFAULTS.HOOK_FRESH_WINDOW_SECONDS, config.statusTtlSeconds)}`,
    });
  }
  if (config.databaseUrl === undefined && config.port !== 0 && config.port === config.embeddedPgPort) {
    problems.push({
      variable: 'EMBEDDED_PG_PORT',
      received: String(config.embeddedPgPort),
      problem: 'must differ from BROKER_PORT',
      fix: `EMBEDDED_PG_PORT=${config.port + 1}`,
    });
  }
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, config };
}

/** A connection URL safe to log: the password is replaced. */
export function redactUrl(raw: string): string {
  try {
    const url = new URL(raw);
    if (url.password !== '') url.password = '***';
    return url.toString();
  } catch {
    return raw.replace(/\/\/[^@/]*@/, '//***@');
  }
}
