import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { launchdPlist, serviceFor, systemdUnit } from '../../daemon/service.ts';

const spec = { node: '/opt/node/bin/node', cli: '/srv/claudemesh/cli.ts', home: '/home/ann/.claudemesh', log: '/home/ann/.claudemesh/daemon/daemon.log' };

describe('service units', () => {
  it('systemd: runs daemon up --foreground, restarts always, with the home in the environment', () => {
    const unit = systemdUnit(spec);
    assert.match(unit, /^ExecStart="\/opt\/node\/bin\/node" "\/srv\/claudemesh\/cli.ts" daemon up --foreground$/m);
    assert.match(unit, /^Restart=always$/m);
    assert.match(unit, /^Environment="CLAUDEMESH_HOME=\/home\/ann\/.claudemesh"$/m);
    assert.match(unit, /^WantedBy=default.target$/m);
  });

  it('launchd: the same command, kept alive, logs to daemon.log, XML escaped', () => {
    const plist = launchdPlist({ ...spec, home: '/Users/a&b', label: 'com.claudemesh.daemon' });
    assert.match(plist, /<string>--foreground<\/string>/);
    assert.match(plist, /<key>KeepAlive<\/key>\s*<true\/>/);
    assert.match(plist, /<string>\/Users\/a&amp;b<\/string>/);
    assert.match(plist, /<key>StandardErrorPath<\/key>\s*<string>\/home\/ann\/.claudemesh\/daemon\/daemon.log<\/string>/);
  });

  it('knows where each platform keeps its unit, one unit per claudemesh home', () => {
    assert.deepEqual(serviceFor('/home/ann/.claudemesh', {}, 'linux', '/home/ann'), {
      name: 'claudemesh-daemon.service', path: '/home/ann/.config/systemd/user/claudemesh-daemon.service',
    });
    assert.equal(serviceFor('/home/ann/.claudemesh', { XDG_CONFIG_HOME: '/x' }, 'linux', '/home/ann')?.path, '/x/systemd/user/claudemesh-daemon.service');
    assert.equal(serviceFor('/Users/ann/.claudemesh', {}, 'darwin', '/Users/ann')?.path, '/Users/ann/Library/LaunchAgents/com.claudemesh.daemon.plist');
    const other = serviceFor('/srv/bot-home', {}, 'linux', '/home/ann');
    assert.match(other?.name ?? '', /^claudemesh-daemon-[0-9a-f]{8}\.service$/, 'another home, another unit');
    assert.notEqual(other?.name, serviceFor('/srv/other-home', {}, 'linux', '/home/ann')?.name);
    assert.equal(serviceFor('C:\\cm', {}, 'win32', 'C:\\'), undefined);
  });
});
