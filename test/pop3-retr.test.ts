/**
 * RETR and TOP over real sockets, on the cases the one-pass encoder and its
 * shared buffers must get right: a last line without a line end, lines that
 * start with '.', bare LF and CRLF mixed, messages bigger than the read
 * buffer and than one output slab, replies of many pipelined RETRs sharing
 * slabs, two sessions retrieving at the same time, names whose S= is wrong.
 */
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer } from '../core/answers.js';
import { definePlugin } from '../core/plugin.js';
import { startTestServer } from '../core/testing/index.js';
import { tempDir } from './helpers.js';

/** What POP3 sends for a stored message, dot-stuffing included, terminator excluded. */
function wire(stored: string): string {
  let s = stored.replace(/\r?\n/g, '\r\n');
  if (s.length > 0 && !s.endsWith('\r\n')) s += '\r\n';
  // Not /^/m: a JavaScript regular expression takes a bare CR for a line end too.
  return s.replace(/(^|\r\n)\./g, '$1..');
}

/** Octets as LIST counts them: CRLF line ends, no dot-stuffing. */
const octets = (stored: string) => Buffer.byteLength(wire(stored).replace(/(^|\r\n)\.\./g, '$1.'), 'latin1');

/** A message of about `size` octets, lines of every length, some starting with '.', LF or CRLF ends, maybe no last line end. */
function message(seed: number, size: number, lastNewline: boolean): string {
  let x = seed;
  const next = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff), x);
  const lines = [`Subject: message ${seed}`, `X-Seed: ${seed}`, ''];
  let n = 0;
  while (n < size) {
    const kind = next() % 10;
    const line = kind === 0 ? '.' : kind === 1 ? `.${'d'.repeat(next() % 80)}` : kind === 2 ? '' : 'x'.repeat(next() % 200) + String(n);
    lines.push(line + (next() % 5 === 0 ? '\r' : ''));
    n += line.length + 1;
  }
  const text = lines.join('\n');
  return lastNewline ? `${text}\n` : `${text}.no-newline`;
}

/** Maildir names as yubin's delivery writes them: time, S= stored size, W= wire size. */
function maildirName(i: number, stored: string): string {
  return `${1_700_000_000 + i}.M${i}P1Q${i}.host,S=${Buffer.byteLength(stored, 'latin1')},W=${octets(stored)}:2,`;
}

async function makeBox(t: Test, messages: readonly string[], name = maildirName): Promise<string> {
  const dir = path.join(await tempDir(t, 'yubin-pop3-retr-'), 'Maildir');
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(dir, sub), { recursive: true });
  for (let i = 0; i < messages.length; i++) {
    const file = path.join(dir, 'cur', name(i, messages[i]!));
    await writeFile(file, messages[i]!, 'latin1');
    await utimes(file, 1_700_000_000 + i, 1_700_000_000 + i);
  }
  return dir;
}

async function server(t: Test, users: Record<string, string>) {
  const plugin = definePlugin({
    name: 'retr-test-mailbox',
    setup: () => ({
      hooks: {
        auth(ctx) {
          const dir = users[ctx.username];
          if (dir === undefined || !ctx.verify('secret')) return answer.reject(535, '5.7.8', 'no');
          ctx.mailbox(dir);
          return answer.accept('welcome', 235, '2.7.0');
        },
      },
    }),
  });
  const s = await startTestServer({ listeners: [{ name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, plugins: [plugin] }] });
  t.teardown(() => s.close());
  return s;
}

interface Reply {
  status: string;
  body?: string;
}

/**
 * Logs in, sends every command in one write (pipelined), then QUIT, and
 * reads until the server closes. Replies are parsed afterwards: `multi`
 * says which commands have a multi-line answer.
 */
async function session(port: number, user: string, commands: readonly string[], multi: (cmd: string) => boolean): Promise<Reply[]> {
  const sock = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.write([`USER ${user}`, 'PASS secret', ...commands, 'QUIT', ''].join('\r\n'));
  await new Promise<void>((resolve) => sock.once('close', () => resolve()));
  const all = Buffer.concat(chunks).toString('latin1');
  let pos = 0;
  const line = () => {
    const end = all.indexOf('\r\n', pos);
    if (end < 0) throw new Error(`reply cut short at ${pos}`);
    const l = all.slice(pos, end);
    pos = end + 2;
    return l;
  };
  line(); // greeting
  line(); // USER
  if (!line().startsWith('+OK')) throw new Error('login failed');
  const replies: Reply[] = [];
  for (const cmd of commands) {
    const status = line();
    if (!multi(cmd) || !status.startsWith('+OK')) {
      replies.push({ status });
      continue;
    }
    if (all.startsWith('.\r\n', pos)) {
      pos += 3;
      replies.push({ status, body: '' });
      continue;
    }
    const end = all.indexOf('\r\n.\r\n', pos);
    if (end < 0) throw new Error(`no terminator after ${cmd}`);
    replies.push({ status, body: all.slice(pos, end + 2) });
    pos = end + 5;
  }
  replies.push({ status: line() }); // QUIT
  return replies;
}

