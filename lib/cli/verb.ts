// What a CLI verb is, and what every verb gets: the environment, the claudemesh home, a
// clock, and where to print. Verbs are plain objects (one file per group of verbs) listed in
// lib/cli/main.ts; their `help` text is what `claudemesh <verb> --help` prints.

import { userInfo } from 'node:os';
import type { ParseArgsOptionsConfig } from 'node:util';
import type { MeshIdentity } from '../client-config.ts';
import { normaliseBrokerUrl } from '../invite.ts';
import { toMemberName } from '../protocol.ts';
import type { ParsedArgs } from './args.ts';
import { usageError } from './args.ts';
import type { SigningIdentity } from '../broker-client.ts';
import type { Io } from './output.ts';

export const DEFAULT_BROKER_URL = 'http://127.0.0.1:7900';
const FALLBACK_MEMBER_NAME = 'member';

export interface CliContext extends Io {
  env: Readonly<Record<string, string | undefined>>;
  /** the claudemesh home directory (CLAUDEMESH_HOME or ~/.claudemesh) */
  home: string;
  now(): number;
}

export interface Verb {
  name: string;
  /** the positional argument as `claudemesh --help` shows it, e.g. "<token>" */
  argument?: string;
  /** one line for `claudemesh --help` */
  summary: string;
  /** the whole text of `claudemesh <verb> --help` */
  help: string;
  options: ParseArgsOptionsConfig;
  positionals: { min: number; max: number };
  /** resolves with the exit code (0 when it resolves with nothing); expected failures throw */
  run(context: CliContext, args: ParsedArgs): Promise<number | void>;
}

export function signingIdentity(mesh: MeshIdentity): SigningIdentity {
  return { publicKey: mesh.publicKey, secretKey: Buffer.from(mesh.secretKey, 'hex') };
}

/** The login name made into a member name ("member" when it cannot be). */
export function defaultMemberName(): string {
  let login = '';
  try {
    login = userInfo().username;
  } catch {
    login = '';
  }
  return toMemberName(login) ?? FALLBACK_MEMBER_NAME;
}

/** --broker, else CLAUDEMESH_BROKER, else the local default; as an origin. */
export function brokerUrlFrom(verb: string, option: string | undefined, env: CliContext['env']): string {
  const raw = option ?? (env.CLAUDEMESH_BROKER === undefined || env.CLAUDEMESH_BROKER === '' ? DEFAULT_BROKER_URL : env.CLAUDEMESH_BROKER);
  const url = normaliseBrokerUrl(raw);
  if (url === undefined) {
    throw usageError(verb, `broker URL ${JSON.stringify(raw)} is not an http(s) address without a path, such as ${DEFAULT_BROKER_URL}`);
  }
  return url;
}
