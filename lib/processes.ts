// Whether a port can be bound, who listens on it, and who a process is, read from /proc
// (Linux), best effort: used only to say plainly what stands in the way ("port 7900 is in
// use by pid 4242 (node broker.ts)"). Where /proc is missing or another user's entries are
// hidden, the answers are undefined and the caller says less; nothing here throws.

import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';

const TCP_TABLES = ['/proc/net/tcp', '/proc/net/tcp6'];
const TCP_LISTEN = '0A';
const CMDLINE_SHOWN_CHARS = 120;

interface ProcessInfo {
  pid: number;
  ppid: number;
  /** start time in clock ticks since boot: a pid reused by another process has another */
  startTicks: string;
  /** the command line, arguments joined by spaces (shortened) */
  cmdline: string;
}

/** The process `pid` as /proc shows it; undefined when it is gone (or /proc is unreadable). */
export function processInfo(pid: number): ProcessInfo | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid … starttime …": comm may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((part) => part !== '').join(' ');
    const cmdline = raw.length > CMDLINE_SHOWN_CHARS ? `${raw.slice(0, CMDLINE_SHOWN_CHARS)}…` : raw;
    return { pid, ppid: Number(fields[1]), startTicks: fields[19] ?? '', cmdline };
  } catch {
    return undefined;
  }
}

/** Is a process with this pid alive? EPERM means alive but not ours. */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** "pid 4242 (node broker.ts)", or "pid 4242" when its command line is hidden. */
export function describePid(pid: number): string {
  const info = processInfo(pid);
  return info === undefined || info.cmdline === '' ? `pid ${pid}` : `pid ${pid} (${info.cmdline})`;
}

/** The socket inodes listening on TCP `port` (any address, IPv4 or IPv6). */
function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of TCP_TABLES) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const columns = line.trim().split(/\s+/);
      if (columns[3] === TCP_LISTEN && columns[1]?.endsWith(`:${hexPort}`) && columns[9] !== undefined && columns[9] !== '0') inodes.add(columns[9]);
    }
  }
  return inodes;
}

/** The pid of a process listening on TCP `port`, found through its open file descriptors. */
export function listeningPid(port: number): number | undefined {
  const inodes = listeningInodes(port);
  if (inodes.size === 0) return undefined;
  const targets = new Set([...inodes].map((inode) => `socket:[${inode}]`));
  let pids: string[];
  try {
    // lowest first: of a parent and the children that inherited its socket, the parent
    pids = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).sort((a, b) => Number(a) - Number(b));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or another user's: not ours to see
    }
    for (const fd of fds) {
      try {
        if (targets.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) return Number(pid);
      } catch {
        // closed while we looked
      }
    }
  }
  return undefined;
}

/** Why `host:port` cannot be bound right now (EADDRINUSE, EADDRNOTAVAIL, EACCES…), or undefined when it can. */
export function bindError(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}
