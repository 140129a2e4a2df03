/** The SQLite mail store: migrations, records, and change detection across processes' connections. */
import path from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { SCHEMA_VERSION, SqliteStore } from '../../plugins/vpopmail/sqlite-store.js';
import { tempDir } from '../helpers.js';

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

t.test('domains, users, aliases: records round-trip; conflicts are StoreConflicts', async (t) => {
  const dir = await tempDir(t);
  const s = new SqliteStore(path.join(dir, 'db.sqlite'));
  t.teardown(() => s.close());
  s.addDomain({ name: 'example.test', catchall: { kind: 'forward', address: 'pm@example.test' } });
  t.throws(() => s.addDomain({ name: 'example.test' }), { name: 'StoreConflict' });
  t.throws(() => s.addUser({ domain: 'none.test', name: 'x', passwordHash: 'h' }), { name: 'StoreConflict' });
  s.addUser({ domain: 'example.test', name: 'alice', passwordHash: 'h', clearPassword: 'clear', quota: '1000C', flags: { noPop: true } });
  t.throws(() => s.addUser({ domain: 'example.test', name: 'alice', passwordHash: 'h' }), { name: 'StoreConflict' });
  const alice = s.getUser('example.test', 'alice')!;
  t.match(alice, { quota: '1000C', clearPassword: undefined, flags: { noPop: true, noSmtp: false }, spamFiling: undefined });
  t.same(s.getDomain('example.test')!.catchall, { kind: 'forward', address: 'pm@example.test' });

  s.updateDomain('example.test', { clearPasswords: true });
  s.updateUser('example.test', 'alice', { clearPassword: 'kept', flags: { noSmtp: true } });
  t.match(s.getUser('example.test', 'alice'), { clearPassword: 'kept', flags: { noPop: true, noSmtp: true } }, 'flags merge');
  s.updateDomain('example.test', { clearPasswords: false });
  t.equal(s.getUser('example.test', 'alice')!.clearPassword, undefined, 'turning clear passwords off erases them');

  s.addAliasTarget('example.test', 'team', 'b@x.test');
  s.addAliasTarget('example.test', 'team', 'a@x.test');
  s.addAliasTarget('example.test', 'team', 'b@x.test');
  t.same(s.getAlias('example.test', 'team')!.targets, ['b@x.test', 'a@x.test'], 'in the order added, no duplicates');
  t.same(
    s.aliasesTargeting('example.test', 'A@X.test').map((a) => a.name),
    ['team'],
  );
  t.ok(s.deleteDomain('example.test'));
  t.same([s.listUsers('example.test'), s.listAliases()], [[], []], 'users and aliases go with their domain');
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
