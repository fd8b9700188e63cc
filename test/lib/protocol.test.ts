import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { groupMatches, parseClientFrame } from '../../lib/protocol.ts';

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
