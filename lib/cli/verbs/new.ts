// `claudemesh new <name>`: make an owner key on this machine and register a mesh with the
// broker, which keeps only the public key. Then save the identity in the client config.

import { generateKeyPair } from '../../crypto.ts';
import { cmError } from '../../errors.ts';
import { updateConfig } from '../../client-config.ts';
import { isMemberName, isMeshId, isMeshName } from '../../protocol.ts';
import { stringOption, usageError } from '../args.ts';
import { callBroker } from '../../broker-client.ts';
import { printJson, shortKey } from '../output.ts';
import { brokerUrlFrom, DEFAULT_BROKER_URL, defaultMemberName } from '../verb.ts';
import type { Verb } from '../verb.ts';

export const newVerb: Verb = {
  name: 'new',
  argument: '<name>',
  summary: 'create a mesh on a broker; you become its owner',
  help: `usage: claudemesh new <name> [--broker URL] [--name YOU] [--token TOKEN] [--json]

Create a mesh called <name>. The owner key is made on this machine and saved in
$CLAUDEMESH_HOME/config.json (default ~/.claudemesh); the broker only learns its public key.

options:
  --broker URL    broker address (default: $CLAUDEMESH_BROKER, else ${DEFAULT_BROKER_URL})
  --name YOU      your member name in the mesh (default: your login name)
  --token TOKEN   operator token, if the broker requires one (or $CLAUDEMESH_BROKER_TOKEN)
  --json          print the result as JSON
`,
  options: { broker: { type: 'string' }, name: { type: 'string' }, token: { type: 'string' } },
  positionals: { min: 1, max: 1 },
  async run(context, args) {
    const name = args.positionals[0] ?? '';
    if (!isMeshName(name)) throw usageError('new', `mesh name ${JSON.stringify(name)} must be 1–64 characters, without control characters or surrounding spaces`);
    const brokerUrl = brokerUrlFrom('new', stringOption(args.values, 'broker'), context.env);
    const memberName = stringOption(args.values, 'name') ?? defaultMemberName();
    if (!isMemberName(memberName)) {
      throw usageError('new', `member name ${JSON.stringify(memberName)} must be letters, digits, ".", "_", "@" or "-" (up to 64), starting with a letter or digit`);
    }
    const token = stringOption(args.values, 'token') ?? context.env.CLAUDEMESH_BROKER_TOKEN;
    const refuseClash = (meshes: ReadonlyArray<{ name: string }>) => {
      if (meshes.some((mesh) => mesh.name === name)) throw cmError('CM_ERR_MESH_EXISTS', `you already have a mesh called ${JSON.stringify(name)}`);
    };
    // Check before contacting anyone that the config is writable and the name is free,
    // so a mesh is not created at the broker only to be lost here.
    await updateConfig(context.home, (config) => refuseClash(config.meshes));

    const keys = generateKeyPair();
    const answer = await callBroker({
      brokerUrl,
      method: 'POST',
      path: '/mesh/create',
      identity: keys,
      body: { name, ownerName: memberName },
      ...(token === undefined || token === '' ? {} : { headers: { authorization: `Bearer ${token}` } }),
    });
    const meshId = answer.body.meshId;
    if (!isMeshId(meshId)) throw cmError('CM_ERR_BROKER_UNREACHABLE', `broker ${brokerUrl} answered /mesh/create without a valid mesh id`);
    await updateConfig(context.home, (config) => {
      refuseClash(config.meshes);
      config.meshes.push({
        meshId,
        name,
        brokerUrl,
        role: 'owner',
        memberName,
        publicKey: keys.publicKey,
        secretKey: keys.secretKey.toString('hex'),
        ownerPubkey: keys.publicKey,
        createdAt: new Date(context.now()).toISOString(),
        status: 'active',
      });
    });
    if (args.values.json === true) {
      printJson(context, { meshId, name, brokerUrl, role: 'owner', memberName, publicKey: keys.publicKey });
      return;
    }
    context.stdout(
      `created mesh ${JSON.stringify(name)} (id ${meshId}) on ${brokerUrl}\n` +
        `you are its owner, as ${JSON.stringify(memberName)} (key ${shortKey(keys.publicKey)})\n` +
        `next: claudemesh invite   (prints a token to hand to whoever should join)\n`,
    );
  },
};
