/**
 * webadmin over real HTTP on loopback: the plugin's routes on a Fastify
 * instance of our own (as the server core will mount them), a vpopmail store
 * in a temporary dataDir, the shared login throttle, the log captured.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { loadConfig, type HttpListenerInfo, type PluginInstance } from '../../core/index.js';
import { createServiceContainer, servicesFrom } from '../../core/services/index.js';
import { Vacations } from '../../plugins/autorespond/settings.js';
import { maildirOf } from '../../plugins/vpopmail/names.js';
import { openStore, storePaths, vpopmailOptions } from '../../plugins/vpopmail/options.js';
import { hashPassword, verifyPassword } from '../../plugins/vpopmail/passwords.js';
import type { MailStore } from '../../plugins/vpopmail/store.js';
import webadmin from '../../plugins/webadmin/index.js';
import { webadminOptions } from '../../plugins/webadmin/options.js';
import { ensureMaildir } from '../../core/index.js';
import { tempDir, yubin } from '../helpers.js';

const PW = { boss: 'Boss-secret-1', pm: 'Pm-secret-2', alice: 'Alice-secret-3', bpm: 'Bpm-secret-4' };
const LOOPBACK: HttpListenerInfo = { name: 'web', host: '127.0.0.1', port: 0, https: false, loopbackOnly: true };

interface Site {
  readonly url: string;
  readonly store: MailStore;
  readonly root: string;
  readonly dataDir: string;
  readonly configFile: string;
  readonly logs: () => Array<Record<string, unknown>>;
  readonly logText: () => string;
  readonly instance: PluginInstance;
}

async function site(t: Test, throttle = { freeFailures: 2, delay: 1, maxDelay: 2, lockoutAfter: 4, lockout: 60_000, window: 60_000, rememberSuccess: 0 }): Promise<Site> {
  const dir = await tempDir(t, 'yubin-webadmin-');
  const configFile = path.join(dir, 'yubin.yaml');
  await writeFile(
    configFile,
    `dataDir: ./data
journal: { enabled: false }
listeners:
  - { name: smtp, protocol: smtp, listen: '127.0.0.1:0', plugins: [vpopmail] }
plugins:
  webadmin: { admins: [boss@a.test] }
`,
  );
  const { config } = await loadConfig(configFile);
  const paths = storePaths(vpopmailOptions.parse({}), config.dataDir);
  const store = openStore(paths);
  t.teardown(() => store.close());
  for (const d of ['a.test', 'b.test']) await store.addDomain({ name: d });
  const add = async (domain: string, name: string, pw: string) => {
    await store.addUser({ domain, name, passwordHash: await hashPassword(pw) });
    await ensureMaildir(maildirOf(paths.root, { domain, name }));
  };
  await add('a.test', 'boss', PW.boss);
  await add('a.test', 'postmaster', PW.pm);
  await add('a.test', 'alice', PW.alice);
  await add('b.test', 'postmaster', PW.bpm);

  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  const services = servicesFrom(createServiceContainer(log, [], config.dns, undefined, throttle));
  const options = webadminOptions.parse(config.plugins.webadmin);
  const instance = await webadmin.setup({ options, log, services, hostname: 'mx.a.test', dataDir: config.dataDir, resolvePath: (p) => path.resolve(dir, p), config });
  const app: FastifyInstance = Fastify();
  await instance.http!.routes(app, LOOPBACK);
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    await app.close();
    await instance.close?.();
  });
  const port = (app.server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    store,
    root: paths.root,
    dataDir: config.dataDir,
    configFile,
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    logText: () => lines.join('\n'),
    instance,
  };
}

/** A browser: one cookie jar, no automatic redirects. */
class Browser {
  cookies = new Map<string, string>();
  lastSetCookie: string[] = [];
  constructor(readonly base: string) {}

