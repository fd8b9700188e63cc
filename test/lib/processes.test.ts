// What stands on a port and who a process is, read from the real /proc of this machine.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { bindError, describePid, listeningPid, processAlive, processInfo } from '../../lib/processes.ts';

const onLinux = process.platform === 'linux' ? false : 'reads /proc, which only Linux has';

describe('processes', () => {
  it('names the process listening on a port, and frees it for a bind once closed', { skip: onLinux }, async () => {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    try {
      assert.equal(listeningPid(port), process.pid);
      assert.equal((await bindError('127.0.0.1', port))?.code, 'EADDRINUSE');
      assert.match(describePid(process.pid), new RegExp(`^pid ${process.pid} \\(.*node`));
    } finally {
      server.close();
      await once(server, 'close');
    }
    assert.equal(await bindError('127.0.0.1', port), undefined);
    assert.equal(listeningPid(port), undefined);
  });

  it('finds a listener in another process, on every address', { skip: onLinux }, async () => {
    const child = spawn(process.execPath, ['-e', "const s = require('net').createServer().listen(0, () => console.log(s.address().port))"], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [chunk] = (await once(child.stdout, 'data')) as [Buffer];
      const port = Number(chunk.toString().trim());
      assert.equal(listeningPid(port), child.pid);
      assert.equal((await bindError('127.0.0.1', port))?.code, 'EADDRINUSE');
      assert.match(describePid(child.pid ?? 0), /createServer/);
    } finally {
      child.kill();
      await once(child, 'exit');
    }
  });

  it('tells a live process from a gone one, with its parent and start time', { skip: onLinux }, async () => {
    const me = processInfo(process.pid);
    assert.equal(me?.pid, process.pid);
    assert.equal(me?.ppid, process.ppid);
    assert.match(me?.startTicks ?? '', /^\d+$/);
    assert.equal(processAlive(process.pid), true);
    const child = spawn(process.execPath, ['-e', '']);
    const pid = child.pid ?? 0;
    await once(child, 'exit');
    assert.equal(processAlive(pid), false);
    assert.equal(processInfo(pid), undefined);
    assert.equal(describePid(pid), `pid ${pid}`);
    assert.equal(processAlive(-1), false);
    assert.equal(processInfo(0), undefined);
  });

  it('reports an address this machine does not have', async () => {
    assert.equal((await bindError('192.0.2.1', 0))?.code, 'EADDRNOTAVAIL');
  });
});
