import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, encodePush, groupMatches, parseClientFrame, parseServerFrame, VISIBLE_ASCII_PATTERNS } from '../../lib/protocol.ts';

const KEY = 'a'.repeat(64);
const SIG = 'b'.repeat(128);
const envelope = { to: KEY, nonce: Buffer.alloc(24).toString('base64'), ciphertext: Buffer.alloc(20).toString('base64') };

describe('parseClientFrame', () => {
  it('reads a send with defaults', () => {
    const frame = parseClientFrame(JSON.stringify({ type: 'send', id: 'r1', clientMessageId: 'c-1', target: KEY, envelopes: [envelope] }));
    assert.deepEqual(frame, { type: 'send', id: 'r1', clientMessageId: 'c-1', target: KEY, priority: 'now', envelopes: [envelope], hops: 0 });
  });

  it('refuses names and prefixes as targets: the client resolves them', () => {
    for (const target of ['alice', KEY.slice(0, 10), '@', '@bad group', '#topic', KEY.toUpperCase()]) {
      assert.throws(() => parseClientFrame(JSON.stringify({ type: 'send', clientMessageId: 'c', target, envelopes: [envelope] })), { code: 'CM_ERR_BAD_FRAME' }, target);
    }
  });

  it('names the field and the value received', () => {
    assert.throws(() => parseClientFrame(JSON.stringify({ type: 'send', clientMessageId: 'c', target: '*', priority: 'urgent', envelopes: [envelope] })), (error: Error) => {
      assert.match(error.message, /"priority".*"urgent"/);
      return true;
    });
  });

  it('refuses non-objects, unknown types and oversized lists', () => {
    assert.throws(() => parseClientFrame('[]'), { code: 'CM_ERR_BAD_FRAME' });
    assert.throws(() => parseClientFrame('null'), { code: 'CM_ERR_BAD_FRAME' });
    assert.throws(() => parseClientFrame('{"type":"__proto__"}'), { code: 'CM_ERR_UNKNOWN_TYPE' });
    assert.throws(() => parseClientFrame(JSON.stringify({ type: 'client_ack', messageIds: [] })), { code: 'CM_ERR_BAD_FRAME' });
    const ids = Array.from({ length: 1001 }, () => '00000000-0000-4000-8000-000000000000');
    assert.throws(() => parseClientFrame(JSON.stringify({ type: 'client_ack', messageIds: ids })), { code: 'CM_ERR_BAD_FRAME' });
  });

  it('reads a session_hello with groups', () => {
    const frame = parseClientFrame(JSON.stringify({
      type: 'session_hello', meshId: 'mesh_12345678', memberKey: KEY, sessionKey: 'c'.repeat(64),
      attestation: { expiresAt: 5, signature: SIG }, timestamp: 4, signature: SIG, groups: ['a/b'],
    }));
    assert.equal(frame.type, 'session_hello');
    assert.throws(() => parseClientFrame(JSON.stringify({ type: 'session_hello', meshId: 'mesh_12345678', memberKey: KEY, sessionKey: KEY, attestation: 'x', timestamp: 1, signature: SIG })), { code: 'CM_ERR_BAD_FRAME' });
  });
});

describe('groupMatches', () => {
  it('matches a group and its descendants, not look-alikes', () => {
    assert.equal(groupMatches(['team/backend'], '@team'), true);
    assert.equal(groupMatches(['team'], '@team'), true);
    assert.equal(groupMatches(['teammates'], '@team'), false);
    assert.equal(groupMatches(['team'], '@team/backend'), false);
  });
});

describe('VISIBLE_ASCII_PATTERNS', () => {
  // Each pattern is trusted to refuse every control (the control search is skipped after it):
  // a sample it accepts, with a control put in at the start, the middle or the end, must fail.
  const SAMPLES = ['a'.repeat(64), 'a'.repeat(128), 'QUJD', 'team/backend', 'mesh_12345678', '01234567-89ab-cdef-0123-456789abcdef', 'cmid-1', 'abc_-XYZ', 'A'.repeat(22)];
  const CONTROL_CHARS = ['\u0000', '\t', '\n', '\u001f', '\u007f', '\u0085', '\u009f'];

  it('each refuses a control anywhere in a text it would otherwise accept', () => {
    for (const pattern of VISIBLE_ASCII_PATTERNS) {
      const accepted = SAMPLES.filter((sample) => pattern.test(sample));
      assert.ok(accepted.length > 0, `a sample for ${pattern}`);
      for (const sample of accepted) {
        for (const control of CONTROL_CHARS) {
          for (const placed of [control + sample, sample.slice(0, 2) + control + sample.slice(3), sample.slice(0, -1) + control]) {
            assert.equal(pattern.test(placed), false, `${pattern} accepted ${JSON.stringify(placed)}`);
          }
        }
      }
    }
  });

  it('still refuses controls in fields without such a pattern', () => {
    assert.throws(() => parseClientFrame(JSON.stringify({ type: 'set_summary', summary: 'bad\u0000nul' })), { code: 'CM_ERR_BAD_FRAME' });
    assert.throws(() => parseClientFrame(JSON.stringify({ type: 'send', clientMessageId: 'a', target: '*', envelopes: [{ to: 'a'.repeat(64), nonce: 'A'.repeat(32), ciphertext: 'QUJD\u0000' }] })), { code: 'CM_ERR_BAD_FRAME' });
  });
});

describe('encodePush', () => {
  it('parses to exactly what encodeFrame gives, whatever printable client message id it carries', () => {
    const base = {
      messageId: '01234567-89ab-cdef-0123-456789abcdef', meshId: 'mesh_12345678', senderKey: 'a'.repeat(64), senderMemberKey: 'b'.repeat(64),
      target: '@team/backend', priority: 'now' as const, envelope: { nonce: 'A'.repeat(32), ciphertext: 'q+/AZaz09==' }, createdAt: '2026-11-28T12:00:00.000Z', hops: 3,
    };
    for (const clientMessageId of ['plain-1', 'say"hi"', 'back\\slash\\', '{}[],:', '\\u0000', '~!@#$%^&*()']) {
      const fields = { ...base, clientMessageId };
      const text = encodePush(fields);
      assert.deepEqual(JSON.parse(text), JSON.parse(encodeFrame('push', fields)), clientMessageId);
      assert.deepEqual(parseServerFrame(text), { type: 'push', ...fields }, 'the daemon reads it as sent');
    }
    assert.equal(JSON.parse(encodePush({ ...base, target: '*', clientMessageId: 'x' })).target, '*');
  });
});