  async request(method: string, p: string, init: { form?: Record<string, string>; json?: unknown; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { ...(init.headers ?? {}) };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    let body: string | undefined;
    if (init.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(init.form).toString();
    } else if (init.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.json);
    }
    const res = await fetch(this.base + p, { method, headers, body, redirect: 'manual' });
    this.lastSetCookie = res.headers.getSetCookie();
    for (const c of this.lastSetCookie) {
      const [pair] = c.split(';');
      const [k, v] = pair!.split('=');
      if (v) this.cookies.set(k!, v);
      else this.cookies.delete(k!);
    }
    const text = await res.text();
    return { status: res.status, location: res.headers.get('location'), text, headers: res.headers, json: () => JSON.parse(text) as Record<string, unknown> };
  }
  get(p: string, headers?: Record<string, string>) {
    return this.request('GET', p, { headers });
  }
  post(p: string, form: Record<string, string>) {
    return this.request('POST', p, { form });
  }
  /** The CSRF token of the current session, read off a page's form. */
  async csrf(p = '/me'): Promise<string> {
    const page = await this.get(p);
    return /name="_csrf" value="([^"]+)"/.exec(page.text)?.[1] ?? '';
  }
  async login(address: string, password: string) {
    const csrf = await this.csrf('/login');
    return this.post('/login', { _csrf: csrf, address, password });
  }
}

async function loggedIn(s: Site, address: string, password: string): Promise<Browser> {
  const b = new Browser(s.url);
  const r = await b.login(address, password);
  if (r.status !== 303) throw new Error(`login of ${address}: ${r.status} ${r.text.slice(0, 200)}`);
  return b;
}

t.test('plain HTTP off loopback is refused; HTTPS anywhere and HTTP on loopback are not', async (t) => {
  const s = await site(t);
  t.throws(() => s.instance.http!.routes(Fastify(), { name: 'pub', host: '0.0.0.0', port: 80, https: false, loopbackOnly: false }), {
    message: 'webadmin on listener pub needs TLS: plain HTTP is allowed on loopback only (set tls: implicit)',
  });
  t.doesNotThrow(() => s.instance.http!.routes(Fastify(), { name: 'tls', host: '0.0.0.0', port: 443, https: true, loopbackOnly: false }));
});

t.test('login: bad password, good password, session cookie, role home, logout', async (t) => {
  const s = await site(t);
  const b = new Browser(s.url);
  const page = await b.get('/login');
  t.equal(page.status, 200);
  t.match(page.headers.get('content-security-policy'), /default-src 'self'/, 'helmet CSP');
  t.match(page.headers.get('content-security-policy'), /script-src 'none'/);
  t.equal(page.headers.get('x-frame-options'), 'SAMEORIGIN');
  const bad = await b.login('boss@a.test', 'wrong');
  t.equal(bad.status, 401);
  t.match(bad.text, 'wrong address or password');
  t.notMatch(bad.text, 'wrong"', 'the typed password is not echoed');
  const good = await b.login('boss@a.test', PW.boss);
  t.equal(good.status, 303);
  const cookie = b.lastSetCookie.find((c) => c.startsWith('yubin_session='))!;
  t.match(cookie, /HttpOnly/);
  t.match(cookie, /SameSite=Strict/);
  t.match(cookie, /Path=\//);
  t.notMatch(cookie, /Secure/, 'not Secure on plain HTTP loopback');
  t.equal((await b.get('/')).location, '/admin', 'a server admin goes to /admin');
  const admin = await b.get('/admin');
  t.equal(admin.status, 200);
  t.match(admin.text, 'b.test');
  const pm = await loggedIn(s, 'postmaster@a.test', PW.pm);
  t.equal((await pm.get('/')).location, '/domains/a.test');
  const alice = await loggedIn(s, 'alice@a.test', PW.alice);
  t.equal((await alice.get('/')).location, '/me');
  const me = (await alice.request('GET', '/api/v1/me')).json();
  t.match(me, { address: 'alice@a.test', role: 'user' });

  const csrf = await alice.csrf('/me');
  t.equal((await alice.post('/logout', {})).status, 403, 'logout without the CSRF token is refused');
  t.equal((await alice.post('/logout', { _csrf: csrf })).status, 303);
  t.equal((await alice.request('GET', '/api/v1/me')).status, 401, 'logged out');
  t.equal((await alice.get('/me')).location, '/login');
});

t.test('the shared login throttle: repeated failures answer 429', async (t) => {
  const s = await site(t);
  const b = new Browser(s.url);
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) statuses.push((await b.login('alice@a.test', `guess${i}`)).status);
  // Two free failures; the third turns the throttle on for the next try and says so; the fourth locks (lockoutAfter 4).
  t.same(statuses, [401, 401, 429, 429, 429, 429]);
  const locked = await b.login('alice@a.test', PW.alice);
  t.equal(locked.status, 429, 'even the right password, while locked');
  t.match(locked.text, 'too many failed logins');
});

