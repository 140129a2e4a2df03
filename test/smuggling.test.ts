/**
 * SMTP smuggling (2023): only CRLF.CRLF ends DATA; a bare LF, bare CR or NUL
 * gets qmail's 451 and the connection is closed, so the second, smuggled
 * message pipelined behind the fake terminator is never queued.
 */
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';

const SEQUENCES: Record<string, string> = {
  'LF.LF': '\n.\n',
  'CR.CR': '\r.\r',
  'CR.LF': '\r.\n',
  'LF.CR': '\n.\r',
  'LF.CRLF': '\n.\r\n',
  'CRLF.LF': '\r\n.\n',
  'CR.CRLF': '\r.\r\n',
  'CRLF.CR': '\r\n.\r',
  'CRLF NUL.CRLF': '\r\n\x00.\r\n',
};

const smuggled = 'MAIL FROM:<admin@bank.example>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond message\r\n.\r\n';

for (const [name, seq] of Object.entries(SEQUENCES)) {
  t.test(`${name}: 451, connection closed, no second message`, async (t) => {
    const s = await startTestServer({ plugins: ['rcpthosts'] });
    t.teardown(() => s.close());
    const c = await s.connect();
    await c.ehlo();
    t.equal((await c.command('MAIL FROM:<user@sender.example>')).code, 250);
    t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250);
    t.equal((await c.command('DATA')).code, 354);
    // The fake terminator and the smuggled transaction, in one write, then a real end.
    c.write(`Subject: first\r\n\r\nfirst message${seq}${smuggled}QUIT\r\n`);
    const reply = await c.read();
    t.equal(reply.code, 451, 'refused with 451');
    t.equal(reply.enhanced, '4.5.0');
    t.match(reply.text, /smtplf/);
    t.ok(await c.waitClosed(3000), 'the server hung up');
    const queued = await s.queued();
    t.equal(queued.length, 0, 'nothing was queued');
    t.notOk(
      queued.some((m) => m.text.includes('second message')),
      'the smuggled message is not there',
    );
  });
}

t.test('the same sequences split across TCP segments are caught too', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  await c.command('MAIL FROM:<user@sender.example>');
  await c.command('RCPT TO:<postmaster@localhost>');
  await c.command('DATA');
  c.write('Subject: split\r\n\r\nline\r');
  await new Promise((r) => setTimeout(r, 50));
  c.write('.\r\n' + smuggled);
  t.equal((await c.read()).code, 451);
  t.ok(await c.waitClosed(3000));
  t.same(await s.queued(), []);
});

t.test('a clean message with dots and CRLF is taken, and a pipelined second one too', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  c.write('MAIL FROM:<a@example.net>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\n');
  t.same([(await c.read()).code, (await c.read()).code, (await c.read()).code], [250, 250, 354]);
  c.write('Subject: one\r\n\r\n..leading dot\r\n.\r\n' + 'MAIL FROM:<a@example.net>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\n');
  t.same([(await c.read()).code, (await c.read()).code, (await c.read()).code, (await c.read()).code], [250, 250, 250, 354]);
  c.write('Subject: two\r\n\r\nbody\r\n.\r\n');
  t.equal((await c.read()).code, 250);
  const texts = (await s.queued()).map((m) => m.text);
  t.equal(texts.length, 2, 'both messages queued, legitimately');
  t.ok(texts.some((x) => x.includes('\r\n.leading dot\r\n')));
  await c.quit();
});

t.test('bare LF in command lines is tolerated (RFC 5321 allows it for commands)', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  c.write('EHLO lf.example\n');
  t.equal((await c.read()).code, 250);
  c.write('NOOP\n');
  t.equal((await c.read()).code, 250);
  await c.quit();
});
