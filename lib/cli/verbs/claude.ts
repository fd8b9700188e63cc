// The Claude Code verbs, as one list for lib/cli/main.ts: the hooks' verb, the MCP server,
// install and uninstall, launch (docs/claude-code.md).

import type { Verb } from '../verb.ts';
import { hookVerb } from './hook.ts';
import { installVerb, uninstallVerb } from './install.ts';
import { launchVerb } from './launch.ts';
import { mcpVerb } from './mcp.ts';

export const CLAUDE_VERBS: readonly Verb[] = [installVerb, uninstallVerb, launchVerb, mcpVerb, hookVerb];
