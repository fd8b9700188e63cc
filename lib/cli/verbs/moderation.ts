// `kick`, `ban`, `unban`, `bans`: an owner or admin puts members out of the mesh. The peer
// is resolved here from the broker's member (or ban) list — by name or unique key prefix —
// and the broker receives the full key; it decides from the signing key whether the
// caller may (owners act on admins and members, admins on members).

import { readConfig } from '../../client-config.ts';
import type { MeshIdentity } from '../../client-config.ts';
import { stringOption } from '../args.ts';
import type { ParsedArgs } from '../args.ts';
import { callBroker } from '../../broker-client.ts';
import { formatTable, printJson, shortKey } from '../output.ts';
import { resolvePeer, selectMesh } from '../../select.ts';
import type { Peer } from '../../select.ts';
import { signingIdentity } from '../verb.ts';
import type { CliContext, Verb } from '../verb.ts';

const MESH_OPTION = { mesh: { type: 'string' } } as const;

function peersFrom(list: unknown): Peer[] {
  if (!Array.isArray(list)) return [];
  return list.flatMap((entry: unknown) => {
    const record = entry as { name?: unknown; key?: unknown } | null;
    return typeof record?.name === 'string' && typeof record.key === 'string' ? [{ name: record.name, key: record.key }] : [];
  });
}

async function get(mesh: MeshIdentity, path: '/mesh/members' | '/mesh/bans'): Promise<Record<string, unknown>> {
  const answer = await callBroker({ brokerUrl: mesh.brokerUrl, method: 'GET', path, identity: signingIdentity(mesh), meshId: mesh.meshId });
  return answer.body;
}

/** One moderation verb: resolve the peer from `listPath`, then POST its key to `actionPath`. */
function moderationVerb(spec: {
  name: 'kick' | 'ban' | 'unban';
  summary: string;
  description: string;
  listPath: '/mesh/members' | '/mesh/bans';
  listField: 'members' | 'bans';
  what: string;
  done: string;
}): Verb {
  return {
    name: spec.name,
    argument: '<peer>',
    summary: spec.summary,
    help: `usage: claudemesh ${spec.name} <peer> [--mesh M] [--json]

${spec.description}
<peer> is a member name, a unique key prefix (at least 4 hex characters) or a full key.
Owners and admins only: owners act on admins and members, admins on members.

options:
  --mesh M   mesh name or id (needed when you are in more than one)
  --json     print the result as JSON
`,
    options: MESH_OPTION,
    positionals: { min: 1, max: 1 },
    async run(context: CliContext, args: ParsedArgs) {
      const mesh = selectMesh(await readConfig(context.home), stringOption(args.values, 'mesh'));
      const list = await get(mesh, spec.listPath);
      const peer = resolvePeer(args.positionals[0] ?? '', peersFrom(list[spec.listField]), spec.what);
      const answer = await callBroker({
        brokerUrl: mesh.brokerUrl,
        method: 'POST',
        path: `/mesh/${spec.name}`,
        identity: signingIdentity(mesh),
        meshId: mesh.meshId,
        body: { key: peer.key },
      });
      const name = typeof answer.body.name === 'string' ? answer.body.name : peer.name;
      if (args.values.json === true) {
        printJson(context, { meshId: mesh.meshId, action: spec.name, name, key: peer.key, alreadyBanned: answer.body.alreadyBanned === true });
        return;
      }
      const already = answer.body.alreadyBanned === true ? ' (it already was)' : '';
      context.stdout(`${spec.done} ${JSON.stringify(name)} (${shortKey(peer.key)}) in mesh ${JSON.stringify(mesh.name)}${already}\n`);
    },
  };
}

export const kickVerb = moderationVerb({
  name: 'kick',
  summary: 'remove a member from a mesh (it may come back with a new invite)',
  description: 'Remove <peer> from the mesh: its connections close (4001) and it needs a new invite to come back.',
  listPath: '/mesh/members',
  listField: 'members',
  what: 'member',
  done: 'kicked',
});

export const banVerb = moderationVerb({
  name: 'ban',
  summary: 'remove a member and refuse it from now on',
  description: 'Remove <peer> and ban its key: its connections close (4002), its hellos fail and it\ncannot join again, not even with a valid invite, until unbanned.',
  listPath: '/mesh/members',
  listField: 'members',
  what: 'member',
  done: 'banned',
});

export const unbanVerb = moderationVerb({
  name: 'unban',
  summary: 'lift a ban (the key still needs a new invite to come back)',
  description: 'Lift the ban on <peer> (resolved from claudemesh bans). It is not let back in: it\nneeds a new invite.',
  listPath: '/mesh/bans',
  listField: 'bans',
  what: 'banned member',
  done: 'unbanned',
});

export const bansVerb: Verb = {
  name: 'bans',
  summary: 'the banned members of a mesh',
  help: `usage: claudemesh bans [--mesh M] [--json]

List the banned keys of the mesh, with who banned them and when. Owners and admins only.

options:
  --mesh M   mesh name or id (needed when you are in more than one)
  --json     print the list as JSON
`,
  options: MESH_OPTION,
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    const mesh = selectMesh(await readConfig(context.home), stringOption(args.values, 'mesh'));
    const body = await get(mesh, '/mesh/bans');
    const bans = Array.isArray(body.bans) ? (body.bans as Array<Record<string, unknown>>) : [];
    if (args.values.json === true) {
      printJson(context, { meshId: mesh.meshId, bans });
      return;
    }
    if (bans.length === 0) {
      context.stdout(`nobody is banned from mesh ${JSON.stringify(mesh.name)}\n`);
      return;
    }
    const text = (value: unknown) => (typeof value === 'string' ? value : '-');
    const rows = bans.map((ban) => [text(ban.name), text(ban.key).slice(0, 12), text(ban.role), text(ban.bannedAt), text(ban.bannedBy)]);
    context.stdout(formatTable(['NAME', 'KEY', 'ROLE', 'BANNED AT', 'BY'], rows));
  },
};
