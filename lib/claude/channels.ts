// Can this Claude Code session receive channel notifications at all? Claude Code gives no
// acknowledgement for a channel push — a notification it does not take is dropped without a
// word — so claudemesh looks for the conditions under which the client is known to drop
// them, and falls back (the unread line of the UserPromptSubmit hook, the tools, the CLI)
// when one holds. Each finding is one sentence a person can act on; none means "possible",
// not "proven" (docs/claude-code.md, *When channels are live*).
//
// - Another provider than Anthropic's own API (Bedrock, Vertex, Foundry): no channels.
// - Telemetry or nonessential traffic turned off: the client then never reads its cached
//   feature flags, and the channels flag is among them.
// - The cached channels flag (`tengu_harbor` in ~/.claude.json) is not on.
// - The Claude process was started without a channel flag naming claudemesh: the plugin
//   route (`--channels plugin:claudemesh@…`, any mode) or the development flag
//   (`--dangerously-load-development-channels server:claudemesh`, interactive only).

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

type Env = Readonly<Record<string, string | undefined>>;

const PROVIDER_ENV = ['CLAUDE_CODE_USE_BEDROCK', 'CLAUDE_CODE_USE_VERTEX', 'CLAUDE_CODE_USE_FOUNDRY'] as const;
const NO_FLAGS_ENV = ['CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC', 'DISABLE_TELEMETRY', 'DISABLE_GROWTHBOOK'] as const;
const CHANNELS_FLAG = 'tengu_harbor';
const DEV_FLAG = '--dangerously-load-development-channels';
const PS_TIMEOUT_MS = 300;

function truthy(value: string | undefined): boolean {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/** Where Claude Code keeps its own state file (~/.claude.json, or under CLAUDE_CONFIG_DIR). */
function claudeStatePath(env: Env): string {
  const dir = env.CLAUDE_CONFIG_DIR;
  return dir !== undefined && dir !== '' ? join(dir, '.claude.json') : join(env.HOME ?? homedir(), '.claude.json');
}

/** The command line of a process, as words; undefined when it cannot be read. */
function commandLine(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((word) => word !== '');
  } catch {
    const ps = spawnSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8', timeout: PS_TIMEOUT_MS });
    return ps.status === 0 && ps.stdout.trim() !== '' ? ps.stdout.trim().split(/\s+/) : undefined;
  }
}

/** Does this Claude command line name claudemesh as a channel it takes? */
export function namesChannel(words: readonly string[]): boolean {
  const printMode = words.includes('-p') || words.includes('--print');
  for (let index = 0; index < words.length; index += 1) {
    const word = words[index] ?? '';
    if (word === '--channels' || word === DEV_FLAG) {
      for (const entry of words.slice(index + 1)) {
        if (entry.startsWith('-')) break;
        if (word === '--channels' && /^plugin:claudemesh@/.test(entry)) return true;
        if (word === DEV_FLAG && !printMode && (entry === 'server:claudemesh' || /^plugin:claudemesh@/.test(entry))) return true;
      }
    }
  }
  return false;
}

/** Why channel notifications cannot reach this session; empty when nothing known stops them. */
export function channelBlockers(env: Env, claudePid: number | undefined): string[] {
  const reasons: string[] = [];
  const provider = PROVIDER_ENV.find((name) => truthy(env[name]));
  if (provider !== undefined) reasons.push(`${provider} is set: channels exist only with Anthropic's own API`);
  const noFlags = NO_FLAGS_ENV.find((name) => truthy(env[name]));
  if (noFlags !== undefined) reasons.push(`${noFlags} is set: Claude Code then reads no feature flags, and channels are one`);
  let features: unknown;
  try {
    features = (JSON.parse(readFileSync(claudeStatePath(env), 'utf8')) as { cachedGrowthBookFeatures?: Record<string, unknown> }).cachedGrowthBookFeatures;
  } catch {
    features = undefined;
  }
  if ((features as Record<string, unknown> | undefined)?.[CHANNELS_FLAG] !== true) {
    reasons.push(`Claude Code has not cached the channels feature flag (${CHANNELS_FLAG} in ${claudeStatePath(env)})`);
  }
  const words = claudePid === undefined ? undefined : commandLine(claudePid);
  if (words !== undefined && !namesChannel(words)) {
    reasons.push('Claude Code was started without a channel flag for claudemesh (claudemesh launch adds it)');
  }
  return reasons;
}
