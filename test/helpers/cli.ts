// Runs the real `claudemesh` command (`node cli.ts …`) as a child process.

import { spawn } from 'node:child_process';

const ROOT = new URL('../../', import.meta.url).pathname;

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed when the verb ran with --json and printed an object */
  json: Record<string, any>;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, cwd = ROOT): Promise<CliRun> {
  const childEnv: NodeJS.ProcessEnv = { ...env };
  delete childEnv.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, [`${ROOT}cli.ts`, ...args], { cwd, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => void (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => void (stderr += chunk.toString()));
  return new Promise((resolve) => {
    child.on('close', (code) => {
      const json = args.includes('--json') && stdout.startsWith('{') ? (JSON.parse(stdout) as Record<string, any>) : {};
      resolve({ code, stdout, stderr, json });
    });
  });
}
