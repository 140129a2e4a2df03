/**
 * spamassassin against a real spamd (one for the whole file): the client's
 * commands, GTUBE flagged or refused, clean mail marked No, spam filed into
 * Maildir/.Spam by vpopmail delivery, maxSize skips spamd, and spamd down
 * (accept Unchecked, or 451 with onError defer). The fake-server framing
 * tests are in spamassassin-spamc.test.ts.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import t, { type Test } from 'tap';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { Spamc } from '../../plugins/spamassassin/spamc.js';
import { SqliteStore } from '../../plugins/vpopmail/sqlite-store.js';
import { hashPassword } from '../../plugins/vpopmail/passwords.js';
import { freePort, needs } from '../helpers.js';
import { startSpamd, type SpamdPeer } from '../peers/spamd.js';

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

const headers = (subject: string, id: string) =>
  [
    'From: Alice Example <alice@remote.test>',
    'To: Postmaster <postmaster@localhost>',
    `Subject: ${subject}`,
    'Date: Thu, 26 Nov 2026 10:00:00 +0000',
    `Message-ID: <${id}@remote.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
  ].join('\r\n');

const SPAM = `${headers('test spam', 'spam1')}\r\n\r\nThis is the GTUBE test.\r\n\r\n${GTUBE}\r\n`;
const CLEAN = `${headers('Minutes of the Tuesday meeting', 'ham1')}\r\n\r\nHello,\r\n\r\nthe minutes of Tuesday's meeting are below. We agreed to meet\r\nagain next week to go over the budget for the garden project.\r\n\r\nRegards,\r\nAlice\r\n`;

const opts = needs('spamd');
let spamd: SpamdPeer | undefined;

t.before(async () => {
  if (opts.skip) return;
  spamd = await startSpamd(t);
});

interface Started {
  readonly server: TestServer;
}

async function smtp(t: Test, pluginOptions: Record<string, unknown>): Promise<Started> {
  const server = await startTestServer({ plugins: ['spamassassin'], pluginOptions: { spamassassin: { port: spamd!.port, ...pluginOptions } } });
  t.teardown(() => server.close());
  return { server };
}

/** The plugin's log line about the message. */
function spamLog(server: TestServer) {
  return server.logs.filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('spamassassin'));
}

t.test('client against spamd: PING, CHECK, SYMBOLS, REPORT, HEADERS, PROCESS, User, stream input', opts, async (t) => {
  const c = new Spamc({ port: spamd!.port, timeout: 20_000 });
  t.equal(await c.ping(), true, 'PONG');
  const check = await c.check(Buffer.from(SPAM));
  t.equal(check.isSpam, true);
  t.ok(check.score >= 1000, `GTUBE scores ${check.score}`);
  t.equal(check.threshold, 5);

  const sym = await c.symbols(Buffer.from(SPAM), 'someone@example.test');
  t.ok(sym.symbols.includes('GTUBE'), `symbols ${sym.symbols.join(',')}`);

  const report = await c.report(Buffer.from(SPAM));
  t.match(report.body.toString(), /GTUBE/);

  const hdrs = await c.headers(Buffer.from(CLEAN));
  t.equal(hdrs.isSpam, false);
  t.match(hdrs.body.toString(), /X-Spam-Status: No, score=/);
  t.notMatch(hdrs.body.toString(), /garden project/, 'HEADERS: the header section only');

  const processed = await c.process(Buffer.from(CLEAN));
  const text = processed.body.toString();
  t.match(text, /X-Spam-Status: No,/);
  t.ok(text.endsWith(CLEAN.slice(CLEAN.indexOf('\r\n\r\n') + 4)), 'PROCESS: the body with every blank line');
  t.equal(processed.body.length, Number(processed.headers['content-length']));

  const spamProcessed = await c.process({ stream: Readable.from([Buffer.from(SPAM.slice(0, 40)), Buffer.from(SPAM.slice(40))]), length: Buffer.byteLength(SPAM) });
  t.match(spamProcessed.body.toString(), /X-Spam-Status: Yes,/, 'stream input; spam rewritten');
});

t.test('GTUBE is flagged with SpamAssassin headers; clean mail is marked No', opts, async (t) => {
  const { server } = await smtp(t, {});
  const c = await server.connect();
  await c.ehlo('client.example');
  const spam = await c.mail({ from: 'alice@remote.test', to: 'postmaster@localhost', data: SPAM });
  t.equal(spam.data?.code, 250, 'accepted (no rejectScore)');
  const ham = await c.mail({ from: 'alice@remote.test', to: 'postmaster@localhost', data: CLEAN });
  t.equal(ham.data?.code, 250);
  const [first, second] = await server.queued();
  t.match(first!.text, /^(?:.*\r\n)*X-Spam-Flag: YES\r\n/);
  const status = /X-Spam-Status: (Yes, score=(\d+\.\d) required=5\.0 tests=[^\r\n]*(?:\r\n\t[^\r\n]*)*)/.exec(first!.text);
  t.ok(status, 'X-Spam-Status on the spam');
  t.ok(Number(status![2]) >= 1000, `score ${status![2]}`);
  t.match(status![1]!, /GTUBE/);
  t.match(first!.text, `X-Spam-Level: ${'*'.repeat(50)}\r\n`, 'stars capped at 50');
  t.notMatch(second!.text, /X-Spam-Flag/);
  t.match(second!.text, /X-Spam-Status: No, score=-?\d+\.\d required=5\.0 tests=/);

  const lines = spamLog(server);
  t.equal(lines.length, 2, 'one log line per message');
  t.match(lines[0], { action: 'flag', spam: true, required: 5, tests: /GTUBE/ });
  t.ok((lines[0]!.score as number) >= 1000);
  t.ok(typeof lines[0]!.elapsed === 'number');
  t.match(lines[1], { action: 'pass', spam: false });
});

