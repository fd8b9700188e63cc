// Boolean environment switches (CLAUDEMESH_NO_AUTOSTART, CLAUDEMESH_DEBUG, …): one rule for
// all of them, so `=true` works wherever `=1` does.

const TRUE_WORDS: ReadonlySet<string> = new Set(['1', 'true', 'yes', 'on']);

/** Whether `name` is set to 1, true, yes or on (any case). */
export function envFlag(env: Readonly<Record<string, string | undefined>>, name: string): boolean {
  return TRUE_WORDS.has((env[name] ?? '').trim().toLowerCase());
}
