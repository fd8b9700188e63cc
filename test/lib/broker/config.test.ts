import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULTS, loadConfig, redactUrl } from '../../../lib/broker/config.ts';

describe('loadConfig', () => {
  it('returns the documented defaults for an empty environment', () => {
    const result = loadConfig({}, '/srv');
    assert.equal(result.ok, true);
    if (!result.ok) return;
    assert.equal(result.config.databaseUrl, undefined);
    assert.equal(result.config.port, DEFAULTS.BROKER_PORT);
    assert.equal(result.config.port, 7900);
    assert.equal(result.config.statusTtlSeconds, 60);
    assert.equal(result.config.hookFreshWindowSeconds, 30);
    assert.equal(result.config.maxConnectionsPerMesh, 100);
    assert.equal(result.config.maxMessageBytes, 65_536);
    assert.equal(result.config.hookRateLimitPerMin, 30);
    assert.equal(result.config.nodeEnv, 'development');
    assert.equal(result.config.dataDir, '/srv/data');
    assert.equal(result.config.dataDirChosen, false, 'the default data dir is the broker\'s to place');
    assert.equal(result.config.embeddedPgRelocateDir, '/var/lib/claudemesh');
    assert.equal(result.config.gitSha, undefined);
  });

  it('parses every variable it is given', () => {
    const result = loadConfig({
      DATABASE_URL: 'postgresql://u:p@db.example:5432/mesh',
      BROKER_HOST: '0.0.0.0',
      BROKER_PORT: '8000',
      BROKER_DATA_DIR: '/var/lib/claudemesh',
      EMBEDDED_PG_PORT: '8001',
      EMBEDDED_PG_RELOCATE_DIR: '/srv/claudemesh',
      STATUS_TTL_SECONDS: '120',
      HOOK_FRESH_WINDOW_SECONDS: '45',
      MAX_CONNECTIONS_PER_MESH: '5',
      MAX_CONNECTIONS_PER_MEMBER: '4',
      DB_STATEMENT_TIMEOUT_MS: '2500',
      TRUST_PROXY: 'yes',
      BROKER_INSTANCE_ID: 'broker-a',
      MAX_MESSAGE_BYTES: '2048',
      HOOK_RATE_LIMIT_PER_MIN: '10',
      MESSAGE_TTL_SECONDS: '3600',
      SEND_BURST: '50',
      SEND_RATE_PER_SECOND: '5',
      LOOP_GUARD_BURST: '7',
      LOOP_GUARD_RATE_PER_SECOND: '2',
      NODE_ENV: 'production',
      LOG_LEVEL: 'debug',
      GIT_SHA: 'ABCDEF0123',
      BROKER_ADMIN_TOKEN: 'a-long-operator-token-0123',
    });
    assert.equal(result.ok, true);
    if (!result.ok) return;
    assert.deepEqual(result.config, {
      databaseUrl: 'postgresql://u:p@db.example:5432/mesh',
      host: '0.0.0.0',
      port: 8000,
      dataDir: '/var/lib/claudemesh',
      dataDirChosen: true,
      embeddedPgPort: 8001,
      embeddedPgRelocateDir: '/srv/claudemesh',
      statusTtlSeconds: 120,
      hookFreshWindowSeconds: 45,
      maxConnectionsPerMesh: 5,
      maxConnectionsPerMember: 4,
      dbStatementTimeoutMs: 2500,
      trustProxy: true,
      instanceId: 'broker-a',
      maxMessageBytes: 2048,
      hookRateLimitPerMin: 10,
      messageTtlSeconds: 3600,
      sendBurst: 50,
      sendRatePerSecond: 5,
      loopGuardBurst: 7,
      loopGuardRatePerSecond: 2,
      nodeEnv: 'production',
      logLevel: 'debug',
      gitSha: 'abcdef0123',
      adminToken: 'a-long-operator-token-0123',
    });
  });

  it('reports every problem at once, each with the value received and a fix', () => {
    const result = loadConfig({
      DATABASE_URL: 'mysql://root:hunter2@localhost/db',
      BROKER_PORT: 'seventy',
      STATUS_TTL_SECONDS: '0',
      MAX_MESSAGE_BYTES: '12.5',
      NODE_ENV: 'staging',
      GIT_SHA: 'not-a-sha',
      TRUST_PROXY: 'maybe',
    });
    assert.equal(result.ok, false);
    if (result.ok) return;
    const byVariable = new Map(result.problems.map((problem) => [problem.variable, problem]));
    assert.deepEqual([...byVariable.keys()].sort(), ['BROKER_PORT', 'DATABASE_URL', 'GIT_SHA', 'MAX_MESSAGE_BYTES', 'NODE_ENV', 'STATUS_TTL_SECONDS', 'TRUST_PROXY']);
    assert.equal(byVariable.get('BROKER_PORT')?.received, 'seventy');
    assert.equal(byVariable.get('BROKER_PORT')?.fix, 'BROKER_PORT=7900');
    assert.equal(byVariable.get('NODE_ENV')?.received, 'staging');
    assert.match(byVariable.get('NODE_ENV')?.problem ?? '', /development, production, test/);
    for (const problem of result.problems) {
      assert.ok(problem.fix.startsWith(`${problem.variable}=`), `fix for ${problem.variable} is an assignment`);
      assert.ok(problem.problem.length > 0);
    }
  });

  it('never echoes a database password in a problem', () => {
    const result = loadConfig({ DATABASE_URL: 'mysql://root:hunter2@localhost/db' });
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.doesNotMatch(JSON.stringify(result.problems), /hunter2/);
  });

  it('rejects out-of-range and non-integer numbers', () => {
    for (const value of ['-1', '65536', '1e3', '0x10', ' ', '80 80']) {
      assert.equal(loadConfig({ BROKER_PORT: value }).ok, false, `"${value}" is not a port`);
    }
    assert.equal(loadConfig({ BROKER_PORT: '0' }).ok, true, 'port 0 (ephemeral) is allowed');
  });

  it('refuses a hook fresh window longer than the status TTL, naming both', () => {
    const result = loadConfig({ STATUS_TTL_SECONDS: '20', HOOK_FRESH_WINDOW_SECONDS: '30' });
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.problems.length, 1);
    assert.equal(result.problems[0]?.variable, 'HOOK_FRESH_WINDOW_SECONDS');
    assert.match(result.problems[0]?.problem ?? '', /STATUS_TTL_SECONDS/);
    assert.equal(result.problems[0]?.fix, 'HOOK_FRESH_WINDOW_SECONDS=20');
  });

  it('refuses an embedded Postgres port equal to the broker port', () => {
    const result = loadConfig({ BROKER_PORT: '7000', EMBEDDED_PG_PORT: '7000' });
    assert.equal(result.ok, false);
    assert.equal(loadConfig({ BROKER_PORT: '7000', EMBEDDED_PG_PORT: '7000', DATABASE_URL: 'postgres://h/db' }).ok, true);
  });
});