t.test('CSRF: missing or wrong token is 403, for forms and JSON with the cookie', async (t) => {
  const s = await site(t);
  const anon = new Browser(s.url);
  await anon.get('/login');
  t.equal((await anon.post('/login', { address: 'boss@a.test', password: PW.boss })).status, 403, 'login form without _csrf');
  const b = await loggedIn(s, 'boss@a.test', PW.boss);
  t.equal((await b.post('/api/v1/domains/a.test/catchall', { catchall: 'delete' })).status, 403, 'form without _csrf');
  t.equal((await b.post('/api/v1/domains/a.test/catchall', { catchall: 'delete', _csrf: 'x'.repeat(43) })).status, 403, 'form with a wrong one');
  t.equal((await b.request('POST', '/api/v1/domains/a.test/catchall', { json: { catchall: 'delete' } })).status, 403, 'JSON without x-csrf-token');
  t.match((await s.store.getDomain('a.test'))!.catchall, { kind: 'bounce-no-mailbox' }, 'nothing changed');
  const csrf = await b.csrf('/admin');
  const ok = await b.request('POST', '/api/v1/domains/a.test/catchall', { json: { catchall: 'delete' }, headers: { 'x-csrf-token': csrf } });
  t.equal(ok.status, 200);
  t.match((await s.store.getDomain('a.test'))!.catchall, { kind: 'delete' });
});

t.test('roles: a domain admin sees only their domain; a user no admin page', async (t) => {
  const s = await site(t);
  const bpm = await loggedIn(s, 'postmaster@b.test', PW.bpm);
  t.equal((await bpm.get('/domains/b.test')).status, 200);
  t.equal((await bpm.get('/domains/a.test')).status, 403, 'page of another domain');
  t.equal((await bpm.request('GET', '/api/v1/domains/a.test')).status, 403, 'API of another domain');
  const csrf = await bpm.csrf('/domains/b.test');
  const r = await bpm.request('POST', '/api/v1/domains/a.test/users', { json: { name: 'evil', password: 'x1234567' }, headers: { 'x-csrf-token': csrf } });
  t.equal(r.status, 403);
  t.equal(await s.store.getUser('a.test', 'evil'), undefined);
  t.equal((await bpm.get('/admin')).status, 403, 'a domain admin is no server admin');
  t.equal((await bpm.request('GET', '/api/v1/domains')).status, 403);

  const alice = await loggedIn(s, 'alice@a.test', PW.alice);
  for (const p of ['/admin', '/domains/a.test', '/domains/a.test/users/alice']) t.equal((await alice.get(p)).status, 403, `user on ${p}`);
  t.equal((await alice.request('GET', '/api/v1/queue')).status, 403);
  t.equal((await alice.request('GET', '/api/v1/domains/a.test')).status, 403);

  // vpopmail's QA_ADMIN flag makes a domain admin.
  await s.store.updateUser('a.test', 'alice', { flags: { domainAdmin: true } });
  t.equal((await alice.get('/domains/a.test')).status, 200, 'alice with QA_ADMIN administers a.test');
  t.equal((await alice.get('/domains/b.test')).status, 403, 'and only a.test');
  t.equal((await new Browser(s.url).request('GET', '/api/v1/domains')).status, 401, 'not logged in: 401');
});

