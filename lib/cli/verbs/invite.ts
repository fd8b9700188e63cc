// `claudemesh invite`: sign an invite with this member's key and register it with the
// broker (owners and admins only; only owners invite admins). `--revoke` takes one back.

import { readConfig } from '../../client-config.ts';
import { createInvite, decodeInvite, encodeInvite, INVITE_PREFIX, isInviteRole, MAX_INVITE_LIFETIME_SECONDS, MAX_INVITE_USES, NONCE_PATTERN } from '../../invite.ts';
import { parseCount, parseDuration, stringOption, usageError } from '../args.ts';
import type { ParsedArgs } from '../args.ts';
import { callBroker } from '../../broker-client.ts';
import { printJson } from '../output.ts';
import { selectMesh } from '../../select.ts';
import { signingIdentity } from '../verb.ts';
import type { CliContext, Verb } from '../verb.ts';

const DEFAULT_ROLE = 'member';
const DEFAULT_EXPIRES = '7d';
const DEFAULT_USES = '1';
const SECONDS_PER_DAY = 86_400;

async function revoke(context: CliContext, args: ParsedArgs, wanted: string): Promise<void> {
  // Accept the id the invite verb printed, or the whole token.
  const inviteId = wanted.startsWith(INVITE_PREFIX) ? decodeInvite(wanted).nonce : wanted;
  if (!NONCE_PATTERN.test(inviteId)) throw usageError('invite', `--revoke takes an invite id or token, received ${JSON.stringify(wanted.slice(0, 40))}`);
  const mesh = selectMesh(await readConfig(context.home), stringOption(args.values, 'mesh'));
  const answer = await callBroker({
    brokerUrl: mesh.brokerUrl,
    method: 'POST',
    path: '/mesh/invite/revoke',
    identity: signingIdentity(mesh),
    meshId: mesh.meshId,
    body: { inviteId },
  });
  if (args.values.json === true) {
    printJson(context, { meshId: mesh.meshId, inviteId, revokedAt: answer.body.revokedAt });
    return;
  }
  context.stdout(`revoked invite ${inviteId} of mesh ${JSON.stringify(mesh.name)}\n`);
}

export const inviteVerb: Verb = {
  name: 'invite',
  summary: 'sign an invite token for someone to join your mesh',
  help: `usage: claudemesh invite [--role member|admin] [--expires 7d] [--uses 1] [--mesh M] [--json]
       claudemesh invite --revoke ID [--mesh M]

Sign an invite with your key and register it with the broker (owners and admins; only the
owner may invite admins). Prints one token on stdout: hand it to whoever should join, who
runs claudemesh join TOKEN. Details go to stderr, so TOKEN=$(claudemesh invite) works.

options:
  --role ROLE     member (default) or admin
  --expires D     lifetime: a number with s, m, h or d (default ${DEFAULT_EXPIRES}, at most ${MAX_INVITE_LIFETIME_SECONDS / SECONDS_PER_DAY}d)
  --uses N        how many people may join with it (default ${DEFAULT_USES}, at most ${MAX_INVITE_USES})
  --mesh M        mesh name or id (needed when you are in more than one)
  --revoke ID     revoke an invite by the id printed when it was made (or its token)
  --json          print the result as JSON
`,
  options: {
    role: { type: 'string' },
    expires: { type: 'string' },
    uses: { type: 'string' },
    mesh: { type: 'string' },
    revoke: { type: 'string' },
  },
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    const revokeId = stringOption(args.values, 'revoke');
    if (revokeId !== undefined) return revoke(context, args, revokeId);

    const role = stringOption(args.values, 'role') ?? DEFAULT_ROLE;
    if (!isInviteRole(role)) throw usageError('invite', `--role must be member or admin, received ${JSON.stringify(role)}`);
    const expiresText = stringOption(args.values, 'expires') ?? DEFAULT_EXPIRES;
    const lifetime = parseDuration(expiresText);
    if (lifetime === undefined || lifetime > MAX_INVITE_LIFETIME_SECONDS) {
      throw usageError('invite', `--expires must be like 90s, 30m, 12h or 7d and at most ${MAX_INVITE_LIFETIME_SECONDS / SECONDS_PER_DAY}d, received ${JSON.stringify(expiresText)}`);
    }
    const usesText = stringOption(args.values, 'uses') ?? DEFAULT_USES;
    const maxUses = parseCount(usesText, 1, MAX_INVITE_USES);
    if (maxUses === undefined) throw usageError('invite', `--uses must be a whole number from 1 to ${MAX_INVITE_USES}, received ${JSON.stringify(usesText)}`);

    const mesh = selectMesh(await readConfig(context.home), stringOption(args.values, 'mesh'));
    const identity = signingIdentity(mesh);
    const invite = createInvite(
      { meshId: mesh.meshId, meshName: mesh.name, brokerUrl: mesh.brokerUrl, role, expiresAt: Math.floor(context.now() / 1000) + lifetime, maxUses },
      identity.secretKey,
    );
    const token = encodeInvite(invite);
    await callBroker({ brokerUrl: mesh.brokerUrl, method: 'POST', path: '/mesh/invite', identity, meshId: mesh.meshId, body: { token } });
    const expiresAt = new Date(invite.expiresAt * 1000).toISOString();
    if (args.values.json === true) {
      printJson(context, { token, inviteId: invite.nonce, meshId: mesh.meshId, meshName: mesh.name, brokerUrl: mesh.brokerUrl, role, maxUses, expiresAt });
      return;
    }
    context.stdout(`${token}\n`);
    context.stderr(
      `invite to mesh ${JSON.stringify(mesh.name)} as ${role}, ${maxUses} use${maxUses === 1 ? '' : 's'}, expires ${expiresAt}\n` +
        `they run: claudemesh join <token>    revoke: claudemesh invite --revoke ${invite.nonce}\n`,
    );
  },
};
