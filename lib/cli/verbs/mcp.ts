// `claudemesh mcp`: the stdio MCP server (lib/mcp/server.ts) on this process's stdin and
// stdout. Claude Code starts it; a person has no reason to. Nothing else may write to stdout,
// so every diagnostic goes to stderr (Claude Code keeps it in its MCP logs).

import { cmError } from '../../errors.ts';
import { McpServer } from '../../mcp/server.ts';
import type { Verb } from '../verb.ts';

const TIMINGS_ENV = 'CLAUDEMESH_MCP_TIMINGS';
// After stdin ends, what is still in flight (a retry wait, a stream) gets this long to stop.
const EXIT_GRACE_MS = 200;

function timingsFrom(env: Readonly<Record<string, string | undefined>>): Record<string, number> {
  const raw = env[TIMINGS_ENV];
  if (raw === undefined || raw === '') return {};
  try {
    return JSON.parse(raw) as Record<string, number>;
  } catch {
    throw cmError('CM_ERR_USAGE', `${TIMINGS_ENV} is not JSON: ${raw.slice(0, 80)}`);
  }
}

export const mcpVerb: Verb = {
  name: 'mcp',
  summary: 'the stdio MCP server Claude Code runs: channel messages and the mesh tools',
  help: `usage: claudemesh mcp

The MCP server that Claude Code starts (claudemesh install registers it): JSON-RPC on stdin
and stdout. It pushes each message for this session into the conversation as a channel
notification, and offers the tools send, peers, inbox and status. It registers the Claude
session with the daemon (starting the daemon when needed) unless CLAUDEMESH_SESSION_TOKEN_FILE
names a session already registered (claudemesh launch). It exits when its input ends.
See docs/claude-code.md.
`,
  options: {},
  positionals: { min: 0, max: 0 },
  async run(context) {
    const server = new McpServer({
      input: process.stdin, output: process.stdout, env: context.env, home: context.home,
      log: (line) => context.stderr(`[claudemesh mcp] ${line}\n`), timings: timingsFrom(context.env),
    });
    await server.run();
    setTimeout(() => process.exit(0), EXIT_GRACE_MS).unref();
  },
};
