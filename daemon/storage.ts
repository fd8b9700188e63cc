// The daemon's disk failing under it: full, read-only, or out of quota. That is the user's to
// fix, not a bug, so it has its own code (CM_ERR_DAEMON_STORAGE) and a hint naming the
// directory. SQLite rolls a failed transaction back, so each database holds what it held
// before the failure; a message not stored is never acknowledged (to the CLI or to the
// broker), so it is retried, not lost.
//
// Writes that do not answer a request (a pushed message, a roster, an ack from the broker)
// run inside socket and timer callbacks, where a throw would end the process: they go
// through `reported`, which turns a failure into an event and a log line instead.

import { unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cmError } from '../lib/errors.ts';
import type { CmError } from '../lib/errors.ts';
import type { EventRing } from './events.ts';

// SQLite's result codes (better-sqlite3 gives the extended ones: SQLITE_IOERR_WRITE, …) and
// the errno codes of node:fs that mean the disk, not the code, refused.
const FULL = /^(SQLITE_FULL|ENOSPC|EDQUOT|EFBIG)/;
const READ_ONLY = /^(SQLITE_READONLY|EROFS|EACCES|EPERM)/;
const FAILING = /^(SQLITE_IOERR|SQLITE_CANTOPEN|EIO)/;
const PROBE_FILE = '.write-probe';

/**
 * SQLite reports most refused writes as SQLITE_IOERR_*, whatever the cause: ask the file
 * system what it is, with a one-byte probe file, so the message names the cause (read-only,
 * full) rather than "disk I/O error". Only ever run after a write failed.
 */
function diagnose(dir: string): string | undefined {
  const probe = join(dir, PROBE_FILE);
  try {
    writeFileSync(probe, '.');
    unlinkSync(probe);
  } catch (error) {
    const code = codeOf(error);
    if (code === 'EROFS') return 'it is read-only';
    if (code === 'EACCES' || code === 'EPERM') return 'it is not writable by this user';
    if (code === 'ENOSPC' || code === 'EDQUOT') return 'the disk is full';
  }
  return undefined;
}

function codeOf(error: unknown): string {
  const code = typeof error === 'object' && error !== null && 'code' in error ? error.code : undefined;
  return typeof code === 'string' ? code : '';
}

/**
 * The CM_ERR_DAEMON_STORAGE error for a failed write under `dir`, or undefined when `error`
 * is something else. `outcome` says what became of the request ("message X was not queued").
 */
export function storageFailure(error: unknown, dir: string, outcome?: string): CmError | undefined {
  const code = codeOf(error);
  const why = FULL.test(code) ? 'the disk is full' : READ_ONLY.test(code) ? (diagnose(dir) ?? 'it is read-only, or not writable by this user')
    : FAILING.test(code) ? (diagnose(dir) ?? 'the disk failed') : undefined;
  if (why === undefined) return undefined;
  const reason = error instanceof Error ? error.message : code;
  return cmError('CM_ERR_DAEMON_STORAGE', `the daemon could not write under ${dir}: ${why} (${code}: ${reason})${outcome === undefined ? '' : `; ${outcome}`}`, {
    hint: `free space on the file system that holds ${dir} (df -h ${dir}), or make it writable again; what the daemon stored before is kept`,
    details: { path: dir, code },
    cause: error,
  });
}

/** Run a write that answers a request; a failure of the disk becomes CM_ERR_DAEMON_STORAGE. */
export function storing<T>(dir: string, outcome: string, write: () => T): T {
  try {
    return write();
  } catch (error) {
    throw storageFailure(error, dir, outcome) ?? error;
  }
}

/**
 * `handler`, with any failure reported as an event (`storage_failed` with the error's code,
 * message and hint, or `daemon_error`) instead of thrown into the caller's event loop.
 */
export function reported<A extends unknown[]>(events: EventRing, dir: string, what: string, handler: (...args: A) => void): (...args: A) => void {
  return (...args: A) => {
    try {
      handler(...args);
    } catch (error) {
      const failure = storageFailure(error, dir);
      if (failure !== undefined) events.push('storage_failed', { while: what, ...failure.toJSON() });
      else events.push('daemon_error', { while: what, message: error instanceof Error ? error.message : String(error) });
    }
  };
}
