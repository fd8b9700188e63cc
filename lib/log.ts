// Structured logs: one JSON object per line (time, level, msg, then fields). Written with a
// synchronous write to the given fd-backed stream so the last lines before an exit are
// never lost. Errors are flattened to {code, message}; stacks only at debug level.

import { isCmError } from './errors.ts';

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof LEVELS;

type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

interface LoggerOptions {
  level?: Level;
  /** where lines go; default: process.stderr */
  write?: (line: string) => void;
  now?: () => Date;
  fields?: Fields;
}

function serialiseError(error: unknown, withStack: boolean): unknown {
  if (!(error instanceof Error)) return error;
  const flat: Fields = { message: error.message };
  if (isCmError(error)) flat.code = error.code;
  else if (typeof (error as unknown as { code?: unknown }).code === "string") flat.code = (error as unknown as { code: string }).code;
  if (withStack) flat.stack = error.stack;
  return flat;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const threshold = LEVELS[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const now = options.now ?? (() => new Date());
  const base = options.fields ?? {};

  function emit(level: Level, msg: string, fields: Fields | undefined): void {
    if (LEVELS[level] < threshold) return;
    const record: Fields = { time: now().toISOString(), level, msg, ...base };
    if (fields !== undefined) {
      for (const [key, value] of Object.entries(fields)) {
        record[key] = value instanceof Error ? serialiseError(value, threshold <= LEVELS.debug) : value;
      }
    }
    let line: string;
    try {
      line = JSON.stringify(record);
    } catch {
      // A field that cannot be serialised (cycle, BigInt) must not take the process down.
      line = JSON.stringify({ time: record.time, level, msg, logError: 'unserialisable fields' });
    }
    write(line + '\n');
  }

  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (fields) => createLogger({ ...options, fields: { ...base, ...fields } }),
  };
}
