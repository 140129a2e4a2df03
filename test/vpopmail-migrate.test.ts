/**
 * `yubin store migrate`: a populated SQLite site copied to PostgreSQL and back
 * with nothing lost (every record compared), refusals without --force, and
 * one-line errors for missing locations.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { hashPassword } from '../plugins/vpopmail/passwords.js';
import { PostgresStore } from '../plugins/vpopmail/postgres-store.js';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { USER_FLAG_BITS, flagsFromBits, type DomainDump, type MailStore, type UserRecord } from '../plugins/vpopmail/store.js';
import { tempDir, yubin } from './helpers.js';
import { needsPostgres, startPostgres } from './peers/postgres.js';

/** Users in the bulk domain: enough to time the copy. */
const BULK = 5_000;

/** Every record of every domain, in a comparable form. */
async function everything(store: MailStore) {
  const out = [];
  for (const domain of await store.listDomains()) {
    out.push({ domain, users: await store.listUsers(domain.name), aliases: await store.listAliases(domain.name) });
  }
  return out;
}

/** A site as years of vpopmail and yubin leave it: imported crypts, clear passwords, flags, logins, aliases, catch-alls. */
async function populate(s: SqliteStore): Promise<void> {
  s.addDomain({ name: 'example.test', catchall: { kind: 'forward', address: 'postmaster@example.test' }, clearPasswords: true, defaultQuota: '50000000S' });
  s.addUser({ domain: 'example.test', name: 'postmaster', passwordHash: await hashPassword('pm'), clearPassword: 'pm', realName: 'Postmaster' });
  s.addUser({ domain: 'example.test', name: 'alice', passwordHash: '$1$abcdefgh$4wh4zT4/Jx3bYVkL3F4Hq/', clearPassword: 'alice', flags: { noPop: true, domainAdmin: true }, spamFiling: true });
  s.addUser({ domain: 'example.test', name: 'bob', passwordHash: '$6$salt$' + 'x'.repeat(86), quota: '1000C', dir: '/home/vpopmail/domains/example.test/0/bob', spamFiling: false });
  s.addUser({ domain: 'example.test', name: 'clear', passwordHash: 'plain text password' });
  s.recordLogin('example.test', 'alice', 1_700_000_000_001, '192.0.2.1', 'pop3');
  s.recordLogin('example.test', 'bob', 1_700_000_000_002, '2001:db8::2', 'smtp');
  s.addAliasTarget('example.test', 'sales', 'bob@example.test');
  s.addAliasTarget('example.test', 'sales', 'alice@example.test');
  s.addAliasTarget('example.test', 'sales', 'Partner@Elsewhere.Test');
  s.addAliasTarget('example.test', 'alice', 'alice-archive@elsewhere.test');
  s.addDomain({ name: 'drop.test', catchall: { kind: 'delete' }, spamFiling: true });
  s.addDomain({ name: 'empty.test' });
  // The bulk domain straight through importDomains: 5,000 addUser calls would time SQLite, not the migration.
  const users: UserRecord[] = [];
  for (let i = 0; i < BULK; i++) {
    users.push({
      domain: 'bulk.test',
      name: `user${String(i).padStart(5, '0')}`,
      passwordHash: i % 3 === 0 ? `$1$s${i}$hash` : `$scrypt$N=16384,r=8,p=1$c2FsdA$${i}`,
      clearPassword: undefined,
      quota: i % 2 ? 'NOQUOTA' : '10000000S,1000C',
      flags: flagsFromBits(i % (USER_FLAG_BITS.domainAdmin * 2)),
      realName: `User ${i} Ünïcode`,
      dir: i % 7 === 0 ? `/srv/mail/${i}` : undefined,
      spamFiling: i % 5 === 0 ? undefined : i % 5 === 1,
      created: 1_600_000_000_000 + i,
      lastAuth: i % 4 === 0 ? { time: 1_690_000_000_000 + i, ip: `198.51.100.${i % 250}`, service: i % 8 ? 'pop3' : 'smtp' } : undefined,
    });
  }
  const bulk: DomainDump = {
    domain: { name: 'bulk.test', catchall: { kind: 'bounce-no-mailbox' }, clearPasswords: false, spamFiling: false, defaultQuota: 'NOQUOTA', created: 1_590_000_000_000 },
    users,
    aliases: Array.from({ length: 200 }, (_, i) => ({ domain: 'bulk.test', name: `list${i}`, targets: [`user${String(i).padStart(5, '0')}@bulk.test`, `z${i}@far.test`, `a${i}@far.test`] })),
  };
  s.importDomains([bulk], { replace: false });
}

const { skip } = needsPostgres();

