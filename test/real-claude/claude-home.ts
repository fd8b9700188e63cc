// A throwaway HOME in which the real Claude Code runs offline against the fake API: what the
// client needs to start without dialogs (onboarding done, the API key approved, the project
// trusted), permission rules for claudemesh's tools, and the cached feature flags that turn
// channels on (`tengu_harbor`) and put the claudemesh plugin on the channel allowlist
// (`tengu_harbor_ledger`). The client would fetch those flags from its vendor; offline, only
// the cache in ~/.claude.json can hold them.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const API_KEY = 'sk-test-claudemesh-0123456789abcdefghij';
const SEND_TOOLS = ['mcp__plugin_claudemesh_claudemesh__send', 'mcp__claudemesh__send'];

const CHANNEL_FLAGS = {
  tengu_harbor: true,
  tengu_harbor_ledger: [{ marketplace: 'claudemesh', plugin: 'claudemesh' }],
};

/** The settings.json the test starts with; uninstall must give exactly these bytes back. */
export const ORIGINAL_SETTINGS = `${JSON.stringify({ permissions: { defaultMode: 'default', allow: SEND_TOOLS } }, null, 2)}\n`;

export async function seedClaudeHome(home: string, project: string): Promise<void> {
  await mkdir(join(home, '.claude'), { recursive: true });
  await writeFile(join(home, '.claude', 'settings.json'), ORIGINAL_SETTINGS);
  await writeFile(join(home, '.claude.json'), JSON.stringify({
    hasCompletedOnboarding: true,
    customApiKeyResponses: { approved: [API_KEY.slice(-20)], rejected: [] },
    projects: { [project]: { hasTrustDialogAccepted: true, allowedTools: [] } },
    cachedGrowthBookFeatures: CHANNEL_FLAGS,
  }, null, 2));
}

/** Take the cached feature flags away, as on a machine where the client never fetched them. */
export async function dropFeatureCache(home: string): Promise<void> {
  const path = join(home, '.claude.json');
  const state = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  delete state.cachedGrowthBookFeatures;
  await writeFile(path, JSON.stringify(state, null, 2));
}

/** Put the cached feature flags back. */
export async function restoreFeatureCache(home: string): Promise<void> {
  const path = join(home, '.claude.json');
  const state = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  await writeFile(path, JSON.stringify({ ...state, cachedGrowthBookFeatures: CHANNEL_FLAGS }, null, 2));
}

/** The environment for the claude process: this HOME, the fake API, nothing of the caller's Claude. */
export function claudeEnv(home: string, apiUrl: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(CLAUDE|ANTHROPIC_|NODE_TEST|CM_TEST|MCP_|DISABLE_)/.test(key)) env[key] = value;
  }
  return { ...env, HOME: home, ANTHROPIC_BASE_URL: apiUrl, ANTHROPIC_API_KEY: API_KEY, DISABLE_AUTOUPDATER: '1', ...extra };
}
