/**
 * Issue 6's "done when", with the real daemons: spamd, clamd and a loopback
 * DNS server publishing DKIM, SPF and DMARC records; the spamassassin,
 * clamav, mailauth and vpopmail plugins on one smtp listener, vpopmail and
 * mailauth on submission, vpopmail delivering.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';
import { dkimRecord, generateKey } from '../plugins/mailauth/keys.js';
import { hashPassword } from '../plugins/vpopmail/passwords.js';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { needs, tempDir } from './helpers.js';
import { EICAR, EICAR_SIGNATURE, startClamd } from './peers/clamd.js';
import { startDnsServer } from './peers/dns.js';
import { startSpamd } from './peers/spamd.js';

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

const mail = (subject: string, body: string, from = 'news@sender.test', extra: string[] = []) =>
  [`From: <${from}>`, 'To: <alice@example.test>', `Subject: ${subject}`, 'Date: Thu, 26 Nov 2026 03:00:00 +0000', `Message-ID: <${subject.replace(/\W/g, '')}@sender.test>`, ...extra, '', body, ''].join('\n');

/** EICAR as a base64 attachment: the raw string appears nowhere in the message, clamd decodes the MIME part. */
const eicarMail = mail(
  'the file',
  [
    '--b0',
    'Content-Type: text/plain',
    '',
    'See the attachment.',
    '--b0',
    'Content-Type: application/octet-stream; name="eicar.com"',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from(EICAR).toString('base64'),
    '--b0--',
  ].join('\n'),
  'news@sender.test',
  ['MIME-Version: 1.0', 'Content-Type: multipart/mixed; boundary="b0"'],
);

t.test('GTUBE to .Spam, EICAR refused, clean mail marked and authenticated, submission signed and verified', needs('spamd', 'clamd'), async (t) => {
  const [spamd, clamd] = await Promise.all([startSpamd(t), startClamd(t)]);
  const dataDir = await tempDir(t);
  const key = await generateKey(path.join(dataDir, 'dkim'), 'example.test', 'mail');
  const record = dkimRecord('example.test', 'mail', key.pem);
  const dns = await startDnsServer({
    [record.name]: { TXT: [record.value] },
    'example.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
    '_dmarc.example.test': { TXT: ['v=DMARC1; p=reject'] },
    'sender.test': { TXT: ['v=spf1 ip4:127.0.0.0/8 ~all'] },
  });
  t.teardown(() => dns.close());

  const store = new SqliteStore(path.join(dataDir, 'vpopmail.sqlite'));
  t.teardown(() => store.close());
  store.addDomain({ name: 'example.test', spamFiling: true });
  store.addUser({ domain: 'example.test', name: 'alice', passwordHash: await hashPassword('alice pw') });
  store.addUser({ domain: 'example.test', name: 'postmaster', passwordHash: await hashPassword('pm') });

  const server = await startTestServer({
    dataDir,
    deliver: true,
    listeners: [
      { name: 'smtp', plugins: ['clamav', 'spamassassin', 'mailauth', 'vpopmail'] },
      { name: 'submission', requireAuth: true, allowInsecureAuth: true, plugins: ['vpopmail', 'mailauth'] },
    ],
    pluginOptions: {
      clamav: { port: clamd.port },
      spamassassin: { port: spamd.port },
      mailauth: { sign: { 'example.test': { selector: 'mail' } } },
      vpopmail: {},
    },
    config: { dns: { servers: [dns.address], timeout: 1000, tries: 1 }, delivery: { plugins: ['vpopmail'] }, queue: { concurrencyRemote: 0 } },
  });
  t.teardown(() => server.close());
  const maildir = path.join(dataDir, 'domains/example.test/alice/Maildir');
  const files = async (sub: string) => (await readdir(path.join(maildir, sub)).catch(() => [] as string[])).map((n) => path.join(maildir, sub, n));

  const c = await server.connect({ listener: 'smtp' });
  await c.ehlo('mx.sender.test');
  const spam = await c.mail({ from: 'news@sender.test', to: 'alice@example.test', data: mail('buy now', `Cheap!\n${GTUBE}`) });
  t.equal(spam.data?.code, 250, 'GTUBE is taken (below no reject score)...');
  const virus = await c.mail({ from: 'news@sender.test', to: 'alice@example.test', data: eicarMail });
  t.equal(virus.data?.code, 554);
  t.match(virus.data?.text, new RegExp(`Virus found: ${EICAR_SIGNATURE.replace(/\./g, '\\.')}`), 'EICAR refused, naming the signature');
  const clean = await c.mail({ from: 'news@sender.test', to: 'alice@example.test', data: mail('lunch', 'Lunch at noon?') });
  t.equal(clean.data?.code, 250);
  await c.quit();
  await server.server.queue.idle();

  const spamFiles = await files('.Spam/new');
  t.equal(spamFiles.length, 1, '...and filed into Maildir/.Spam');
  t.match(await readFile(spamFiles[0]!, 'utf8'), /^X-Spam-Flag: YES$/m);
  const inbox = await files('new');
  t.equal(inbox.length, 1, 'only the clean message in the inbox');
  const cleanText = await readFile(inbox[0]!, 'utf8');
  t.match(cleanText, /^X-Spam-Status: No, score=/m, 'marked by spamd');
  t.match(cleanText, /^Authentication-Results: mx\.test;[\s\S]*spf=pass/m, 'and by mailauth');
  t.match(cleanText, /^X-Virus-Scanned: clamav$/m);

  // Submission: alice, authenticated, writes to a remote address; the copy waits in the (held) remote queue.
  const s = await server.connect({ listener: 'submission' });
  await s.ehlo('laptop.example');
  t.equal((await s.command(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0alice pw').toString('base64')}`)).code, 235);
  const sent = await s.mail({ from: 'alice@example.test', to: 'bob@remote.test', data: mail('from alice', 'Hi Bob', 'alice@example.test').replace('To: <alice@example.test>', 'To: <bob@remote.test>') });
  t.equal(sent.data?.code, 250);
  await s.quit();
  const outgoing = (await server.queued()).find((m) => m.envelope.listener === 'submission')!;
  t.match(outgoing.text, /^DKIM-Signature: .*d=example\.test/m, 'signed for the From domain');

  // The same bytes arrive at the smtp listener, as another yubin would receive them: dkim=pass.
  const m = await server.connect({ listener: 'smtp' });
  await m.ehlo('mail.example.test');
  const back = await m.mail({ from: 'alice@example.test', to: 'alice@example.test', data: outgoing.text.replace(/\r\n/g, '\n') });
  t.equal(back.data?.code, 250);
  await m.quit();
  await server.server.queue.idle();
  const verified = (await files('new')).filter((f) => f !== inbox[0]);
  t.equal(verified.length, 1);
  t.match(await readFile(verified[0]!, 'utf8'), /^Authentication-Results: mx\.test;[\s\S]*dkim=pass[\s\S]*dmarc=pass/m, 'verified as pass');
});
