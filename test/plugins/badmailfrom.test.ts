/** badmailfrom: qmail's acceptance check 3 and the control file. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { startTestServer } from '../../core/testing/index.js';
import { tempDir } from '../helpers.js';

t.test('MAIL gets 250, every RCPT after it 553; @domain is exact; case-insensitive; null sender never matches', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'badmailfrom');
  await writeFile(file, '# spammers\n@spam.test\nBad.Guy@Example.NET\n');
  const s = await startTestServer({ plugins: ['badmailfrom', 'rcpthosts'], pluginOptions: { badmailfrom: { file, addresses: ['@also-bad.test'] } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const probe = async (from: string) => {
    const mail = await c.command(`MAIL FROM:<${from}>`);
    const r1 = await c.command('RCPT TO:<postmaster@localhost>');
    const r2 = await c.command('RCPT TO:<other@localhost>');
    await c.command('RSET');
    return [mail.code, r1.code, r2.code, r2.enhanced, r2.text];
  };
  const refused = [250, 553, 553, '5.7.1', 'sorry, your envelope sender is in my badmailfrom list (#5.7.1)'];
  t.same(await probe('x@spam.test'), refused, '@domain entry');
  t.same(await probe('X@SPAM.TEST'), refused, 'case-insensitive');
  t.same(await probe('bad.guy@example.net'), refused, 'full address entry');
  t.same(await probe('z@also-bad.test'), refused, 'entry from the options');
  t.same((await probe('x@sub.spam.test')).slice(0, 3), [250, 250, 250], 'a subdomain is not matched');
  t.same((await probe('good.guy@example.net')).slice(0, 3), [250, 250, 250]);
  t.same((await probe('')).slice(0, 3), [250, 250, 250], 'the null sender');
  await c.quit();
  t.ok(s.logs.some((l) => l.plugin === 'badmailfrom' && l.action === 'reject' && l.hook === 'rcpt'), 'refusals are logged');
});
