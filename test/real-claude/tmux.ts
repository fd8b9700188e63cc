// A terminal for the interactive client: a detached tmux session running one command, whose
// screen the test reads (capture-pane) and types into (send-keys).

import { spawnSync } from 'node:child_process';

const WIDTH = '160';
const HEIGHT = '45';

function tmux(...args: string[]): string {
  const result = spawnSync('tmux', args, { encoding: 'utf8' });
  if (result.error !== undefined) throw new Error(`tmux is needed for this test: ${result.error.message}`);
  return result.stdout ?? '';
}

interface Terminal {
  screen(): string;
  type(...keys: string[]): void;
  alive(): boolean;
  kill(): void;
}

export function openTerminal(name: string, command: string): Terminal {
  tmux('kill-session', '-t', name);
  tmux('new-session', '-d', '-s', name, '-x', WIDTH, '-y', HEIGHT, command);
  return {
    screen: () => tmux('capture-pane', '-t', name, '-p'),
    type: (...keys) => void tmux('send-keys', '-t', name, ...keys),
    alive: () => spawnSync('tmux', ['has-session', '-t', name]).status === 0,
    kill: () => void tmux('kill-session', '-t', name),
  };
}