t.test('sqlite → postgres → sqlite: every domain, user and alias arrives as it was', { skip }, async (t) => {
  const peer = await startPostgres(t);
  const url = await peer.createDatabase('migrated');
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, ['dataDir: ./var', 'plugins:', '  vpopmail: {}', 'listeners:', '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [vpopmail] }', ''].join('\n'));
  const sqliteFile = path.join(dir, 'var/vpopmail.sqlite');
  const source = new SqliteStore(sqliteFile);
  await populate(source);
  const before = await everything(source);
  source.close();

  const noUrl = await yubin(['store', 'migrate', '--from', 'sqlite', '--to', 'postgres', '-c', config]);
  t.equal(noUrl.code, 2);
  t.equal(noUrl.stderr, "yubin: --to-url is needed: the config's plugins.vpopmail.store is not postgres\n");

  const started = performance.now();
  const copy = await yubin(['store', 'migrate', '--from', 'sqlite', '--to', 'postgres', '--to-url', url, '-c', config]);
  const wall = performance.now() - started;
  t.equal(copy.code, 0, copy.stderr);
  const line = new RegExp(`^copied 4 domains, ${BULK + 4} users, 202 aliases \\(604 targets\\) from sqlite ${sqliteFile.replace(/\./g, '\\.')} to postgres 127\\.0\\.0\\.1:${peer.port}/migrated in [\\d.]+ s\\n$`);
  t.match(copy.stdout, line);
  t.comment(`migrate of ${BULK + 4} users: ${copy.stdout.trim().replace(/.* in /, '')} copying, ${(wall / 1000).toFixed(2)} s with the command's start-up`);

  const pgStore = new PostgresStore(url);
  t.teardown(() => pgStore.close());
  const copied = await everything(pgStore);
  t.same(copied, before, 'every record identical: hashes, clear passwords, flags, dirs, spam filing, created, last logins, alias order, catch-alls');
  t.equal(copied.find((d) => d.domain.name === 'bulk.test')?.users.length, BULK);

  const again = await yubin(['store', 'migrate', '--from', 'sqlite', '--to', 'postgres', '--to-url', url, '-c', config]);
  t.equal(again.code, 2);
  t.equal(again.stderr, 'yubin: the target already has 4 domains of the source (bulk.test, drop.test, empty.test, example.test): use --force to replace them with the source\'s\n');

  // Changed in the target meanwhile, then replaced by --force: the source's records win.
  await pgStore.deleteUser('example.test', 'alice');
  await pgStore.addDomain({ name: 'only-in-target.test' });
  const forced = await yubin(['store', 'migrate', '--from', 'sqlite', '--to', 'postgres', '--to-url', url, '--force', '-c', config]);
  t.equal(forced.code, 0, forced.stderr);
  t.same(
    (await everything(pgStore)).filter((d) => d.domain.name !== 'only-in-target.test'),
    before,
    '--force replaced the domains',
  );
  t.ok(await pgStore.getDomain('only-in-target.test'), "a domain the source lacks is left alone");
  await pgStore.deleteDomain('only-in-target.test');

  // The site switched to PostgreSQL; the way back takes its URL from the config.
  const pgConfig = path.join(dir, 'yubin-pg.yaml');
  await writeFile(pgConfig, ['dataDir: ./var', 'plugins:', `  vpopmail: { store: { backend: postgres, url: "${url}" } }`, 'listeners:', '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [vpopmail] }', ''].join('\n'));
  const backFile = path.join(dir, 'back.sqlite');
  const back = await yubin(['store', 'migrate', '--from', 'postgres', '--to', 'sqlite', '--to-url', backFile, '-c', pgConfig]);
  t.equal(back.code, 0, back.stderr);
  t.match(back.stdout, /^copied 4 domains, 5004 users, 202 aliases \(604 targets\) from postgres .* to sqlite .*back\.sqlite in/);
  const roundTrip = new SqliteStore(backFile);
  t.teardown(() => roundTrip.close());
  t.same(await everything(roundTrip), before, 'and back to SQLite, still identical');

  const same = await yubin(['store', 'migrate', '--from', 'postgres', '--to', 'postgres', '-c', pgConfig]);
  t.equal(same.code, 2);
  t.match(same.stderr, /^yubin: source and target are the same store \(postgres 127\.0\.0\.1:\d+\/migrated\)\n$/);
});

t.test('one-line errors: no source file, an unreachable target', async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, ['dataDir: ./var', 'plugins:', '  vpopmail: {}', 'listeners:', '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [vpopmail] }', ''].join('\n'));
  const missing = await yubin(['store', 'migrate', '--from', 'sqlite', '--to', 'postgres', '--to-url', 'postgres://yubin@127.0.0.1:1/x', '-c', config]);
  t.equal(missing.code, 2);
  t.equal(missing.stderr, `yubin: no SQLite mail store at ${path.join(dir, 'var/vpopmail.sqlite')}\n`);
  new SqliteStore(path.join(dir, 'var/vpopmail.sqlite')).close();
  // Port 1 on loopback: nothing listens there, so the connection is refused at once.
  const refused = await yubin(['store', 'migrate', '--from', 'sqlite', '--to', 'postgres', '--to-url', 'postgres://yubin:secret@127.0.0.1:1/x', '-c', config]);
  t.equal(refused.code, 1);
  t.equal(refused.stderr, 'yubin: mail store: PostgreSQL at 127.0.0.1:1/x unreachable: connect ECONNREFUSED 127.0.0.1:1\n', 'one line, no password');
  const bad = await yubin(['store', 'migrate', '--from', 'sqlite', '--to', 'oracle', '-c', config]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /^yubin: error: option '--to <backend>' argument 'oracle' is invalid\. Allowed choices are sqlite, postgres\.\n$/);
});
