/**
 * vpopmail over SMTP: AUTH (swaks), sender ownership, recipients and
 * catch-alls at RCPT, delivery into vpopmail's layout with quotas, aliases
 * through the queue, spam filing, legacy password hashes.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { SqliteStore } from '../../plugins/vpopmail/sqlite-store.js';
import { hashPassword } from '../../plugins/vpopmail/passwords.js';
import { needs, run } from '../helpers.js';
import { startSink, type Sink } from '../peers/sink.js';

const PASSWORD = 'correct horse';

interface Rig {
  readonly server: TestServer;
  readonly store: SqliteStore;
  readonly sink: Sink;
  readonly root: string;
  maildir(user: string, domain?: string): string;
  /** Files in a Maildir's new/ once delivery is done. */
  newFiles(user: string, folder?: string): Promise<string[]>;
}

async function rig(t: Test, extra: { config?: Record<string, unknown>; deliver?: boolean; pluginOptions?: Record<string, unknown> } = {}): Promise<Rig> {
  const sink = await startSink();
  const server = await startTestServer({
    deliver: extra.deliver ?? true,
    listeners: [
      { name: 'smtp', plugins: ['rcpthosts', 'vpopmail'] },
      { name: 'submission', tls: 'starttls', requireAuth: true, plugins: ['vpopmail'] },
    ],
    pluginOptions: { rcpthosts: { domains: [] }, vpopmail: extra.pluginOptions ?? {} },
    config: {
      localDomains: ['localhost'],
      delivery: { plugins: ['vpopmail'], smarthost: { host: '127.0.0.1', port: sink.port, tls: 'none' } },
      ...(extra.deliver === false ? {} : { queue: { retry: ['1s'] } }),
      ...extra.config,
    },
  });
  const store = new SqliteStore(path.join(server.dataDir, 'vpopmail.sqlite'));
  const root = path.join(server.dataDir, 'domains');
  t.teardown(async () => {
    store.close();
    await server.close();
    await sink.close();
  });
  const hash = await hashPassword(PASSWORD);
  store.addDomain({ name: 'example.test' });
  for (const name of ['postmaster', 'alice', 'bob']) store.addUser({ domain: 'example.test', name, passwordHash: hash });
  const maildir = (user: string, domain = 'example.test') => path.join(root, domain, user, 'Maildir');
  return {
    server,
    store,
    sink,
    root,
    maildir,
    async newFiles(user, folder = '') {
      await server.server.queue.idle();
      return readdir(path.join(maildir(user), folder, 'new')).catch(() => []);
    },
  };
}

function swaks(port: number, args: string[]) {
  return run('swaks', ['--server', `127.0.0.1:${port}`, '--timeout', '20', ...args]);
}

t.test('RCPT: users and aliases accepted, unknown users refused with 550 5.1.1, no backscatter', async (t) => {
  const r = await rig(t, { deliver: false });
  r.store.addAliasTarget('example.test', 'sales', 'alice@example.test');
  const c = await r.server.connect({ listener: 'smtp' });
  await c.ehlo('client.example');
  t.equal((await c.command('MAIL FROM:<x@remote.test>')).code, 250);
  t.equal((await c.command('RCPT TO:<alice@example.test>')).code, 250, 'a user');
  t.equal((await c.command('RCPT TO:<Sales@Example.test>')).code, 250, 'an alias, any case');
  t.equal((await c.command('RCPT TO:<alice-lists@example.test>')).code, 250, 'user-ext is the user');
  const nobody = await c.command('RCPT TO:<nobody@example.test>');
  t.equal(nobody.code, 550);
  t.equal(nobody.enhanced, '5.1.1');
  t.match(nobody.text, /Sorry, no mailbox here by that name/);
  t.equal((await c.command('RCPT TO:<x@elsewhere.test>')).code, 553, 'other domains are still not relayed (rcpthosts)');
});

t.test('catch-all delete accepts and drops; catch-all address forwards', async (t) => {
  const r = await rig(t);
  r.store.updateDomain('example.test', { catchall: { kind: 'delete' } });
  const c = await r.server.connect({ listener: 'smtp' });
  await c.ehlo('client.example');
  const dropped = await c.mail({ from: 'x@remote.test', to: 'nobody@example.test', data: 'Subject: lost\r\n\r\nbody\r\n' });
  t.equal(dropped.rcpt[0]!.code, 250, 'accepted at RCPT');
  t.equal(dropped.data?.code, 250);
  await r.server.server.queue.idle();
  t.same(await r.server.server.spool.list(), [], 'nothing queued');

  r.store.updateDomain('example.test', { catchall: { kind: 'forward', address: 'bob@example.test' } });
  const fwd = await c.mail({ from: 'x@remote.test', to: 'whoever@example.test', data: 'Subject: to the catch-all\r\n\r\nbody\r\n' });
  t.equal(fwd.data?.code, 250);
  await r.server.server.queue.idle();
  const files = await r.newFiles('bob');
  t.equal(files.length, 1, 'delivered to the catch-all mailbox');
  const text = await readFile(path.join(r.maildir('bob'), 'new', files[0]!), 'utf8');
  t.match(text, /^Return-Path: <x@remote\.test>\nDelivered-To: bob@example\.test\nDelivered-To: whoever@example\.test\n/, 'both Delivered-To lines');
});

