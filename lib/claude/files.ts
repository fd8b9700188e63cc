// Editing Claude Code's own files without breaking them: a JSON file is read whole and must
// parse (one that does not is refused, never overwritten), changed in memory, written to a
// temporary file in the same directory, fsynced and renamed over the old one, keeping its
// mode (0600 for a new file: ~/.claude.json holds credentials). Claude Code may write the same
// file at any time; a rename at least never leaves half a file.
//
// Hooks are merged by appending one matcher group per event and removed handler by handler,
// so groups of other tools are never touched.

import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { cmError } from '../errors.ts';
import { isOurHandler } from './artifacts.ts';
import type { HookGroup } from './artifacts.ts';

const NEW_FILE_MODE = 0o600;

export type JsonObject = Record<string, unknown>;

export function sha256(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The file's bytes, or undefined when it does not exist. */
export async function readBytes(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The JSON object in `path` ({} when the file is absent or empty); refuses anything else. */
export async function readJsonObject(path: string): Promise<JsonObject> {
  const bytes = await readBytes(path);
  if (bytes === undefined || bytes.toString('utf8').trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw cmError('CM_ERR_CLAUDE_FILE', `${path} is not valid JSON (${(error as Error).message}); claudemesh will not rewrite it`, { details: { path } });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw cmError('CM_ERR_CLAUDE_FILE', `${path} does not hold a JSON object; claudemesh will not rewrite it`, { details: { path } });
  }
  return parsed as JsonObject;
}

/** Write bytes atomically (temporary file, fsync, rename), keeping an existing file's mode. */
export async function writeAtomic(path: string, bytes: Buffer | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const mode = await stat(path).then((info) => info.mode & 0o777, () => NEW_FILE_MODE);
  const temporary = `${path}.claudemesh-${process.pid}.tmp`;
  const file = await open(temporary, 'w', mode);
  try {
    await file.writeFile(bytes);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(temporary, path);
}

export function jsonText(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

function groupsOf(hooks: JsonObject, event: string): unknown[] {
  const groups = hooks[event];
  return Array.isArray(groups) ? groups : [];
}

/** Add each event's group unless a handler of ours for that event is there already. */
export function addHooks(settings: JsonObject, wanted: Record<string, HookGroup>): { settings: JsonObject; added: string[] } {
  const hooks: JsonObject = settings.hooks !== null && typeof settings.hooks === 'object' && !Array.isArray(settings.hooks) ? { ...(settings.hooks as JsonObject) } : {};
  const added: string[] = [];
  for (const [event, group] of Object.entries(wanted)) {
    const present = groupsOf(hooks, event).some((each) => ((each as { hooks?: unknown[] }).hooks ?? []).some(isOurHandler));
    if (present) continue;
    hooks[event] = [...groupsOf(hooks, event), group];
    added.push(event);
  }
  return { settings: added.length === 0 ? settings : { ...settings, hooks }, added };
}

/** Remove every handler of ours; then groups left empty, events left empty, and `hooks` if empty. */
export function removeHooks(settings: JsonObject): { settings: JsonObject; removed: number } {
  if (settings.hooks === null || typeof settings.hooks !== 'object' || Array.isArray(settings.hooks)) return { settings, removed: 0 };
  let removed = 0;
  const hooks: JsonObject = {};
  for (const [event, groups] of Object.entries(settings.hooks as JsonObject)) {
    if (!Array.isArray(groups)) {
      hooks[event] = groups;
      continue;
    }
    const kept = groups.flatMap((group) => {
      const handlers = (group as { hooks?: unknown }).hooks;
      if (!Array.isArray(handlers)) return [group];
      const left = handlers.filter((handler) => !isOurHandler(handler));
      removed += handlers.length - left.length;
      if (left.length === handlers.length) return [group];
      return left.length === 0 ? [] : [{ ...(group as JsonObject), hooks: left }];
    });
    if (kept.length > 0) hooks[event] = kept;
  }
  const { hooks: _old, ...rest } = settings;
  return { settings: Object.keys(hooks).length === 0 ? rest : { ...rest, hooks }, removed };
}
