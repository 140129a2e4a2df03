/** POP3's view of a Maildir and the wire form of messages, without a server. */
import { mkdir, readdir, rename, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { cleanTmp, MaildirBox, seenName, sizeFromName, uidFor } from '../core/pop3/maildir-box.js';
import { LineReader } from '../core/pop3/lines.js';
import { WireEncoder, WireSizeCounter } from '../core/pop3/wire-format.js';
import { tempDir } from './helpers.js';

/** What RETR must send for a stored file: CRLF line ends, a final line end, dot-stuffing. */
function expectedWire(content: string): { unstuffed: string; stuffed: string } {
  let crlf = content.replace(/\r?\n/g, '\r\n');
  if (crlf !== '' && !crlf.endsWith('\n')) crlf += '\r\n';
  const stuffed = crlf.replace(/(^|\n)\./g, '$1..');
  return { unstuffed: crlf, stuffed };
}

function encodeInChunks(content: Buffer, chunkSize: number, bodyLines?: number): Buffer {
  const enc = new WireEncoder(bodyLines);
  const out: Buffer[] = [];
  for (let i = 0; i < content.length && !enc.done; i += chunkSize) out.push(enc.encode(content.subarray(i, i + chunkSize)));
  out.push(enc.finish());
  return Buffer.concat(out);
}

const SAMPLES = [
  'Subject: plain\n\nbody\n',
  'Subject: no final newline\n\nlast line',
  'Subject: crlf\r\n\r\nalready\r\ncrlf\r\n',
  'Subject: mixed\r\n\nbare and\r\ncrlf\n',
  'Subject: dots\n\n.x\n..y\n.\nz.\n.',
  '.starts with a dot\n\n.',
  'header only, no body',
  '',
  'lone CR\rinside\n\nand at the end\r',
];

t.test('the encoder and the size counter agree with the rules, however the file is chunked', async (t) => {
  for (const sample of SAMPLES) {
    const content = Buffer.from(sample);
    const { unstuffed, stuffed } = expectedWire(sample);
    for (const chunk of [1, 2, 3, 7, 64 * 1024]) {
      t.equal(encodeInChunks(content, chunk).toString(), `${stuffed}.\r\n`, `${JSON.stringify(sample)} in ${chunk}-byte chunks`);
      const counter = new WireSizeCounter();
      for (let i = 0; i < content.length; i += chunk) counter.add(content.subarray(i, i + chunk));
      t.equal(counter.size, Buffer.byteLength(unstuffed), `size of ${JSON.stringify(sample)} in ${chunk}-byte chunks`);
    }
  }
});

t.test('TOP sends the header, the blank line and n body lines', async (t) => {
  const msg = Buffer.from('A: 1\nB: 2\n\none\n.two\nthree\n');
  for (const chunk of [1, 4, 1000]) {
    t.equal(encodeInChunks(msg, chunk, 0).toString(), 'A: 1\r\nB: 2\r\n\r\n.\r\n', `TOP 0 (${chunk})`);
    t.equal(encodeInChunks(msg, chunk, 2).toString(), 'A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n.\r\n', `TOP 2 (${chunk})`);
    t.equal(encodeInChunks(msg, chunk, 99).toString(), 'A: 1\r\nB: 2\r\n\r\none\r\n..two\r\nthree\r\n.\r\n', `TOP 99 (${chunk})`);
  }
  t.equal(encodeInChunks(Buffer.from('A: 1\r\n\r\nx\r\ny'), 3, 1).toString(), 'A: 1\r\n\r\nx\r\n.\r\n', 'CRLF blank line found across chunks');
  t.equal(encodeInChunks(Buffer.from('only: header'), 5, 3).toString(), 'only: header\r\n.\r\n', 'a message without a body');
});

t.test('unique ids, sizes from names and the seen flag', async (t) => {
  t.equal(uidFor('1700000000.M1P2Q3.host,S=10,W=12:2,S'), '1700000000.M1P2Q3.host,S=10,W=12', 'base name up to the colon');
  const long = `${'x'.repeat(80)}.host`;
  t.match(uidFor(long), /^[0-9a-f]{32}$/, 'a name over 70 characters is hashed');
  t.match(uidFor('with space'), /^[0-9a-f]{32}$/, 'a name outside 0x21-0x7E is hashed');
  t.equal(uidFor(`${long}:2,S`), uidFor(long), 'the hash ignores the flags too');
  t.equal(sizeFromName('1.M2.host,S=100,W=105:2,'), 105);
  t.equal(sizeFromName('1.M2.host,S=100'), undefined);
  t.equal(sizeFromName('1.M2.host:2,W=3'), undefined, 'W= only counts in the base name');
  t.equal(seenName('1.host'), '1.host:2,S');
  t.equal(seenName('1.host:2,RF'), '1.host:2,FRS');
  t.equal(seenName('1.host:2,S'), '1.host:2,S');
});

t.test('the line reader: CRLF or LF, limits, ends', async (t) => {
  const r = new LineReader(16);
  r.push(Buffer.from('USER a\r\nPA'));
  r.push(Buffer.from('SS b\nNOOP\r'));
  r.push(Buffer.from('\n'));
  t.same((await r.next()) as unknown, { kind: 'line', line: Buffer.from('USER a') });
  t.same((await r.next()) as unknown, { kind: 'line', line: Buffer.from('PASS b') });
  t.same((await r.next()) as unknown, { kind: 'line', line: Buffer.from('NOOP') });
  r.push(Buffer.from('x'.repeat(16) + '\n'));
  t.same(await r.next(), { kind: 'too-long' }, 'the limit counts the line end: 17 octets are over 16');
  const ok = new LineReader(16);
  ok.push(Buffer.from('x'.repeat(14) + '\r\n'));
  t.equal(((await ok.next()) as { line: Buffer }).line.length, 14, 'exactly the limit is fine');
  ok.push(Buffer.from('y'.repeat(16)));
  t.same(await ok.next(), { kind: 'too-long' }, 'an unfinished line over the limit stops reading at once');
  const end = new LineReader(100);
  end.push(Buffer.from('QUIT\r\npartial'));
  end.end();
  t.same((await end.next()) as unknown, { kind: 'line', line: Buffer.from('QUIT') });
  t.same(await end.next(), { kind: 'end' }, 'a partial last line is dropped');
});

async function maildir(t: Test): Promise<string> {
  const dir = await tempDir(t, 'yubin-pop3-md-');
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(dir, sub));
  return dir;
}