t.test('delivery in vpopmail layout, maildirsize kept, over quota bounces', async (t) => {
  const r = await rig(t);
  r.store.updateUser('example.test', 'bob', { quota: '1000S' });
  const c = await r.server.connect({ listener: 'smtp' });
  await c.ehlo('client.example');
  const small = await c.mail({ from: 'postmaster@example.test', to: 'bob@example.test', data: 'Subject: small\r\n\r\nhi\r\n' });
  t.equal(small.data?.code, 250);
  t.equal((await r.newFiles('bob')).length, 1);
  const size = await readFile(path.join(r.maildir('bob'), 'maildirsize'), 'utf8');
  t.match(size, /^1000S\n/, 'maildirsize starts with the quota');

  const big = await c.mail({ from: 'postmaster@example.test', to: 'bob@example.test', data: `Subject: big\r\n\r\n${'x'.repeat(2000)}\r\n` });
  t.equal(big.data?.code, 250, 'not over quota yet at RCPT: accepted');
  await r.server.server.queue.idle();
  t.equal((await r.newFiles('bob')).length, 1, 'the big one was not stored');
  const bounces = await r.newFiles('postmaster');
  t.equal(bounces.length, 1, 'a bounce went to the sender');
  const bounce = await readFile(path.join(r.maildir('postmaster'), 'new', bounces[0]!), 'utf8');
  t.match(bounce, /over quota/);
  t.match(bounce, /Status: 5\.2\.2/);
  t.equal(await readFile(path.join(r.maildir('bob'), 'maildirsize'), 'utf8'), size, 'maildirsize unchanged by the refused message');

  // Now full: the next one is deferred at RCPT (452 4.2.2).
  r.store.updateUser('example.test', 'bob', { quota: '100S' });
  const full = await c.mail({ from: 'x@remote.test', to: 'bob@example.test', data: 'Subject: x\r\n\r\nx\r\n' });
  t.equal(full.rcpt[0]!.code, 452);
  t.equal(full.rcpt[0]!.enhanced, '4.2.2');
});

t.test('aliases forward through the queue, loop-safe; the remote copy goes out over SMTP', async (t) => {
  const r = await rig(t);
  r.store.addAliasTarget('example.test', 'team', 'alice@example.test');
  r.store.addAliasTarget('example.test', 'team', 'friend@remote.test');
  r.store.addAliasTarget('example.test', 'ping', 'pong@example.test');
  r.store.addAliasTarget('example.test', 'pong', 'ping@example.test');
  const c = await r.server.connect({ listener: 'smtp' });
  await c.ehlo('client.example');
  const res = await c.mail({ from: 'postmaster@example.test', to: 'team@example.test', data: 'Subject: team\r\n\r\nhello team\r\n' });
  t.equal(res.data?.code, 250);
  await r.server.server.queue.idle();
  t.equal((await r.newFiles('alice')).length, 1, 'alice has her copy');
  t.equal(r.sink.messages.length, 1, 'the remote target got its copy through the queue');
  t.same(r.sink.messages[0]!.to, ['friend@remote.test']);
  t.equal(r.sink.messages[0]!.from, 'postmaster@example.test', 'same envelope sender');
  t.match(r.sink.messages[0]!.data, /^Delivered-To: team@example\.test\r\n/);

  const loop = await c.mail({ from: 'postmaster@example.test', to: 'ping@example.test', data: 'Subject: loop\r\n\r\nround\r\n' });
  t.equal(loop.data?.code, 250);
  await r.server.server.queue.idle();
  const bounces = await r.newFiles('postmaster');
  t.equal(bounces.length, 1, 'the loop ends in one bounce');
  t.match(await readFile(path.join(r.maildir('postmaster'), 'new', bounces[0]!), 'utf8'), /looping/);
});

