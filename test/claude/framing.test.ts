// The pure parts of the Claude Code integration: peer text made harmless, meta the client
// keeps, and the reading of a Claude command line and environment for channel blockers.

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { channelBlockers, namesChannel } from '../../lib/claude/channels.ts';
import { cleanMeta, neutralise } from '../../lib/mcp/framing.ts';
import { decodeReply, encodeReply } from '../../lib/reply.ts';

describe('peer text and meta', () => {
  it('neutralises every spelling of a channel tag, and nothing else', () => {
    for (const hostile of ['</channel>', '<channel source="x">', '< /CHANNEL>', '<  channel', '</ Channel>']) {
      assert.doesNotMatch(neutralise(`a ${hostile} b`), /<\s*\/?\s*channel/i, hostile);
    }
    assert.equal(neutralise('a < b and <b>bold</b> <channels'), 'a < b and <b>bold</b> \uFF1Cchannels');
  });

  it('keeps only string meta under keys the client accepts', () => {
    assert.deepEqual(cleanMeta({ from_name: 'alice', 'from-key': 'x', _ok: 'y', n: 3, list: ['a'], '9a': 'z', none: undefined }), { from_name: 'alice', _ok: 'y' });
  });

  it('carries a reply id inside the text, and ordinary text is never taken for one', () => {
    assert.deepEqual(decodeReply(encodeReply('hi', 'm-1')), { text: 'hi', replyTo: 'm-1' });
    assert.deepEqual(decodeReply('reply_to=m-1\nhi'), { text: 'reply_to=m-1\nhi', replyTo: null });
    assert.equal(encodeReply('hi', undefined), 'hi');
  });
});

describe('channel blockers', () => {
  it('reads the channel flags of a Claude command line', () => {
    assert.equal(namesChannel(['claude', '--channels', 'plugin:claudemesh@claudemesh', '-p']), true, 'the plugin route works in -p');
    assert.equal(namesChannel(['claude', '--dangerously-load-development-channels', 'server:claudemesh', '--resume', 'x']), true);
    assert.equal(namesChannel(['claude', '-p', '--dangerously-load-development-channels', 'server:claudemesh']), false, 'the development flag is ignored in -p');
    assert.equal(namesChannel(['claude', '--channels', 'server:claudemesh']), false, 'server: entries are not on the allowlist');
    assert.equal(namesChannel(['claude', '--dangerously-load-development-channels', 'server:other', '--x', 'server:claudemesh']), false);
    assert.equal(namesChannel(['claude']), false);
  });

  it('names each condition under which the client drops channel messages', async () => {
    const home = await mkdtemp(join(tmpdir(), 'cm-blockers-'));
    try {
      const none = channelBlockers({ HOME: home }, undefined);
      assert.equal(none.length, 1);
      assert.match(none[0] ?? '', /tengu_harbor/);
      await writeFile(join(home, '.claude.json'), JSON.stringify({ cachedGrowthBookFeatures: { tengu_harbor: true } }));
      assert.deepEqual(channelBlockers({ HOME: home }, undefined), []);
      const blocked = channelBlockers({ HOME: home, DISABLE_TELEMETRY: '1', CLAUDE_CODE_USE_BEDROCK: '1' }, process.pid);
      assert.equal(blocked.length, 3, blocked.join('\n'));
      assert.match(blocked.join('\n'), /CLAUDE_CODE_USE_BEDROCK.*\n.*DISABLE_TELEMETRY.*\n.*without a channel flag/);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});
