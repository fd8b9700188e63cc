// A small stand-in for the Anthropic Messages API on 127.0.0.1, for driving the real Claude
// Code client (ANTHROPIC_BASE_URL) without the network. It keeps every request body, streams
// its answers as Server-Sent Events the way the real API does (message_start, one content
// block, message_delta, message_stop), accepts `system`-role entries inside `messages`, and
// answers each request with what the test's `answer` callback decides: text, or a tool_use.

import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';

export type Answer = { text: string } | { toolUse: { name: string; input: Record<string, unknown> } };

export interface MessagesRequest {
  model?: string;
  system?: unknown;
  messages: Array<{ role: string; content: unknown }>;
  tools?: Array<{ name: string }>;
  stream?: boolean;
}

export interface FakeApi {
  url: string;
  requests: MessagesRequest[];
  close(): Promise<void>;
}

/** Every text of a request (system, messages, tool results) as one string, for searching. */
export function requestText(request: MessagesRequest): string {
  return JSON.stringify([request.system, request.messages]);
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        resolve({});
      }
    });
  });
}

function block(answer: Answer): { start: Record<string, unknown>; delta: Record<string, unknown>; stop: string } {
  if ('text' in answer) return { start: { type: 'text', text: '' }, delta: { type: 'text_delta', text: answer.text }, stop: 'end_turn' };
  const id = `toolu_${Math.random().toString(36).slice(2, 14)}`;
  return {
    start: { type: 'tool_use', id, name: answer.toolUse.name, input: {} },
    delta: { type: 'input_json_delta', partial_json: JSON.stringify(answer.toolUse.input) },
    stop: 'tool_use',
  };
}

function stream(res: ServerResponse, model: string, answer: Answer): void {
  const { start, delta, stop } = block(answer);
  const id = `msg_${Math.random().toString(36).slice(2, 14)}`;
  const usage = { input_tokens: 10, output_tokens: 5, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
  const events: Array<[string, Record<string, unknown>]> = [
    ['message_start', { type: 'message_start', message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage } }],
    ['content_block_start', { type: 'content_block_start', index: 0, content_block: start }],
    ['content_block_delta', { type: 'content_block_delta', index: 0, delta }],
    ['content_block_stop', { type: 'content_block_stop', index: 0 }],
    ['message_delta', { type: 'message_delta', delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: 5 } }],
    ['message_stop', { type: 'message_stop' }],
  ];
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': id });
  for (const [event, data] of events) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  res.end();
}

function plain(res: ServerResponse, model: string, answer: Answer): void {
  const { start, delta, stop } = block(answer);
  const content = 'text' in answer ? [{ type: 'text', text: delta.text }] : [{ ...start, input: answer.toolUse.input }];
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ id: 'msg_plain', type: 'message', role: 'assistant', model, content, stop_reason: stop, stop_sequence: null, usage: { input_tokens: 10, output_tokens: 5 } }));
}

export async function startFakeApi(answer: (request: MessagesRequest) => Answer | Promise<Answer>): Promise<FakeApi> {
  const requests: MessagesRequest[] = [];
  const server: Server = createServer((req, res) => {
    void (async () => {
      const path = new URL(req.url ?? '/', 'http://fake').pathname;
      if (req.method === 'POST' && path === '/v1/messages') {
        const body = (await readJson(req)) as MessagesRequest;
        requests.push(body);
        const chosen = await answer(body);
        if (body.stream === true) stream(res, body.model ?? 'claude-fake', chosen);
        else plain(res, body.model ?? 'claude-fake', chosen);
        return;
      }
      if (req.method === 'POST' && path === '/v1/messages/count_tokens') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ input_tokens: 10 }));
        return;
      }
      // The client's connectivity probe (HEAD /api/hello) and anything else: a plain 200.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(req.method === 'HEAD' ? undefined : '{}');
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
