import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseVerbArgs } from '../../../lib/cli/args.ts';

const OPTIONS = { revoke: { type: 'string' }, mesh: { type: 'string' }, force: { type: 'boolean', short: 'f' } } as const;
const ANY = { min: 0, max: 3 };

describe('parseVerbArgs', () => {
  it('takes a value that starts with "-" as the value of the option before it (an invite id such as -x3Fq)', () => {
    const parsed = parseVerbArgs('invite', ['--revoke', '-x3FqZ_9', '--mesh', 'team'], OPTIONS, ANY);
    assert.equal(parsed.values.revoke, '-x3FqZ_9');
    assert.equal(parsed.values.mesh, 'team');
  });

  it('still reads a known option after an option that wants a value as a missing value', () => {
    assert.throws(() => parseVerbArgs('invite', ['--revoke', '--json'], OPTIONS, ANY), { code: 'CM_ERR_USAGE', message: /--revoke needs a value/ });
    assert.throws(() => parseVerbArgs('invite', ['--mesh', '-f'], OPTIONS, ANY), { code: 'CM_ERR_USAGE', message: /--mesh needs a value/ });
  });

  it('leaves what follows -- as positionals, and unknown options refused with a suggestion', () => {
    assert.deepEqual(parseVerbArgs('send', ['bob', '--', '--mesh', '-x'], OPTIONS, ANY).positionals, ['bob', '--mesh', '-x']);
    assert.throws(() => parseVerbArgs('send', ['--mesg', 'x'], OPTIONS, ANY), { code: 'CM_ERR_USAGE', message: /did you mean --mesh/ });
  });
});
