// Runs the real broker (`node broker.ts`) as a child process, reads its JSON log lines and
// learns its port from the `broker listening` line (tests start it on BROKER_PORT=0).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';

const ROOT = new URL('../../', import.meta.url).pathname;
const DEFAULT_START_TIMEOUT_MS = 30_000;

interface LogLine {
  msg: string;
  level: string;
  [field: string]: unknown;
}

export interface BrokerProcess {
  child: ChildProcess;
  port: number;
  baseUrl: string;
  instanceId: string;
  logs: LogLine[];
  /** resolves with the first log line with this msg (already seen or future) */
  waitForLog(msg: string, timeoutMs?: number): Promise<LogLine>;
  /** resolves with exit code and the time it took after `signal` was sent */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; ms: number }>;
}

interface RunResult {
  code: number | null;
  logs: LogLine[];
  stderr: string;
}

function parseLines(buffer: { text: string }, chunk: Buffer, logs: LogLine[], onLine: (line: LogLine) => void): void {
  buffer.text += chunk.toString('utf8');
  let newline = buffer.text.indexOf('\n');
  while (newline !== -1) {
    const raw = buffer.text.slice(0, newline);
    buffer.text = buffer.text.slice(newline + 1);
    try {
      const line = JSON.parse(raw) as LogLine;
      logs.push(line);
      onLine(line);
    } catch {
      logs.push({ msg: raw, level: 'raw' });
    }
    newline = buffer.text.indexOf('\n');
  }
}

export function brokerEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, BROKER_PORT: '0', NODE_ENV: 'test', ...extra };
  delete env.CM_TEST_DATABASE_URL;
  delete env.NODE_TEST_CONTEXT;
  return env;
}

/** A failed start ends on one error line, the last, that names the cause (`code`) and the fix; nothing crashes. */
export function startFailure(result: RunResult, code: string): LogLine {
  const errors = result.logs.filter((line) => line.level === 'error');
  assert.deepEqual(errors.map((line) => [line.msg, line.code]), [['start failed', code]], JSON.stringify(result.logs));
  assert.equal(result.logs.at(-1), errors[0], 'the cause is the last line');
  assert.equal(typeof errors[0]?.hint, 'string');
  return errors[0] ?? { msg: '', level: '' };
}

/** Run the broker to completion (for start-up failures); kill it after `timeoutMs`. `clone`: a copy of the repo to run from. */
export function runBroker(env: NodeJS.ProcessEnv, timeoutMs = DEFAULT_START_TIMEOUT_MS, clone = ROOT): Promise<RunResult> {
  const child = spawn(process.execPath, ['broker.ts'], { cwd: clone, env, stdio: ['ignore', 'ignore', 'pipe'] });
  const logs: LogLine[] = [];
  const buffer = { text: '' };
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
    parseLines(buffer, chunk, logs, () => {});
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => {
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, logs, stderr });
    });
  });
}

export async function startBroker(env: NodeJS.ProcessEnv, nodeArgs: string[] = [], timeoutMs = DEFAULT_START_TIMEOUT_MS, clone = ROOT): Promise<BrokerProcess> {
  const child = spawn(process.execPath, [...nodeArgs, 'broker.ts'], { cwd: clone, env, stdio: ['ignore', 'ignore', 'pipe'] });
  const logs: LogLine[] = [];
  const waiters: Array<{ msg: string; resolve: (line: LogLine) => void }> = [];
  const buffer = { text: '' };
  child.stderr?.on('data', (chunk: Buffer) =>
    parseLines(buffer, chunk, logs, (line) => {
      for (const waiter of waiters.filter((entry) => entry.msg === line.msg)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }),
  );
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

  function waitForLog(msg: string, waitMs = DEFAULT_START_TIMEOUT_MS): Promise<LogLine> {
    const seen = logs.find((line) => line.msg === msg);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${msg}" log line within ${waitMs} ms; logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`)), waitMs);
      waiters.push({ msg, resolve: (line) => {
        clearTimeout(timer);
        resolve(line);
      } });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`broker exited (${code}) before "${msg}"; logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`));
      });
    });
  }

  let listening: LogLine;
  try {
    listening = await waitForLog('broker listening', timeoutMs);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const port = Number(new URL(String(listening.url)).port);
  return {
    child,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    instanceId: String(listening.instanceId),
    logs,
    waitForLog,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const sent = Date.now();
      if (child.exitCode === null) child.kill(signal);
      const code = await exited;
      return { code, ms: Date.now() - sent };
    },
  };
}