t.test('spam filing: X-Spam-Flag: YES goes to .Spam where the domain or user asks', async (t) => {
  const r = await rig(t);
  const c = await r.server.connect({ listener: 'smtp' });
  await c.ehlo('client.example');
  const spam = 'X-Spam-Flag: YES\r\nSubject: buy\r\n\r\nbuy now\r\n';
  await c.mail({ from: 'x@remote.test', to: 'alice@example.test', data: spam });
  t.equal((await r.newFiles('alice')).length, 1, 'filing off: the inbox');
  r.store.updateDomain('example.test', { spamFiling: true });
  await c.mail({ from: 'x@remote.test', to: 'alice@example.test', data: spam });
  await c.mail({ from: 'x@remote.test', to: 'alice@example.test', data: 'X-Spam-Flag: NO\r\nSubject: fine\r\n\r\nhi\r\n' });
  t.equal((await r.newFiles('alice', '.Spam')).length, 1, 'flagged mail in .Spam');
  t.equal((await r.newFiles('alice')).length, 2, 'clean mail in the inbox');
  t.ok((await readdir(path.join(r.maildir('alice'), '.Spam'))).includes('maildirfolder'), 'a Maildir++ folder');
  r.store.updateUser('example.test', 'alice', { spamFiling: false });
  await c.mail({ from: 'x@remote.test', to: 'alice@example.test', data: spam });
  t.equal((await r.newFiles('alice')).length, 3, 'the user turned it off');
});

t.test('SMTP AUTH with swaks: submission needs AUTH over STARTTLS, then relays as the owner of the sender', needs('swaks'), async (t) => {
  const r = await rig(t, { deliver: false });
  const port = r.server.ports.submission!;
  const noAuth = await swaks(port, ['--to', 'friend@remote.test', '--from', 'alice@example.test']);
  t.match(noAuth.stdout, /530 5\.7\.0 Authentication required/);

  const ehlo = await swaks(port, ['--quit-after', 'EHLO']);
  t.notMatch(ehlo.stdout, /AUTH/, 'AUTH is not offered before TLS');

  const auth = ['--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', PASSWORD];
  const ok = await swaks(port, [...auth, '--to', 'friend@remote.test', '--from', 'alice@example.test']);
  t.match(ok.stdout, /235 2\.7\.0/);
  t.match(ok.stdout, /250 2\.0\.0 Ok: queued/, 'relayed after AUTH');

  const login = await swaks(port, ['--tls', '--auth', 'LOGIN', '--auth-user', 'alice@example.test', '--auth-password', PASSWORD, '--to', 'friend@remote.test', '--from', 'bob@example.test']);
  t.match(login.stdout, /553 5\.7\.1 Sender address <bob@example\.test> is not owned by alice@example\.test/);
  r.store.addAliasTarget('example.test', 'sales', 'alice@example.test');
  const asAlias = await swaks(port, [...auth, '--to', 'friend@remote.test', '--from', 'sales@example.test']);
  t.match(asAlias.stdout, /queued/, 'an alias of hers is hers to send from');

  const bad = await swaks(port, ['--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', 'wrong', '--to', 'friend@remote.test']);
  t.match(bad.stdout, /535 5\.7\.8/);
  const nobody = await swaks(port, ['--tls', '--auth', 'PLAIN', '--auth-user', 'nobody@example.test', '--auth-password', PASSWORD, '--to', 'friend@remote.test']);
  t.match(nobody.stdout, /535 5\.7\.8/, 'unknown users look like wrong passwords');

  r.store.updateUser('example.test', 'bob', { flags: { noSmtp: true } });
  const disabled = await swaks(port, ['--tls', '--auth', 'PLAIN', '--auth-user', 'bob@example.test', '--auth-password', PASSWORD, '--to', 'friend@remote.test', '--from', 'bob@example.test']);
  t.match(disabled.stdout, /535 5\.7\.8/, 'SMTP disabled: 535');

  r.store.updateUser('example.test', 'alice', { flags: { noRelay: true } });
  const noRelay = await swaks(port, [...auth, '--to', 'friend@remote.test', '--from', 'alice@example.test']);
  t.match(noRelay.stdout, /550 5\.7\.1 Relaying denied/, 'relay taken away by the flag');
  const queued = await r.server.queued();
  t.equal(queued.length, 2, 'only the two good submissions were queued');
  t.equal(queued[0]!.envelope.authUser, 'alice@example.test');
});

t.test('CRAM-MD5 only where the domain keeps clear passwords', needs('swaks'), async (t) => {
  const r = await rig(t, { deliver: false });
  const port = r.server.ports.submission!;
  const cram = ['--tls', '--auth', 'CRAM-MD5', '--auth-user', 'carol@clear.test', '--auth-password', 's3cret', '--to', 'friend@remote.test', '--from', 'carol@clear.test'];
  const before = await swaks(port, cram);
  t.match(before.stdout + before.stderr, /not available|not advertised|not supported/i, 'not offered while no domain keeps clear passwords');
  r.store.addDomain({ name: 'clear.test', clearPasswords: true });
  r.store.addUser({ domain: 'clear.test', name: 'carol', passwordHash: await hashPassword('s3cret'), clearPassword: 's3cret' });
  const after = await swaks(port, cram);
  t.match(after.stdout, /235 2\.7\.0/, 'CRAM-MD5 checked against the clear password');
  t.match(after.stdout, /queued/);
  const bob = await swaks(port, ['--tls', '--auth', 'CRAM-MD5', '--auth-user', 'bob@example.test', '--auth-password', PASSWORD, '--to', 'friend@remote.test', '--from', 'bob@example.test']);
  t.match(bob.stdout, /535/, 'a domain without clear passwords cannot answer CRAM-MD5');
});

