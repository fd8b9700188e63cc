import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { watchConfig } from '../../daemon/config-watch.ts';
import { writeConfig } from '../../lib/client-config.ts';
import type { ClientConfig } from '../../lib/client-config.ts';
import { generateKeyPair } from '../../lib/crypto.ts';
import { waitUntil } from '../helpers/wait.ts';

const until = (check: () => boolean) => waitUntil('the config to be applied', check, { timeoutMs: 3_000, pollMs: 10 });

describe('watchConfig', () => {
  it('applies each rewritten config once the writes settle, and reports a broken one', async () => {
    const home = await mkdtemp(join(tmpdir(), 'cm-watch-'));
    const applied: ClientConfig[] = [];
    const errors: unknown[] = [];
    await writeConfig(home, { version: 1, meshes: [] });
    const watcher = watchConfig(home, async (config) => void applied.push(config), (error) => void errors.push(error), 20);
    try {
      const keys = generateKeyPair();
      await writeConfig(home, { version: 1, meshes: [{
        meshId: 'mesh-watch-01', name: 'team', brokerUrl: 'http://127.0.0.1:9', role: 'member', memberName: 'ann', publicKey: keys.publicKey,
        secretKey: keys.secretKey.toString('hex'), ownerPubkey: null, createdAt: new Date().toISOString(), status: 'active',
      }] });
      await until(() => applied.at(-1)?.meshes.length === 1);
      await writeFile(join(home, 'config.json'), '{ not json');
      await until(() => errors.length > 0);
      assert.equal((errors[0] as { code?: string }).code, 'CM_ERR_CLIENT_CONFIG');
      await writeFile(join(home, 'unrelated.txt'), 'x');
      await sleep(60);
      assert.equal(errors.length, 1, 'other files are ignored');
    } finally {
      watcher.close();
      await rm(home, { recursive: true, force: true });
    }
  });
});
