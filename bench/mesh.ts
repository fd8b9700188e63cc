// Seeding a benchmark mesh through the broker's own membership path: the owner creates
// the mesh and signs one invite, and every member joins with a key of its own.

import { generateKeyPair } from '../lib/crypto.ts';
import type { SigningKeyPair } from '../lib/crypto.ts';
import { createInvite, encodeInvite } from '../lib/invite.ts';
import { callBroker } from '../lib/broker-client.ts';

const INVITE_LIFETIME_SECONDS = 3600;
const JOIN_CONCURRENCY = 16;

interface BenchMesh { meshId: string; members: SigningKeyPair[] }

export async function seedMesh(brokerUrl: string, count: number, label: string): Promise<BenchMesh> {
  const owner = generateKeyPair();
  const created = await callBroker({ brokerUrl, method: 'POST', path: '/mesh/create', identity: owner, body: { name: label, ownerName: 'owner' } });
  const meshId = String(created.body.meshId);
  const invite = createInvite({
    meshId, meshName: label, brokerUrl, role: 'member',
    expiresAt: Math.floor(Date.now() / 1000) + INVITE_LIFETIME_SECONDS, maxUses: Math.max(1, count),
  }, owner.secretKey);
  const token = encodeInvite(invite);
  await callBroker({ brokerUrl, method: 'POST', path: '/mesh/invite', identity: owner, meshId, body: { token } });
  const members = [owner];
  const joiners = Array.from({ length: count - 1 }, () => generateKeyPair());
  for (let start = 0; start < joiners.length; start += JOIN_CONCURRENCY) {
    await Promise.all(joiners.slice(start, start + JOIN_CONCURRENCY).map((member, index) =>
      callBroker({ brokerUrl, method: 'POST', path: '/mesh/join', identity: member, body: { token, name: `peer${start + index + 1}` } })));
  }
  members.push(...joiners);
  return { meshId, members };
}