const isMulti = (cmd: string) => /^(RETR|TOP) /.test(cmd);

t.test('pipelined RETRs of messages of every size: each exact, with its LIST size', async (t) => {
  // 2 KB to 600 KB: several replies share a slab, some need a slab of their own, some outgrow the read buffer.
  const sizes = [2_000, 10, 70_000, 30_000, 0, 600_000, 65_535, 65_536, 200_000, 5_000, 120_000, 40_000, 1_500];
  const messages = sizes.map((size, i) => message(i + 1, size, i % 2 === 0));
  messages.push(''); // an empty file
  messages.push('.'); // one dot, no line end
  messages.push('\n'); // one empty line
  messages.push('a\r\n.\r\n..\r\n'); // CRLF already, dot lines
  const dir = await makeBox(t, messages);
  const s = await server(t, { alice: dir });
  const retrs = messages.map((_, i) => `RETR ${i + 1}`);
  const replies = await session(s.port, 'alice', [...retrs, ...retrs], isMulti);
  t.equal(replies.at(-1)!.status.startsWith('+OK'), true, 'QUIT');
  let bad = 0;
  for (let k = 0; k < retrs.length * 2; k++) {
    const i = k % messages.length;
    const r = replies[k]!;
    if (r.status !== `+OK ${octets(messages[i]!)} octets` || r.body !== wire(messages[i]!)) {
      bad++;
      t.fail(`RETR ${i + 1} (${messages[i]!.length} octets stored): ${r.status}, body ${r.body?.length} octets, expected ${wire(messages[i]!).length}`);
    }
  }
  t.equal(bad, 0, `${retrs.length * 2} pipelined RETRs byte for byte`);
  t.equal(replies[retrs.length + messages.length - 3]!.body, '..\r\n', 'a lone dot without a line end becomes a stuffed dot line');
  t.equal(replies[messages.length - 1]!.body, 'a\r\n..\r\n...\r\n', 'CRLF kept, dots doubled');
});

t.test('TOP n: header, blank line and n body lines, dot-stuffed, also past a last line without a line end', async (t) => {
  const m = 'Subject: top\n.Dotted-Header: x\n\n.one\ntwo\r\n..three\nfour';
  const big = message(7, 300_000, true);
  const dir = await makeBox(t, [m, big]);
  const s = await server(t, { alice: dir });
  const replies = await session(s.port, 'alice', ['TOP 1 0', 'TOP 1 1', 'TOP 1 3', 'TOP 1 4', 'TOP 1 99', 'TOP 2 5', 'TOP 2 0', 'RETR 1'], isMulti);
  t.equal(replies[0]!.body, 'Subject: top\r\n..Dotted-Header: x\r\n\r\n');
  t.equal(replies[1]!.body, 'Subject: top\r\n..Dotted-Header: x\r\n\r\n..one\r\n');
  t.equal(replies[2]!.body, 'Subject: top\r\n..Dotted-Header: x\r\n\r\n..one\r\ntwo\r\n...three\r\n');
  t.equal(replies[3]!.body, wire(m), 'all body lines: the last one gets its line end');
  t.equal(replies[4]!.body, wire(m), 'more lines than there are: the whole message');
  const bigWire = wire(big).split('\r\n');
  const headerEnd = bigWire.indexOf('');
  t.equal(replies[5]!.body, bigWire.slice(0, headerEnd + 1 + 5).join('\r\n') + '\r\n', 'TOP of a big message stops after 5 lines');
  t.equal(replies[6]!.body, bigWire.slice(0, headerEnd + 1).join('\r\n') + '\r\n');
  t.equal(replies[7]!.body, wire(m), 'RETR after TOP');
});

t.test('two sessions pipelining RETRs at the same time get their own messages', async (t) => {
  const a = Array.from({ length: 40 }, (_, i) => message(100 + i, 3_000 + i * 2_000, i % 3 !== 0));
  const b = Array.from({ length: 40 }, (_, i) => message(200 + i, 90_000 - i * 2_000, i % 4 !== 0));
  const s = await server(t, { alice: await makeBox(t, a), bob: await makeBox(t, b) });
  const cmds = (n: number) => Array.from({ length: n }, (_, i) => `RETR ${i + 1}`);
  const [ra, rb] = await Promise.all([session(s.port, 'alice', cmds(a.length), isMulti), session(s.port, 'bob', cmds(b.length), isMulti)]);
  t.ok(a.every((m, i) => ra[i]!.body === wire(m)), 'alice: every message exact');
  t.ok(b.every((m, i) => rb[i]!.body === wire(m)), 'bob: every message exact');
});

t.test('a name whose S= is smaller than the file: the whole file is still sent', async (t) => {
  const m = message(9, 50_000, false);
  const dir = await makeBox(t, [m], (i, stored) => `${1_700_000_000 + i}.M${i}P1Q${i}.host,S=${Math.floor(stored.length / 2)}:2,`);
  const s = await server(t, { alice: dir });
  const replies = await session(s.port, 'alice', ['RETR 1'], isMulti);
  t.equal(replies[0]!.status, `+OK ${octets(m)} octets`);
  t.equal(replies[0]!.body, wire(m));
});
