/**
 * webadmin's server-admin side against a running `yubin serve` (a child
 * process, its config in a temporary directory, the journal on as by
 * default): a relay refused at RCPT shows in /api/v1/refusals and on /admin;
 * /api/v1/why tells a delivered message's story; the queue with a message
 * stuck on a closed port (list, flush, bounce to the sender through a real
 * SMTP sink, delete); the session cookie over HTTPS (curl -k) and over plain
 * loopback HTTP; and `yubin check-config` / `yubin serve` refusing webadmin on
 * plain HTTP off loopback. The API is driven with a token from `yubin admin`.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { freePort, freePorts, needs, run, serve, sleep, tempDir, waitFor, writeFiles, yubin } from './helpers.js';
import { startSink } from './peers/sink.js';

t.setTimeout(3 * 60_000);

const ADMIN = 'root@admin.test';
const ADMIN_PW = 'root web secret 1';

t.test('webadmin against yubin serve: refusals, why, the queue, the cookie over HTTPS', needs('swaks', 'curl'), async (t) => {
  const dir = await tempDir(t, 'yubin-webadmin-server-');
  const sink = await startSink();
  t.teardown(() => sink.close());
  // Nothing listens here: mail routed to dead.test stays deferred.
  const closed = await freePort();
  const [mx, out, web, webs] = await freePorts(4);
  await writeFiles(dir, {
    'relay.tcp': ':allow,RELAYCLIENT=""\n',
    'yubin.yaml': `hostname: mail.example.test
dataDir: var
localDomains: []
queue: { retry: [1s] }
plugins:
  vpopmail: {}
  tcprules: { file: relay.tcp }
  webadmin: { admins: [] }
delivery:
  plugins: [vpopmail]
  routes:
    outside.test: { host: 127.0.0.1, port: ${sink.port}, tls: none }
    sender.test: { host: 127.0.0.1, port: ${sink.port}, tls: none }
    dead.test: { host: 127.0.0.1, port: ${closed}, tls: none }
listeners:
  - { name: mx, protocol: smtp, listen: "127.0.0.1:${mx}", plugins: [rcpthosts, vpopmail] }
  - { name: out, protocol: smtp, listen: "127.0.0.1:${out}", plugins: [tcprules] }
  - { name: web, protocol: http, listen: "127.0.0.1:${web}", serve: [webadmin] }
  - { name: webs, protocol: http, listen: "127.0.0.1:${webs}", tls: implicit, serve: [metrics, webadmin] }
`,
  });
  const config = path.join(dir, 'yubin.yaml');
  const y = (...args: string[]) => yubin([...args, '-c', config]);
  t.equal((await y('domain', 'add', 'admin.test', '--password', 'pm of admin')).code, 0, 'yubin domain add');
  t.equal((await y('user', 'add', ADMIN, '--password', ADMIN_PW)).code, 0, 'yubin user add');
  const added = await y('admin', 'add', ADMIN);
  t.equal(added.code, 0, `yubin admin add: ${added.stderr}`);
  const made = await y('admin', 'token', ADMIN, '--name', 'ops');
  t.equal(made.code, 0, `yubin admin token: ${made.stderr}`);
  const token = made.stdout.trim();
  t.match(token, /^ybn_/);

  const server = await serve(t, config, 4);
  const base = `http://127.0.0.1:${web}`;
  const api = async (method: 'GET' | 'POST', p: string) => {
    const res = await fetch(`${base}/api/v1${p}`, { method, headers: { authorization: `Bearer ${token}`, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) }, body: method === 'POST' ? '{}' : undefined });
    const text = await res.text();
    return { status: res.status, json: () => JSON.parse(text) as Record<string, unknown>, text };
  };
  const swaks = (port: number, ...args: string[]) => run('swaks', ['--server', '127.0.0.1', '--port', String(port), '--helo', 'client.example', '--timeout', '20', ...args]);

  await t.test('a relay refused at RCPT: in /api/v1/refusals and on /admin', async (t) => {
    const refused = await swaks(mx, '--from', 'someone@elsewhere.example', '--to', 'victim@not-ours.example');
    t.match(refused.stdout, /<\*\* 5\d\d .*\n/, 'swaks sees the RCPT refused');
    const data = await waitFor(async () => {
      const r = (await api('GET', '/refusals')).json() as { journal: boolean; refusals: Array<{ time: string; ip: string; listener: string; sentence: string }> };
      return r.refusals.length ? r : undefined;
    });
    t.equal(data.journal, true);
    t.equal(data.refusals.length, 1, 'one refusal so far');
    const [r] = data.refusals;
    t.match(r, { ip: '127.0.0.1', listener: 'mx', sentence: /refused at RCPT.*victim@not-ours\.example/ });
    t.ok(Math.abs(Date.parse(r!.time) - Date.now()) < 60_000, `time is now: ${r!.time}`);
    // As `yubin status` lists it.
    const st = await y('status');
    t.match(st.stdout, /last refusals:\n {2}\S+ \S+ {2}127\.0\.0\.1 mx: .*victim@not-ours\.example/);
    // The page, through a real login.
    const page = await browserPage(base, '/admin');
    t.match(page, /<h2>Recent refusals<\/h2>/);
    t.match(page, /<td>127\.0\.0\.1<\/td><td>mx<\/td><td>[^<]*refused at RCPT[^<]*victim@not-ours\.example/, 'the refusal is a row of the table');
    t.equal((await fetch(`${base}/api/v1/refusals`)).status, 401, 'not without a login or token');
  });

  await t.test('why: the story of a delivered message, by recipient', async (t) => {
    const sent = await swaks(out, '--from', 'bob@sender.test', '--to', 'friend@outside.test', '--header', 'Subject: hello outside');
    t.equal(sent.code, 0, 'relayed through the out listener');
    await waitFor(() => (sink.messages.some((m) => m.to.includes('friend@outside.test')) ? true : undefined));
    const story = await waitFor(async () => {
      const r = await api('GET', `/why?q=${encodeURIComponent('friend@outside.test')}`);
      return r.status === 200 && /: delivered/.test(String(r.json().text)) ? r.json() : undefined;
    });
    t.comment(String(story.text));
    t.equal(story.query, 'friend@outside.test');
    t.match(story.text, /127\.0\.0\.1 sent message \S+ through out/);
    t.match(story.text, /delivery to friend@outside\.test \(remote, attempt 1\): delivered/);
    t.ok(Array.isArray(story.stories) && (story.stories as unknown[]).length >= 1, 'and the stories as JSON');
    const missing = await api('GET', '/why');
    t.equal(missing.status, 400, 'the parameter is q');
  });

  await t.test('the queue: a deferred message listed, flushed, bounced to its sender; another deleted', async (t) => {
    for (const n of [1, 2]) {
      const r = await swaks(out, '--from', `bob${n}@sender.test`, '--to', `stuck${n}@dead.test`, '--header', `Subject: stuck ${n}`);
      t.equal(r.code, 0, `stuck${n} accepted`);
    }
    type Msg = { id: string; sender: string; recipients: Array<{ address: string; status: string; attempts: number; lastError?: string }> };
    const deferred = await waitFor(async () => {
      const msgs = ((await api('GET', '/queue')).json().messages ?? []) as Msg[];
      const both = [1, 2].map((n) => msgs.find((m) => m.recipients.some((r) => r.address === `stuck${n}@dead.test` && r.attempts >= 1 && r.lastError)));
      return both.every(Boolean) ? (both as Msg[]) : undefined;
    });
    const [one, two] = deferred as [Msg, Msg];
    t.equal(one.sender, 'bob1@sender.test');
    t.match(one.recipients[0], { address: 'stuck1@dead.test', status: 'pending', lastError: /./ });
    t.comment(`deferral: ${one.recipients[0]!.lastError}`);
    t.match(one.recipients[0]!.lastError, /ECONNREFUSED|refused|connect/i, 'the deferral says why');

    const flush = await api('POST', '/queue/flush');
    t.equal(flush.status, 200, flush.text);
    t.type(flush.json().scheduled, 'number');

    const bounced = await api('POST', `/queue/${one.id}/bounce`);
    t.equal(bounced.status, 200, bounced.text);
    t.same(bounced.json(), { id: one.id, bounced: true });
    const dsn = await waitFor(() => sink.messages.find((m) => m.to.includes('bob1@sender.test')));
    t.equal(dsn.from, '', 'the bounce has the null sender');
    t.match(dsn.data, /stuck1@dead\.test/, 'it names the recipient');
    t.match(dsn.data, /Content-Type: multipart\/report; report-type=delivery-status/i, 'a DSN');

    const deleted = await api('POST', `/queue/${two.id}/delete`);
    t.equal(deleted.status, 200, deleted.text);
    t.same(deleted.json(), { id: two.id, deleted: true });
    const after = await waitFor(async () => {
      const msgs = ((await api('GET', '/queue')).json().messages ?? []) as Msg[];
      return msgs.some((m) => m.id === one.id || m.id === two.id) ? undefined : msgs;
    });
    t.notOk(after.some((m) => m.id === two.id), 'the deleted message is gone from the API list');
    const list = await y('queue', 'list');
    t.equal(list.code, 0);
    t.notMatch(list.stdout, two.id, 'and from yubin queue list');
    t.notMatch(list.stdout, 'stuck2@dead.test');
    await sleep(1_500);
    t.notOk(sink.messages.some((m) => m.to.includes('bob2@sender.test')), 'a deleted message bounces to nobody');
    t.equal((await api('POST', '/queue/NOSUCHID/delete')).status, 404, 'an unknown id is 404');
  });

  await t.test('the session cookie: Secure and HSTS over HTTPS, neither on plain loopback HTTP', async (t) => {
    const tls = await curlLogin(`https://127.0.0.1:${webs}`, dir, 'tls');
    const cookie = tls.setCookies.find((c) => c.startsWith('yubin_session='));
    t.ok(cookie, `a session cookie at login: ${tls.setCookies.join(' | ')}`);
    t.match(cookie, /;\s*Secure/i);
    t.match(cookie, /;\s*HttpOnly/i);
    t.match(cookie, /;\s*SameSite=Strict/i);
    t.match(tls.headers, /^strict-transport-security: max-age=\d+/im, 'HSTS over HTTPS');
    t.equal(tls.status, 303, 'logged in');
    const plain = await curlLogin(base, dir, 'plain');
    const plainCookie = plain.setCookies.find((c) => c.startsWith('yubin_session='));
    t.ok(plainCookie, 'a session cookie at login on plain HTTP');
    t.notMatch(plainCookie, /Secure/i, 'no Secure on plain loopback HTTP');
    t.match(plainCookie, /HttpOnly/i);
    t.notMatch(plain.headers, /strict-transport-security/i, 'no HSTS on plain HTTP');
    t.equal(plain.status, 303);
  });

  t.equal(await server.stop(), 0, 'the server stops cleanly');
});

t.test('check-config and serve refuse webadmin on plain HTTP off loopback, one line naming the listener', needs('curl'), async (t) => {
  const dir = await tempDir(t, 'yubin-webadmin-public-');
  const port = await freePort();
  await writeFiles(dir, {
    'yubin.yaml': `dataDir: var
plugins:
  webadmin: { admins: [root@admin.test] }
listeners:
  - name: public
    protocol: http
    listen: 0.0.0.0:${port}
    serve: [metrics, webadmin]
`,
  });
  const config = path.join(dir, 'yubin.yaml');
  const want = /^yubin: .*yubin\.yaml:\d+: listeners\[0\]\(public\)\.serve\[1\]: webadmin: webadmin on listener public needs TLS: plain HTTP is allowed on loopback only \(set tls: implicit\)\n$/;
  const check = await yubin(['check-config', '-c', config]);
  t.equal(check.code, 2, 'check-config exits 2, as for other config problems');
  t.match(check.stderr, want, check.stderr);
  t.equal(check.stdout, '', 'nothing on stdout');
  const served = await yubin(['serve', '-c', config]);
  t.equal(served.code, 2, 'serve exits 2');
  t.match(served.stderr, want, served.stderr);
  // Nothing was left listening.
  const probe = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/metrics`]);
  t.equal(probe.stdout, '000', 'no listener left behind');
  // With TLS the same listener passes.
  await writeFiles(dir, { 'tls.yaml': (await readFile(config, 'utf8')).replace('serve: [metrics, webadmin]', 'tls: implicit\n    serve: [metrics, webadmin]') });
  const ok = await yubin(['check-config', '-c', path.join(dir, 'tls.yaml')]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /listener public: http on 0\.0\.0\.0:\d+, tls implicit/);
});

/** Logs in as the admin with a cookie jar (GET /login for the pre-login cookie and CSRF token, then POST), returns the page at P. */
async function browserPage(base: string, p: string): Promise<string> {
  const jar = new Map<string, string>();
  const req = async (method: string, url: string, form?: Record<string, string>) => {
    const res = await fetch(base + url, {
      method,
      redirect: 'manual',
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '), ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      body: form ? new URLSearchParams(form).toString() : undefined,
    });
    for (const c of res.headers.getSetCookie()) {
      const [k, v] = c.split(';')[0]!.split('=');
      jar.set(k!, v ?? '');
    }
    return { status: res.status, text: await res.text() };
  };
  const login = await req('GET', '/login');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(login.text)![1]!;
  const posted = await req('POST', '/login', { _csrf: csrf, address: ADMIN, password: ADMIN_PW });
  if (posted.status !== 303) throw new Error(`login: ${posted.status} ${posted.text.slice(0, 200)}`);
  const page = await req('GET', p);
  if (page.status !== 200) throw new Error(`${p}: ${page.status}`);
  return page.text;
}

/** The login form with curl (-k: the self-signed certificate the server made): the POST's status, headers and Set-Cookie lines. */
async function curlLogin(base: string, dir: string, name: string): Promise<{ status: number; headers: string; setCookies: string[] }> {
  const jar = path.join(dir, `${name}.cookies`);
  const form = await run('curl', ['-sk', '-c', jar, '-b', jar, `${base}/login`]);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(form.stdout)?.[1];
  if (!csrf) throw new Error(`no CSRF token on ${base}/login: ${form.stderr} ${form.stdout.slice(0, 200)}`);
  const posted = await run('curl', ['-sk', '-c', jar, '-b', jar, '-o', '/dev/null', '-D', '-', '--data-urlencode', `_csrf=${csrf}`, '--data-urlencode', `address=${ADMIN}`, '--data-urlencode', `password=${ADMIN_PW}`, `${base}/login`]);
  const headers = posted.stdout;
  const status = Number(/^HTTP\/[\d.]+ (\d{3})/m.exec(headers)?.[1] ?? 0);
  const setCookies = [...headers.matchAll(/^set-cookie: (.*?)\r?$/gim)].map((m) => m[1]!);
  return { status, headers, setCookies };
}
