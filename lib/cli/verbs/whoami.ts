// `claudemesh whoami`: who this machine is in each mesh — name, role, key, broker, and the
// membership as the broker last stated it — and, inside a Claude session, that session. From
// the config and the daemon's kept state; never a secret, never the network.

import { readConfig } from '../../client-config.ts';
import { printJson, formatTable, EXIT_CHECK_FAILED } from '../output.ts';
import { lastMemberships, membershipWord } from '../memberships.ts';
import { visible } from '../render.ts';
import type { Verb } from '../verb.ts';
import { askDaemon, inSession } from './daemon-access.ts';

export const whoamiVerb: Verb = {
  name: 'whoami',
  summary: 'your identity in each mesh (and in this Claude session); never a secret',
  help: `usage: claudemesh whoami [--json]

Your member name, role, public key and broker in each mesh of $CLAUDEMESH_HOME/config.json,
with the membership as the broker last stated it (active, pending, removed, banned). Inside
a Claude session (CLAUDEMESH_SESSION_TOKEN_FILE set) also the session: its name, mesh and
key. Secret keys are never printed. Exits 1 when this machine is in no mesh.
`,
  options: {},
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    const config = await readConfig(context.home);
    const memberships = await lastMemberships(context.home, config.meshes);
    const meshes = config.meshes.map((mesh) => ({
      mesh: mesh.name, meshId: mesh.meshId, name: mesh.memberName, role: mesh.role, key: mesh.publicKey, broker: mesh.brokerUrl,
      membership: membershipWord(mesh, memberships.get(mesh.meshId)),
    }));
    const session = inSession(context) ? ((await askDaemon(context, 'GET', '/v1/sessions/me')).body.session as Record<string, unknown>) : null;
    if (args.values.json === true) printJson(context, { home: context.home, meshes, session });
    else if (meshes.length === 0) context.stdout(`this machine is in no mesh (${context.home})\nstart one with claudemesh new NAME, or join with claudemesh join TOKEN\n`);
    else {
      context.stdout(formatTable(['MESH', 'NAME', 'ROLE', 'STATE', 'KEY', 'BROKER'], meshes.map((mesh) => [mesh.mesh, mesh.name, mesh.role, mesh.membership, mesh.key, mesh.broker])));
      if (session !== null) context.stdout(`session: ${visible(session.name)} in mesh ${visible(session.meshId)}, key ${visible(session.sessionKey)}\n`);
    }
    return meshes.length === 0 ? EXIT_CHECK_FAILED : 0;
  },
};
