// Argument parsing for one verb: node:util parseArgs, strict, with its errors turned into
// CM_ERR_USAGE (exit 2) that name the verb and point at its --help.

import type { ParseArgsOptionsConfig } from 'node:util';
import { cmError } from '../errors.ts';
import { didYouMean } from './suggest.ts';

// Every command parses its arguments, so it must not pay for node:util's ESM view (an
// `import` of it evaluates every lazy part of node:util, ~10 ms); the module itself is enough.
const { parseArgs } = process.getBuiltinModule('node:util');

/** Options every verb accepts. */
const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
} as const satisfies ParseArgsOptionsConfig;

export interface ParsedArgs {
  /** option values by name; strings, booleans or undefined (null prototype) */
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function usageError(verb: string, message: string) {
  return cmError('CM_ERR_USAGE', message, { hint: verb === '' ? 'see claudemesh --help' : `see claudemesh ${verb} --help` });
}

/** parseArgs' complaint in our words: the option received, and the nearest one it knows. */
function ourWords(error: Error & { code?: string }, options: ParseArgsOptionsConfig): string {
  const option = /'(-[^' ]*)/.exec(error.message)?.[1] ?? '';
  const known = Object.keys(options).map((name) => `--${name}`);
  if (error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    return `unknown option ${option}${didYouMean(option, known)}; a text that starts with "-" goes after --`;
  }
  if (error.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    return /does not take an argument/.test(error.message) ? `${option} takes no value` : `${option} needs a value, as in ${option} VALUE`;
  }
  return error.message;
}

/**
 * A value that starts with "-" after an option that takes one (an invite id such as
 * `-x3Fq…`, a negative number) is that option's value, not an option of its own — unless it
 * is one of the verb's options. parseArgs would refuse it; `--name=value` it takes.
 */
function joinDashValues(args: readonly string[], options: ParseArgsOptionsConfig): string[] {
  const known = new Set(['--', ...Object.entries(options).flatMap(([name, option]) => [`--${name}`, ...(option.short === undefined ? [] : [`-${option.short}`])])]);
  const joined: string[] = [];
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index] ?? '';
    const next = args[index + 1];
    if (arg === '--') return [...joined, ...args.slice(index)];
    const option = arg.startsWith('--') && !arg.includes('=') ? options[arg.slice(2)] : undefined;
    if (option?.type === 'string' && next !== undefined && next.startsWith('-') && next !== '-' && !known.has(next)) {
      joined.push(`${arg}=${next}`);
      index += 1;
    } else {
      joined.push(arg);
    }
  }
  return joined;
}

export function parseVerbArgs(verb: string, args: readonly string[], options: ParseArgsOptionsConfig, positionals: { min: number; max: number }): ParsedArgs {
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    const all = { ...options, ...COMMON_OPTIONS };
    parsed = parseArgs({ args: joinDashValues(args, all), options: all, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (error) {
    throw usageError(verb, `claudemesh ${verb}: ${ourWords(error as Error & { code?: string }, { ...options, ...COMMON_OPTIONS })}`);
  }
  const values = Object.assign(Object.create(null) as ParsedArgs['values'], parsed.values);
  if (values.help === true) return { values, positionals: parsed.positionals };
  if (parsed.positionals.length < positionals.min) {
    throw usageError(verb, `claudemesh ${verb} needs ${positionals.min === 1 ? 'an argument' : `${positionals.min} arguments`}`);
  }
  if (parsed.positionals.length > positionals.max) {
    throw usageError(verb, `claudemesh ${verb} takes at most ${positionals.max} argument${positionals.max === 1 ? '' : 's'}, received ${parsed.positionals.length}: ${parsed.positionals.join(' ')}`);
  }
  return { values, positionals: parsed.positionals };
}

export function stringOption(values: ParsedArgs['values'], name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

const DURATION = /^(\d{1,6})([smhd])$/;
const UNIT_SECONDS = new Map<string, number>([
  ['s', 1],
  ['m', 60],
  ['h', 3_600],
  ['d', 86_400],
]);

/** "90s", "30m", "12h", "7d" → seconds; undefined when it is not one of those. */
export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text.trim());
  if (match === null) return undefined;
  const seconds = Number(match[1]) * (UNIT_SECONDS.get(match[2] ?? '') ?? 0);
  return seconds > 0 ? seconds : undefined;
}

/** A whole number within [min, max]; undefined otherwise. */
export function parseCount(text: string, min: number, max: number): number | undefined {
  if (!/^\d{1,9}$/.test(text.trim())) return undefined;
  const value = Number(text.trim());
  return value >= min && value <= max ? value : undefined;
}
