// The daemon checks every registered session's process every few seconds, on its one event
// loop, which also answers every IPC request. A check that runs a program per session (ps)
// froze the IPC for seconds with many sessions. Ours reads the kernel's process table: this
// test holds a full registry (MAX_SESSIONS live sessions) to a bound a hundred times above
// what it takes here (a few ms), which a process per session would blow at once.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MAX_SESSIONS, sessionAlive, SessionRegistry } from '../../daemon/sessions.ts';

const FREEZE_BOUND_MS = 500;

describe('session liveness', () => {
  it('checks a full registry of live sessions without holding the event loop', { skip: process.platform !== 'linux' && 'reads /proc' }, async (test) => {
    const dir = await mkdtemp(join(tmpdir(), 'cm-alive-'));
    try {
      const registry = new SessionRegistry(dir);
      for (let index = 0; index < MAX_SESSIONS; index += 1) {
        registry.register({ sessionId: `s${index}`, meshId: 'mesh-0001', name: `w${index}`, pid: process.pid, cwd: null, groups: [] });
      }
      const records = registry.list();
      assert.equal(records.length, MAX_SESSIONS);
      const started = performance.now();
      const alive = records.filter(sessionAlive).length;
      const took = performance.now() - started;
      assert.equal(alive, MAX_SESSIONS);
      assert.ok(took < FREEZE_BOUND_MS, `${MAX_SESSIONS} checks took ${took.toFixed(1)} ms`);
      test.diagnostic(`${MAX_SESSIONS} session checks in ${took.toFixed(1)} ms`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
