// Samples CPU time and resident memory of processes from /proc (Linux), every interval,
// so the benchmark reports the broker's peak RSS and CPU, and Postgres's CPU.

import { readFileSync } from 'node:fs';

const SAMPLE_MS = 100;
const CLOCK_TICKS_PER_SECOND = 100;
const PAGE_BYTES = 4096;

function readStat(pid: number): { cpuSeconds: number; rssBytes: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may contain spaces, closed by ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const rssPages = Number(fields[21]);
    return { cpuSeconds: (utime + stime) / CLOCK_TICKS_PER_SECOND, rssBytes: rssPages * PAGE_BYTES };
  } catch {
    return undefined;
  }
}

export interface Usage { cpuSeconds: number; peakRssBytes: number }

export class Sampler {
  readonly #pids: () => number[];
  readonly #start = new Map<number, number>();
  readonly #last = new Map<number, number>();
  #peakRss = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(pids: () => number[]) {
    this.#pids = pids;
  }

  start(): void {
    this.#sample(true);
    this.#timer = setInterval(() => this.#sample(false), SAMPLE_MS);
  }

  stop(): Usage {
    clearInterval(this.#timer);
    this.#sample(false);
    let cpu = 0;
    for (const [pid, last] of this.#last) cpu += last - (this.#start.get(pid) ?? 0);
    return { cpuSeconds: cpu, peakRssBytes: this.#peakRss };
  }

  #sample(first: boolean): void {
    let rss = 0;
    for (const pid of this.#pids()) {
      const stat = readStat(pid);
      if (stat === undefined) continue;
      if (first || !this.#start.has(pid)) this.#start.set(pid, first ? stat.cpuSeconds : 0);
      this.#last.set(pid, stat.cpuSeconds);
      rss += stat.rssBytes;
    }
    this.#peakRss = Math.max(this.#peakRss, rss);
  }
}
