// JSON-RPC 2.0 over stdio as MCP frames it: one JSON object per line, UTF-8, no embedded
// newlines. Reading splits lines (bounded, so a peer cannot grow the buffer without end);
// writing reports when the line was handed to the operating system, which is the moment a
// channel notification counts as surfaced (Claude Code sends no acknowledgement).

import type { Readable, Writable } from 'node:stream';

// A line longer than this is dropped with a parse error rather than buffered further.
const MAX_LINE_BYTES = 4 * 1024 * 1024;

export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
export const METHOD_NOT_FOUND = -32601;

export type Id = string | number;

export interface Incoming {
  id?: Id | null;
  method?: unknown;
  params?: unknown;
}

/** Call `onLine` for every line of `input`; `onEnd` once at end of input (or an error). */
export function readLines(input: Readable, onLine: (line: string) => void, onEnd: () => void): void {
  let buffer = '';
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    onEnd();
  };
  input.setEncoding('utf8');
  input.on('data', (chunk: string) => {
    buffer += chunk;
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line !== '') onLine(line);
      newline = buffer.indexOf('\n');
    }
    if (buffer.length > MAX_LINE_BYTES) {
      buffer = '';
      onLine('{oversized');
    }
  });
  input.on('end', () => {
    if (buffer.trim() !== '') onLine(buffer.trim());
    end();
  });
  input.on('error', end);
  input.on('close', end);
}

/** Writes JSON-RPC messages, one per line; a closed output makes every later write fail. */
export class RpcWriter {
  readonly #output: Writable;
  #broken = false;

  constructor(output: Writable) {
    this.#output = output;
    // A reader that went away (EPIPE) must not kill the process: later writes just fail.
    output.on('error', () => void (this.#broken = true));
  }

  /** Resolves true once the line is written, false when it could not be. */
  write(message: Record<string, unknown>): Promise<boolean> {
    if (this.#broken || this.#output.destroyed || this.#output.writableEnded) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.#output.write(`${JSON.stringify(message)}\n`, (error) => resolve(error === undefined || error === null));
    });
  }

  result(id: Id, result: unknown): Promise<boolean> {
    return this.write({ jsonrpc: '2.0', id, result });
  }

  error(id: Id | null, code: number, message: string, data?: unknown): Promise<boolean> {
    return this.write({ jsonrpc: '2.0', id, error: { code, message, ...(data === undefined ? {} : { data }) } });
  }

  notify(method: string, params: Record<string, unknown>): Promise<boolean> {
    return this.write({ jsonrpc: '2.0', method, params });
  }
}
