// The rules of daemon/storage.ts, on any machine and as any user: a real SQLite database
// that runs out of room (max_page_count stands in for the disk) and a real read-only one.
// The same rules on a real full tmpfs and a real ext4 turned read-only run as root in
// `just chaos` (test/daemon/storage-disk.chaos.ts).

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { EventRing } from '../../daemon/events.ts';
import { reported, storageFailure, storing } from '../../daemon/storage.ts';

const ROW = 'x'.repeat(2_000);
let databases = 0;

/** The error SQLite itself throws when a fresh database may not grow. */
function fullError(dir: string): unknown {
  databases += 1;
  const db = new Database(join(dir, `full-${databases}.db`));
  try {
    db.exec('CREATE TABLE t (v TEXT)');
    db.pragma('max_page_count = 4');
    const insert = db.prepare('INSERT INTO t VALUES (?)');
    for (;;) insert.run(ROW);
  } catch (error) {
    return error;
  } finally {
    db.close();
  }
}

describe('daemon storage failures', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cm-storage-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('names the directory, the cause and what became of the request when the database is full', () => {
    const error = fullError(dir);
    assert.equal((error as { code?: string }).code, 'SQLITE_FULL');
    const failure = storageFailure(error, dir, 'message m-1 was not queued');
    assert.equal(failure?.code, 'CM_ERR_DAEMON_STORAGE');
    assert.match(failure?.message ?? '', new RegExp(`^the daemon could not write under ${dir}: the disk is full \\(SQLITE_FULL: .+\\); message m-1 was not queued$`));
    assert.match(failure?.hint ?? '', new RegExp(`df -h ${dir}`));
    assert.deepEqual(failure?.details, { path: dir, code: 'SQLITE_FULL' });
  });

  it('calls a write into a read-only database read-only, and leaves other errors alone', () => {
    const path = join(dir, 'ro.db');
    new Database(path).exec('CREATE TABLE t (v TEXT)');
    const db = new Database(path, { readonly: true });
    let error: unknown;
    try {
      db.exec("INSERT INTO t VALUES ('x')");
    } catch (caught) {
      error = caught;
    } finally {
      db.close();
    }
    assert.match((error as { code?: string }).code ?? '', /^SQLITE_READONLY/);
    assert.match(storageFailure(error, dir)?.message ?? '', /: it is read-only, or not writable by this user \(SQLITE_READONLY/);
    assert.equal(storageFailure(new TypeError('a bug'), dir), undefined);
    assert.equal(storageFailure(Object.assign(new Error('constraint'), { code: 'SQLITE_CONSTRAINT_UNIQUE' }), dir), undefined);
  });

  it('storing answers with the storage error, passes anything else and every value through', () => {
    assert.equal(storing(dir, 'nothing lost', () => 42), 42);
    assert.throws(() => storing(dir, 'message m-2 was not queued', () => {
      throw fullError(dir);
    }), (error: Error & { code?: string }) => error.code === 'CM_ERR_DAEMON_STORAGE' && /message m-2 was not queued$/.test(error.message));
    assert.throws(() => storing(dir, 'x', () => {
      throw new RangeError('not the disk');
    }), RangeError);
  });

  it('reported keeps a handler that fails from ending the process, and says what failed', () => {
    const events = new EventRing({});
    reported(events, dir, 'storing a pushed message', () => {
      throw fullError(dir);
    })();
    reported(events, dir, 'keeping the roster', () => {
      throw new Error('a bug');
    })();
    const [storage, other] = events.list();
    assert.equal(storage?.kind, 'storage_failed');
    assert.equal(storage?.while, 'storing a pushed message');
    assert.equal(storage?.code, 'CM_ERR_DAEMON_STORAGE');
    assert.equal(other?.kind, 'daemon_error');
    assert.deepEqual([other?.while, other?.message], ['keeping the roster', 'a bug']);
  });
});
