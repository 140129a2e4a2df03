/**
 * CHUNKING and BINARYMIME (RFC 3030, issue 16): BDAT over real loopback
 * sockets, byte-exact to a Maildir, through the same data and queue hooks
 * as DATA, with the strict line rules, the error replies and the stream
 * kept in step with the client whatever goes wrong.
 *
 * swaks 20201014 (the installed one) has no BDAT option, so every client
 * here is the raw test client.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { startTestServer, type SmtpTestClient, type SmtpReply } from '../core/testing/index.js';
import { hashPassword } from '../plugins/vpopmail/passwords.js';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { tempDir } from './helpers.js';

const bdat = (chunk: string | Buffer, last = false) => Buffer.concat([Buffer.from(`BDAT ${Buffer.byteLength(chunk)}${last ? ' LAST' : ''}\r\n`), Buffer.from(chunk)]);

async function envelope(c: SmtpTestClient, mail = 'MAIL FROM:<a@example.net>'): Promise<void> {
  await c.ehlo();
  const m = await c.command(mail);
  if (m.code !== 250) throw new Error(`MAIL refused: ${m.code} ${m.text}`);
  const r = await c.command('RCPT TO:<postmaster@localhost>');
  if (r.code !== 250) throw new Error(`RCPT refused: ${r.code} ${r.text}`);
}

async function replies(c: SmtpTestClient, n: number): Promise<SmtpReply[]> {
  const out: SmtpReply[] = [];
  for (let i = 0; i < n; i++) out.push(await c.read());
  return out;
}

t.test('EHLO offers CHUNKING and BINARYMIME', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  const ehlo = await c.ehlo();
  t.ok(ehlo.lines.some((l) => /^250[- ]CHUNKING$/.test(l)), 'CHUNKING');
  t.ok(ehlo.lines.some((l) => /^250[- ]BINARYMIME$/.test(l)), 'BINARYMIME');
  await c.quit();
});

t.test('three chunks, one pipelined, reach a Maildir byte-exact; LAST is answered as DATA is', async (t) => {
  const dataDir = await tempDir(t);
  const store = new SqliteStore(path.join(dataDir, 'vpopmail.sqlite'));
  t.teardown(() => store.close());
  store.addDomain({ name: 'example.test' });
  store.addUser({ domain: 'example.test', name: 'alice', passwordHash: await hashPassword('pw') });
  const s = await startTestServer({
    dataDir,
    deliver: true,
    plugins: ['vpopmail'],
    pluginOptions: { vpopmail: {} },
    config: { delivery: { plugins: ['vpopmail'] }, queue: { concurrencyRemote: 0 } },
  });
  t.teardown(() => s.close());
  // No dot-stuffing: a leading dot and a CRLF.CRLF are content. A CRLF is split across two chunks.
  const parts = ['Subject: chunked\r\nMessage-ID: <chunked@sender.test>\r\n\r\nfirst part\r', '\n.leading dot\r\n.\r\nstill the message\r\n', 'last part\r\n'];
  const c = await s.connect();
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250);
  t.equal((await c.command('RCPT TO:<alice@example.test>')).code, 250);
  c.write(Buffer.concat([bdat(parts[0]!), bdat(parts[1]!)]));
  const [one, two] = await replies(c, 2);
  t.same([one!.code, one!.enhanced, one!.text], [250, '2.0.0', `Ok: ${Buffer.byteLength(parts[0]!)} bytes`], 'a chunk is answered with its size');
  t.equal(two!.code, 250);
  c.write(Buffer.concat([bdat(parts[2]!, true), Buffer.from('NOOP\r\n')]));
  const [last, noop] = await replies(c, 2);
  t.equal(last!.code, 250);
  t.equal(last!.enhanced, '2.0.0');
  const id = /^Ok: queued as (\S+)$/.exec(last!.text)?.[1];
  t.ok(id, `BDAT LAST carries the queue id: ${last!.text}`);
  t.equal(noop!.code, 250, 'the command pipelined behind the last chunk is answered after it');
  // The same message by DATA: the final dot's reply has the same shape.
  const byData = await c.mail({ from: 'a@example.net', to: 'alice@example.test', data: 'Subject: by data\n\nhello\n' });
  t.same([byData.data?.code, byData.data?.enhanced], [250, '2.0.0']);
  t.match(byData.data?.text, /^Ok: queued as \S+$/, 'as DATA gets it');
  await c.quit();
  await s.server.queue.idle();

  const maildir = path.join(dataDir, 'domains/example.test/alice/Maildir/new');
  const texts = await Promise.all((await readdir(maildir)).map((f) => readFile(path.join(maildir, f), 'latin1')));
  const delivered = texts.find((x) => x.includes('Subject: chunked'));
  t.ok(delivered, 'delivered to the Maildir');
  // Maildir keeps LF line ends, as qmail's does (POP3 puts the CRs back): nothing else of the bytes changes.
  const sent = parts.join('').replace(/\r\n/g, '\n');
  t.ok(delivered!.endsWith(sent), 'the chunks, end to end, byte for byte');
  const fields = delivered!.slice(0, delivered!.length - sent.length).split(/\n(?![ \t])/).filter(Boolean);
  t.same(fields.map((f) => f.split(':')[0]), ['Return-Path', 'Delivered-To', 'Received'], 'on top only what local delivery adds, and our Received line');
  t.match(fields.at(-1), new RegExp(`^Received: from client\\.example\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\n\\tby mx\\.test \\(yubin\\) with ESMTP id ${id}\\n`));
});

t.test('CRLF.CRLF and commands inside a chunk are content, not a second message', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  const smuggled = 'Subject: first\r\n\r\nfirst message\r\n.\r\nMAIL FROM:<admin@bank.example>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n';
  c.write(bdat(smuggled, true));
  const reply = await c.read();
  t.equal(reply.code, 250, `one reply for the one chunk: ${reply.text}`);
  t.equal((await c.command('NOOP')).code, 250, 'and nothing else was answered in between');
  const queued = await s.queued();
  t.equal(queued.length, 1, 'one message');
  t.ok(queued[0]!.text.endsWith(smuggled), 'holding every byte of the chunk');
  await c.quit();
});

t.test('bare LF: 451 and closed in a 7BIT/8BITMIME body, accepted as BINARYMIME', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const body = 'Subject: lf\r\n\r\nline one\nline two\r\n';
  for (const mail of ['MAIL FROM:<a@example.net>', 'MAIL FROM:<a@example.net> BODY=8BITMIME']) {
    const c = await s.connect();
    await envelope(c, mail);
    c.write(Buffer.concat([bdat(body, true), Buffer.from('MAIL FROM:<b@example.net>\r\n')]));
    const reply = await c.read();
    t.same([reply.code, reply.enhanced], [451, '4.5.0'], `${mail}: refused as in DATA`);
    t.match(reply.text, /bare LF/);
    t.ok(await c.waitClosed(3000), 'the server hung up');
  }
  t.same(await s.queued(), [], 'nothing queued');

  const c = await s.connect();
  await envelope(c, 'MAIL FROM:<a@example.net> BODY=BINARYMIME');
  const binary = Buffer.concat([Buffer.from(body), Buffer.from([0, 0x0d, 0xff, 0x0a, 0x0d])]);
  c.write(bdat(binary.subarray(0, 20)));
  t.equal((await c.read()).code, 250);
  c.write(bdat(binary.subarray(20), true));
  t.equal((await c.read()).code, 250, 'binary content taken, a dangling CR too');
  const queued = await s.queued();
  t.equal(queued.length, 1);
  t.equal(queued[0]!.envelope.senderParams.BODY, 'BINARYMIME', 'the envelope keeps BODY=BINARYMIME');
  await c.quit();
});

t.test('a bare CR left at the end of a 7BIT message is a bare CR; one split across chunks is not', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  c.write(Buffer.concat([bdat('Subject: cr\r\n\r\nbody\r'), bdat('', true)]));
  t.equal((await c.read()).code, 250, 'the chunk ending in CR is taken for now');
  const reply = await c.read();
  t.same([reply.code, reply.enhanced], [451, '4.5.0'], 'the message ends on a bare CR');
  t.ok(await c.waitClosed(3000));
  t.same(await s.queued(), []);
});

t.test('DATA after MAIL BODY=BINARYMIME is out of sequence', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c, 'MAIL FROM:<a@example.net> BODY=BINARYMIME');
  const reply = await c.command('DATA');
  t.same([reply.code, reply.enhanced], [503, '5.5.1'], reply.text);
  c.write(bdat('Subject: binary\r\n\r\nx\r\n', true));
  t.equal((await c.read()).code, 250, 'the transaction goes on with BDAT');
  await c.quit();
});

t.test('BDAT before MAIL or RCPT: 503, and the chunk is read so the next command is one', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  // The chunk's bytes look like commands; they must not run.
  c.write(Buffer.concat([bdat('QUIT\r\nRSET\r\n'), Buffer.from('NOOP\r\n')]));
  const [refused, noop] = await replies(c, 2);
  t.same([refused!.code, refused!.enhanced], [503, '5.5.1'], refused!.text);
  t.match(refused!.text, /MAIL/);
  t.equal(noop!.code, 250, 'NOOP after the chunk is the next command');
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250);
  c.write(Buffer.concat([bdat('QUIT\r\n', true), Buffer.from('NOOP\r\n')]));
  const [noRcpt, noop2] = await replies(c, 2);
  t.same([noRcpt!.code, noRcpt!.enhanced], [503, '5.5.1']);
  t.match(noRcpt!.text, /RCPT/);
  t.equal(noop2!.code, 250);
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250, 'the envelope still stands');
  c.write(bdat('Subject: late\r\n\r\nx\r\n', true));
  t.equal((await c.read()).code, 250);
  t.equal((await s.queued()).length, 1);
  await c.quit();
});

t.test('over maxMessageSize: 552 for the chunk, the chunks pipelined behind it read and refused', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { maxMessageSize: 1000 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  const block = 'Subject: big\r\n\r\n' + 'x'.repeat(580) + '\r\n';
  c.write(Buffer.concat([bdat(block), bdat(block), bdat('NOOP\r\n'), bdat('RSET\r\n', true), Buffer.from('NOOP\r\n')]));
  const [first, over, after, last, noop] = await replies(c, 5);
  t.equal(first!.code, 250, 'under the limit');
  t.same([over!.code, over!.enhanced], [552, '5.3.4'], `over it: ${over!.text}`);
  t.match(over!.text, /1000 bytes/);
  t.same([after!.code, last!.code], [552, 552], 'the rest of the transaction is refused the same way');
  t.equal(noop!.code, 250, 'and the stream is in step');
  t.same(await s.queued(), []);
  await envelope(c);
  c.write(bdat('Subject: small\r\n\r\nx\r\n', true));
  t.equal((await c.read()).code, 250, 'a new transaction is taken');
  await c.quit();
});

t.test('RSET between chunks drops the partial message', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  c.write(bdat('Subject: dropped\r\n\r\n'));
  t.equal((await c.read()).code, 250);
  t.equal((await c.command('RSET')).code, 250);
  c.write(bdat('more\r\n', true));
  t.equal((await c.read()).code, 503, 'after RSET there is no transaction to add to');
  await envelope(c);
  c.write(Buffer.concat([bdat('Subject: kept\r\n'), bdat('\r\nbody\r\n', true)]));
  t.same((await replies(c, 2)).map((r) => r.code), [250, 250]);
  const queued = await s.queued();
  t.equal(queued.length, 1);
  t.notMatch(queued[0]!.text, /dropped/);
  t.match(queued[0]!.text, /Subject: kept\r\n\r\nbody\r\n$/);
  await c.quit();
});

t.test('DATA, MAIL and RCPT between chunks are out of sequence; the message goes on', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  c.write(bdat('Subject: mixed\r\n\r\n'));
  t.equal((await c.read()).code, 250);
  for (const line of ['DATA', 'MAIL FROM:<b@example.net>', 'RCPT TO:<postmaster@localhost>']) {
    const r = await c.command(line);
    t.same([r.code, r.enhanced], [503, '5.5.1'], `${line}: ${r.text}`);
  }
  c.write(Buffer.concat([bdat('body\r\n'), bdat('', true)]));
  const [chunk, last] = await replies(c, 2);
  t.equal(chunk!.code, 250);
  t.equal(last!.code, 250, `BDAT 0 LAST ends the message: ${last!.text}`);
  const queued = await s.queued();
  t.equal(queued.length, 1);
  t.match(queued[0]!.text, /Subject: mixed\r\n\r\nbody\r\n$/);
  t.same(queued[0]!.envelope.recipients.map((r) => r.address), ['postmaster@localhost'], 'the refused RCPT added nobody');
  await c.quit();
});

t.test('a BDAT whose size cannot be read: 501 and closed (where the next command starts is unknown)', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  for (const line of ['BDAT', 'BDAT ten', 'BDAT -1', 'BDAT 10 NOTLAST', 'BDAT 1234567890123456789']) {
    const c = await s.connect();
    await envelope(c);
    c.write(`${line}\r\n0123456789NOOP\r\n`);
    const reply = await c.read();
    t.same([reply.code, reply.enhanced], [501, '5.5.4'], `${line}: ${reply.text}`);
    t.ok(await c.waitClosed(3000), `${line}: closed`);
    t.match(c.received, /\r\n501 5\.5\.4 [^\r\n]*\r\n$/, 'nothing after it was taken as a command');
  }
  t.same(await s.queued(), []);
});

t.test("a data hook's rejection is BDAT LAST's reply, as it is the final dot's", async (t) => {
  let seen = '';
  const inspector = definePlugin({
    name: 'inspector',
    setup: () => ({
      hooks: {
        data: async ({ message }) => {
          const chunks: Buffer[] = [];
          for await (const c of message.stream()) chunks.push(c as Buffer);
          seen = Buffer.concat(chunks).toString('latin1');
          return message.header('subject')[0] === 'spam' ? answer.reject(554, '5.7.1', 'looks like spam') : answer.continue();
        },
      },
    }),
  });
  const s = await startTestServer({ plugins: [inspector, 'rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  c.write(Buffer.concat([bdat('Subject: spam\r\n'), bdat('\r\nbuy now\r\n', true)]));
  const [chunk, last] = await replies(c, 2);
  t.equal(chunk!.code, 250);
  t.same([last!.code, last!.enhanced, last!.text], [554, '5.7.1', 'looks like spam']);
  t.match(seen, /^Received: from .*\r\nSubject: spam\r\n\r\nbuy now\r\n$/s, 'the hook saw the whole message with our Received line, as for DATA');
  const byData = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: spam\n\nbuy now\n' });
  t.same([byData.data?.code, byData.data?.enhanced, byData.data?.text], [last!.code, last!.enhanced, last!.text], 'the same reply DATA gets');
  t.same(await s.queued(), []);
  await envelope(c);
  c.write(bdat('Subject: ham\r\n\r\nhello\r\n', true));
  t.equal((await c.read()).code, 250, 'the connection goes on');
  await c.quit();
});

t.test('the idle timeout applies inside a chunk and between chunks', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { idleTimeout: '1s' } } });
  t.teardown(() => s.close());
  const inside = await s.connect();
  await envelope(inside);
  inside.write('BDAT 100\r\nonly some of it');
  const cut = await inside.read(5000);
  t.equal(cut.code, 421, `mid-chunk: ${cut.text}`);
  t.ok(await inside.waitClosed(3000));

  const between = await s.connect();
  await envelope(between);
  between.write(bdat('Subject: slow\r\n'));
  t.equal((await between.read()).code, 250);
  const started = Date.now();
  const idle = await between.read(5000);
  t.equal(idle.code, 421, `between chunks, after ${Date.now() - started} ms: ${idle.text}`);
  t.ok(await between.waitClosed(3000));
  t.same(await s.queued(), [], 'no half message queued');
});

t.test('a client that leaves mid-message leaves nothing queued and the server serves on', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  c.write(Buffer.concat([bdat('Subject: gone\r\n'), Buffer.from('BDAT 50 LAST\r\nhalf')]));
  t.equal((await c.read()).code, 250);
  c.close();
  await new Promise((r) => setTimeout(r, 100));
  const d = await s.connect();
  await envelope(d);
  d.write(bdat('Subject: next\r\n\r\nx\r\n', true));
  t.equal((await d.read()).code, 250);
  const queued = await s.queued();
  t.equal(queued.length, 1);
  t.match(queued[0]!.text, /Subject: next/);
  await d.quit();
});

t.test('a large message in two big chunks, one write: read through back-pressure, stored exactly', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  const line = 'y'.repeat(78) + '\r\n';
  const first = 'Subject: large\r\n\r\n' + line.repeat(20_000);
  const second = line.repeat(20_000);
  c.write(Buffer.concat([bdat(first), bdat(second, true), Buffer.from('NOOP\r\n')]));
  const [one, last, noop] = await replies(c, 3);
  t.same([one!.code, last!.code, noop!.code], [250, 250, 250], last!.text);
  const queued = await s.queued();
  t.equal(queued.length, 1);
  t.ok(queued[0]!.text.endsWith(first + second), `${first.length + second.length} bytes, all of them, in order`);
  await c.quit();
});

t.test('a line over maxLineLength in a chunk gets the same 554 5.6.0 as in DATA', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { maxLineLength: 1000 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  // The long line is split across two chunks: its length counts across them.
  c.write(Buffer.concat([bdat('Subject: long\r\n\r\n' + 'z'.repeat(600)), bdat('z'.repeat(600) + '\r\n', true)]));
  const [, last] = await replies(c, 2);
  const byData = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: long\n\n' + 'z'.repeat(1200) + '\n' });
  t.same([last!.code, last!.enhanced], [554, '5.6.0'], last!.text);
  t.same([byData.data?.code, byData.data?.text], [last!.code, last!.text], 'as DATA gets it');
  t.same(await s.queued(), []);
  await c.quit();
});

t.test('minDataRate counts across chunks: a message dripped one small chunk at a time is cut off', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { limits: { idleTimeout: '2s', minDataRate: 100_000 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await envelope(c);
  const pause = () => new Promise((r) => setTimeout(r, 1200));
  c.write(bdat('Subject: drip\r\n'));
  t.equal((await c.read()).code, 250);
  await pause();
  c.write(bdat('X-Drip: 1\r\n'));
  t.equal((await c.read()).code, 250, 'each pause is under the idle timeout');
  await pause();
  c.write(bdat('X-Drip: 2\r\n'));
  // The chunk may be answered before the session has counted it; the 421 follows then.
  let reply = await c.read();
  if (reply.code === 250) reply = await c.read();
  t.same([reply.code, reply.enhanced], [421, '4.4.2'], `but the message as a whole is too slow: ${reply.text}`);
  t.ok(await c.waitClosed(3000));
  t.same(await s.queued(), []);
});
