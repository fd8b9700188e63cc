// The membership routes on their own: a fresh database, the routes behind a minimal
// node:http dispatcher (same error shape as lib/broker/http.ts), an injected clock and a
// recorder in place of the connection hub, and a client that signs like the CLI does.

import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { loadConfig } from '../../../lib/broker/config.ts';
import { generateKeyPair } from '../../../lib/crypto.ts';
import type { SigningKeyPair } from '../../../lib/crypto.ts';
import { cmError, isCmError } from '../../../lib/errors.ts';
import { createInvite, encodeInvite } from '../../../lib/invite.ts';
import type { Invite, InviteFields } from '../../../lib/invite.ts';
import { createLogger } from '../../../lib/log.ts';
import { migrate } from '../../../lib/broker/db.ts';
import { membershipRoutes } from '../../../lib/broker/membership.ts';
import type { Context } from '../../../broker.ts';
import { signRequest } from '../../../lib/signed-request.ts';
import { createTestDatabase } from '../../helpers/db.ts';
import type { TestDatabase } from '../../helpers/db.ts';

interface Removal {
  meshId: string;
  key: string;
  closeCode: number;
  reason: string;
}

interface Answer {
  status: number;
  body: Record<string, any>;
}

interface CallOptions {
  meshId?: string;
  body?: unknown;
  /** replaces the Host header (the wrong-broker check reads it) */
  host?: string;
  headers?: Record<string, string>;
  /** sign with this time instead of the harness clock */
  signedAt?: number;
  /** send these headers instead of a signature */
  unsigned?: boolean;
}

export interface Harness {
  baseUrl: string;
  brokerUrl: string;
  pool: pg.Pool;
  removals: Removal[];
  clock: { now: number };
  call(method: 'GET' | 'POST', path: string, as: SigningKeyPair, options?: CallOptions): Promise<Answer>;
  /** POST /mesh/create as a new owner key; returns the mesh id and the key */
  createMesh(name?: string, ownerName?: string): Promise<{ meshId: string; owner: SigningKeyPair }>;
  /** sign an invite as `signer` (defaults: member role, 1 use, 7 days, this broker) */
  makeInvite(signer: SigningKeyPair, meshId: string, fields?: Partial<InviteFields>): Invite;
  /** make and register an invite; returns its token */
  invite(signer: SigningKeyPair, meshId: string, fields?: Partial<InviteFields>): Promise<string>;
  /** join with a token as `joiner` (a new key unless given) */
  join(token: string, name: string, joiner?: SigningKeyPair): Promise<Answer & { key: SigningKeyPair }>;
  close(): Promise<void>;
}

const quiet = createLogger({ write: () => {} });
const WEEK_SECONDS = 7 * 24 * 3600;

export async function startMembershipHarness(label: string, env: Record<string, string> = {}): Promise<Harness> {
  const database: TestDatabase = await createTestDatabase(label);
  const pool = new pg.Pool({ connectionString: database.url, max: 8 });
  await migrate(pool, quiet);
  const result = loadConfig({ DATABASE_URL: database.url, BROKER_PORT: '0', NODE_ENV: 'test', ...env });
  if (!result.ok) throw new Error(`bad test config: ${JSON.stringify(result.problems)}`);
  const clock = { now: Date.UTC(2030, 0, 1) };
  const removals: Removal[] = [];
  // The routes with the parts of the broker they use; the hub and the roster cache are
  // recorders here (their own tests run them for real).
  const context = {
    pool, log: quiet, config: result.config, now: () => clock.now,
    hub: {
      removeMember: (meshId: string, key: string, close: { code: number; reason: string }) => removals.push({ meshId, key, closeCode: close.code, reason: close.reason }),
      forgetRemoval: () => undefined,
      tell: () => undefined,
    },
    presence: { invalidate: () => undefined },
  } as unknown as Context;
  const routes = membershipRoutes(context);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
    const entry = routes.find((route) => route.path === path);
    const run = async () => {
      if (entry === undefined) throw cmError('CM_ERR_NOT_FOUND', `no route ${path}`);
      if (entry.method !== req.method) throw cmError('CM_ERR_METHOD_NOT_ALLOWED', `${path} takes ${entry.method}`);
      await entry.handler(req, res);
    };
    run().catch((error: unknown) => {
      const failure = isCmError(error) ? error : cmError('CM_ERR_INTERNAL', String(error));
      if (!isCmError(error)) process.stderr.write(`membership harness: ${String((error as Error).stack)}\n`);
      const text = JSON.stringify(failure.toJSON());
      res.writeHead(failure.status, { 'content-type': 'application/json' });
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const brokerUrl = `http://127.0.0.1:${port}`;

  const call: Harness['call'] = (method, path, as, options = {}) => {
    // Signatures are deterministic: two identical requests at one instant would be a replay.
    clock.now += 1;
    const text = options.body === undefined ? '' : JSON.stringify(options.body);
    const signed = options.unsigned
      ? {}
      : signRequest({
          method,
          path,
          body: text,
          publicKey: as.publicKey,
          secretKey: as.secretKey,
          now: options.signedAt ?? clock.now,
          ...(options.meshId === undefined ? {} : { meshId: options.meshId }),
        });
    const headers: Record<string, string> = { ...signed, ...options.headers, 'content-type': 'application/json' };
    if (options.host !== undefined) headers.host = options.host;
    return new Promise((resolve, reject) => {
      const req = request(`${brokerUrl}${path}`, { method, headers }, (res) => {
        let data = '';
        res.on('data', (chunk: Buffer) => {
          data += chunk.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(data) as Record<string, any> }));
      });
      req.on('error', reject);
      req.end(text);
    });
  };

  const makeInvite: Harness['makeInvite'] = (signer, meshId, fields = {}) =>
    createInvite(
      {
        meshId,
        meshName: fields.meshName ?? 'team',
        brokerUrl: fields.brokerUrl ?? brokerUrl,
        role: fields.role ?? 'member',
        expiresAt: fields.expiresAt ?? Math.floor(clock.now / 1000) + WEEK_SECONDS,
        maxUses: fields.maxUses ?? 1,
        ...(fields.nonce === undefined ? {} : { nonce: fields.nonce }),
      },
      signer.secretKey,
    );

  const harness: Harness = {
    baseUrl: brokerUrl,
    brokerUrl,
    pool,
    removals,
    clock,
    call,
    makeInvite,
    async createMesh(name = 'team', ownerName = 'owner') {
      const owner = generateKeyPair();
      const answer = await call('POST', '/mesh/create', owner, { body: { name, ownerName } });
      if (answer.status !== 201) throw new Error(`create failed: ${JSON.stringify(answer.body)}`);
      return { meshId: String(answer.body.meshId), owner };
    },
    async invite(signer, meshId, fields = {}) {
      const token = encodeInvite(makeInvite(signer, meshId, fields));
      const answer = await call('POST', '/mesh/invite', signer, { meshId, body: { token } });
      if (answer.status !== 201) throw new Error(`invite failed: ${JSON.stringify(answer.body)}`);
      return token;
    },
    async join(token, name, joiner = generateKeyPair()) {
      const answer = await call('POST', '/mesh/join', joiner, { body: { token, name } });
      return { ...answer, key: joiner };
    },
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await pool.end();
      await database.drop();
    },
  };
  return harness;
}