describe('BROKER_HOST', () => {
  it('takes IP addresses and host names', () => {
    for (const host of ['127.0.0.1', '0.0.0.0', '::', '::1', 'fe80::1', 'localhost', 'broker-1.example.org', 'db']) {
      const result = loadConfig({ BROKER_HOST: host });
      assert.equal(result.ok, true, `"${host}" is a valid host`);
      if (result.ok) assert.equal(result.config.host, host);
    }
  });

  it('refuses what no socket could bind, with the other problems at once', () => {
    for (const [host, reason] of [['999.1.1.1', /IPv4/], ['10.0.0', /IPv4/], ['[::1]', /without brackets/], ['::g', /IPv6/], ['my host', /host name/], ['-bad.example', /host name/], ['a..b', /host name/]] as const) {
      const result = loadConfig({ BROKER_HOST: host, BROKER_PORT: 'x' });
      assert.equal(result.ok, false, `"${host}" is refused`);
      if (result.ok) continue;
      const problem = result.problems.find((entry) => entry.variable === 'BROKER_HOST');
      assert.equal(problem?.received, host);
      assert.match(problem?.problem ?? '', reason);
      assert.equal(problem?.fix, 'BROKER_HOST=127.0.0.1');
      assert.ok(result.problems.some((entry) => entry.variable === 'BROKER_PORT'), 'reported together with the other problems');
    }
  });

  it('refuses a relative EMBEDDED_PG_RELOCATE_DIR', () => {
    const result = loadConfig({ EMBEDDED_PG_RELOCATE_DIR: 'var/lib/x' });
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.problems[0]?.variable, 'EMBEDDED_PG_RELOCATE_DIR');
  });
});

describe('redactUrl', () => {
  it('hides the password and keeps the rest', () => {
    assert.equal(redactUrl('postgres://user:secret@host:5432/db'), 'postgres://user:***@host:5432/db');
    assert.equal(redactUrl('postgres://host/db'), 'postgres://host/db');
    assert.doesNotMatch(redactUrl('not a url://user:secret@x'), /secret/);
  });
});
