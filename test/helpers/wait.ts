// Waiting in tests: poll a probe until it yields a value (anything but undefined or false),
// or fail naming what was awaited.

import { setTimeout as sleep } from 'node:timers/promises';

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_POLL_MS = 20;

interface WaitOptions {
  timeoutMs?: number;
  pollMs?: number;
}

export async function waitUntil<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, options: WaitOptions = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(options.pollMs ?? DEFAULT_POLL_MS);
  }
}