t.test('domain admin actions through the forms change the store', async (t) => {
  const s = await site(t);
  const pm = await loggedIn(s, 'postmaster@a.test', PW.pm);
  const csrf = await pm.csrf('/domains/a.test');
  const form = async (p: string, fields: Record<string, string>) => {
    const r = await pm.post(`/api/v1/domains/a.test${p}`, { _csrf: csrf, _back: '/domains/a.test', ...fields });
    t.equal(r.status, 303, `${p} answers 303`);
    t.equal(r.location, '/domains/a.test');
    return r;
  };
  await form('/users', { name: 'bob', password: 'Bob-pw-5', quota: '10MB', realName: '<b>Bob</b>' });
  const bob = await s.store.getUser('a.test', 'bob');
  t.ok(bob && (await verifyPassword('Bob-pw-5', bob.passwordHash)), 'bob added with his password');
  t.equal(bob!.quota, '10485760S');
  t.ok(existsSync(maildirOf(s.root, bob!)), 'his Maildir made');
  const page = await pm.get('/domains/a.test');
  t.match(page.text, 'added bob@a.test', 'flash message after the redirect');
  t.match(page.text, '&lt;b&gt;Bob&lt;/b&gt;', 'values are escaped');
  t.notMatch(page.text, '<b>Bob</b>');
  t.notMatch((await pm.get('/domains/a.test')).text, 'added bob@a.test', 'the flash is shown once');

  await form('/users/bob/password', { password: 'Bob-pw-6' });
  t.ok(await verifyPassword('Bob-pw-6', (await s.store.getUser('a.test', 'bob'))!.passwordHash));
  await form('/users/bob/quota', { quota: '1000C' });
  t.equal((await s.store.getUser('a.test', 'bob'))!.quota, '1000C');
  await form('/users/bob/services', { pop: 'off', smtp: 'on', relay: 'off', webmail: 'on' });
  t.match((await s.store.getUser('a.test', 'bob'))!.flags, { noPop: true, noSmtp: false, noRelay: true, noWebmail: false });
  await form('/users/bob/spam', { spamFiling: 'on' });
  t.equal((await s.store.getUser('a.test', 'bob'))!.spamFiling, true);
  await form('/aliases', { name: 'sales', target: 'bob@a.test' });
  await form('/aliases', { name: 'sales', target: 'alice@a.test' });
  t.same((await s.store.getAlias('a.test', 'sales'))!.targets, ['bob@a.test', 'alice@a.test']);
  await form('/aliases/sales/remove', { target: 'bob@a.test' });
  t.same((await s.store.getAlias('a.test', 'sales'))!.targets, ['alice@a.test']);
  await form('/catchall', { catchall: 'forward', address: 'alice@a.test' });
  t.same((await s.store.getDomain('a.test'))!.catchall, { kind: 'forward', address: 'alice@a.test' });
  const bad = await form('/users', { name: 'bad name', password: 'x' });
  t.match((await pm.get(bad.location!)).text, /flash-error.*invalid user name/s, 'a 400 from a form comes back as an error flash');
  const json = await pm.request('POST', '/api/v1/domains/a.test/users', { json: { name: 'carol' }, headers: { 'x-csrf-token': csrf } });
  t.equal(json.status, 400);
  t.same(json.json(), { error: 'password is missing' });
  t.equal((await pm.request('POST', '/api/v1/domains/a.test/settings', { json: { spamFiling: true }, headers: { 'x-csrf-token': csrf } })).status, 403, 'domain settings are for server admins');

  const usage = (await pm.request('GET', '/api/v1/domains/a.test/users/bob')).json();
  t.match(usage, { address: 'bob@a.test', quota: '1000C', usage: { bytes: 0, count: 0, percent: 0 }, services: { pop: false, smtp: true } });
  await form('/users/bob/delete', {});
  t.equal(await s.store.getUser('a.test', 'bob'), undefined);
  t.notOk(existsSync(maildirOf(s.root, { domain: 'a.test', name: 'bob' })), 'his Maildir removed');
  t.equal((await pm.request('POST', '/api/v1/domains/a.test/users/nobody/quota', { json: { quota: '1C' }, headers: { 'x-csrf-token': csrf } })).status, 404);

  const changes = s.logs().filter((l) => l.event === 'webadmin');
  t.ok(changes.length >= 10, 'every change is logged');
  t.match(changes[0], { who: 'postmaster@a.test', role: 'domain', action: 'user-add', target: 'bob@a.test', level: 30 });
});

