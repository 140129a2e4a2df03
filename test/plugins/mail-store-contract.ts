/**
 * What every MailStore answers alike, run against each backend (SQLite in
 * vpopmail-store.test.ts, PostgreSQL in vpopmail-postgres.test.ts): records
 * round-trip, conflicts, case and order, whole-domain imports.
 */
import type { Test } from 'tap';
import type { DomainDump, MailStore, UserRecord } from '../../plugins/vpopmail/store.js';

/** A fresh, empty store for one test case; closed by the factory at the case's end. */
export type OpenStore = (t: Test) => Promise<MailStore>;

/** A synchronous throw (SQLite) and a rejection (PostgreSQL) alike. */
const attempt = (fn: () => unknown) => async () => {
  await fn();
};

export function mailStoreContract(t: Test, open: OpenStore): void {
  t.test('domains, users, aliases: records round-trip; conflicts are StoreConflicts', async (t) => {
    const s = await open(t);
    await s.addDomain({ name: 'example.test', catchall: { kind: 'forward', address: 'pm@example.test' } });
    await t.rejects(attempt(() => s.addDomain({ name: 'example.test' })), { name: 'StoreConflict', message: 'domain example.test exists' });
    await t.rejects(attempt(() => s.addUser({ domain: 'none.test', name: 'x', passwordHash: 'h' })), { name: 'StoreConflict', message: 'domain none.test does not exist' });
    await t.rejects(attempt(() => s.addAliasTarget('none.test', 'x', 'y@z.test')), { name: 'StoreConflict' });
    await s.addUser({ domain: 'example.test', name: 'alice', passwordHash: 'h', clearPassword: 'clear', quota: '1000C', flags: { noPop: true } });
    await t.rejects(attempt(() => s.addUser({ domain: 'example.test', name: 'alice', passwordHash: 'h' })), { name: 'StoreConflict', message: 'user alice@example.test exists' });
    const alice = (await s.getUser('example.test', 'alice'))!;
    t.match(alice, { quota: '1000C', clearPassword: undefined, flags: { noPop: true, noSmtp: false }, spamFiling: undefined, dir: undefined, lastAuth: undefined });
    t.type(alice.created, 'number');
    t.same((await s.getDomain('example.test'))!.catchall, { kind: 'forward', address: 'pm@example.test' });
    t.equal(await s.countUsers('example.test'), 1);

    await s.updateDomain('example.test', { clearPasswords: true });
    await s.updateUser('example.test', 'alice', { clearPassword: 'kept', flags: { noSmtp: true }, spamFiling: false, dir: '/home/alice' });
    t.match(await s.getUser('example.test', 'alice'), { clearPassword: 'kept', flags: { noPop: true, noSmtp: true }, spamFiling: false, dir: '/home/alice' }, 'flags merge');
    await s.updateDomain('example.test', { clearPasswords: false });
    t.equal((await s.getUser('example.test', 'alice'))!.clearPassword, undefined, 'turning clear passwords off erases them');
    t.equal(await s.updateUser('example.test', 'nobody', { quota: '1C' }), undefined);
    t.equal(await s.updateDomain('none.test', { spamFiling: true }), undefined);

    await s.recordLogin('example.test', 'alice', 1_700_000_000_123, '192.0.2.7', 'pop3');
    t.same((await s.getUser('example.test', 'alice'))!.lastAuth, { time: 1_700_000_000_123, ip: '192.0.2.7', service: 'pop3' });

    await s.addAliasTarget('example.test', 'team', 'b@x.test');
    await s.addAliasTarget('example.test', 'team', 'a@x.test');
    await s.addAliasTarget('example.test', 'team', 'b@x.test');
    t.same((await s.getAlias('example.test', 'team'))!.targets, ['b@x.test', 'a@x.test'], 'in the order added, no duplicates');
    t.same((await s.aliasesTargeting('example.test', 'A@X.test')).map((a) => a.name), ['team'], 'targets compare without case');
    t.same(await s.listAliases(), [{ domain: 'example.test', name: 'team', targets: ['b@x.test', 'a@x.test'] }]);
    t.ok(await s.removeAlias('example.test', 'team', 'b@x.test'));
    t.notOk(await s.removeAlias('example.test', 'team', 'b@x.test'), 'nothing left to remove');
    t.same((await s.getAlias('example.test', 'team'))!.targets, ['a@x.test']);
    t.ok(await s.deleteUser('example.test', 'alice'));
    t.notOk(await s.deleteUser('example.test', 'alice'));
    await s.addUser({ domain: 'example.test', name: 'bob', passwordHash: 'h' });
    t.ok(await s.deleteDomain('example.test'));
    t.notOk(await s.deleteDomain('example.test'));
    t.same([await s.listUsers('example.test'), await s.listAliases()], [[], []], 'users and aliases go with their domain');
  });

  t.test('names compare exactly and sort byte-wise, as SQLite does', async (t) => {
    const s = await open(t);
    for (const name of ['ab.test', 'a.test', 'a-b.test', 'B.test']) await s.addDomain({ name });
    t.same(await s.domainNames(), ['B.test', 'a-b.test', 'a.test', 'ab.test'], 'upper case first, then - before . before letters');
    t.same(
      (await s.listDomains()).map((d) => d.name),
      ['B.test', 'a-b.test', 'a.test', 'ab.test'],
    );
    t.equal(await s.getDomain('b.test'), undefined, 'lookups are exact: callers lower-case');
    await s.addUser({ domain: 'a.test', name: 'alice', passwordHash: 'h' });
    t.equal(await s.getUser('a.test', 'Alice'), undefined);
    await s.addAliasTarget('a.test', 'x', 'Mixed@Case.Test');
    t.same((await s.aliasesTargeting('a.test', 'mixed@case.test')).map((a) => a.targets), [['Mixed@Case.Test']], 'kept as given, found without case');
  });

  t.test('importDomains writes whole domains as they are, all or nothing; replace swaps them', async (t) => {
    const s = await open(t);
    const user = (name: string, extra: Partial<UserRecord> = {}): UserRecord => ({
      domain: 'imp.test',
      name,
      passwordHash: `$1$salt$${name}`,
      clearPassword: undefined,
      quota: '1000000S',
      flags: { noPasswordChange: false, noPop: false, noWebmail: false, noImap: true, bounceMail: false, noRelay: false, noSmtp: false, domainAdmin: true },
      realName: `The ${name}`,
      dir: undefined,
      spamFiling: undefined,
      created: 1_600_000_000_000,
      lastAuth: undefined,
      ...extra,
    });
    const dump: DomainDump = {
      domain: { name: 'imp.test', catchall: { kind: 'delete' }, clearPasswords: true, spamFiling: true, defaultQuota: '5MB', created: 1_500_000_000_000 },
      users: [
        user('alice', { clearPassword: 'secret', lastAuth: { time: 1_650_000_000_000, ip: '2001:db8::1', service: 'smtp' }, spamFiling: false }),
        user('bob', { dir: '/var/vpopmail/domains/imp.test/0/bob', passwordHash: '$scrypt$N=16384,r=8,p=1$abc$def' }),
      ],
      aliases: [{ domain: 'imp.test', name: 'all', targets: ['z@imp.test', 'a@imp.test', 'm@elsewhere.test'] }],
    };
    await s.importDomains([dump], { replace: false });
    t.same(await s.getDomain('imp.test'), dump.domain, 'the domain, created time included');
    t.same(await s.listUsers('imp.test'), dump.users, 'every field of every user');
    t.same(await s.listAliases('imp.test'), dump.aliases, 'targets in their order');

    const other: DomainDump = { domain: { ...dump.domain, name: 'other.test' }, users: [], aliases: [] };
    await t.rejects(attempt(() => s.importDomains([other, dump], { replace: false })), { name: 'StoreConflict', message: 'domain imp.test exists' });
    t.equal(await s.getDomain('other.test'), undefined, 'all or nothing: the first domain was not kept');

    const smaller: DomainDump = { domain: { ...dump.domain, spamFiling: false }, users: [dump.users[1]!], aliases: [] };
    await s.importDomains([smaller, other], { replace: true });
    t.same(await s.listUsers('imp.test'), [dump.users[1]], 'replaced: alice is gone');
    t.same(await s.listAliases('imp.test'), []);
    t.same(await s.domainNames(), ['imp.test', 'other.test']);
  });

  t.test('changeCounter moves with its own writes', async (t) => {
    const s = await open(t);
    const before = s.changeCounter();
    t.equal(s.changeCounter(), before, 'stable while nothing changes');
    await s.addDomain({ name: 'own.test' });
    t.not(s.changeCounter(), before, 'own write counted at once');
  });
}