t.test('scan: new and cur, dot files skipped, ordered by mtime then name, sizes right', async (t) => {
  const dir = await maildir(t);
  const files: Array<[string, string, number]> = [
    ['cur/300.b.host:2,S', 'Subject: third\n\nc\n', 3000],
    ['new/100.a.host', 'Subject: first\n\na\n', 1000],
    ['new/200.z.host', 'Subject: second z\n\nb', 2000],
    ['new/200.y.host', 'Subject: second y\r\n\r\nb\r\n', 2000],
    ['new/.hidden', 'x', 500],
    ['cur/400.w.host,S=5,W=999:2,', 'hello', 4000],
  ];
  for (const [name, content, mtime] of files) {
    await writeFile(path.join(dir, name), content);
    await utimes(path.join(dir, name), mtime, mtime);
  }
  await mkdir(path.join(dir, 'new', 'subdir'));
  const box = await MaildirBox.open(dir);
  t.same(
    box.messages.map((m) => [m.number, m.uid, m.subdir]),
    [
      [1, '100.a.host', 'new'],
      [2, '200.y.host', 'new'],
      [3, '200.z.host', 'new'],
      [4, '300.b.host', 'cur'],
      [5, '400.w.host,S=5,W=999', 'cur'],
    ],
  );
  t.same(
    box.messages.map((m) => m.size),
    [files[1]!, files[3]!, files[2]!, files[0]!].map(([, content]) => Buffer.byteLength(expectedWire(content).unstuffed)).concat(999),
    'computed sizes, and the W= of the name taken as it is',
  );
  t.same(box.stat(), { count: 5, octets: box.messages.reduce((a, m) => a + m.size, 0) });
  const missing = await MaildirBox.open(path.join(dir, 'nothing-here'));
  t.equal(missing.messages.length, 0, 'a Maildir not created yet is an empty mailbox');
});

t.test('update: deletes, moves what was read to cur with S, follows files moved by others', async (t) => {
  const dir = await maildir(t);
  for (const name of ['1.a', '2.b', '3.c', '4.d']) await writeFile(path.join(dir, 'new', name), `Subject: ${name}\n\nx\n`);
  const box = await MaildirBox.open(dir);
  const [a, b, c, d] = box.messages;
  a!.deleted = true;
  b!.retrieved = true;
  c!.retrieved = true;
  c!.deleted = true;
  // Another program moved d to cur/ meanwhile; deleting it must still work.
  await rename(path.join(dir, 'new', '4.d'), path.join(dir, 'cur', '4.d:2,S'));
  d!.deleted = true;
  const result = await box.update();
  t.same(result, { deleted: 3, failed: 0, moved: 1 });
  t.same(await readdir(path.join(dir, 'new')), []);
  t.same(await readdir(path.join(dir, 'cur')), ['2.b:2,S']);
});

