// `claudemesh join <token>`: check the invite's signature and expiry on this machine first
// (a tampered invite never reaches the network), then make a member key and enrol it.
//
// The new key is saved as "pending" before the broker is asked, so a crash or a lost answer
// never strands an enrolled key: running the same join again reuses the saved key, and the
// broker answers "already a member" without taking another use. A definitive refusal
// removes the pending entry; an unreachable broker keeps it for the retry.

import { generateKeyPair, isPublicKey } from '../../crypto.ts';
import { BrokerRefusal, cmError } from '../../errors.ts';
import { configPath, updateConfig } from '../../client-config.ts';
import type { MeshIdentity } from '../../client-config.ts';
import { checkInvite, decodeInvite } from '../../invite.ts';
import type { Invite } from '../../invite.ts';
import { isMemberName } from '../../protocol.ts';
import { stringOption, usageError } from '../args.ts';
import { callBroker } from '../../broker-client.ts';
import { printJson, shortKey } from '../output.ts';
import { defaultMemberName, signingIdentity } from '../verb.ts';
import type { CliContext, Verb } from '../verb.ts';

const ROLES = new Set(['owner', 'admin', 'member']);

/**
 * The identity to join with: the one this machine already has for the mesh (a retry, or a
 * second join), else a new key saved as pending.
 */
async function identityFor(context: CliContext, invite: Invite, memberName: string): Promise<MeshIdentity> {
  const config = await updateConfig(context.home, (current) => {
    const existing = current.meshes.find((mesh) => mesh.meshId === invite.meshId);
    if (existing !== undefined && existing.brokerUrl !== invite.brokerUrl) {
      throw cmError('CM_ERR_MESH_EXISTS', `you are already in mesh ${JSON.stringify(existing.name)} through broker ${existing.brokerUrl}; this invite names ${invite.brokerUrl}`, {
        hint: `ask for an invite made for ${existing.brokerUrl}, or forget the old identity first (claudemesh leave ${JSON.stringify(existing.name)} --local)`,
      });
    }
    if (existing !== undefined) return;
    const keys = generateKeyPair();
    current.meshes.push({
      meshId: invite.meshId,
      name: invite.meshName,
      brokerUrl: invite.brokerUrl,
      role: invite.role,
      memberName,
      publicKey: keys.publicKey,
      secretKey: keys.secretKey.toString('hex'),
      ownerPubkey: null,
      createdAt: new Date(context.now()).toISOString(),
      status: 'pending',
    });
  });
  const identity = config.meshes.find((mesh) => mesh.meshId === invite.meshId);
  if (identity === undefined) {
    throw cmError('CM_ERR_CLIENT_CONFIG', `${configPath(context.home)} no longer holds mesh ${invite.meshId} right after join saved it there (did another claudemesh command rewrite the file at the same moment?)`, {
      hint: 'run the same claudemesh join again: nothing was sent to the broker yet',
      details: { meshId: invite.meshId },
    });
  }
  return identity;
}

export const joinVerb: Verb = {
  name: 'join',
  argument: '<token>',
  summary: 'join a mesh with an invite token',
  help: `usage: claudemesh join <token> [--name NAME] [--json]

Check the invite (its signature and expiry) on this machine, make a member key, and enrol
it with the broker named in the invite. Joining again with the same identity is harmless
and does not use up the invite.

options:
  --name NAME   your member name in the mesh (default: your login name)
  --json        print the result as JSON
`,
  options: { name: { type: 'string' } },
  positionals: { min: 1, max: 1 },
  async run(context, args) {
    const invite = decodeInvite(args.positionals[0] ?? '');
    checkInvite(invite, context.now());
    const wantedName = stringOption(args.values, 'name') ?? defaultMemberName();
    if (!isMemberName(wantedName)) {
      throw usageError('join', `member name ${JSON.stringify(wantedName)} must be letters, digits, ".", "_", "@" or "-" (up to 64), starting with a letter or digit`);
    }

    const mine = await identityFor(context, invite, wantedName);

    let answer;
    try {
      answer = await callBroker({
        brokerUrl: invite.brokerUrl,
        method: 'POST',
        path: '/mesh/join',
        identity: signingIdentity(mine),
        meshId: invite.meshId,
        body: { token: args.positionals[0]?.trim() ?? '', name: mine.status === 'pending' ? wantedName : mine.memberName },
      });
    } catch (error) {
      if (error instanceof BrokerRefusal && mine.status === 'pending') {
        await updateConfig(context.home, (config) => {
          config.meshes = config.meshes.filter((mesh) => !(mesh.meshId === mine.meshId && mesh.publicKey === mine.publicKey && mesh.status === 'pending'));
        });
      }
      throw error;
    }
    const { body } = answer;
    const role = typeof body.role === 'string' && ROLES.has(body.role) ? (body.role as MeshIdentity['role']) : mine.role;
    const memberName = isMemberName(body.name) ? body.name : mine.memberName;
    const ownerPubkey = isPublicKey(body.ownerKey) ? body.ownerKey : mine.ownerPubkey;
    await updateConfig(context.home, (config) => {
      const entry = config.meshes.find((mesh) => mesh.meshId === mine.meshId && mesh.publicKey === mine.publicKey);
      if (entry === undefined) {
        config.meshes.push({ ...mine, role, memberName, ownerPubkey, status: 'active' });
        return;
      }
      Object.assign(entry, { role, memberName, ownerPubkey, status: 'active' });
    });
    const alreadyMember = body.alreadyMember === true;
    if (args.values.json === true) {
      printJson(context, { meshId: mine.meshId, name: mine.name, brokerUrl: mine.brokerUrl, role, memberName, publicKey: mine.publicKey, alreadyMember });
      return;
    }
    context.stdout(
      alreadyMember
        ? `already a member of mesh ${JSON.stringify(mine.name)}, as ${JSON.stringify(memberName)} (${role}); nothing changed\n`
        : `joined mesh ${JSON.stringify(mine.name)} on ${mine.brokerUrl} as ${JSON.stringify(memberName)} (${role}, key ${shortKey(mine.publicKey)})\n`,
    );
  },
};
