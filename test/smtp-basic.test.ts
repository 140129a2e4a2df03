/** The SMTP core over real sockets: extensions, transactions, limits, relay guard, durability. */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';

t.test('EHLO lists the extensions; greeting and HELO use the hostname', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  t.equal(c.greeting?.code, 220);
  t.match(c.greeting?.text, /^mx\.test ESMTP/);
  const ehlo = await c.ehlo();
  t.equal(ehlo.code, 250);
  t.equal(ehlo.lines[0], '250-mx.test');
  const ext = ehlo.lines.slice(1).map((l) => l.slice(4));
  t.same(ext, ['PIPELINING', `SIZE ${25 * 1024 * 1024}`, '8BITMIME', 'BINARYMIME', 'CHUNKING', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN', 'LIMITS RCPTMAX=100'], 'no STARTTLS, REQUIRETLS or AUTH without TLS and an auth plugin; DSN and LIMITS always');
  const helo = await c.command('HELO other.example');
  t.equal(helo.lines[0], '250 mx.test');
  t.equal((await c.command('EHLO')).code, 501, 'EHLO needs a name');
  t.equal((await c.command('EHLO a b')).code, 501);
  await c.quit();
});

t.test('a message to a local domain is queued durably, with a Received header on top', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo('sender.example');
  const r = await c.mail({ from: 'alice@example.net', to: ['postmaster@localhost', 'bob@example.test'], data: 'Subject: hi\n\nhello\n.dot line\n' });
  t.equal(r.mail.code, 250);
  t.same(
    r.rcpt.map((x) => x.code),
    [250, 250],
  );
  t.equal(r.data?.code, 250);
  t.equal(r.data?.enhanced, '2.0.0');
  const id = /queued as (\S+)/.exec(r.data!.text)?.[1];
  t.ok(id, 'reply names the queue id');
  // One file under dataDir/queue/mess: the message, then its envelope as a trailer; nothing left in tmp.
  const mess = await readdir(path.join(s.dataDir, 'queue/mess'));
  t.same(mess, [id]);
  t.same(await readdir(path.join(s.dataDir, 'queue/tmp')), []);
  const raw = await readFile(path.join(s.dataDir, 'queue/mess', id!), 'utf8');
  const footer = /\n#yubin-envelope:(\d{10})\n$/.exec(raw);
  t.ok(footer, 'ends with the envelope footer');
  const envLength = Number(footer![1]);
  const env = JSON.parse(raw.slice(raw.length - footer![0].length - envLength, raw.length - footer![0].length));
  t.equal(env.sender, 'alice@example.net');
  t.same(
    env.recipients.map((x: { address: string }) => x.address),
    ['postmaster@localhost', 'bob@example.test'],
  );
  const text = raw.slice(0, env.size);
  t.equal(env.size + envLength + footer![0].length, Buffer.byteLength(raw));
  t.match(text, /^Received: from sender\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test \(yubin\) with ESMTP id /);
  t.match(text, /\r\nSubject: hi\r\n\r\nhello\r\n\.dot line\r\n$/, 'body stored with CRLF, dot-stuffing undone');
  await c.quit();
});

t.test('MAIL FROM:<> and RCPT TO:<postmaster> without a domain are taken', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<>')).code, 250);
  t.equal((await c.command('RCPT TO:<Postmaster>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  c.write('Subject: bounce\r\n\r\nx\r\n.\r\n');
  t.equal((await c.read()).code, 250);
  const [m] = await s.queued();
  t.equal(m?.envelope.sender, '');
  t.same(m?.envelope.recipients.map((r) => r.address), ['Postmaster@localhost']);
  await c.quit();
});

t.test('relaying is refused by the core even with no plugin at all', async (t) => {
  const s = await startTestServer({ plugins: [] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250);
  const relay = await c.command('RCPT TO:<victim@elsewhere.example>');
  t.equal(relay.code, 550);
  t.equal(relay.enhanced, '5.7.1');
  const trick = await c.command('RCPT TO:<victim%elsewhere.example@localhost>');
  t.equal(trick.code, 550, 'percent hack on a local domain is refused too');
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250);
  await c.quit();
  t.ok(
    s.logs.some((l) => l.hook === 'rcpt' && l.plugin === 'core' && l.action === 'reject' && l.rcpt === 'victim@elsewhere.example'),
    'the refusal is logged with hook, plugin, action and recipient',
  );
});

t.test('sequence errors and syntax errors get 5xx, never a crash', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 503, 'MAIL before EHLO');
  await c.ehlo();
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 503, 'RCPT before MAIL');
  t.equal((await c.command('DATA')).code, 503, 'DATA before RCPT');
  t.equal((await c.command('MAIL FROM:a@example.net')).code, 501, 'address without brackets');
  t.equal((await c.command('MAIL FROM:<a@@example.net>')).code, 501);
  t.equal((await c.command('FOO bar')).code, 500);
  t.equal((await c.command('NOOP')).code, 250);
  t.equal((await c.command('RSET')).code, 250);
  t.equal((await c.command('VRFY postmaster')).code, 252);
  await c.quit();
});

