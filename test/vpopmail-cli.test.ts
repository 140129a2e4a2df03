/** `yubin domain|user|alias` as an administrator types them: effects on the store and disk, JSON, one-line errors with exit 2. */
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { verifyPassword } from '../plugins/vpopmail/passwords.js';
import { CLI, run, tempDir, yubin } from './helpers.js';

async function setup(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, ['dataDir: ./var', 'plugins:', '  vpopmail: {}', 'listeners:', '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [vpopmail] }', ''].join('\n'));
  const y = (...args: string[]) => yubin([...args, '-c', config]);
  /** With standard input, for --password-stdin. */
  const ys = (input: string, ...args: string[]) => run(process.execPath, [CLI, ...args, '-c', config], { input });
  const store = () => new SqliteStore(path.join(dir, 'var/vpopmail.sqlite'));
  return { dir, config, y, ys, store, root: path.join(dir, 'var/domains') };
}

t.test('domain add makes the postmaster and its Maildir; info and list, also as JSON', async (t) => {
  const { y, store, root } = await setup(t);
  const add = await y('domain', 'add', 'Example.TEST', '--password', 'pm secret', '--quota', '50MB');
  t.equal(add.code, 0, add.stderr);
  t.match(add.stdout, /added domain example\.test with postmaster@example\.test/);
  t.same((await readdir(path.join(root, 'example.test/postmaster/Maildir'))).sort(), ['cur', 'new', 'tmp']);
  const s = store();
  t.ok(await verifyPassword('pm secret', s.getUser('example.test', 'postmaster')!.passwordHash), 'postmaster has the password');
  s.close();
  const info = JSON.parse((await y('domain', 'info', 'example.test', '--json')).stdout) as Record<string, unknown>;
  t.match(info, { domain: 'example.test', users: 1, catchall: 'bounce-no-mailbox', defaultQuota: '52428800S', clearPasswords: false });
  t.same(JSON.parse((await y('domain', 'list', '--json')).stdout), ['example.test']);
  const again = await y('domain', 'add', 'example.test', '--password', 'x');
  t.equal(again.code, 2);
  t.equal(again.stderr, 'yubin: domain example.test exists\n', 'one line');
  const random = await y('domain', 'add', 'other.test');
  t.match(random.stdout, /password \S{12,}/, 'without a terminal a random password is made and printed once');
});

t.test('users: add with --password-stdin, passwd, quota, mod flags, info with usage, list, del', async (t) => {
  const { y, ys, store, root } = await setup(t);
  await y('domain', 'add', 'example.test', '--password', 'pm');
  const add = await ys('alice pw\n', 'user', 'add', 'alice@example.test', '--password-stdin', '--quota', '10000000S,1000C', '--name', 'Alice Liddell');
  t.equal(add.code, 0, add.stderr);
  t.ok((await readdir(path.join(root, 'example.test/alice/Maildir'))).includes('new'));
  let s = store();
  t.ok(await verifyPassword('alice pw', s.getUser('example.test', 'alice')!.passwordHash), 'password read from stdin, first line only');
  s.close();
  t.equal((await y('user', 'passwd', 'alice@example.test', '--password', 'new pw')).code, 0);
  t.equal((await y('user', 'quota', 'alice@example.test', '1000C')).code, 0);
  t.equal((await y('user', 'mod', 'alice@example.test', '--disable', 'pop', 'relay', '--spam-filing', 'on')).code, 0);
  s = store();
  const alice = s.getUser('example.test', 'alice')!;
  s.close();
  t.ok(await verifyPassword('new pw', alice.passwordHash));
  t.equal(alice.quota, '1000C');
  t.match(alice.flags, { noPop: true, noRelay: true, noSmtp: false });
  t.equal(alice.spamFiling, true);
  const info = JSON.parse((await y('user', 'info', 'alice@example.test', '--json')).stdout) as Record<string, unknown>;
  t.match(info, { address: 'alice@example.test', realName: 'Alice Liddell', quota: '1000C', disabled: ['pop', 'relay'], usage: { count: 0, percent: 0 } });
  t.match((await y('user', 'info', 'alice@example.test')).stdout, /^name: alice@example\.test\n[\s\S]*usage: 0%/);
  t.equal((await y('user', 'mod', 'alice@example.test', '--enable', 'pop')).code, 0);
  t.same((JSON.parse((await y('user', 'list', 'example.test', '--json')).stdout) as Array<{ address: string; disabled: string[] }>).map((u) => [u.address, u.disabled]), [
    ['alice@example.test', ['relay']],
    ['postmaster@example.test', []],
  ]);
  t.equal((await y('user', 'del', 'alice@example.test')).code, 0);
  t.same(await readdir(path.join(root, 'example.test')), ['postmaster'], 'the mailbox directory is gone too');
});