t.test('user actions: own password with the old one, forwarding with a copy, vacation, spam filing', async (t) => {
  const s = await site(t);
  const alice = await loggedIn(s, 'alice@a.test', PW.alice);
  const csrf = await alice.csrf('/me');
  const post = (p: string, json: unknown) => alice.request('POST', `/api/v1${p}`, { json, headers: { 'x-csrf-token': csrf } });
  const wrongOld = await post('/me/password', { oldPassword: 'nope', password: 'New-pw-7' });
  t.equal(wrongOld.status, 400);
  t.match(wrongOld.json().error, 'old password is wrong');
  t.equal((await post('/me/password', { password: 'New-pw-7' })).status, 400, 'the old password is required');
  t.equal((await post('/me/password', { oldPassword: PW.alice, password: 'New-pw-7' })).status, 200);
  t.ok(await verifyPassword('New-pw-7', (await s.store.getUser('a.test', 'alice'))!.passwordHash));

  t.same((await post('/me/forward', { addresses: 'x@remote.test, y@remote.test', keepCopy: true })).json(), { addresses: ['x@remote.test', 'y@remote.test'], keepCopy: true });
  t.same((await s.store.getAlias('a.test', 'alice'))!.targets, ['x@remote.test', 'y@remote.test', 'alice@a.test'], 'an alias of her own name, with her address to keep a copy (as deliver.ts reads it)');
  await post('/me/forward', { addresses: 'x@remote.test', keepCopy: false });
  t.same((await s.store.getAlias('a.test', 'alice'))!.targets, ['x@remote.test']);
  await post('/me/forward', { addresses: '' });
  t.equal(await s.store.getAlias('a.test', 'alice'), undefined, 'forwarding off');

  const v = await post('/me/vacation', { enabled: 'on', start: '2020-01-01', end: '2999-12-31', subject: 'Away', body: 'I am away.' });
  t.equal(v.status, 200);
  t.match(v.json(), { vacation: { enabled: true, state: 'active', subject: 'Away' }, warning: /delivery.plugins/ });
  const vacations = new Vacations(path.join(s.dataDir, 'autorespond.sqlite'));
  t.teardown(() => vacations.close());
  t.match(vacations.get('alice@a.test'), { enabled: true, subject: 'Away', body: 'I am away.\n', start: new Date(2020, 0, 1).getTime() });
  t.equal((await post('/me/vacation', { enabled: true, end: '2001-01-01', body: 'x' })).status, 400, 'an end in the past');
  await post('/me/vacation', { enabled: false });
  t.equal(vacations.get('alice@a.test')!.enabled, false);

  await post('/me/spam', { spamFiling: 'off' });
  t.equal((await s.store.getUser('a.test', 'alice'))!.spamFiling, false);
  await post('/me/spam', { spamFiling: 'domain' });
  t.equal((await s.store.getUser('a.test', 'alice'))!.spamFiling, undefined);
  const page = await alice.get('/me');
  t.equal(page.status, 200);
  t.match(page.text, 'Vacation reply');
});

t.test('server admin: domains, DKIM record shown, queue without a server, why with the journal off', async (t) => {
  const s = await site(t);
  const boss = await loggedIn(s, 'boss@a.test', PW.boss);
  const csrf = await boss.csrf('/admin');
  const post = (p: string, json: unknown) => boss.request('POST', `/api/v1${p}`, { json, headers: { 'x-csrf-token': csrf } });
  const added = await boss.post('/api/v1/domains', { _csrf: csrf, _back: '/admin', domain: 'c.test', password: 'C-pm-pw-8', defaultQuota: '5MB' });
  t.equal(added.status, 303);
  t.match(await s.store.getDomain('c.test'), { name: 'c.test', defaultQuota: '5242880S' });
  t.ok(await verifyPassword('C-pm-pw-8', (await s.store.getUser('c.test', 'postmaster'))!.passwordHash), 'its postmaster');
  t.equal((await post('/domains', { domain: 'c.test', password: 'x' })).status, 400, 'exists');
  await post('/domains/c.test/settings', { spamFiling: true, clearPasswords: 'on', defaultQuota: 'NOQUOTA' });
  t.match(await s.store.getDomain('c.test'), { spamFiling: true, clearPasswords: true, defaultQuota: 'NOQUOTA' });
  t.match((await boss.request('GET', '/api/v1/domains')).json().domains, [
    { domain: 'a.test', catchall: 'bounce-no-mailbox', users: 3 },
    { domain: 'b.test', users: 1 },
    { domain: 'c.test', clearPasswords: true, spamFiling: true, defaultQuota: 'NOQUOTA', users: 1 },
  ]);

  const dkim = await post('/domains/c.test/dkim', { selector: 'sel1' });
  t.equal(dkim.status, 200);
  const answer = dkim.json() as { record: { name: string; value: string; zoneLine: string }; file: string };
  t.equal(answer.record.name, 'sel1._domainkey.c.test');
  t.match(answer.record.value, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+$/);
  t.ok(existsSync(path.join(s.dataDir, 'dkim', 'c.test.sel1.key')), "the key is where mailauth's keyDir says");
  t.equal((await post('/domains/c.test/dkim', { selector: 'sel1' })).status, 400, 'no overwrite');
  const viaForm = await boss.post('/api/v1/domains/c.test/dkim', { _csrf: csrf, _back: '/domains/c.test', selector: 'sel2' });
  const shown = await boss.get(viaForm.location!);
  t.match(shown.text, 'sel2._domainkey.c.test', 'the page shows the record name');
  t.match(shown.text, /TXT: +v=DKIM1; k=rsa; p=/, 'and its TXT value');

  const flush = await post('/queue/flush', {});
  t.equal(flush.status, 503);
  t.match(flush.json().error, 'no server answers on the control socket');
  t.equal((await post('/queue/XYZ/delete', {})).status, 503);
  t.same((await boss.request('GET', '/api/v1/queue')).json(), { messages: [] });
  const why = await boss.request('GET', '/api/v1/why?q=1.2.3.4');
  t.equal(why.status, 503);
  t.match(why.json().error, 'journal is off');
  t.match((await boss.get('/admin?why=1.2.3.4')).text, 'journal is off', 'the page says so too');
  t.same((await boss.request('GET', '/api/v1/refusals')).json(), { journal: false, refusals: [] }, 'no refusals with the journal off');
  t.match((await boss.get('/admin')).text, 'The journal is off (journal.enabled: false): no refusals to show.');
  t.equal((await (await loggedIn(s, 'alice@a.test', PW.alice)).request('GET', '/api/v1/refusals')).status, 403, 'refusals are for server admins');

  t.equal((await post('/domains/c.test/delete', {})).status, 200);
  t.equal(await s.store.getDomain('c.test'), undefined);
  t.notOk(existsSync(path.join(s.root, 'c.test')));
});