t.test('imported MD5-crypt and SHA-crypt hashes log in and are re-hashed with scrypt', needs('swaks', 'openssl'), async (t) => {
  const r = await rig(t, { deliver: false });
  const port = r.server.ports.submission!;
  for (const [name, flag] of [
    ['md5', '-1'],
    ['sha512', '-6'],
  ] as const) {
    const hash = (await run('openssl', ['passwd', flag, '-salt', 'abcdefgh', 'legacy pw'])).stdout.trim();
    r.store.addUser({ domain: 'example.test', name, passwordHash: hash });
    const res = await swaks(port, ['--tls', '--auth', 'PLAIN', '--auth-user', `${name}@example.test`, '--auth-password', 'legacy pw', '--to', 'friend@remote.test', '--from', `${name}@example.test`]);
    t.match(res.stdout, /235 2\.7\.0/, `${name} hash verifies`);
    t.match(r.store.getUser('example.test', name)!.passwordHash, /^\$scrypt\$/, 're-hashed at the first good login');
  }
});

t.test('failed logins are throttled per IP and account, shared across connections', needs('swaks'), async (t) => {
  const r = await rig(t, { deliver: false, config: { loginThrottle: { freeFailures: 2, delay: '1s', lockoutAfter: 5, lockout: '1h' } } });
  const port = r.server.ports.submission!;
  const attempt = async (user: string, password: string) => {
    const start = Date.now();
    const res = await swaks(port, ['--tls', '--auth', 'PLAIN', '--auth-user', `${user}@example.test`, '--auth-password', password, '--quit-after', 'AUTH']);
    return { ms: Date.now() - start, out: res.stdout };
  };
  const delays = () => r.server.logs.filter((l) => l.event === 'auth-delay').map((l) => l.wait);
  for (let i = 0; i < 3; i++) t.match((await attempt('alice', 'wrong')).out, /535/);
  t.same(delays(), [], 'the first three wrong passwords are answered without a delay');
  const fourth = await attempt('alice', PASSWORD);
  t.ok(fourth.ms >= 900, `after three wrong passwords the next attempt waits, even with the right password (${fourth.ms} ms)`);
  t.match(fourth.out, /235/);
  // alice logged in from here: this network is known to her account, and the IP's count is not hers any more.
  const fifth = await attempt('alice', 'wrong');
  t.match(fifth.out, /535/);
  t.same(delays(), [1000], 'no wait for alice on a network she logged in from');
  // The IP's count (alice's three failures before she logged in) still stands for everyone else.
  t.match((await attempt('bob', 'wrong')).out, /535/);
  t.match((await attempt('bob', 'wrong')).out, /535/);
  t.same(delays(), [1000, 1000, 2000], 'bob waits for the IP\'s failures, doubling');
  const locked = await attempt('bob', PASSWORD);
  t.match(locked.out, /454 4\.7\.0 Too many failed logins/, 'bob is locked out: five failures from this IP');
  t.ok(r.server.logs.some((l) => l.hook === 'auth' && l.code === 454 && /locked out/.test(String(l.reason))), 'the lockout is logged');
  t.match((await attempt('alice', PASSWORD)).out, /235/, 'alice still logs in from her known network');
});

t.test('a user of a domain added while the server runs is reachable at once', async (t) => {
  const r = await rig(t, { deliver: false });
  const c = await r.server.connect({ listener: 'smtp' });
  await c.ehlo('client.example');
  await c.command('MAIL FROM:<x@remote.test>');
  t.equal((await c.command('RCPT TO:<postmaster@new.test>')).code, 553, 'not ours yet');
  r.store.addDomain({ name: 'new.test' });
  r.store.addUser({ domain: 'new.test', name: 'postmaster', passwordHash: await hashPassword('x') });
  t.equal((await c.command('RCPT TO:<postmaster@new.test>')).code, 250, 'ours at the next command');
  r.store.deleteDomain('new.test');
  await c.command('RSET'); // a repeated recipient of one transaction is taken without asking again
  await c.command('MAIL FROM:<x@remote.test>');
  t.equal((await c.command('RCPT TO:<postmaster@new.test>')).code, 553, 'and gone when deleted');
});
