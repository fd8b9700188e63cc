// Following the config: `claudemesh join` and `leave` rewrite config.json (temporary file,
// then rename), and the daemon takes the new mesh list without a restart (read only at boot,
// a join would need a daemon restart that nobody remembers to do). The directory is
// watched, not the file, because a rename replaces the file; changes are debounced, and a
// config that does not parse is reported and ignored (the daemon keeps the last good one).

import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { CONFIG_FILE, readConfig } from '../lib/client-config.ts';
import type { ClientConfig } from '../lib/client-config.ts';

const CONFIG_DEBOUNCE_MS = 200;

interface ConfigWatcher {
  close(): void;
}

export function watchConfig(home: string, apply: (config: ClientConfig) => Promise<unknown>, onError: (error: unknown) => void, debounceMs = CONFIG_DEBOUNCE_MS): ConfigWatcher {
  let timer: NodeJS.Timeout | undefined;
  let running = Promise.resolve();
  const reload = () => {
    // One reload at a time, in order: a burst of writes ends with the last config applied.
    running = running.then(async () => {
      try {
        await apply(await readConfig(home));
      } catch (error) {
        onError(error);
      }
    });
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(home, (_event, filename) => {
      if (filename !== CONFIG_FILE) return;
      clearTimeout(timer);
      timer = setTimeout(reload, debounceMs);
    });
    watcher.on('error', onError);
  } catch (error) {
    onError(error); // no watching (odd filesystem): POST /v1/reload still works
  }
  return {
    close() {
      clearTimeout(timer);
      watcher?.close();
    },
  };
}
