// `claudemesh daemon install-service|uninstall-service`: a systemd user unit (Linux) or a
// launchd agent (macOS) for this claudemesh home (daemon/service.ts names one per home).
// Installing writes the file and says how to enable it; uninstalling stops and disables the
// service where the service manager answers, then removes the file, so auto-start spawns
// the daemon itself again.

import { execFile } from 'node:child_process';
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { daemonPaths } from '../../../daemon/paths.ts';
import { launchdPlist, serviceFor, systemdUnit } from '../../../daemon/service.ts';
import { CLI_ENTRY } from '../../entry.ts';
import { cmError } from '../../errors.ts';
import { printJson } from '../output.ts';
import type { CliContext } from '../verb.ts';

const SERVICE_COMMAND_TIMEOUT_MS = 10_000;
const UNIT_FILE_MODE = 0o644;

function located(context: CliContext) {
  const service = serviceFor(context.home, context.env);
  if (service === undefined) throw cmError('CM_ERR_NOT_IMPLEMENTED', `no service manager support on ${process.platform}`, { hint: 'run claudemesh daemon up at login instead' });
  return service;
}

/** Run a service-manager command; its failure is reported, never thrown (it may not run here). */
function run(command: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: SERVICE_COMMAND_TIMEOUT_MS }, (error, _stdout, stderr) => {
      resolve(error === null ? undefined : `${command} ${args.join(' ')}: ${(stderr.trim() || error.message).split('\n')[0]}`);
    });
  });
}

export async function installService(context: CliContext, json: boolean): Promise<void> {
  const service = located(context);
  const spec = { node: process.execPath, cli: CLI_ENTRY, home: context.home, log: daemonPaths(context.home).log };
  const text = process.platform === 'darwin' ? launchdPlist({ ...spec, label: service.name }) : systemdUnit(spec);
  await mkdir(dirname(service.path), { recursive: true });
  await writeFile(service.path, text, { mode: UNIT_FILE_MODE });
  const next = process.platform === 'darwin' ? `launchctl load -w ${service.path}` : `systemctl --user daemon-reload && systemctl --user enable --now ${service.name}`;
  if (json) printJson(context, { unit: service.path, name: service.name, home: context.home, next });
  else context.stdout(`wrote ${service.path} (for ${context.home})\nenable it with: ${next}\nremove it with: claudemesh daemon uninstall-service\n`);
}

export async function uninstallService(context: CliContext, json: boolean): Promise<void> {
  const service = located(context);
  const problems: string[] = [];
  const note = (problem: string | undefined) => void (problem === undefined ? undefined : problems.push(problem));
  if (process.platform === 'darwin') note(await run('launchctl', ['unload', '-w', service.path]));
  else note(await run('systemctl', ['--user', 'disable', '--now', service.name]));
  const removed = await unlink(service.path).then(() => true, (error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw cmError('CM_ERR_CLIENT_CONFIG', `cannot remove ${service.path}: ${error.message}`);
    return false;
  });
  if (process.platform !== 'darwin') note(await run('systemctl', ['--user', 'daemon-reload']));
  if (json) {
    printJson(context, { unit: service.path, removed, notes: problems });
    return;
  }
  context.stdout(removed ? `removed ${service.path}\n` : `no service was installed for ${context.home} (${service.path})\n`);
  for (const problem of problems) context.stderr(`note: ${problem}\n`);
}
