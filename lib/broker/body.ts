// Reading a request body within a byte limit, refusing early on a declared oversize
// Content-Length and stopping as soon as a streamed body passes the limit.

import type { IncomingMessage } from 'node:http';
import { cmError } from '../errors.ts';

export async function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = request.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    throw cmError('CM_ERR_PAYLOAD_TOO_LARGE', `request body of ${declared} bytes is over the limit of ${limit} bytes`, {
      details: { received: Number(declared), limit },
    });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      throw cmError('CM_ERR_PAYLOAD_TOO_LARGE', `request body passed the limit of ${limit} bytes`, { details: { received: size, limit } });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** Parse a JSON object body; arrays, primitives and prototype keys are refused. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw cmError('CM_ERR_BAD_JSON', `request body is not valid JSON: ${(error as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw cmError('CM_ERR_BAD_JSON', `request body must be a JSON object, received ${Array.isArray(value) ? 'an array' : typeof value}`);
  }
  // JSON.parse makes "__proto__" an own property; copy onto a null-prototype object.
  return Object.assign(Object.create(null) as Record<string, unknown>, value);
}
