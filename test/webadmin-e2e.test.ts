/**
 * Issue 14's acceptance, as people would use it: `yubin serve` with the
 * webadmin on its http listener, driven in Debian's Chromium through
 * playwright-core. The server admin adds a domain and reads the DKIM record;
 * the domain admin adds a user and an alias; swaks delivers to the alias and
 * curl reads it over POP3; the user changes the password and sets a vacation
 * reply; the throttle, 403s and CSRF; Thunderbird's autoconfig with the real
 * ports. With YUBIN_SCREENSHOTS=docs the three role home pages are saved
 * there (the README's pictures).
 */
import path from 'node:path';
import type { Page } from 'playwright-core';
import t from 'tap';
import { openBrowser, needsChromium, saveScreenshot } from './peers/chromium.js';
import { startSink } from './peers/sink.js';
import { freePorts, needs, run, serve, sleep, tempDir, waitFor, writeFiles, yubin } from './helpers.js';

const ADMIN = 'root@admin.test';
const ADMIN_PW = 'root secret 1';
const PM_PW = 'postmaster pw 2';
const TARO_PW = 'taro first pw';
const TARO_NEW = 'taro second pw';

t.test('webadmin in Chromium: admin, domain admin and user, end to end', { ...needsChromium(), ...needs('swaks', 'curl') }, async (t) => {
  const dir = await tempDir(t, 'yubin-webadmin-');
  const sink = await startSink();
  t.teardown(() => sink.close());
  const [smtp, submission, pop3, web] = await freePorts(4);
  await writeFiles(dir, {
    'yubin.yaml': `hostname: mail.example.jp
dataDir: var
localDomains: []
queue: { retry: [1s] }
loginThrottle: { freeFailures: 2, delay: 2s }
plugins:
  vpopmail: {}
  webadmin: { admins: [${ADMIN}] }
delivery:
  plugins: [autorespond, vpopmail]
  routes:
    outside.test: { host: 127.0.0.1, port: ${sink.port}, tls: none }
listeners:
  - { name: mx, protocol: smtp, listen: "127.0.0.1:${smtp}", plugins: [rcpthosts, vpopmail] }
  - { name: submission, protocol: smtp, listen: "127.0.0.1:${submission}", tls: starttls, requireAuth: true, plugins: [vpopmail] }
  - { name: pop3, protocol: pop3, listen: "127.0.0.1:${pop3}", allowInsecureAuth: true, plugins: [vpopmail] }
  - { name: web, protocol: http, listen: "127.0.0.1:${web}", serve: [metrics, webadmin] }
`,
  });
  const config = path.join(dir, 'yubin.yaml');
  const y = (...args: string[]) => yubin([...args, '-c', config]);
  // The server admin's own mailbox, made from the CLI as on any box.
  t.equal((await y('domain', 'add', 'admin.test', '--password', 'pm of admin')).code, 0);
  t.equal((await y('user', 'add', ADMIN, '--password', ADMIN_PW)).code, 0);

  const server = await serve(t, config, 4);
  const base = `http://127.0.0.1:${web}`;
  const browser = await openBrowser(t);
  if (!browser) return;
  const shots = process.env.YUBIN_SCREENSHOTS;

  /** A fresh browser context (its own cookies) logged in as this address. */
  const login = async (address: string, password: string): Promise<Page> => {
    const context = await browser.newContext();
    t.teardown(() => context.close());
    const page = await context.newPage();
    await page.goto(`${base}/login`);
    await page.fill('input[name=address]', address);
    await page.fill('input[name=password]', password);
    await Promise.all([page.waitForLoadState('load'), page.click('form[action="/login"] button')]);
    return page;
  };
  /** Fills and submits the form posting to this API path (the page's own form). */
  const submit = async (page: Page, action: string, fields: Record<string, string>) => {
    const form = page.locator(`form[action="${action}"]`).first();
    for (const [name, value] of Object.entries(fields)) {
      const input = form.locator(`[name="${name}"]`);
      if ((await input.evaluate((e) => e.tagName)) === 'SELECT') await input.selectOption(value);
      else await input.fill(value);
    }
    const [response] = await Promise.all([page.waitForNavigation(), form.locator('button').click()]);
    return response;
  };

  // 1. The admin logs in, adds a domain, and reads the DKIM record shown.
  const admin = await login(ADMIN, ADMIN_PW);
  t.match(new URL(admin.url()).pathname, /^\/admin/, 'the server admin lands on the admin page');
  await submit(admin, '/api/v1/domains', { domain: 'example.jp', password: PM_PW, defaultQuota: '50000000S' });
  t.match(await admin.textContent('body'), /example\.jp/);
  t.equal((await y('domain', 'info', 'example.jp')).code, 0, 'the domain exists for the CLI too');
  await admin.goto(`${base}/domains/example.jp`);
  await submit(admin, '/api/v1/domains/example.jp/dkim', { selector: 'web1' });
  const record = (await admin.textContent('main')) ?? '';
  t.match(record, /web1\._domainkey\.example\.jp/, 'the record name to publish');
  t.match(record, /v=DKIM1; k=rsa; p=[A-Za-z0-9+/]{300,}/, 'and its TXT value');
  if (shots) {
    await admin.goto(`${base}/admin`);
    await saveScreenshot(admin, 'webadmin-admin', shots);
  }

  // 2. The domain admin logs in, adds a user with a quota, and sets an alias.
  const pm = await login('postmaster@example.jp', PM_PW);
  t.match(new URL(pm.url()).pathname, /^\/domains\/example\.jp/, 'postmaster lands on the domain page');
  await submit(pm, '/api/v1/domains/example.jp/users', { name: 'taro', password: TARO_PW, quota: '10000000S', realName: 'Taro Yamada' });
  await submit(pm, '/api/v1/domains/example.jp/aliases', { name: 'info', target: 'taro@example.jp' });
  const users = await y('user', 'list', 'example.jp');
  t.match(users.stdout, /taro/);
  t.match((await y('alias', 'list', 'example.jp')).stdout, /info@example\.jp.*taro@example\.jp/s);
  if (shots) await saveScreenshot(pm, 'webadmin-domain', shots);

  // A reload (SIGHUP) keeps everyone logged in.
  server.child.kill('SIGHUP');
  await server.waitLog((l) => l.event === 'reload' && l.msg === 'configuration reloaded');
  await pm.goto(`${base}/domains/example.jp`);
  t.equal(new URL(pm.url()).pathname, '/domains/example.jp', 'still logged in after SIGHUP (not sent to /login)');

  // 6. The domain admin asks for another domain: 403 on the page and in the API.
  const other = await pm.goto(`${base}/domains/admin.test`);
  t.equal(other?.status(), 403, 'another domain: 403 on the page');
  const api = await pm.evaluate(async () => (await fetch('/api/v1/domains/admin.test', { headers: { accept: 'application/json' } })).status);
  t.equal(api, 403, 'and in the API');

  // 3. swaks delivers to the alias; the user reads it over POP3 with curl.
  const sent = await run('swaks', ['--server', '127.0.0.1', '--port', String(smtp), '--from', 'hanako@outside.test', '--to', 'info@example.jp', '--header', 'Subject: via the alias']);
  t.match(sent.stdout, /250 2\.0\.0 Ok: queued as/);
  await server.waitLog((l) => l.event === 'delivery' && l.rcpt === 'taro@example.jp' && l.result === 'success');
  const pop = (password: string, ...args: string[]) => run('curl', ['-s', '--max-time', '20', '-u', `taro@example.jp:${password}`, ...args, `pop3://127.0.0.1:${pop3}/1`]);
  const read = await pop(TARO_PW);
  t.equal(read.code, 0, read.stderr);
  t.match(read.stdout, /Subject: via the alias/);

  // 4. The user changes the password and sets a vacation reply.
  const taro = await login('taro@example.jp', TARO_PW);
  t.match(new URL(taro.url()).pathname, /^\/me/, 'a user lands on their own page');
  await submit(taro, '/api/v1/me/password', { oldPassword: TARO_PW, password: TARO_NEW });
  t.notMatch(await taro.content(), new RegExp(TARO_NEW), 'the new password is not echoed');
  const today = new Date();
  const iso = (d: Date) => d.toISOString().slice(0, 10);
  await submit(taro, '/api/v1/me/vacation', { enabled: 'on', start: iso(new Date(today.getTime() - 86_400_000)), end: iso(new Date(today.getTime() + 7 * 86_400_000)), subject: 'Away', body: 'Back next week.' });
  t.match((await y('vacation', 'show', 'taro@example.jp')).stdout, /on, answering now/);
  if (shots) await saveScreenshot(taro, 'webadmin-user', shots);
  t.not((await pop(TARO_PW)).code, 0, 'the old password fails over POP3');
  t.match((await pop(TARO_NEW)).stdout, /Subject: via the alias/, 'the new one works');
  for (const subject of ['first', 'second']) {
    const r = await run('swaks', ['--server', '127.0.0.1', '--port', String(smtp), '--from', 'jiro@outside.test', '--to', 'taro@example.jp', '--header', `Subject: ${subject}`]);
    t.match(r.stdout, /250 2\.0\.0 Ok: queued as/);
  }
  const reply = await waitFor(() => sink.messages[0]);
  t.same(reply.to, ['jiro@outside.test']);
  t.match(reply.data, /Subject: Away/);
  await server.waitLog((l) => l.plugin === 'autorespond' && l.decision === 'not-replied');
  await sleep(1_500);
  t.equal(sink.messages.length, 1, 'exactly one auto-reply for two messages');

  // 5. Three wrong web logins show the throttle.
  const context = await browser.newContext();
  t.teardown(() => context.close());
  const guess = await context.newPage();
  let last = '';
  let status = 0;
  for (let i = 0; i < 3; i++) {
    await guess.goto(`${base}/login`);
    await guess.fill('input[name=address]', 'taro@example.jp');
    await guess.fill('input[name=password]', `wrong ${i}`);
    const [res] = await Promise.all([guess.waitForNavigation(), guess.click('form[action="/login"] button')]);
    status = res?.status() ?? 0;
    last = (await guess.textContent('main')) ?? '';
  }
  t.equal(status, 429, 'the third wrong login is throttled');
  t.match(last, /too many failed logins/i);
  t.notMatch(last, /wrong 2/, 'the password is not echoed');

  // 7. A form posted without its CSRF token gets 403.
  await taro.goto(`${base}/me`);
  await taro.evaluate("document.querySelectorAll('input[name=_csrf]').forEach((e) => e.remove())");
  const forged = await submit(taro, '/api/v1/me/spam', {}).catch(() => undefined);
  const forgedStatus = forged?.status() ?? (await taro.evaluate(async () => (await fetch('/api/v1/me/spam', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'spamFiling=off' })).status));
  t.equal(forgedStatus, 403, 'no CSRF token: 403');

  // 8. Thunderbird's autoconfig names the real ports.
  const xml = await run('curl', ['-s', `${base}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=taro@example.jp`]);
  t.match(xml.stdout, new RegExp(`<incomingServer type="pop3">[\\s\\S]*<port>${pop3}</port>`));
  t.match(xml.stdout, new RegExp(`<outgoingServer type="smtp">[\\s\\S]*<port>${submission}</port>[\\s\\S]*<socketType>STARTTLS</socketType>`));
  t.notMatch(xml.stdout, new RegExp(`<port>${smtp}</port>`), 'not port 25');

  // Every change is logged with who made it; no password anywhere in the log.
  const changes = server.logs.filter((l) => l.event === 'webadmin');
  t.ok(changes.some((l) => l.who === ADMIN && /domain/.test(String(l.action))), 'the admin made the domain');
  t.ok(changes.some((l) => l.who === 'postmaster@example.jp' && /alias/.test(String(l.action))), 'postmaster made the alias');
  const logText = JSON.stringify(server.logs);
  for (const pw of [ADMIN_PW, PM_PW, TARO_PW, TARO_NEW]) t.notOk(logText.includes(pw), 'no password in the log');
  t.equal(await server.stop(), 0);
});
