// `node broker.ts doctor [--json]` and `node broker.ts validate [--json]`: the broker's own
// checks, each {name, ok, detail, hint}, for an operator before (or while) it runs. validate
// is the configuration alone, with no side effects; doctor adds the port, the data dir or
// the database, and the migrations. Neither starts, creates or changes anything. Exit 0
// when every check passes, 1 when one fails, 2 on bad usage; human lines or one JSON
// document on stdout (JSON also on failure), never a stack trace.

import { access, constants } from 'node:fs/promises';
import { dirname } from 'node:path';
import pg from 'pg';
import { diagnoseDb, listenFailure, portHolder } from './broker-start.ts';
import { existingCluster, embeddedBrokerUrl, installedNativeDir, lockHolder } from './embedded-pg.ts';
import { cmError, isCmError } from './errors.ts';
import { bindError, describePid, listeningPid } from './processes.ts';
import { loadConfig, redactUrl } from './broker/config.ts';
import type { BrokerConfig } from './broker/config.ts';
import { readMigrations } from './broker/db.ts';

const EXIT_OK = 0;
const EXIT_CHECK_FAILED = 1;
const EXIT_USAGE = 2;
const CONNECT_TIMEOUT_MS = 3_000;
const USAGE = `usage: node broker.ts [doctor [--json] | validate [--json]]

  (no command)  run the broker
  validate      check the configuration (environment variables) only; changes nothing
  doctor        validate, then: the port, the embedded data dir or the database, the migrations
  --json        one JSON document {ok, checks:[{name, ok, detail, hint}]} on stdout
Exit: 0 every check passed, 1 a check failed, 2 bad usage.
`;

interface Check { name: string; ok: boolean; detail: string; hint: string }

const pass = (name: string, detail: string): Check => ({ name, ok: true, detail, hint: '' });
const fail = (name: string, detail: string, hint: string): Check => ({ name, ok: false, detail, hint });
const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

function configCheck(env: NodeJS.ProcessEnv): { check: Check; config?: BrokerConfig } {
  const result = loadConfig(env);
  if (!result.ok) {
    return {
      check: fail('config', result.problems.map((problem) => `${problem.variable}=${problem.received}: ${problem.problem}`).join('; '),
        `fix every variable listed, e.g. ${result.problems.map((problem) => problem.fix).join(' ')}`),
    };
  }
  const { config } = result;
  const database = config.databaseUrl === undefined ? `embedded Postgres under ${config.dataDir} (port ${config.embeddedPgPort})` : redactUrl(config.databaseUrl);
  return { check: pass('config', `listens on ${config.host}:${config.port}; database: ${database}`), config };
}

/** The broker port: free, or held by a healthy broker (then it is this deployment, running). */
async function portCheck(config: BrokerConfig): Promise<Check> {
  if (config.port === 0) return pass('port', 'BROKER_PORT=0: the broker takes any free port');
  const error = await bindError(config.host, config.port);
  if (error === undefined) return pass('port', `${config.host}:${config.port} is free`);
  if (error.code !== 'EADDRINUSE') {
    const failure = await listenFailure(error, config.host, config.port);
    return fail('port', failure.message, failure.hint);
  }
  const holder = await portHolder(config.host, config.port);
  const by = holder.process === undefined ? '' : ` (${holder.process})`;
  if (holder.broker?.status === 'ok') return pass('port', `${config.host}:${config.port} is held by a healthy claudemesh broker, version ${holder.broker.version}${by}`);
  if (holder.broker !== undefined) {
    return fail('port', `${config.host}:${config.port} is held by a claudemesh broker whose /health says "${holder.broker.status}"${by}`, 'its log says what it waits for (GET /health shows the last database error)');
  }
  return fail('port', `${config.host}:${config.port} is in use by ${holder.process ?? 'another process'}`, 'stop that process, or set BROKER_PORT to a free port (BROKER_PORT=0 picks any)');
}

/** The embedded data dir: writable (or makeable), its cluster, who holds it; and the binaries. */
async function dataDirCheck(config: BrokerConfig): Promise<Check> {
  try {
    await installedNativeDir();
  } catch (error) {
    return fail('data-dir', messageOf(error), isCmError(error) ? error.hint : 'run npm install');
  }
  let existing = config.dataDir;
  while (!(await access(existing).then(() => true, () => false)) && existing !== dirname(existing)) existing = dirname(existing);
  if (!(await access(existing, constants.W_OK).then(() => true, () => false))) {
    return fail('data-dir', `${existing} is not writable by this user`, 'set BROKER_DATA_DIR to a directory this user can write, or set DATABASE_URL');
  }
  if (existing !== config.dataDir) return pass('data-dir', `${config.dataDir} does not exist yet: the first start makes it and the cluster`);
  const cluster = await existingCluster(config.dataDir);
  const holder = await lockHolder(config.dataDir);
  const state = cluster === undefined ? 'no cluster yet (the first start makes one)' : `cluster in ${cluster}`;
  return pass('data-dir', `${config.dataDir}: ${state}${holder === undefined ? '' : `; in use by ${describePid(holder.pid)}`}`);
}

/** The embedded port: free, or held by the Postgres of this data dir. */
async function embeddedPortCheck(config: BrokerConfig): Promise<Check> {
  const error = await bindError('127.0.0.1', config.embeddedPgPort);
  if (error === undefined) return pass('embedded-port', `127.0.0.1:${config.embeddedPgPort} is free (the embedded Postgres is not running)`);
  const pid = listeningPid(config.embeddedPgPort);
  const holder = await lockHolder(config.dataDir);
  if (holder !== undefined) return pass('embedded-port', `127.0.0.1:${config.embeddedPgPort} is held${pid === undefined ? '' : ` by ${describePid(pid)}`}, the embedded Postgres of the broker running on ${config.dataDir}`);
  return fail('embedded-port', `EMBEDDED_PG_PORT ${config.embeddedPgPort} is in use by ${pid === undefined ? 'another process' : describePid(pid)}`, 'stop that process, or set EMBEDDED_PG_PORT to a free port');
}

