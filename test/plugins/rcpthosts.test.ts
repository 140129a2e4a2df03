/** rcpthosts: qmail's acceptance checks, the 16 probes of nmap's smtp-open-relay, and nmap itself. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { startTestServer } from '../../core/testing/index.js';
import { needs, run, sleep, tempDir } from '../helpers.js';

const RCPTHOSTS_553 = "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)";

t.test('rcpthosts: listed domains, dot-suffix entries, exact texts (acceptance checks 1, 2)', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], pluginOptions: { rcpthosts: { domains: ['example.com', '.example.org'] } }, config: { localDomains: ['localhost'] } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  await c.command('MAIL FROM:<a@example.net>');
  t.equal((await c.command('RCPT TO:<a@example.com>')).code, 250, 'listed domain');
  const other = await c.command('RCPT TO:<a@other.org>');
  t.same([other.code, other.enhanced, other.text], [553, '5.7.1', RCPTHOSTS_553], "qmail's reply, word for word");
  t.equal((await c.command('RCPT TO:<a@mx.example.org>')).code, 250, '.example.org covers subdomains');
  t.equal((await c.command('RCPT TO:<a@example.org>')).code, 553, '.example.org does not cover example.org itself');
  t.equal((await c.command('RCPT TO:<a@mx.example.com>')).code, 553, 'a plain entry does not cover subdomains');
  t.equal((await c.command('RCPT TO:<b@EXAMPLE.COM>')).code, 250, 'case does not matter');
  t.equal((await c.command('DATA')).code, 354);
  c.write('Subject: backup mx\r\n\r\nx\r\n.\r\n');
  t.equal((await c.read()).code, 250);
  const [m] = await s.queued();
  t.same(m?.envelope.recipients.map((r) => r.address), ['a@example.com', 'a@mx.example.org', 'b@EXAMPLE.COM'], 'listed non-local domains pass the core relay guard');
  await c.quit();
});

t.test('rcpthosts file, read again when it changes', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'rcpthosts');
  await writeFile(file, '# backup MX for\nfirst.example\n');
  const s = await startTestServer({ plugins: ['rcpthosts'], pluginOptions: { rcpthosts: { file } } });
  t.teardown(() => s.close());
  const probe = async (domain: string) => {
    const c = await s.connect();
    await c.ehlo();
    await c.command('MAIL FROM:<a@example.net>');
    const r = await c.command(`RCPT TO:<u@${domain}>`);
    await c.quit();
    return r.code;
  };
  t.equal(await probe('first.example'), 250);
  t.equal(await probe('second.example'), 553);
  await sleep(20);
  await writeFile(file, 'second.example\n');
  await sleep(1100);
  t.equal(await probe('second.example'), 250, 'new entry in force without a restart');
  t.equal(await probe('first.example'), 553, 'removed entry gone');
});

t.test("none of nmap smtp-open-relay's 16 probes, nor an unqualified recipient, gets a 250", async (t) => {
  // The server's own name is a local domain here, as on most qmail boxes, which is what makes the percent and bang probes bite.
  const s = await startTestServer({ plugins: ['rcpthosts'], config: { hostname: 'mx.test', localDomains: ['mx.test', 'localhost'] } });
  t.teardown(() => s.close());
  const [to, domain, ip, srv] = ['relaytest', 'nmap.scanme.org', '127.0.0.1', 'mx.test'];
  const probes: Array<[string, string]> = [
    ['', `${to}@${domain}`],
    [`antispam@${domain}`, `${to}@${domain}`],
    [`antispam@${srv}`, `${to}@${domain}`],
    [`antispam@[${ip}]`, `${to}@${domain}`],
    [`antispam@[${ip}]`, `${to}%${domain}@[${ip}]`],
    [`antispam@[${ip}]`, `${to}%${domain}@${srv}`],
    [`antispam@[${ip}]`, `"${to}@${domain}"`],
    [`antispam@[${ip}]`, `"${to}%${domain}"`],
    [`antispam@[${ip}]`, `${to}@${domain}@[${ip}]`],
    [`antispam@[${ip}]`, `"${to}@${domain}"@[${ip}]`],
    [`antispam@[${ip}]`, `${to}@${domain}@${srv}`],
    [`antispam@[${ip}]`, `@[${ip}]:${to}@${domain}`],
    [`antispam@[${ip}]`, `@${srv}:${to}@${domain}`],
    [`antispam@[${ip}]`, `${domain}!${to}`],
    [`antispam@[${ip}]`, `${domain}!${to}@[${ip}]`],
    [`antispam@[${ip}]`, `${domain}!${to}@${srv}`],
  ];
  t.equal(probes.length, 16);
  const c = await s.connect();
  await c.ehlo();
  for (const [from, rcpt] of probes) {
    t.equal((await c.command(`MAIL FROM:<${from}>`)).code, 250);
    const r = await c.command(`RCPT TO:<${rcpt}>`);
    t.ok(r.code >= 500 && r.code < 600, `RCPT TO:<${rcpt}> refused (${r.code} ${r.text})`);
    await c.command('RSET');
  }
  await c.command('MAIL FROM:<a@example.net>');
  t.ok((await c.command('RCPT TO:<relaytest>')).code >= 500, 'unqualified recipient refused');
  t.equal((await c.command('RCPT TO:<postmaster>')).code, 250, 'except postmaster, which RFC 5321 requires (it is local)');
  await c.quit();
  t.same(await s.queued(), []);
});

t.test('nmap --script smtp-open-relay finds no open relay', needs('nmap'), async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], config: { hostname: 'mx.test', localDomains: ['mx.test', 'localhost'] } });
  t.teardown(() => s.close());
  const r = await run('nmap', ['-Pn', '-n', '-p', String(s.port), '--script', '+smtp-open-relay', '--script-args', 'smtp-open-relay.domain=nmap.scanme.org,smtp-open-relay.ip=127.0.0.1', '127.0.0.1'], { timeout: 120_000 });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /smtp-open-relay: Server doesn't seem to be an open relay, all tests failed/);
  t.notMatch(r.stdout, /Server is an open relay/);
  t.same(await s.queued(), []);
});
