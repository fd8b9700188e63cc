// A loopback TCP balancer of the tests' own, as an operator puts in front of several broker
// instances: each new connection goes to the next backend in turn, skipping one that refuses
// (an instance restarting), and bytes are piped both ways untouched (HTTP and WebSocket alike).

import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

export interface Balancer {
  readonly url: string;
  /** the backend ports, in turn; replace them as instances come and go */
  backends: number[];
  /** connections handed to each backend port so far */
  readonly routed: Map<number, number>;
  close(): Promise<void>;
}

export async function startBalancer(backends: number[]): Promise<Balancer> {
  const open = new Set<Socket>();
  let turn = 0;
  const balancer = {
    url: '',
    backends,
    routed: new Map<number, number>(),
    close: async () => {
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const route = (client: Socket, tries: number): void => {
    const port = balancer.backends[turn++ % Math.max(1, balancer.backends.length)];
    if (port === undefined || tries === 0) return void client.destroy();
    const backend = connect(port, '127.0.0.1');
    open.add(backend);
    backend.once('error', () => {
      open.delete(backend);
      if (backend.bytesRead === 0 && backend.bytesWritten === 0) route(client, tries - 1);
      else client.destroy();
    });
    backend.once('connect', () => {
      balancer.routed.set(port, (balancer.routed.get(port) ?? 0) + 1);
      client.pipe(backend).pipe(client);
      client.resume();
      backend.once('close', () => {
        open.delete(backend);
        client.destroy();
      });
      client.once('close', () => backend.destroy());
    });
  };
  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    open.add(client);
    client.once('close', () => open.delete(client));
    client.on('error', () => client.destroy());
    route(client, balancer.backends.length);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  balancer.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return balancer;
}
