import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { base64Bytes, checkRecipients, fingerprintOf, messageIdOf } from '../../../lib/broker/send-checks.ts';
import type { Peer } from '../../../lib/broker/hub.ts';
import type { Roster } from '../../../lib/broker/presence.ts';
import type { MemberView, PeerView, SendFrame } from '../../../lib/protocol.ts';

const key = (fill: string): string => fill.repeat(64);
const [ALICE, BOB, CAROL, BOB_SESSION, STRANGER] = [key('a'), key('b'), key('c'), key('d'), key('e')];
const MESH = 'mesh-checks';

function roster(): Roster {
  const members = new Map<string, MemberView>();
  for (const k of [ALICE, BOB, CAROL]) members.set(k, { key: k } as MemberView);
  const peers = new Map<string, PeerView>();
  peers.set(BOB_SESSION, { key: BOB_SESSION, groups: ['ops'] } as PeerView);
  peers.set(CAROL, { key: CAROL, groups: ['ops/oncall'] } as PeerView);
  return { members, peers };
}
const alice = { meshId: MESH, key: ALICE, memberKey: ALICE } as Peer;
const envelope = (to: string, ciphertext = 'AAAA') => ({ to, nonce: 'A'.repeat(32), ciphertext });
const frame = (target: string, envelopes: SendFrame['envelopes'], priority: SendFrame['priority'] = 'now'): SendFrame =>
  ({ type: 'send', clientMessageId: 'c1', target, priority, hops: 0, envelopes }) as SendFrame;

describe('send checks', () => {
  it('derives the same uuid-shaped message id from the same sender and client id, and another from any other', () => {
    const id = messageIdOf(MESH, ALICE, 'c1');
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(messageIdOf(MESH, ALICE, 'c1'), id);
    assert.notEqual(messageIdOf(MESH, ALICE, 'c2'), id);
    assert.notEqual(messageIdOf(MESH, BOB, 'c1'), id);
    assert.notEqual(messageIdOf('mesh-other', ALICE, 'c1'), id);
  });

  it('fingerprints the request, not the order of its envelopes', () => {
    const one = fingerprintOf(frame('*', [envelope(BOB, 'AAAA'), envelope(CAROL, 'BBBB')]));
    assert.equal(fingerprintOf(frame('*', [envelope(CAROL, 'BBBB'), envelope(BOB, 'AAAA')])), one);
    assert.notEqual(fingerprintOf(frame('*', [envelope(BOB, 'AAAA'), envelope(CAROL, 'CCCC')])), one);
    assert.notEqual(fingerprintOf(frame('*', [envelope(BOB, 'AAAA'), envelope(CAROL, 'BBBB')], 'low')), one);
  });

  it('fingerprints the JSON text of [target, priority, envelopes in key order], one envelope or several', () => {
    // rows stored earlier hold this hash: the rule may not change
    const rule = (f: SendFrame) => createHash('sha256')
      .update(JSON.stringify([f.target, f.priority, [...f.envelopes].sort((x, y) => x.to.localeCompare(y.to)).map((e) => [e.to, e.nonce, e.ciphertext])]))
      .digest('hex');
    const single = frame(BOB, [envelope(BOB, 'QUJD')]);
    assert.equal(fingerprintOf(single), rule(single));
    const several = frame('*', [envelope(CAROL, 'QkJC'), envelope(BOB, 'QUJD')], 'next');
    assert.equal(fingerprintOf(several), rule(several));
  });

  it('counts the bytes a base64 text decodes to, and refuses a length that is not whole quads', () => {
    assert.equal(base64Bytes('A'.repeat(32)), 24);
    assert.equal(base64Bytes('QUI='), 2);
    assert.equal(base64Bytes('QQ=='), 1);
    assert.equal(base64Bytes('QUJ'), -1);
  });

  it('takes a direct message to a member or a live session, and nothing else', () => {
    const r = roster();
    assert.equal(checkRecipients(r, alice, BOB, [envelope(BOB)]), undefined);
    assert.equal(checkRecipients(r, alice, BOB_SESSION, [envelope(BOB_SESSION)]), undefined);
    assert.equal(checkRecipients(r, alice, STRANGER, [envelope(STRANGER)])?.code, 'CM_ERR_UNKNOWN_RECIPIENT');
    assert.equal(checkRecipients(r, alice, ALICE, [envelope(ALICE)])?.code, 'CM_ERR_UNKNOWN_RECIPIENT', 'nobody sends to itself');
    assert.equal(checkRecipients(r, alice, BOB, [envelope(CAROL)])?.code, 'CM_ERR_UNKNOWN_RECIPIENT', 'an envelope for another key');
    assert.equal(checkRecipients(r, alice, BOB, [envelope(BOB), envelope(CAROL)])?.code, 'CM_ERR_UNKNOWN_RECIPIENT');
  });

  it('needs one envelope per member for a broadcast, and lets live sessions in', () => {
    const r = roster();
    assert.equal(checkRecipients(r, alice, '*', [envelope(BOB), envelope(CAROL)]), undefined);
    assert.equal(checkRecipients(r, alice, '*', [envelope(BOB), envelope(CAROL), envelope(BOB_SESSION)]), undefined);
    const missing = checkRecipients(r, alice, '*', [envelope(BOB)]);
    assert.equal(missing?.code, 'CM_ERR_ENVELOPES_MISMATCH');
    assert.deepEqual((missing?.details as { missing: string[] }).missing, [CAROL]);
    assert.equal(checkRecipients(r, alice, '*', [envelope(BOB), envelope(CAROL), envelope(CAROL)])?.code, 'CM_ERR_ENVELOPES_MISMATCH', 'a repeated envelope');
  });

  it('reaches a group and its subgroups, and refuses a group nobody is in', () => {
    const r = roster();
    assert.equal(checkRecipients(r, alice, '@ops', [envelope(BOB_SESSION), envelope(CAROL)]), undefined);
    assert.equal(checkRecipients(r, alice, '@ops', [envelope(BOB_SESSION)])?.code, 'CM_ERR_ENVELOPES_MISMATCH');
    assert.equal(checkRecipients(r, alice, '@nobody', [])?.code, 'CM_ERR_UNKNOWN_RECIPIENT');
  });
});
