// The shapes of the names and ids that membership passes around, checked the same way by
// the broker (before anything reaches Postgres) and by the CLI (before anything is signed).

/** Mirrors the CHECK on meshes.id in sql/001_initial.sql. */
const MESH_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
const MAX_NAME_LENGTH = 64;
// Member names are what people type after `kick` or (later) `send`: no spaces, no leading
// `@` or `*` (those are group and broadcast targets), so a name never reads as a target.
const MEMBER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
// Control characters (newlines included) could forge a line in a signed string or a log.
const CONTROL_CHARACTER = /\p{Cc}/u;

export function isMeshId(value: unknown): value is string {
  return typeof value === 'string' && MESH_ID_PATTERN.test(value);
}

/** A mesh name is free text for people: 1–64 characters, no control characters, trimmed. */
export function isMeshName(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value.length >= 1 &&
    [...value].length <= MAX_NAME_LENGTH &&
    value.trim() === value &&
    !CONTROL_CHARACTER.test(value)
  );
}

export function isMemberName(value: unknown): value is string {
  return typeof value === 'string' && MEMBER_NAME_PATTERN.test(value);
}

/** Turn free text (a user or host name) into a valid member name, or undefined. */
export function toMemberName(raw: string): string | undefined {
  const cleaned = raw
    .replace(/[^A-Za-z0-9._@-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, MAX_NAME_LENGTH);
  return isMemberName(cleaned) ? cleaned : undefined;
}
