/** The SQLite mail store: migrations, the MailStore contract, and change detection across processes' connections. */
import path from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { SCHEMA_VERSION, SqliteStore } from '../../plugins/vpopmail/sqlite-store.js';
import { tempDir } from '../helpers.js';
import { mailStoreContract } from './mail-store-contract.js';

t.test('a new file gets the whole schema; a newer one is refused, not damaged', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'sub/vpopmail.sqlite');
  new SqliteStore(file).close();
  const db = new Database(file);
  t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal', 'WAL: the CLI writes while the server reads');
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  t.throws(() => new SqliteStore(file), /schema version \d+ is newer than this yubin knows/);
});

// The cases every backend answers alike (vpopmail-postgres.test.ts runs them on PostgreSQL).
mailStoreContract(t, async (t) => {
  const s = new SqliteStore(path.join(await tempDir(t), 'db.sqlite'));
  t.teardown(() => s.close());
  return s;
});

t.test('changeCounter moves when another connection commits (the CLI while the server runs)', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'db.sqlite');
  const server = new SqliteStore(file);
  const cli = new SqliteStore(file);
  t.teardown(() => {
    server.close();
    cli.close();
  });
  const before = server.changeCounter();
  t.equal(server.changeCounter(), before, 'stable while nothing changes');
  cli.addDomain({ name: 'new.test' });
  t.not(server.changeCounter(), before, 'another connection committed');
  t.same(server.domainNames(), ['new.test']);
  const mid = server.changeCounter();
  server.addDomain({ name: 'own.test' });
  t.not(server.changeCounter(), mid, 'its own writes count too');
});
