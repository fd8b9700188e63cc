// `claudemesh list`: the meshes this machine's user is in, from the client config and what
// the broker last said about each membership (kept by the daemon; no network), with broker
// and role. Secret keys are never printed, not even with --json.

import { configPath, readConfig } from '../../client-config.ts';
import { lastMemberships, membershipWord } from '../memberships.ts';
import { formatTable, printJson, shortKey } from '../output.ts';
import type { Verb } from '../verb.ts';

export const listVerb: Verb = {
  name: 'list',
  summary: 'the meshes you are in, with broker and role',
  help: `usage: claudemesh list [--json]

List the meshes in $CLAUDEMESH_HOME/config.json (default ~/.claudemesh): name, id, your role
and member name, and the broker. Reads the local config only. A "pending" mesh is one whose
join was not confirmed by the broker yet: run the same claudemesh join again. "removed" or
"banned" is what the broker said when it last closed the connection (kicked, left, banned):
join again with a new invite and the daemon reconnects by itself.

options:
  --json   print the list as JSON (never includes secret keys)
`,
  options: {},
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    const config = await readConfig(context.home);
    const memberships = await lastMemberships(context.home, config.meshes);
    if (args.values.json === true) {
      printJson(context, {
        meshes: config.meshes.map((mesh) => ({
          meshId: mesh.meshId,
          name: mesh.name,
          brokerUrl: mesh.brokerUrl,
          role: mesh.role,
          memberName: mesh.memberName,
          publicKey: mesh.publicKey,
          status: mesh.status,
          membership: membershipWord(mesh, memberships.get(mesh.meshId)),
          membershipSince: memberships.get(mesh.meshId)?.at ?? null,
        })),
      });
      return;
    }
    if (config.meshes.length === 0) {
      context.stdout(`no meshes in ${configPath(context.home)}\nstart one with claudemesh new NAME, or join with claudemesh join TOKEN\n`);
      return;
    }
    const rows = config.meshes.map((mesh) => [
      mesh.name,
      mesh.meshId,
      mesh.role,
      membershipWord(mesh, memberships.get(mesh.meshId)),
      mesh.memberName,
      shortKey(mesh.publicKey),
      mesh.brokerUrl,
    ]);
    context.stdout(formatTable(['MESH', 'ID', 'ROLE', 'STATE', 'AS', 'KEY', 'BROKER'], rows));
  },
};