t.test('rejectScore: GTUBE refused with 554 5.7.1 and the score', opts, async (t) => {
  const { server } = await smtp(t, { rejectScore: 20, perRecipientUser: true });
  const c = await server.connect();
  await c.ehlo('client.example');
  const spam = await c.mail({ from: 'alice@remote.test', to: 'postmaster@localhost', data: SPAM });
  t.equal(spam.data?.code, 554);
  t.equal(spam.data?.enhanced, '5.7.1');
  t.match(spam.data?.text, /spam \(score 10\d\d\.\d, limit 20\.0\)/);
  const ham = await c.mail({ from: 'alice@remote.test', to: 'postmaster@localhost', data: CLEAN });
  t.equal(ham.data?.code, 250, 'clean mail still accepted');
  t.equal((await server.queued()).length, 1);
  const lines = spamLog(server);
  t.match(lines[0], { action: 'reject', user: 'postmaster@localhost' });
});

t.test('maxSize: a larger message is not sent to spamd', opts, async (t) => {
  // Nothing listens on this port and onError is defer: any spamd call would answer 451.
  const { server } = await smtp(t, { port: await freePort(), onError: 'defer', maxSize: '1k' });
  const c = await server.connect();
  await c.ehlo('client.example');
  const big = await c.mail({ from: 'alice@remote.test', to: 'postmaster@localhost', data: `${SPAM}${'x'.repeat(70)}\r\n`.repeat(20) });
  t.equal(big.data?.code, 250, 'accepted without a check');
  const [q] = await server.queued();
  t.notMatch(q!.text, /X-Spam-/);
  t.match(spamLog(server)[0], { action: 'skipped', reason: 'too large', maxSize: 1024 });
});

t.test('vpopmail delivery files GTUBE into Maildir/.Spam', opts, async (t) => {
  const server = await startTestServer({
    deliver: true,
    plugins: ['rcpthosts', 'vpopmail', 'spamassassin'],
    pluginOptions: { rcpthosts: { domains: [] }, vpopmail: {}, spamassassin: { port: spamd!.port } },
    config: { localDomains: ['localhost'], delivery: { plugins: ['vpopmail'] }, queue: { retry: ['1s'] } },
  });
  const store = new SqliteStore(path.join(server.dataDir, 'vpopmail.sqlite'));
  t.teardown(async () => {
    store.close();
    await server.close();
  });
  store.addDomain({ name: 'example.test', spamFiling: true });
  store.addUser({ domain: 'example.test', name: 'alice', passwordHash: await hashPassword('pw pw pw') });
  const maildir = path.join(server.dataDir, 'domains', 'example.test', 'alice', 'Maildir');

  const c = await server.connect();
  await c.ehlo('client.example');
  t.equal((await c.mail({ from: 'x@remote.test', to: 'alice@example.test', data: SPAM })).data?.code, 250);
  t.equal((await c.mail({ from: 'x@remote.test', to: 'alice@example.test', data: CLEAN })).data?.code, 250);
  await server.server.queue.idle();
  const spamFiles = await readdir(path.join(maildir, '.Spam', 'new'));
  t.equal(spamFiles.length, 1, 'GTUBE in .Spam/new');
  const text = await readFile(path.join(maildir, '.Spam', 'new', spamFiles[0]!), 'utf8');
  t.match(text, /\nX-Spam-Flag: YES\n/);
  t.match(text, /\nX-Spam-Status: Yes, score=/);
  const inbox = await readdir(path.join(maildir, 'new'));
  t.equal(inbox.length, 1, 'the clean message in the inbox');
  t.match(await readFile(path.join(maildir, 'new', inbox[0]!), 'utf8'), /\nX-Spam-Status: No, /);
});

// Last: stops the file's spamd.
t.test('spamd stopped: accept Unchecked by default, 451 4.7.1 with onError defer; both logged', opts, async (t) => {
  const port = spamd!.port;
  await spamd!.stop();
  const { server } = await smtp(t, { port, connectTimeout: 1, timeout: 3 });
  const c = await server.connect();
  await c.ehlo('client.example');
  const r = await c.mail({ from: 'alice@remote.test', to: 'postmaster@localhost', data: SPAM });
  t.equal(r.data?.code, 250, 'accepted');
  const [q] = await server.queued();
  t.match(q!.text, /^X-Spam-Status: Unchecked \(spamd unavailable\)\r\n/);
  t.notMatch(q!.text, /X-Spam-Flag/);
  t.match(spamLog(server)[0], { action: 'unchecked', kind: 'connect', err: /ECONNREFUSED/ });

  const { server: strict } = await smtp(t, { port, onError: 'defer' });
  const c2 = await strict.connect();
  await c2.ehlo('client.example');
  const d = await c2.mail({ from: 'alice@remote.test', to: 'postmaster@localhost', data: SPAM });
  t.equal(d.data?.code, 451);
  t.equal(d.data?.enhanced, '4.7.1');
  t.equal((await strict.queued()).length, 0, 'nothing queued');
  t.match(spamLog(strict)[0], { action: 'defer', kind: 'connect' });
});