t.test('aliases and catch-alls', async (t) => {
  const { y } = await setup(t);
  await y('domain', 'add', 'example.test', '--password', 'pm');
  t.equal((await y('alias', 'add', 'sales@example.test', 'alice@example.test')).code, 0);
  t.equal((await y('alias', 'add', 'sales@example.test', 'bob@elsewhere.test')).code, 0);
  t.equal((await y('alias', 'list', 'example.test')).stdout, 'sales@example.test -> alice@example.test\nsales@example.test -> bob@elsewhere.test\n');
  t.same(JSON.parse((await y('alias', 'list', '--json')).stdout), [{ alias: 'sales@example.test', targets: ['alice@example.test', 'bob@elsewhere.test'] }]);
  t.equal((await y('alias', 'del', 'sales@example.test', 'bob@elsewhere.test')).code, 0);
  t.equal((await y('alias', 'del', 'sales@example.test')).code, 0);
  t.equal((await y('alias', 'list')).stdout, '');
  for (const [what, shown] of [
    ['delete', 'delete'],
    ['postmaster@example.test', 'postmaster@example.test'],
    ['bounce', 'bounce-no-mailbox'],
  ]) {
    const r = await y('domain', 'catchall', 'example.test', what!);
    t.equal(r.code, 0);
    t.equal(r.stdout, `catch-all of example.test: ${shown}\n`);
  }
});

t.test('domain del refuses while mailboxes exist, unless --force', async (t) => {
  const { y, root } = await setup(t);
  await y('domain', 'add', 'example.test', '--password', 'pm');
  await y('user', 'add', 'alice@example.test', '--password', 'a');
  const refused = await y('domain', 'del', 'example.test');
  t.equal(refused.code, 2);
  t.match(refused.stderr, /^yubin: domain example\.test has 1 mailbox\(es\) besides postmaster: use --force/);
  const forced = await y('domain', 'del', 'example.test', '--force');
  t.equal(forced.code, 0, forced.stderr);
  t.same(await readdir(root), [], 'its directory is gone');
  t.same(JSON.parse((await y('domain', 'list', '--json')).stdout), []);
});

t.test('bad input: one line naming the problem, exit 2, nothing changed', async (t) => {
  const { y } = await setup(t);
  await y('domain', 'add', 'example.test', '--password', 'pm');
  const cases: Array<[string[], RegExp]> = [
    [['user', 'add', 'alice', '--password', 'x'], /^yubin: invalid address: alice \(expected user@domain\)$/],
    [['user', 'add', 'a/b@example.test', '--password', 'x'], /^yubin: invalid address/],
    [['user', 'add', '.hidden@example.test', '--password', 'x'], /^yubin: invalid address/],
    [['user', 'add', 'x@nowhere.test', '--password', 'x'], /^yubin: no such domain: nowhere\.test$/],
    [['user', 'add', 'x@example.test', '--password', 'x', '--quota', '10X'], /^yubin: invalid quota: 10X/],
    [['user', 'add', 'x@example.test', '--password', ''], /^yubin: empty password$/],
    [['user', 'add', 'x@example.test', '--password', 'a', '--random'], /^yubin: give only one of/],
    [['user', 'quota', 'postmaster@example.test', '-5S'], /^yubin: /],
    [['user', 'info', 'ghost@example.test'], /^yubin: no such user: ghost@example\.test$/],
    [['user', 'mod', 'postmaster@example.test', '--disable', 'ftp'], /^yubin: unknown service: ftp/],
    [['domain', 'add', 'bad_domain!', '--password', 'x'], /^yubin: invalid domain name: bad_domain!$/],
    [['domain', 'catchall', 'example.test', 'somewhere'], /^yubin: invalid catch-all: somewhere/],
    [['domain', 'mod', 'example.test', '--spam-filing', 'maybe'], /^yubin: --spam-filing: expected on or off, got maybe$/],
    [['alias', 'del', 'none@example.test'], /^yubin: no such alias: none@example\.test$/],
    [['user', 'frobnicate'], /^yubin: error: unknown command 'frobnicate'/],
  ];
  for (const [args, message] of cases) {
    const r = await y(...args);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr.split('\n').filter(Boolean)[0], message, args.join(' '));
    t.ok(r.stderr.trim().split('\n').length <= 2, `${args.join(' ')}: a short answer, not a stack trace`);
  }
  t.same(JSON.parse((await y('user', 'list', 'example.test', '--json')).stdout).length, 1, 'nothing was added');
});

t.test('queue list counts the virtual domains as local', async (t) => {
  const { y, config } = await setup(t);
  await y('domain', 'add', 'example.test', '--password', 'pm');
  // No server runs: sendmail leaves the message in the spool for queue list to find.
  const sent = await run(process.execPath, [CLI, 'sendmail', '-C', config, 'alice@example.test', 'bob@remote.test'], { input: 'Subject: hi\n\nhello\n' });
  t.equal(sent.code, 0, sent.stderr);
  const list = JSON.parse((await y('queue', 'list', '--json')).stdout) as Array<{ recipients: Array<{ address: string; channel: string }> }>;
  t.same(
    list[0]!.recipients.map((r) => [r.address, r.channel]),
    [
      ['alice@example.test', 'local'],
      ['bob@remote.test', 'remote'],
    ],
  );
  t.match((await y('queue', 'stat')).stdout, /recipients pending: 2 \(local 1, remote 1\)/);
});

t.test('check-config creates no store; the first domain add does', async (t) => {
  const { dir, y } = await setup(t);
  t.equal((await y('check-config')).code, 0);
  t.notOk(existsSync(path.join(dir, 'var/vpopmail.sqlite')), 'nothing written by a check');
  await y('domain', 'add', 'example.test', '--password', 'pm');
  t.ok(existsSync(path.join(dir, 'var/vpopmail.sqlite')));
});
