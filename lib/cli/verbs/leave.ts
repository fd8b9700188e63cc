// `claudemesh leave <mesh>`: end the membership at the broker, then forget the identity
// here. `--local` only forgets it (a broker that is gone, or a membership already ended by
// a kick or ban). The owner cannot leave: the broker refuses, and the identity stays.

import { readConfig, updateConfig } from '../../client-config.ts';
import { callBroker } from '../../broker-client.ts';
import { BrokerRefusal } from '../../errors.ts';
import { printJson } from '../output.ts';
import { selectMesh } from '../../select.ts';
import { signingIdentity } from '../verb.ts';
import type { Verb } from '../verb.ts';

export const leaveVerb: Verb = {
  name: 'leave',
  argument: '<mesh>',
  summary: 'leave a mesh and forget its identity on this machine',
  help: `usage: claudemesh leave <mesh> [--local] [--json]

Tell the broker you leave <mesh> (a name or id from claudemesh list), then remove the mesh's
identity from this machine. Coming back needs a new invite. The owner cannot leave.

options:
  --local   only forget the identity here, without contacting the broker
  --json    print the result as JSON
`,
  options: { local: { type: 'boolean' } },
  positionals: { min: 1, max: 1 },
  async run(context, args) {
    const mesh = selectMesh(await readConfig(context.home), args.positionals[0]);
    const local = args.values.local === true;
    if (!local) {
      try {
        await callBroker({ brokerUrl: mesh.brokerUrl, method: 'POST', path: '/mesh/leave', identity: signingIdentity(mesh), meshId: mesh.meshId, body: {} });
      } catch (error) {
        if (error instanceof BrokerRefusal && error.code === 'CM_ERR_FORBIDDEN' && mesh.role !== 'owner') {
          throw new BrokerRefusal(
            {
              code: error.code,
              message: error.message,
              hint: `if you were removed from the mesh, forget the identity with claudemesh leave ${JSON.stringify(mesh.name)} --local`,
            },
            error.status,
          );
        }
        throw error;
      }
    }
    await updateConfig(context.home, (config) => {
      config.meshes = config.meshes.filter((entry) => !(entry.meshId === mesh.meshId && entry.publicKey === mesh.publicKey));
    });
    if (args.values.json === true) {
      printJson(context, { meshId: mesh.meshId, name: mesh.name, left: !local, forgotten: true });
      return;
    }
    context.stdout(local ? `forgot mesh ${JSON.stringify(mesh.name)} on this machine (the broker was not told)\n` : `left mesh ${JSON.stringify(mesh.name)}\n`);
  },
};
