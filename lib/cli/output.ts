// How the CLI talks back: exit codes, error lines, tables and --json.
//
// Errors print as `error CODE: message` and `hint: …` on stderr — or, with --json, as one
// `{"error": {code, message, hint, details?}}` object on stdout — and never with a stack
// trace (CLAUDEMESH_DEBUG=1 adds it for unexpected errors). The exit code says who failed:
// 2 the command line, 1 a local check or operation, 3 the daemon, 4 the broker (unreachable
// or refused) or the membership (removed, banned). Tables show peer-supplied text with its
// control characters visible (render.ts); --json prints every time as ISO 8601.

import { envFlag } from '../env-flag.ts';
import { BrokerRefusal, isCmError } from '../errors.ts';
import { isoTimes, visible } from './render.ts';

export const EXIT_OK = 0;
export const EXIT_CHECK_FAILED = 1;
export const EXIT_USAGE = 2;
const EXIT_DAEMON_DOWN = 3;
export const EXIT_BROKER = 4;

// Local errors that mean "the command line asked for something that does not exist or
// cannot be": fix the command, exit 2. Every other local error is a failed check, exit 1.
const USAGE_CODES: ReadonlySet<string> = new Set([
  'CM_ERR_USAGE',
  'CM_ERR_MESH_UNKNOWN',
  'CM_ERR_MESH_EXISTS',
  'CM_ERR_AMBIGUOUS',
  'CM_ERR_PEER_UNKNOWN',
  'CM_ERR_NOT_IMPLEMENTED',
  'CM_ERR_INVITE_MALFORMED',
  'CM_ERR_INVALID_KEY',
  'CM_ERR_BAD_REQUEST',
]);
// The broker is unreachable or refused, or it ended the membership: exit 4. Codes only the
// broker sends arrive as BrokerRefusal, or as CmError from the daemon (it relays them).
const BROKER_CODES: ReadonlySet<string> = new Set([
  'CM_ERR_BROKER_UNREACHABLE', 'CM_ERR_MESH_OFFLINE', 'CM_ERR_REMOVED', 'CM_ERR_BANNED', 'CM_ERR_FORBIDDEN',
  'CM_ERR_RATE_LIMITED', 'CM_ERR_LOOP_GUARD', 'CM_ERR_DB_UNAVAILABLE',
]);
// The daemon could not be reached or started, or its answer was lost: exit 3.
const DAEMON_CODES: ReadonlySet<string> = new Set(['CM_ERR_DAEMON_NOT_RUNNING', 'CM_ERR_OUTCOME_UNKNOWN']);

export interface Io {
  stdout(text: string): void;
  stderr(text: string): void;
}

interface ErrorReport {
  code: string;
  message: string;
  hint: string;
  details?: Record<string, unknown>;
}

function describe(error: unknown, env: Readonly<Record<string, string | undefined>>): { report: ErrorReport; exitCode: number } {
  if (error instanceof BrokerRefusal) {
    const report: ErrorReport = { code: error.code, message: error.message, hint: error.hint };
    if (error.details !== undefined) report.details = error.details;
    return { report, exitCode: EXIT_BROKER };
  }
  if (isCmError(error)) {
    const exitCode = USAGE_CODES.has(error.code) ? EXIT_USAGE : BROKER_CODES.has(error.code) ? EXIT_BROKER : DAEMON_CODES.has(error.code) ? EXIT_DAEMON_DOWN : EXIT_CHECK_FAILED;
    return { report: error.toJSON(), exitCode };
  }
  const message = error instanceof Error ? error.message : String(error);
  const debug = envFlag(env, 'CLAUDEMESH_DEBUG') && error instanceof Error ? `\n${error.stack ?? ''}` : '';
  return {
    report: { code: 'CM_ERR_INTERNAL', message: `${message}${debug}`, hint: 'this is a bug: report it with the command you ran (CLAUDEMESH_DEBUG=1 shows the stack)' },
    exitCode: EXIT_CHECK_FAILED,
  };
}

/** Print `error` the way the CLI always does and return the exit code it calls for. */
export function reportError(io: Io, error: unknown, json: boolean, env: Readonly<Record<string, string | undefined>>): number {
  const { report, exitCode } = describe(error, env);
  if (json) {
    io.stdout(`${JSON.stringify({ error: report })}\n`);
  } else {
    io.stderr(`error ${report.code}: ${report.message}\n`);
    if (report.hint !== '') io.stderr(`hint: ${report.hint}\n`);
  }
  return exitCode;
}

export function printJson(io: Io, value: unknown): void {
  io.stdout(`${JSON.stringify(isoTimes(value), null, 2)}\n`);
}

/** Columns padded to the widest cell; the last column is never padded; control characters shown. */
export function formatTable(header: readonly string[], cells: ReadonlyArray<readonly string[]>): string {
  const rows = cells.map((row) => row.map(visible));
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** A key as people read it: the first 12 hex characters. */
export function shortKey(key: string): string {
  return key.slice(0, 12);
}
