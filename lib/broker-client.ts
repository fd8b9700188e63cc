// Signed HTTP calls to a broker, made by the CLI verbs and the benchmark. Every call is
// signed by the identity's key (lib/signed-request.ts) for the path and mesh it names; the
// broker trusts nothing else. A broker that does not answer is CM_ERR_BROKER_UNREACHABLE;
// one that refuses becomes a BrokerRefusal carrying the broker's own code and hint (the CLI
// exits 4 for both).

import { BrokerRefusal, cmError } from './errors.ts';
import { signRequest } from './signed-request.ts';

const REQUEST_TIMEOUT_MS = 10_000;

export interface SigningIdentity {
  publicKey: string;
  secretKey: Buffer;
}

interface BrokerCall {
  brokerUrl: string;
  method: 'GET' | 'POST';
  path: string;
  identity: SigningIdentity;
  meshId?: string;
  body?: Record<string, unknown>;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

interface BrokerAnswer {
  status: number;
  body: Record<string, unknown>;
}

function unreachable(brokerUrl: string, why: string, cause?: unknown) {
  return cmError('CM_ERR_BROKER_UNREACHABLE', `broker ${brokerUrl} ${why}`, cause === undefined ? {} : { cause });
}

/** The reason a fetch failed, as a person would say it (fetch hides it in `cause`). */
function networkReason(error: unknown): string {
  if (error instanceof Error && error.name === 'TimeoutError') return 'did not answer in time';
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  if (typeof cause?.code === 'string') return `is unreachable (${cause.code})`;
  if (typeof cause?.message === 'string') return `is unreachable (${cause.message})`;
  return `is unreachable (${error instanceof Error ? error.message : String(error)})`;
}

export async function callBroker(call: BrokerCall): Promise<BrokerAnswer> {
  const text = call.body === undefined ? '' : JSON.stringify(call.body);
  const headers: Record<string, string> = {
    ...call.headers,
    ...signRequest({
      method: call.method,
      path: call.path,
      body: text,
      publicKey: call.identity.publicKey,
      secretKey: call.identity.secretKey,
      ...(call.meshId === undefined ? {} : { meshId: call.meshId }),
    }),
  };
  if (call.method === 'POST') headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(`${call.brokerUrl}${call.path}`, {
      method: call.method,
      headers,
      ...(call.method === 'POST' ? { body: text } : {}),
      signal: AbortSignal.timeout(call.timeoutMs ?? REQUEST_TIMEOUT_MS),
    });
  } catch (error) {
    throw unreachable(call.brokerUrl, networkReason(error), error);
  }
  let body: unknown;
  try {
    body = await response.json();
  } catch (error) {
    throw unreachable(call.brokerUrl, `answered ${call.method} ${call.path} with HTTP ${response.status} and no claudemesh JSON (is this URL a claudemesh broker?)`, error);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw unreachable(call.brokerUrl, `answered ${call.method} ${call.path} with something that is not a JSON object`);
  }
  const record = Object.assign(Object.create(null) as Record<string, unknown>, body);
  if (!response.ok) {
    if (typeof record.code !== 'string' || typeof record.message !== 'string') {
      throw unreachable(call.brokerUrl, `answered ${call.method} ${call.path} with HTTP ${response.status} and no error code (is this URL a claudemesh broker?)`);
    }
    const details = record.details !== null && typeof record.details === 'object' ? (record.details as Record<string, unknown>) : undefined;
    throw new BrokerRefusal(
      { code: record.code, message: record.message, hint: typeof record.hint === 'string' ? record.hint : '', ...(details === undefined ? {} : { details }) },
      response.status,
    );
  }
  return { status: response.status, body: record };
}