t.test('API tokens from yubin admin: bearer acts with its role, no CSRF; revoked is 401; no password in the log', async (t) => {
  const s = await site(t);
  const made = await yubin(['admin', 'token', 'postmaster@b.test', '--name', 'bpm', '--config', s.configFile]);
  t.equal(made.code, 0, 'yubin admin token');
  t.match(made.stderr, 'shown only now');
  const token = made.stdout.trim();
  t.match(token, /^ybn_[A-Za-z0-9_-]{43}$/);
  t.notMatch(await readFile(path.join(s.dataDir, 'webadmin.sqlite')).then((b) => b.toString('latin1')), token, 'only its hash is stored');
  const api = (method: string, p: string, json?: unknown, tok = token) =>
    fetch(`${s.url}/api/v1${p}`, { method, headers: { authorization: `Bearer ${tok}`, ...(json ? { 'content-type': 'application/json' } : {}) }, body: json ? JSON.stringify(json) : undefined });
  t.equal((await api('GET', '/domains/b.test')).status, 200);
  t.equal((await api('GET', '/domains/a.test')).status, 403, 'a domain admin token, another domain');
  t.equal((await api('GET', '/domains')).status, 403);
  const added = await api('POST', '/domains/b.test/users', { name: 'dave', password: 'Dave-pw-9' });
  t.equal(added.status, 200, 'no CSRF with a bearer token');
  t.ok(await s.store.getUser('b.test', 'dave'));
  t.equal((await api('GET', '/domains', undefined, 'ybn_wrong')).status, 401);

  t.equal((await yubin(['admin', 'add', 'postmaster@b.test', '--config', s.configFile])).code, 0);
  t.equal((await api('GET', '/domains')).status, 200, 'made a server admin: the token acts as one at once');
  t.equal((await yubin(['admin', 'remove', 'postmaster@b.test', '--config', s.configFile])).code, 0);
  t.equal((await api('GET', '/domains')).status, 403);
  t.equal((await yubin(['admin', 'revoke', 'bpm', '--config', s.configFile])).code, 0);
  t.equal((await api('GET', '/domains/b.test')).status, 401, 'revoked');

  // Logins and password changes leave no password in the log.
  const b = await loggedIn(s, 'boss@a.test', PW.boss);
  await b.login('alice@a.test', 'Wrong-guess-0');
  const csrf = await b.csrf('/admin');
  await b.request('POST', '/api/v1/domains/a.test/users/alice/password', { json: { password: 'Fresh-pw-10' }, headers: { 'x-csrf-token': csrf } });
  const text = s.logText();
  t.match(text, '"action":"user-password"');
  for (const pw of [PW.boss, 'Wrong-guess-0', 'Fresh-pw-10', 'Dave-pw-9']) t.notMatch(text, pw, 'no password in the log');
});
