// `claudemesh doctor [--json]`: every check of lib/cli/doctor-checks.ts, one line each with
// its hint when it fails; exit 1 when any fails. --json prints {ok, checks} (even then).

import { EXIT_CHECK_FAILED, EXIT_OK, printJson } from '../output.ts';
import { visible } from '../render.ts';
import type { Verb } from '../verb.ts';
import { runChecks } from '../doctor-checks.ts';

export const doctorVerb: Verb = {
  name: 'doctor',
  summary: 'check this machine: config, file modes, daemon, brokers, clock, identity',
  help: `usage: claudemesh doctor [--json]

Checks, each ok or failed with what to do: config (parses, has an active mesh), file-modes
(config, keys and the daemon's databases owner-only), daemon (answers, or is simply not
running; a stale socket fails), daemon-version (same as this CLI), and for each mesh:
broker (GET /health), websocket (an upgrade on /ws), clock (within 30 s of the broker's
Date header; the broker refuses a hello 60 s off), identity (the broker accepts a request
signed by your member key, and the daemon's connection state); then service (the unit for
this CLAUDEMESH_HOME, if any); channels (whether Claude Code can get messages pushed here,
and why not: never a failure). Exits 1 when a check fails. Starts nothing, changes nothing.
`,
  options: {},
  positionals: { min: 0, max: 0 },
  async run(context, args) {
    const checks = await runChecks(context);
    const ok = checks.every((check) => check.ok);
    if (args.values.json === true) printJson(context, { ok, checks });
    else {
      const width = Math.max(...checks.map((check) => check.name.length));
      for (const check of checks) {
        context.stdout(`${check.ok ? 'ok  ' : 'FAIL'}  ${visible(check.name).padEnd(width)}  ${visible(check.detail)}\n`);
        if (!check.ok) context.stdout(`      ${' '.repeat(width)}  hint: ${visible(check.hint)}\n`);
      }
    }
    return ok ? EXIT_OK : EXIT_CHECK_FAILED;
  },
};
