import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkSendInput } from '../../daemon/send-input.ts';

function refusal(input: Parameters<typeof checkSendInput>[0]): string {
  try {
    checkSendInput(input);
  } catch (error) {
    const { code, message } = error as { code: string; message: string };
    return `${code}: ${message}`;
  }
  return 'accepted';
}

describe('checkSendInput', () => {
  it('defaults the priority to now and makes a client message id when none is given', () => {
    const checked = checkSendInput({ to: 'bob', text: 'hi' });
    assert.equal(checked.priority, 'now');
    assert.match(checked.clientMessageId, /^[0-9a-f-]{36}$/);
    assert.deepEqual(checkSendInput({ to: 'bob', text: 'hi', priority: 'low', clientMessageId: 'mine-1' }), { priority: 'low', clientMessageId: 'mine-1' });
  });

  it('refuses each bad field, naming it and the value received', () => {
    assert.match(refusal({ to: 'bob', text: 'hi', priority: 'urgent' }), /^CM_ERR_BAD_REQUEST: priority must be now, next or low, received "urgent"$/);
    assert.match(refusal({ to: '', text: 'hi' }), /^CM_ERR_BAD_REQUEST: say whom to send to/);
    assert.match(refusal({ to: 'bob', text: '' }), /^CM_ERR_BAD_REQUEST: text must be 1 to 32768 bytes, received 0$/);
    assert.match(refusal({ to: 'bob', text: 'é'.repeat(16_385) }), /received 32770$/);
    assert.match(refusal({ to: 'bob', text: 'hi', clientMessageId: 'has space' }), /^CM_ERR_BAD_REQUEST: clientMessageId must be .+, received "has space"$/);
  });
});