/** Applied migrations against the files in sql/: every file applied once, unchanged. */
async function migrationsCheck(client: pg.Client): Promise<Check> {
  const files = await readMigrations();
  const table = await client.query<{ present: boolean }>("SELECT to_regclass('schema_migrations') IS NOT NULL AS present");
  const applied = table.rows[0]?.present === true ? (await client.query<{ version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM schema_migrations ORDER BY version')).rows : [];
  const byVersion = new Map(files.map((file) => [file.version, file]));
  const unknown = applied.filter((row) => !byVersion.has(row.version));
  if (unknown.length > 0) return fail('migrations', `the database has migrations sql/ lacks: ${unknown.map((row) => `${row.version} (${row.name})`).join(', ')}`, 'this broker is older than the database schema: run the newer broker version');
  const changed = applied.filter((row) => byVersion.get(row.version)?.checksum !== row.checksum);
  if (changed.length > 0) return fail('migrations', `applied migrations changed since: ${changed.map((row) => byVersion.get(row.version)?.file).join(', ')}`, 'never edit an applied migration: restore the file and add a new numbered one');
  const pending = files.filter((file) => !applied.some((row) => row.version === file.version));
  if (pending.length > 0) return pass('migrations', `${applied.length} of ${files.length} applied, checksums match; pending (the broker applies them at its next start): ${pending.map((file) => file.file).join(', ')}`);
  return pass('migrations', `all ${files.length} applied, checksums match`);
}

/** Connect, then the migrations on that connection; an embedded cluster that is not running is not started. */
async function databaseChecks(config: BrokerConfig): Promise<Check[]> {
  let url = config.databaseUrl;
  if (url === undefined) {
    url = await embeddedBrokerUrl(config.dataDir, config.embeddedPgPort);
    if (url === undefined || (await lockHolder(config.dataDir)) === undefined) {
      return [pass('database', 'embedded: not running now (the broker starts it); not checked'), pass('migrations', 'not checked: the embedded Postgres is not running')];
    }
  }
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    const problem = diagnoseDb(error, url);
    await client.end().catch(() => undefined);
    return [fail('database', `${problem.message} (${problem.code})`, problem.hint), fail('migrations', 'not checked: no database connection', 'fix the database check first')];
  }
  try {
    const { rows } = await client.query<{ who: string; db: string; version: string }>('SELECT current_user AS who, current_database() AS db, current_setting(\'server_version\') AS version');
    const row = rows[0];
    const database = pass('database', `connected to ${redactUrl(url)} as ${row?.who} (PostgreSQL ${row?.version})`);
    return [database, await migrationsCheck(client).catch((error: unknown) => fail('migrations', messageOf(error), isCmError(error) ? error.hint : 'check sql/ and the schema_migrations table'))];
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function doctorChecks(env: NodeJS.ProcessEnv, configOnly: boolean): Promise<Check[]> {
  const { check, config } = configCheck(env);
  if (config === undefined || configOnly) return [check];
  const checks = [check, await portCheck(config)];
  if (config.databaseUrl === undefined) checks.push(await dataDirCheck(config), await embeddedPortCheck(config));
  checks.push(...(await databaseChecks(config)));
  return checks;
}

/** Control characters from the environment never reach the terminal as such. */
const printable = (text: string): string => text.replace(/[\u0000-\u001f\u007f]/g, '?');

/** Run `doctor` or `validate` (argv after `broker.ts`); returns the exit code. */
export async function runCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  // A reader that went away (`node broker.ts doctor | head -1`) ends the command quietly.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => process.exit(error.code === 'EPIPE' ? (process.exitCode ?? EXIT_OK) : EXIT_CHECK_FAILED));
  const [verb, ...options] = argv;
  const json = options.includes('--json');
  const unknown = options.filter((option) => option !== '--json');
  if (verb === '--help' || verb === 'help') {
    process.stdout.write(USAGE);
    return EXIT_OK;
  }
  if ((verb !== 'doctor' && verb !== 'validate') || unknown.length > 0) {
    const error = cmError('CM_ERR_USAGE', verb !== 'doctor' && verb !== 'validate' ? `unknown command "${printable(verb ?? '')}"` : `unknown option ${printable(unknown.join(' '))}`, { hint: 'node broker.ts --help lists the commands' });
    if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: error.toJSON() })}\n`);
    process.stderr.write(`${error.message}\n${USAGE}`);
    return EXIT_USAGE;
  }
  let checks: Check[];
  try {
    checks = await doctorChecks(env, verb === 'validate');
  } catch (error) {
    checks = [fail(verb, messageOf(error), 'this is a bug: report it with this output')];
  }
  const ok = checks.every((check) => check.ok);
  process.exitCode = ok ? EXIT_OK : EXIT_CHECK_FAILED;
  if (json) process.stdout.write(`${JSON.stringify({ ok, checks }, null, 2)}\n`);
  else {
    const width = Math.max(...checks.map((check) => check.name.length));
    const lines = checks.flatMap((check) => [
      `${check.ok ? 'ok  ' : 'FAIL'}  ${check.name.padEnd(width)}  ${printable(check.detail)}`,
      ...(check.ok ? [] : [`      ${' '.repeat(width)}  hint: ${printable(check.hint)}`]),
    ]);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return process.exitCode;
}
