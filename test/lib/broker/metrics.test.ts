import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair } from '../../../lib/crypto.ts';
import { startTestBroker } from '../../helpers/broker.ts';
import type { TestBroker } from '../../helpers/broker.ts';
import { metricValue } from '../../helpers/http.ts';
import { lintExposition } from '../../helpers/prom-lint.ts';
import { seedMesh, TestPeer } from '../../helpers/peer.ts';

describe('broker metrics move with the traffic', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker('metrics', { queueDepthIntervalMs: 20 });
  });
  after(() => t.close());

  it('counts connections, refusals, routed and rejected messages, and the queue depth', async () => {
    const mesh = await seedMesh(t.db.pool, 2);
    const [a, b] = mesh.members;
    const series = (name: string) => metricValue(t.baseUrl, name);
    const start = {
      total: await series('broker_connections_total'),
      unauthorized: await series('broker_connections_rejected_total{reason="unauthorized"}'),
      now: await series('broker_messages_routed_total{priority="now"}'),
      low: await series('broker_messages_routed_total{priority="low"}'),
      unknown: await series('broker_messages_rejected_total{reason="unknown_recipient"}'),
      loop: await series('broker_messages_rejected_total{reason="loop_guard"}'),
    };
    const sender = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: a! });
    const stranger = await TestPeer.connect(t.wsUrl, { meshId: mesh.meshId, member: generateKeyPair(), noWait: true });
    await stranger.closed;
    assert.equal(await series('broker_connections_active'), 1);
    assert.equal(await series('broker_connections_total'), start.total + 2);
    assert.equal(await series('broker_connections_rejected_total{reason="unauthorized"}'), start.unauthorized + 1);

    await sender.send(b!.publicKey, [b!.publicKey], 'one');
    await sender.send(b!.publicKey, [b!.publicKey], 'two', { priority: 'low' });
    const unknown = generateKeyPair().publicKey;
    assert.equal((await sender.send(unknown, [unknown], 'x')).code, 'CM_ERR_UNKNOWN_RECIPIENT');
    const looping = await sender.send(b!.publicKey, [b!.publicKey], 'again and again', { hops: 17 });
    assert.equal(looping.code, 'CM_ERR_LOOP_GUARD');
    assert.equal(await series('broker_messages_routed_total{priority="now"}'), start.now + 1);
    assert.equal(await series('broker_messages_routed_total{priority="low"}'), start.low + 1);
    assert.equal(await series('broker_messages_rejected_total{reason="unknown_recipient"}'), start.unknown + 1);
    assert.equal(await series('broker_messages_rejected_total{reason="loop_guard"}'), start.loop + 1);

    let depth = 0;
    for (let i = 0; i < 50 && depth < 2; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      depth = await series('broker_queue_depth');
    }
    assert.equal(depth, 2, 'two undelivered messages for the offline recipient');
    assert.deepEqual(lintExposition(await (await fetch(`${t.baseUrl}/metrics`)).text()), []);
    await sender.close();
  });
});
