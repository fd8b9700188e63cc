// Service-manager units that keep the daemon running across logins and reboots: a systemd
// user unit on Linux, a launchd agent on macOS. Both run `daemon up --foreground`: the
// service manager owns the process, so the daemon must not detach again (exactly one
// component detaches; a daemon that forked away from its unit would look dead to it and be
// restarted in a loop). The auto-start helper checks for these files and then waits for
// the service instead of spawning a second daemon.
//
// A unit serves one claudemesh home: the default home (~/.claudemesh) gets the plain name,
// any other home (CLAUDEMESH_HOME) a name with a hash of its path, so installing a service
// for one home never makes the others wait on a daemon that is not theirs. Linux units live
// under $XDG_CONFIG_HOME/systemd/user (default ~/.config), as systemd looks for them.

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

const SYSTEMD_UNIT_PREFIX = 'claudemesh-daemon';
const LAUNCHD_LABEL_PREFIX = 'com.claudemesh.daemon';
const RESTART_SECONDS = 3;
const HOME_HASH_LENGTH = 8;
const DEFAULT_HOME_DIR = '.claudemesh';
const SYSTEMCTL_TIMEOUT_MS = 2_000;

type Env = Readonly<Record<string, string | undefined>>;

interface ServiceLocation {
  /** the systemd unit name or the launchd label */
  name: string;
  /** the unit or plist file */
  path: string;
}

interface ServiceSpec {
  /** absolute path of the Node binary */
  node: string;
  /** absolute path of cli.ts */
  cli: string;
  /** the claudemesh home the daemon serves */
  home: string;
  /** where the daemon's stdout/stderr go (launchd only; systemd uses the journal) */
  log: string;
}

/** "" for the default home, "-<hash of the path>" for any other. */
function homeSuffix(claudemeshHome: string, userHome: string): string {
  if (resolve(claudemeshHome) === join(userHome, DEFAULT_HOME_DIR)) return '';
  return `-${createHash('sha256').update(resolve(claudemeshHome)).digest('hex').slice(0, HOME_HASH_LENGTH)}`;
}

/** The service for this claudemesh home on this platform; undefined where none is supported. */
export function serviceFor(claudemeshHome: string, env: Env = process.env, platform: NodeJS.Platform = process.platform, userHome: string = homedir()): ServiceLocation | undefined {
  const suffix = homeSuffix(claudemeshHome, userHome);
  if (platform === 'linux') {
    const name = `${SYSTEMD_UNIT_PREFIX}${suffix}.service`;
    const configHome = env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== '' ? env.XDG_CONFIG_HOME : join(userHome, '.config');
    return { name, path: join(configHome, 'systemd', 'user', name) };
  }
  if (platform === 'darwin') {
    const name = `${LAUNCHD_LABEL_PREFIX}${suffix}`;
    return { name, path: join(userHome, 'Library', 'LaunchAgents', `${name}.plist`) };
  }
  return undefined;
}

/**
 * Whether the service manager will run this unit: on Linux, `systemctl --user is-enabled`
 * (false where there is no user bus, as in containers); on macOS a loaded agent is its file.
 */
export function unitEnabled(service: ServiceLocation, platform: NodeJS.Platform = process.platform): Promise<boolean> {
  if (platform !== 'linux') return Promise.resolve(true);
  return new Promise((resolve) => {
    execFile('systemctl', ['--user', 'is-enabled', '--quiet', service.name], { timeout: SYSTEMCTL_TIMEOUT_MS }, (error) => resolve(error === null));
  });
}

function quoteSystemd(value: string): string {
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

export function systemdUnit(spec: ServiceSpec): string {
  return `[Unit]
Description=claudemesh daemon (end-to-end encrypted messaging for Claude Code sessions)
After=network-online.target

[Service]
Type=simple
Environment=${quoteSystemd(`CLAUDEMESH_HOME=${spec.home}`)}
ExecStart=${quoteSystemd(spec.node)} ${quoteSystemd(spec.cli)} daemon up --foreground
Restart=always
RestartSec=${RESTART_SECONDS}

[Install]
WantedBy=default.target
`;
}

function escapeXml(value: string): string {
  return value.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
}

export function launchdPlist(spec: ServiceSpec & { label: string }): string {
  const args = [spec.node, spec.cli, 'daemon', 'up', '--foreground'].map((arg) => `    <string>${escapeXml(arg)}</string>`).join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>${escapeXml(spec.label)}</string>
  <key>ProgramArguments</key>
  <array>
${args}
  </array>
  <key>EnvironmentVariables</key>
  <dict>
    <key>CLAUDEMESH_HOME</key>
    <string>${escapeXml(spec.home)}</string>
  </dict>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <true/>
  <key>StandardOutPath</key>
  <string>${escapeXml(spec.log)}</string>
  <key>StandardErrorPath</key>
  <string>${escapeXml(spec.log)}</string>
</dict>
</plist>
`;
}
