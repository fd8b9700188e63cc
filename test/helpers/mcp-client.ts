// A minimal MCP client for tests: runs `node cli.ts mcp` as a child process and speaks
// newline-delimited JSON-RPC to it over its stdin and stdout, as Claude Code does.

import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { waitUntil } from './wait.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const ANSWER_TIMEOUT_MS = 10_000;

export interface McpChild {
  child: ChildProcessWithoutNullStreams;
  /** every message the server wrote, in order */
  received: Array<Record<string, any>>;
  notifications(method: string): Array<Record<string, any>>;
  request(method: string, params?: unknown): Promise<Record<string, any>>;
  notify(method: string, params?: unknown): void;
  /** write a raw line, as a broken client might */
  writeLine(line: string): void;
  stderr(): string;
  /** close stdin; resolves with the exit code */
  end(): Promise<number | null>;
}

export function startMcp(env: Record<string, string | undefined>): McpChild {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete childEnv.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['cli.ts', 'mcp'], { cwd: ROOT, env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
  const received: Array<Record<string, any>> = [];
  let stderr = '';
  let buffer = '';
  let nextId = 1;
  child.stderr.on('data', (chunk: Buffer) => void (stderr += chunk.toString()));
  child.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      received.push(JSON.parse(buffer.slice(0, newline)) as Record<string, any>);
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const write = (message: Record<string, unknown>) => child.stdin.write(`${JSON.stringify(message)}\n`);
  return {
    child, received,
    notifications: (method) => received.filter((message) => message.method === method && message.id === undefined),
    async request(method, params) {
      const id = nextId++;
      write({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });
      return waitUntil(`answer to ${method}`, () => received.find((message) => message.id === id && message.method === undefined), { timeoutMs: ANSWER_TIMEOUT_MS });
    },
    notify(method, params) {
      write({ jsonrpc: '2.0', method, ...(params === undefined ? {} : { params }) });
    },
    writeLine(line) {
      child.stdin.write(`${line}\n`);
    },
    stderr: () => stderr,
    async end() {
      child.stdin.end();
      return exited;
    },
  };
}
