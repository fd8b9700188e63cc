import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cmError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/log.ts';

function capture(level?: 'debug' | 'info' | 'warn' | 'error') {
  const lines: string[] = [];
  const log = createLogger({ ...(level === undefined ? {} : { level }), write: (line) => lines.push(line), now: () => new Date('2026-01-02T03:04:05.000Z') });
  return { lines, log, records: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

describe('createLogger', () => {
  it('writes one JSON object per line with time, level, msg and fields', () => {
    const { lines, log } = capture();
    log.info('broker listening', { port: 7900 });
    assert.equal(lines.length, 1);
    assert.ok(lines[0]?.endsWith('\n'));
    assert.equal(lines[0]?.split('\n').length, 2);
    assert.deepEqual(JSON.parse(lines[0] ?? ''), { time: '2026-01-02T03:04:05.000Z', level: 'info', msg: 'broker listening', port: 7900 });
  });

  it('drops lines under the threshold', () => {
    const { records, log } = capture('warn');
    log.debug('a');
    log.info('b');
    log.warn('c');
    log.error('d');
    assert.deepEqual(records().map((record) => record.msg), ['c', 'd']);
  });

  it('flattens errors to code and message, with the stack only at debug', () => {
    const info = capture('info');
    info.log.error('start failed', { error: cmError('CM_ERR_MIGRATION_FAILED', 'bad sql') });
    assert.deepEqual(info.records()[0]?.error, { message: 'bad sql', code: 'CM_ERR_MIGRATION_FAILED' });
    const debug = capture('debug');
    debug.log.error('x', { error: Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }) });
    const flat = debug.records()[0]?.error as Record<string, unknown>;
    assert.equal(flat.code, 'ECONNREFUSED');
    assert.match(String(flat.stack), /refused/);
  });

  it('carries child fields on every line', () => {
    const { records, log } = capture();
    log.child({ component: 'postgres' }).info('ready', { port: 1 });
    assert.equal(records()[0]?.component, 'postgres');
    assert.equal(records()[0]?.port, 1);
  });

  it('survives fields that cannot be serialised', () => {
    const { records, log } = capture();
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    log.info('odd', { cycle, big: 1n });
    assert.equal(records()[0]?.msg, 'odd');
    assert.equal(records()[0]?.logError, 'unserialisable fields');
  });
});