t.test('update next to an IMAP server: flags kept, seen added in cur/ too, maildirsize told of deletions', async (t) => {
  const dir = await maildir(t);
  // As Dovecot leaves them: moved to cur/ with flags, sizes in the name.
  await writeFile(path.join(dir, 'cur', '1.a,S=12,W=14:2,F'), 'Subject: a\n\nx\n');
  await writeFile(path.join(dir, 'cur', '2.b,S=12,W=14:2,RS'), 'Subject: b\n\nx\n');
  await writeFile(path.join(dir, 'cur', '3.c,S=12,W=14:2,'), 'Subject: c\n\nx\n');
  await writeFile(path.join(dir, 'new', '4.d,S=12,W=14'), 'Subject: d\n\nx\n');
  await writeFile(path.join(dir, 'new', '5.e,S=12,W=14'), 'Subject: e\n\nx\n');
  await writeFile(path.join(dir, 'maildirsize'), '1000S,10C\n60 5\n');
  const box = await MaildirBox.open(dir);
  const byName = (prefix: string) => box.messages.find((m) => m.name.startsWith(prefix))!;
  byName('1.a').retrieved = true;
  byName('2.b').retrieved = true;
  byName('4.d').retrieved = true;
  byName('3.c').deleted = true;
  byName('5.e').deleted = true;
  // The IMAP server flags a message after the listing: the rename to seen follows it.
  await rename(path.join(dir, 'cur', '1.a,S=12,W=14:2,F'), path.join(dir, 'cur', '1.a,S=12,W=14:2,FR'));
  const result = await box.update();
  t.same(result, { deleted: 2, failed: 0, moved: 2 });
  t.same((await readdir(path.join(dir, 'cur'))).sort(), ['1.a,S=12,W=14:2,FRS', '2.b,S=12,W=14:2,RS', '4.d,S=12,W=14:2,S']);
  t.same(await readdir(path.join(dir, 'new')), []);
  const { readFile } = await import('node:fs/promises');
  t.equal(await readFile(path.join(dir, 'maildirsize'), 'utf8'), '1000S,10C\n60 5\n-24 -2\n', 'one line for the deletions, by the S= sizes');
});

t.test('no maildirsize: deletions make none', async (t) => {
  const dir = await maildir(t);
  await writeFile(path.join(dir, 'new', '1.a,S=3'), 'x\n\n');
  const box = await MaildirBox.open(dir);
  box.messages[0]!.deleted = true;
  await box.update();
  t.same((await readdir(dir)).sort(), ['cur', 'new', 'tmp']);
});

t.test('tmp files older than 36 hours are removed, fresh ones kept', async (t) => {
  const dir = await maildir(t);
  const old = path.join(dir, 'tmp', 'old');
  const fresh = path.join(dir, 'tmp', 'fresh');
  await writeFile(old, 'x');
  await writeFile(fresh, 'y');
  const longAgo = (Date.now() - 37 * 3600 * 1000) / 1000;
  await utimes(old, longAgo, longAgo);
  t.equal(await cleanTmp(dir), 1);
  t.same(await readdir(path.join(dir, 'tmp')), ['fresh']);
  t.ok((await stat(fresh)).isFile());
});

t.test('10,000 messages: the scan reads no file when names carry W=, and a re-scan uses the size cache', async (t) => {
  const dir = await maildir(t);
  const body = `Subject: bulk\n\n${'x'.repeat(500)}\n`;
  const wire = Buffer.byteLength(expectedWire(body).unstuffed);
  const names: string[] = [];
  for (let i = 0; i < 10_000; i++) names.push(`${1_700_000_000 + i}.M${i}P1Q1.bench${i % 2 ? `,S=${body.length},W=${wire}` : ''}`);
  for (let i = 0; i < names.length; i += 500) await Promise.all(names.slice(i, i + 500).map((n) => writeFile(path.join(dir, 'new', n), body)));
  let started = performance.now();
  const first = await MaildirBox.open(dir);
  const firstMs = performance.now() - started;
  started = performance.now();
  const again = await MaildirBox.open(dir);
  const againMs = performance.now() - started;
  t.equal(first.messages.length, 10_000);
  t.ok(
    again.messages.every((m) => m.size === wire),
    'every size right, whether from the name or the cache',
  );
  t.comment(`scan of 10,000: ${firstMs.toFixed(0)} ms first (5,000 files read), ${againMs.toFixed(0)} ms again`);
});

t.test('an unchanged directory is not listed again; any change to it is seen', async (t) => {
  const dir = await maildir(t);
  await writeFile(path.join(dir, 'cur', '1.a:2,S'), 'Subject: a\n\nx\n');
  const longAgo = Date.now() / 1000 - 3600;
  for (const sub of ['new', 'cur']) await utimes(path.join(dir, sub), longAgo, longAgo);
  t.equal((await MaildirBox.open(dir)).messages[0]!.size, 17);
  // A file changed in place (which Maildir never does) leaves the directory as it was: the listing is reused.
  await writeFile(path.join(dir, 'cur', '1.a:2,S'), 'Subject: a\n\nlonger\n');
  t.equal((await MaildirBox.open(dir)).messages[0]!.size, 17, 'the cached listing');
  await writeFile(path.join(dir, 'new', '2.b'), 'Subject: b\n\ny\n');
  const after = await MaildirBox.open(dir);
  t.same(
    after.messages.map((m) => [m.uid, m.size]),
    [
      ['1.a', 17],
      ['2.b', 17],
    ],
    'a delivery to new/ is seen at once; cur/ is still the listing kept',
  );
  await rename(path.join(dir, 'cur', '1.a:2,S'), path.join(dir, 'cur', '1.a:2,ST'));
  t.same(
    (await MaildirBox.open(dir)).messages.map((m) => [m.name, m.size]),
    [
      ['1.a:2,ST', 22],
      ['2.b', 17],
    ],
    'a rename in cur/ makes it listed again',
  );
});
