// Service-manager units that keep the daemon running across logins and reboots: a systemd
// user unit on Linux, a launchd agent on macOS. Both run `daemon up --foreground`: the
// service manager owns the process, so the daemon must not detach again (exactly one
// component detaches; a daemon that forked away from its unit would look dead to it and be
// restarted in a loop). The auto-start helper checks for these files and then waits for
// the service instead of spawning a second daemon.

import { homedir } from 'node:os';
import { join } from 'node:path';

const SYSTEMD_UNIT_NAME = 'claudemesh-daemon.service';
const LAUNCHD_LABEL = 'com.claudemesh.daemon';
const RESTART_SECONDS = 3;

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

/** Where the unit file lives for this platform; undefined where none is supported. */
export function serviceUnitPath(platform: NodeJS.Platform = process.platform, home: string = homedir()): string | undefined {
  if (platform === 'linux') return join(home, '.config', 'systemd', 'user', SYSTEMD_UNIT_NAME);
  if (platform === 'darwin') return join(home, 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`);
  return undefined;
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

export function launchdPlist(spec: ServiceSpec): string {
  const args = [spec.node, spec.cli, 'daemon', 'up', '--foreground'].map((arg) => `    <string>${escapeXml(arg)}</string>`).join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>${LAUNCHD_LABEL}</string>
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
