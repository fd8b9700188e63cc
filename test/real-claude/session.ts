// One real Claude Code session in print mode with stream-json on both sides and stdin kept
// open, so that a channel notification arriving while it is idle starts a new turn (in plain
// -p mode, anything after the first turn is lost when the process exits).

import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';

export interface ClaudeSession {
  child: ChildProcessWithoutNullStreams;
  /** every JSON line claude printed */
  lines: Array<Record<string, any>>;
  stderr(): string;
  /** the `result` lines so far (one per finished turn) */
  results(): Array<Record<string, any>>;
  prompt(text: string): void;
  /** close stdin and wait for the exit code */
  end(): Promise<number | null>;
}

export function startSession(bin: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): ClaudeSession {
  const child = spawn(bin, ['-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose', ...args], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: Array<Record<string, any>> = [];
  let buffer = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => void (stderr += chunk.toString()));
  child.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line.startsWith('{')) {
        try {
          lines.push(JSON.parse(line) as Record<string, any>);
        } catch {
          // a partial or non-JSON line: not ours to judge
        }
      }
      newline = buffer.indexOf('\n');
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child, lines,
    stderr: () => stderr,
    results: () => lines.filter((line) => line.type === 'result'),
    prompt(text) {
      child.stdin.write(`${JSON.stringify({ type: 'user', message: { role: 'user', content: [{ type: 'text', text }] } })}\n`);
    },
    async end() {
      child.stdin.end();
      return exited;
    },
  };
}
