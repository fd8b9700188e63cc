import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isoTimes, visible, visibleLines } from '../../../lib/cli/render.ts';

describe('rendering peer-supplied text and times', () => {
  it('makes every control character and bidi override visible, on one line', () => {
    assert.equal(visible('alice\u001b[2K\r\nX\u007f\u0085\u202e\u2066'), 'alice\\x1b[2K\\x0d\\x0aX\\x7f\\x85\\u202e\\u2066');
    assert.equal(visible('plain café ✓'), 'plain café ✓');
  });

  it('keeps newlines in a body, indenting every following line', () => {
    assert.equal(visibleLines('one\ntwo\u001b[1m', '  '), 'one\n  two\\x1b[1m');
  });

  it('turns epoch-ms time fields into ISO 8601, and leaves counts and durations alone', () => {
    const at = Date.UTC(2030, 0, 1);
    assert.deepEqual(isoTimes({ enqueuedAt: at, since: at, asOf: at, attempts: 3, uptimeMs: at, membership: { at }, rows: [{ doneAt: at, doneAtCount: 2 }], readAt: null }), {
      enqueuedAt: '2030-01-01T00:00:00.000Z', since: '2030-01-01T00:00:00.000Z', asOf: '2030-01-01T00:00:00.000Z', attempts: 3, uptimeMs: at, membership: { at: '2030-01-01T00:00:00.000Z' },
      rows: [{ doneAt: '2030-01-01T00:00:00.000Z', doneAtCount: 2 }], readAt: null,
    });
  });
});
