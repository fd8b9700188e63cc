// Turning what peers sent into text a terminal shows as it is. Names, statuses, summaries,
// groups and message bodies come from other people: a name like "alice\u001b[2K\r…" would
// erase the line and print a forged one. Every control character (C0, DEL, C1) and every
// Unicode bidirectional override is shown as an escape instead (`\x1b`, `\u202e`), so what
// is printed is exactly one line per row and reads the same in any terminal.
//
// Also the one time format of --json: every field named `…At`, `at`, `since` or `asOf` that holds
// epoch milliseconds becomes an ISO 8601 string, so no output mixes the two.

// C0 controls, DEL and C1 controls, line/paragraph separators, bidi controls.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const TIME_FIELD = /(At|^at|^since|^asOf)$/;
// Epoch milliseconds from 2001 on: smaller numbers are counts or durations, not times.
const MIN_EPOCH_MS = 1e12;

function escape(char: string): string {
  const code = char.codePointAt(0) ?? 0;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** One line, every control character visible. */
export function visible(value: unknown): string {
  return String(value ?? '').replace(UNSAFE, escape);
}

/** Several lines (a message body): newlines kept, each following line indented by `indent`. */
export function visibleLines(value: unknown, indent: string): string {
  return String(value ?? '').replace(UNSAFE_BUT_NEWLINE, escape).split('\n').join(`\n${indent}`);
}

/** A copy of `value` whose time fields (epoch ms) are ISO 8601 strings. */
export function isoTimes(value: unknown, field = ''): unknown {
  if (Array.isArray(value)) return value.map((item) => isoTimes(item));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([name, inner]) => [name, isoTimes(inner, name)]));
  }
  if (typeof value === 'number' && value >= MIN_EPOCH_MS && TIME_FIELD.test(field)) return new Date(value).toISOString();
  return value;
}