t.test('PIPELINING: MAIL, RCPT, RCPT, DATA in one write give four replies in order', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  c.write('MAIL FROM:<a@example.net>\r\nRCPT TO:<postmaster@localhost>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n');
  const codes = [];
  for (let i = 0; i < 4; i++) codes.push((await c.read()).code);
  t.same(codes, [250, 250, 553, 354]);
  c.write('Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n');
  t.equal((await c.read()).code, 250);
  t.equal((await c.read()).code, 221);
});

t.test('size: SIZE= over the limit is refused at MAIL; a big message without SIZE gets 552 after the dot', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { maxMessageSize: 1000 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  const ehlo = await c.ehlo();
  t.ok(ehlo.lines.includes('250-SIZE 1000'));
  const big = await c.command('MAIL FROM:<a@example.net> SIZE=5000');
  t.equal(big.code, 552);
  t.equal(big.enhanced, '5.3.4');
  const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: big\n\n' + 'x'.repeat(70).concat('\n').repeat(30) });
  t.equal(r.data?.code, 552);
  t.equal(r.data?.enhanced, '5.3.4');
  t.same(await s.queued(), [], 'nothing queued');
  const small = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: small\n\nok\n' });
  t.equal(small.data?.code, 250, 'the session goes on');
  await c.quit();
});

t.test('recipient limit: 452 4.5.3 past maxRecipients', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { maxRecipients: 2 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  await c.command('MAIL FROM:<a@example.net>');
  t.equal((await c.command('RCPT TO:<a@localhost>')).code, 250);
  t.equal((await c.command('RCPT TO:<b@localhost>')).code, 250);
  const third = await c.command('RCPT TO:<c@localhost>');
  t.equal(third.code, 452);
  t.equal(third.enhanced, '4.5.3');
  await c.quit();
});

t.test('100 Received headers: 554 5.4.6, nothing queued; 99 pass', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const hops = (n: number) => Array.from({ length: n }, (_, i) => `Received: from h${i}.example by h${i + 1}.example; Tue, 1 Jan 2030 00:00:00 +0000`).join('\n');
  const looping = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `${hops(100)}\nSubject: loop\n\nx\n` });
  t.equal(looping.data?.code, 554);
  t.equal(looping.data?.enhanced, '5.4.6');
  t.same(await s.queued(), []);
  const fine = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `${hops(99)}\nSubject: ok\n\nx\n` });
  t.equal(fine.data?.code, 250);
  await c.quit();
});

t.test('line and header limits', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { maxLineLength: 1000, maxHeaderSize: 2048 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const longLine = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `Subject: long\n\n${'y'.repeat(999)}\n` });
  t.equal(longLine.data?.code, 554, 'a 1001-octet line is refused after the dot');
  const exact = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `Subject: ok\n\n${'y'.repeat(998)}\n` });
  t.equal(exact.data?.code, 250, 'a 1000-octet line (CRLF included) is fine');
  const headers = Array.from({ length: 40 }, (_, i) => `X-Filler-${i}: ${'h'.repeat(60)}`).join('\n');
  const bigHeader = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `${headers}\n\nbody\n` });
  t.equal(bigHeader.data?.code, 552, 'a header section over maxHeaderSize is refused');
  t.equal((await s.queued()).length, 1);
  c.write(`NOOP ${'z'.repeat(1200)}\r\n`);
  const tooLong = await c.read();
  t.equal(tooLong.code, 421, 'a command line over the limit ends the session');
  t.ok(await c.waitClosed());
});

t.test('requireAuth: MAIL without AUTH gets 530 5.7.0', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { requireAuth: true } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const r = await c.command('MAIL FROM:<a@example.net>');
  t.equal(r.code, 530);
  t.equal(r.enhanced, '5.7.0');
  t.equal((await c.command('AUTH PLAIN AGEAYg==')).code, 502, 'no auth plugin: AUTH is not available');
  await c.quit();
});

t.test('idle timeout closes the session with 421', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { idleTimeout: '300ms' } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  const r = await c.read(3000);
  t.equal(r.code, 421);
  t.ok(await c.waitClosed(2000));
});

t.test('maxConnections: the connection over the limit gets 421', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { maxConnections: 2 } } });
  t.teardown(() => s.close());
  const a = await s.connect();
  const b = await s.connect();
  const c = await s.connect();
  t.equal(a.greeting?.code, 220);
  t.equal(b.greeting?.code, 220);
  t.equal(c.greeting?.code, 421);
  await a.quit();
  await b.quit();
});
