/**
 * The POP3 server end to end: real sockets (raw, Python's poplib, curl)
 * against a listener whose mailbox plugin is defined inline, over Maildirs
 * the tests fill.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer } from '../core/answers.js';
import type { Connection } from '../core/hooks.js';
import { definePlugin, type PluginDefinition } from '../core/plugin.js';
import { Pop3TestClient } from '../core/testing/index.js';
import { startTestServer, type TestListener, type TestServer } from '../core/testing/index.js';
import { needs, run, sleep, tempDir } from './helpers.js';

// ---- fixtures ----

const M1_NAME = '1700000001.M1P1Q1.host';
const M1 = 'From: a@example.test\nSubject: one\n\nfirst line\n.x\n..y\nlast';
/** M1 on the wire, dot-stuffed, as between RETR's +OK line and the final dot. */
const M1_WIRE = 'From: a@example.test\r\nSubject: one\r\n\r\nfirst line\r\n..x\r\n...y\r\nlast\r\n';
/** The same without dot-stuffing: what LIST counts. */
const M1_OCTETS = Buffer.byteLength('From: a@example.test\r\nSubject: one\r\n\r\nfirst line\r\n.x\r\n..y\r\nlast\r\n');
const M2_NAME = '1700000002.M2P1Q1.host';
const M2 = 'Subject: two\r\n\r\ncrlf stays\r\n';
const M3_NAME = '1700000003.M3P1Q1.host,S=18,W=21:2,S';
const M3 = 'Subject: three\n\nz\n';

/** A Maildir with these files ('new/NAME' or 'cur/NAME'), modification times in the order given. */
async function makeMaildir(t: Test, files: ReadonlyArray<readonly [string, string]>): Promise<string> {
  const dir = path.join(await tempDir(t, 'yubin-pop3-'), 'Maildir');
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(dir, sub), { recursive: true });
  let mtime = 1_700_000_000;
  for (const [name, content] of files) {
    await writeFile(path.join(dir, name), content);
    await utimes(path.join(dir, name), mtime, mtime++);
  }
  return dir;
}

const standardBox = (t: Test) =>
  makeMaildir(t, [
    [`new/${M1_NAME}`, M1],
    [`new/${M2_NAME}`, M2],
    [`cur/${M3_NAME}`, M3],
  ]);

/** The mailbox plugin the tests use: password `secret` for every user it knows, APOP where it says so. */
function mailboxPlugin(users: Record<string, string | null>, options: { name?: string; apop?: boolean; connections?: Connection[] } = {}): PluginDefinition {
  return definePlugin({
    name: options.name ?? 'test-mailbox',
    setup: () => ({
      ...(options.apop === false ? {} : { authMechanisms: () => ['PLAIN', 'APOP'] }),
      hooks: {
        connect(ctx) {
          options.connections?.push(ctx.connection);
          return answer.continue();
        },
        auth(ctx) {
          if (ctx.username === 'crash') throw new Error('database on fire');
          const dir = users[ctx.username];
          if (dir === undefined || !ctx.verify('secret')) return answer.reject(535, '5.7.8', `no such user or wrong password for ${ctx.username}`);
          if (dir !== null) ctx.mailbox(dir);
          return answer.accept('welcome', 235, '2.7.0');
        },
      },
    }),
  });
}

async function pop3Server(t: Test, plugin: PluginDefinition, extra: { listener?: Omit<TestListener, 'plugins'>; listeners?: TestListener[]; config?: Record<string, unknown> } = {}): Promise<TestServer> {
  const s = await startTestServer({
    listeners: extra.listeners ?? [{ name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, plugins: [plugin], ...extra.listener }],
    config: extra.config,
  });
  t.teardown(() => s.close());
  return s;
}

async function connect(t: Test, port: number, options: { tls?: boolean } = {}): Promise<Pop3TestClient> {
  const c = await Pop3TestClient.connect(port, options);
  t.teardown(() => c.close());
  return c;
}

async function login(t: Test, port: number, user = 'alice'): Promise<Pop3TestClient> {
  const c = await connect(t, port);
  t.equal(await c.command(`USER ${user}`), '+OK');
  t.match(await c.command('PASS secret'), /^\+OK /, `${user} logs in`);
  return c;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** Waits until the server has logged the end of every connection it logged the start of. */
async function allClosed(s: TestServer): Promise<void> {
  const count = (event: string) => s.logs.filter((l) => l.event === event && l.conn !== undefined).length;
  for (let i = 0; i < 100 && count('close') < count('connect'); i++) await sleep(30);
}

// ---- AUTHORIZATION ----

t.test('greeting: an APOP timestamp only where the mailbox plugin offers APOP', async (t) => {
  const dir = await standardBox(t);
  const s = await startTestServer({
    listeners: [
      { name: 'apop', protocol: 'pop3', allowInsecureAuth: true, plugins: [mailboxPlugin({ alice: dir })] },
      { name: 'plain', protocol: 'pop3', allowInsecureAuth: true, plugins: [mailboxPlugin({ alice: dir }, { name: 'hashes-only', apop: false })] },
    ],
  });
  t.teardown(() => s.close());
  const a = await connect(t, s.ports.apop!);
  t.match(a.greeting, /^\+OK mx\.test POP3 ready <\d+\.\d+@mx\.test>$/);
  const b = await connect(t, s.ports.plain!);
  t.match(b.greeting, /^\+OK mx\.test POP3 ready$/);
  t.equal(await b.command('APOP alice 0123456789abcdef0123456789abcdef'), '-ERR APOP not available');
  const a2 = await connect(t, s.ports.apop!);
  t.not(a2.greeting, a.greeting, 'every connection gets its own timestamp');
});

t.test('USER/PASS: right password logs in; wrong password and unknown user look the same', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await connect(t, s.port);
  t.equal(await c.command('PASS secret'), '-ERR USER first');
  t.equal(await c.command('USER nobody'), '+OK', 'USER never says whether the user exists');
  const unknown = await c.command('PASS secret');
  t.equal(await c.command('USER alice'), '+OK');
  const wrong = await c.command('PASS wrong');
  t.equal(unknown, '-ERR [AUTH] Authentication failed');
  t.equal(wrong, unknown, 'the same answer: nothing tells a missing user from a wrong password');
  t.equal(await c.command('PASS secret'), '-ERR USER first', 'a failed PASS needs a new USER');
  t.equal(await c.command('USER alice'), '+OK');
  t.equal(await c.command('PASS secret'), `+OK maildrop has 3 messages (${M1_OCTETS + Buffer.byteLength(M2) + 21} octets)`);
  t.equal(await c.command('QUIT'), '+OK 0 deleted, 3 left');
  await c.closed;
  const decisions = s.logs.filter((l) => l.event === 'login');
  t.same(
    decisions.map((l) => [l.user, l.method, l.result, l.plugin, l.action]),
    [
      ['nobody', 'USER', 'failed', 'test-mailbox', 'reject'],
      ['alice', 'USER', 'failed', 'test-mailbox', 'reject'],
      ['alice', 'USER', 'ok', 'test-mailbox', 'accept'],
    ],
    'one log line per login decision',
  );
  t.match(decisions[0], { listener: 'pop3', ip: '127.0.0.1', hook: 'auth', code: 535, reason: 'no such user or wrong password for nobody' });
  t.type(decisions[0]!.conn, 'string');
  t.match(
    s.logs.find((l) => l.event === 'quit'),
    { retrieved: 0, deleted: 0 },
  );
});

t.test('APOP: md5 of the greeting timestamp and the secret', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await connect(t, s.port);
  const stamp = /<[^>]+>/.exec(c.greeting)![0];
  const digest = (secret: string) => createHash('md5').update(stamp + secret).digest('hex');
  t.equal(await c.command(`APOP alice ${digest('wrong')}`), '-ERR [AUTH] Authentication failed');
  t.equal(await c.command('APOP alice nothex'), '-ERR syntax error');
  t.match(await c.command(`APOP alice ${digest('secret').toUpperCase()}`), /^\+OK maildrop has 3 messages/, 'hex digits in either case');
  t.match(s.logs.find((l) => l.event === 'login' && l.result === 'ok'), { method: 'APOP', user: 'alice' });
});

t.test('AUTH PLAIN with an initial response, after a continuation, cancelled, malformed', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await connect(t, s.port);
  t.equal(await c.command('AUTH PLAIN !!!notbase64'), '-ERR malformed SASL PLAIN response');
  t.equal(await c.command(`AUTH PLAIN ${b64('alice\0secret')}`), '-ERR malformed SASL PLAIN response', 'two fields are not PLAIN');
  t.equal(await c.command(`AUTH PLAIN ${b64('\0alice\0wrong')}`), '-ERR [AUTH] Authentication failed');
  t.equal(await c.command(`AUTH PLAIN ${b64('bob\0alice\0secret')}`), '-ERR [AUTH] cannot log in as another user');
  t.equal(await c.command('AUTH PLAIN'), '+ ');
  t.equal(await c.command('*'), '-ERR authentication cancelled');
  t.equal(await c.command('AUTH CRAM-MD5'), '-ERR unsupported authentication mechanism');
  t.equal(await c.command('AUTH PLAIN'), '+ ');
  t.match(await c.command(b64('\0alice\0secret')), /^\+OK maildrop has 3 messages/);
  t.equal(await c.command('STAT'), `+OK 3 ${M1_OCTETS + Buffer.byteLength(M2) + 21}`);
  await c.command('QUIT');

  const d = await connect(t, s.port);
  t.match(await d.command(`AUTH PLAIN ${b64('alice\0alice\0secret')}`), /^\+OK/, 'an authzid naming the user itself is fine');
  t.same(
    s.logs.filter((l) => l.event === 'login').map((l) => [l.method, l.result]),
    [
      ['PLAIN', 'failed'],
      ['PLAIN', 'ok'],
      ['PLAIN', 'ok'],
    ],
  );
});

t.test('before login: only the login commands; junk is refused without harm', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await connect(t, s.port);
  for (const cmd of ['STAT', 'LIST', 'RETR 1', 'DELE 1', 'UIDL', 'TOP 1 1', 'RSET']) t.equal(await c.command(cmd), '-ERR [AUTH] not logged in', cmd);
  t.equal(await c.command(''), '-ERR unknown command');
  t.equal(await c.command('HELO x'), '-ERR unknown command');
  t.equal(await c.command('US\0ER alice'), '-ERR unknown command');
  t.equal(await c.command('USER al\0ice'), '-ERR unknown command');
  c.write(Buffer.from([0xff, 0xfe, 0x80, 0x0d, 0x0a]));
  t.equal(await c.readLine(), '-ERR unknown command');
  t.equal(await c.command('STLS'), '-ERR STLS not available', 'no STLS on a listener without TLS');
  t.equal(await c.command('noop'), '+OK', 'commands are case-insensitive, and the session is still fine');
  t.equal(await c.command('USER'), '-ERR syntax error');
  const capa = await c.multiline('CAPA');
  t.same(capa.lines, ['TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE', 'USER', 'SASL PLAIN', 'IMPLEMENTATION yubin']);
  t.equal(await c.command('QUIT'), '+OK mx.test POP3 signing off');
  await c.closed;
  t.ok(c.isClosed);
});

t.test('a login the plugin accepts without a mailbox, and a plugin that throws', async (t) => {
  const s = await pop3Server(t, mailboxPlugin({ nomail: null }));
  const c = await connect(t, s.port);
  await c.command('USER nomail');
  t.equal(await c.command('PASS secret'), '-ERR [SYS/PERM] no mailbox for this user');
  await c.command('USER crash');
  t.equal(await c.command('PASS secret'), '-ERR [SYS/TEMP] Temporary local problem, please try again later');
  t.equal(await c.command('NOOP'), '+OK', 'the server goes on');
  t.ok(s.logs.some((l) => l.hook === 'auth' && l.plugin === 'test-mailbox' && String(l.reason).includes('database on fire')));
});

// ---- TRANSACTION ----

t.test('STAT, LIST, UIDL, TOP and RETR, byte for byte', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await login(t, s.port);
  const total = M1_OCTETS + Buffer.byteLength(M2) + 21;
  t.equal(await c.command('STAT'), `+OK 3 ${total}`);
  t.same(await c.multiline('LIST'), { status: `+OK 3 messages (${total} octets)`, lines: [`1 ${M1_OCTETS}`, `2 ${Buffer.byteLength(M2)}`, '3 21'] });
  t.equal(await c.command('LIST 2'), `+OK 2 ${Buffer.byteLength(M2)}`);
  t.same((await c.multiline('UIDL')).lines, [`1 ${M1_NAME}`, `2 ${M2_NAME}`, '3 1700000003.M3P1Q1.host,S=18,W=21']);
  t.equal(await c.command('UIDL 3'), '+OK 3 1700000003.M3P1Q1.host,S=18,W=21');

  const r1 = await c.retrieve('RETR 1');
  t.equal(r1.status, `+OK ${M1_OCTETS} octets`);
  t.equal(r1.body.toString(), M1_WIRE, 'LF to CRLF, dot-stuffed, a line end added at the end');
  t.equal(r1.body.toString().replace(/^\.\./gm, '.').length, M1_OCTETS, 'LIST size is what RETR sends before dot-stuffing');
  const r2 = await c.retrieve('RETR 2');
  t.equal(r2.body.toString(), M2, 'CRLF already there stays as it is');
  const r3 = await c.retrieve('RETR 3');
  t.equal(r3.body.toString(), 'Subject: three\r\n\r\nz\r\n');
  t.equal(r3.body.length, 21, 'the W= size of the name matches');

  const top0 = await c.retrieve('TOP 1 0');
  t.equal(top0.body.toString(), 'From: a@example.test\r\nSubject: one\r\n\r\n');
  const top2 = await c.retrieve('TOP 1 2');
  t.equal(top2.body.toString(), 'From: a@example.test\r\nSubject: one\r\n\r\nfirst line\r\n..x\r\n');

  t.equal(await c.command('RETR 4'), '-ERR no such message');
  t.equal(await c.command('RETR 0'), '-ERR no such message');
  t.equal(await c.command('RETR one'), '-ERR syntax error');
  t.equal(await c.command('RETR'), '-ERR syntax error');
  t.equal(await c.command('TOP 1'), '-ERR syntax error');
  t.equal(await c.command('TOP 1 -1'), '-ERR syntax error');
  t.equal(await c.command('LIST 1 2'), '-ERR syntax error');
  t.equal(await c.command('USER alice'), '-ERR already logged in');
  const capa = await c.multiline('CAPA');
  t.notOk(capa.lines.includes('USER') || capa.lines.some((l) => l.startsWith('SASL')) || capa.lines.includes('STLS'), 'CAPA after login offers no login');
  t.equal(await c.command('NOOP'), '+OK');
});

t.test('DELE then QUIT removes the file; DELE then a hang-up keeps it; RSET undoes', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));

  const a = await login(t, s.port);
  t.equal(await a.command('DELE 1'), '+OK message 1 deleted');
  t.equal(await a.command('DELE 1'), '-ERR message 1 already deleted');
  t.equal(await a.command('RETR 1'), '-ERR message 1 already deleted');
  t.equal(await a.command('TOP 1 0'), '-ERR message 1 already deleted');
  t.equal(await a.command('LIST 1'), '-ERR message 1 already deleted');
  t.equal(await a.command('STAT'), `+OK 2 ${Buffer.byteLength(M2) + 21}`, 'deleted messages are left out of STAT');
  t.same((await a.multiline('UIDL')).lines, [`2 ${M2_NAME}`, '3 1700000003.M3P1Q1.host,S=18,W=21'], 'and of listings; numbers do not shift');
  t.equal(await a.command('RSET'), `+OK maildrop has 3 messages (${M1_OCTETS + Buffer.byteLength(M2) + 21} octets)`);
  t.equal(await a.command('DELE 3'), '+OK message 3 deleted');
  a.close(); // no QUIT: nothing happens
  await allClosed(s);
  t.same((await readdir(path.join(dir, 'cur'))).sort(), [M3_NAME], 'a hang-up deletes nothing');

  const b = await login(t, s.port);
  t.equal(await b.command('DELE 3'), '+OK message 3 deleted');
  t.equal(await b.command('QUIT'), '+OK 1 deleted, 2 left');
  await b.closed;
  t.same(await readdir(path.join(dir, 'cur')), [], 'QUIT removed it');
  t.same((await readdir(path.join(dir, 'new'))).sort(), [M1_NAME, M2_NAME]);
  t.match(s.logs.filter((l) => l.event === 'quit').at(-1), { deleted: 1, retrieved: 0 });
});

t.test('a message read with RETR moves from new/ to cur/ with :2,S at QUIT, and keeps its UIDL', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const a = await login(t, s.port);
  const before = (await a.multiline('UIDL')).lines;
  await a.retrieve('RETR 1');
  await a.retrieve('TOP 2 5');
  await a.retrieve('RETR 3');
  t.equal(await a.command('QUIT'), '+OK 0 deleted, 3 left');
  await a.closed;
  t.same(await readdir(path.join(dir, 'new')), [M2_NAME], 'TOP does not mark a message read');
  t.same((await readdir(path.join(dir, 'cur'))).sort(), [`${M1_NAME}:2,S`, M3_NAME].sort(), 'the one in cur/ stays as it was');
  t.match(s.logs.find((l) => l.event === 'quit'), { retrieved: 2, deleted: 0, moved: 1 });

  const b = await login(t, s.port);
  const after = (await b.multiline('UIDL')).lines;
  t.same(after, before, 'same numbers, same unique ids after the move');
  t.equal((await b.retrieve('RETR 1')).body.toString(), M1_WIRE, 'and the moved file is still served');
});

t.test('one session per mailbox: a second login gets [IN-USE] until the first ends', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir, alias: `${dir}/../Maildir/` }));
  const a = await login(t, s.port);
  const b = await connect(t, s.port);
  await b.command('USER alias');
  t.equal(await b.command('PASS secret'), '-ERR [IN-USE] Mailbox is locked by another POP3 session', 'another spelling of the same path is the same mailbox');
  t.equal(await b.command('STAT'), '-ERR [AUTH] not logged in', 'no session was opened');
  t.match(s.logs.find((l) => l.event === 'login' && l.result === 'in-use'), { user: 'alias' });
  t.equal(await a.command('QUIT'), '+OK 0 deleted, 3 left');
  await b.command('USER alice');
  t.match(await b.command('PASS secret'), /^\+OK/, 'free again at once after QUIT');
  b.close();
  await allClosed(s);
  await login(t, s.port); // a hang-up releases it too
});

t.test('pipelined commands are answered in order, one at a time', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await connect(t, s.port);
  c.write('USER alice\r\nPASS secret\r\nSTAT\r\nLIST 2\nDELE 2\r\nLIST 2\r\nRETR 3\r\nNOOP\r\n');
  t.equal(await c.readLine(), '+OK');
  t.match(await c.readLine(), /^\+OK maildrop has 3 messages/);
  t.match(await c.readLine(), /^\+OK 3 /);
  t.equal(await c.readLine(), `+OK 2 ${Buffer.byteLength(M2)}`, 'a bare LF ends a command too');
  t.equal(await c.readLine(), '+OK message 2 deleted');
  t.equal(await c.readLine(), '-ERR message 2 already deleted');
  t.equal(await c.readLine(), '+OK 21 octets');
  for (const line of ['Subject: three', '', 'z', '.']) t.equal(await c.readLine(), line);
  t.equal(await c.readLine(), '+OK');
});

t.test('a client that sends everything and half-closes still gets every answer, and QUIT applies', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await connect(t, s.port);
  c.write('USER alice\r\nPASS secret\r\nDELE 2\r\nQUIT\r\n');
  c.endInput();
  await c.closed;
  const replies = c.pending().toString().split('\r\n');
  t.same(replies.slice(0, 2), ['+OK', replies[1]]);
  t.match(replies[1], /^\+OK maildrop/);
  t.same(replies.slice(2), ['+OK message 2 deleted', '+OK 1 deleted, 2 left', '']);
  t.same(await readdir(path.join(dir, 'new')), [M1_NAME]);
});

t.test('a big message is streamed whole and exact; a vanished one is reported; a moved one is found', async (t) => {
  // Lines of every length, some starting with a dot, so dots and line ends fall on every chunk boundary.
  const lines: string[] = ['Subject: big', ''];
  for (let i = 0, size = 0; size < 1_500_000; i++) {
    lines.push(`${i % 7 === 0 ? '.' : ''}${'abcdefghij'.repeat(i % 23)}${i}`);
    size += lines.at(-1)!.length + 1;
  }
  const big = lines.join('\n') + '\n';
  const wire = lines.map((l) => (l.startsWith('.') ? `.${l}` : l)).join('\r\n') + '\r\n';
  const dir = await makeMaildir(t, [
    ['new/1.big', big],
    ['new/2.gone', 'Subject: gone\n\n'],
    ['new/3.moved', 'Subject: moved\n\nhere\n'],
  ]);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await login(t, s.port);
  t.equal(await c.command('LIST 1'), `+OK 1 ${Buffer.byteLength(big) + lines.length}`);
  const r = await c.retrieve('RETR 1');
  t.equal(r.body.length, Buffer.byteLength(wire));
  t.ok(r.body.equals(Buffer.from(wire)), 'byte for byte');
  await import('node:fs/promises').then(async (fs) => {
    await fs.unlink(path.join(dir, 'new', '2.gone'));
    await fs.rename(path.join(dir, 'new', '3.moved'), path.join(dir, 'cur', '3.moved:2,F'));
  });
  t.equal(await c.command('RETR 2'), '-ERR [SYS/TEMP] message is gone');
  t.equal((await c.retrieve('RETR 3')).body.toString(), 'Subject: moved\r\n\r\nhere\r\n', 'moved to cur/ by another program, still served');
  t.equal(await c.command('DELE 2'), '+OK message 2 deleted');
  t.equal(await c.command('QUIT'), '+OK 1 deleted, 2 left', 'deleting a file already gone is no failure');
  await c.closed;
  // Read whole, so seen there too: the flag letter the other program set is kept.
  t.same((await readdir(path.join(dir, 'cur'))).sort(), ['1.big:2,S', '3.moved:2,FS']);
});

t.test('the connection plugins see', async (t) => {
  const dir = await standardBox(t);
  const seen: Connection[] = [];
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }, { connections: seen }));
  let closes = 0;
  const c = await connect(t, s.port);
  const conn = seen[0]!;
  conn.onClose(() => closes++);
  t.match(conn, { protocol: 'pop3', listener: 'pop3', remoteIp: '127.0.0.1', localIp: '127.0.0.1', localPort: s.port, secure: false, heloName: undefined, authUser: undefined, relayAllowed: false, state: { env: {} } });
  await c.command('USER alice');
  await c.command('PASS secret');
  t.equal(conn.authUser, 'alice');
  t.ok(s.logs.some((l) => l.conn === conn.id && l.event === 'connect'), 'the id is in the log lines');
  await c.command('QUIT');
  await allClosed(s);
  t.equal(closes, 1, 'onClose ran once');
  t.ok(s.logs.some((l) => l.conn === conn.id && l.event === 'close'));
});

t.test('connect hook: reject gets -ERR and a close; a silent disconnect closes without a byte', async (t) => {
  const gate = definePlugin({
    name: 'gate',
    setup: () => ({
      hooks: {
        connect: (ctx) => (ctx.connection.listener === 'silent' ? answer.disconnect('go', '4.7.0', { silent: true }) : answer.reject(554, '5.7.1', 'you are not welcome\r\nhere')),
      },
    }),
  });
  const s = await startTestServer({
    listeners: [
      { name: 'loud', protocol: 'pop3', plugins: [gate] },
      { name: 'silent', protocol: 'pop3', plugins: [gate] },
    ],
  });
  t.teardown(() => s.close());
  const c = await connect(t, s.ports.loud!);
  t.equal(c.greeting, '-ERR you are not welcome here', 'the plugin text, on one line');
  await c.closed;
  await t.rejects(Pop3TestClient.connect(s.ports.silent!, { timeout: 2_000 }), /closed/, 'nothing written before the close');
  t.match(s.logs.find((l) => l.hook === 'connect' && l.listener === 'loud'), { plugin: 'gate', action: 'reject', code: 554 });
});

// ---- peers ----

const POPLIB = String.raw`
import json, poplib, ssl, sys
port, mode = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL('127.0.0.1', port, context=ctx, timeout=10) if mode == 'pop3s' else poplib.POP3('127.0.0.1', port, timeout=10)
out = {'welcome': p.getwelcome().decode()}
if mode == 'stls':
    out['stls'] = p.stls(context=ctx).decode()
out['capa'] = sorted(p.capa().keys())
if mode == 'apop':
    out['login'] = p.apop('alice', 'secret').decode()
else:
    p.user('alice')
    out['login'] = p.pass_('secret').decode()
out['stat'] = list(p.stat())
out['list'] = [x.decode() for x in p.list()[1]]
out['uidl'] = [x.decode() for x in p.uidl()[1]]
resp, lines, octets = p.retr(1)
out['retr'] = [l.decode() for l in lines]
out['top'] = [l.decode() for l in p.top(2, 0)[1]]
out['dele'] = p.dele(2).decode()
out['quit'] = p.quit().decode()
print(json.dumps(out))
`;

/** M1 as poplib hands it back: lines without CRLF, dot-stuffing undone. */
const M1_LINES = ['From: a@example.test', 'Subject: one', '', 'first line', '.x', '..y', 'last'];

async function poplibSession(t: Test, port: number, mode: 'plain' | 'apop' | 'stls' | 'pop3s', dir: string): Promise<Record<string, unknown>> {
  const r = await run('python3', ['-c', POPLIB, String(port), mode], { timeout: 30_000 });
  t.equal(r.code, 0, `poplib (${mode}) ran: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  t.match(out, {
    login: /^\+OK maildrop has 3 messages/,
    stat: [3, M1_OCTETS + Buffer.byteLength(M2) + 21],
    list: [`1 ${M1_OCTETS}`, `2 ${Buffer.byteLength(M2)}`, '3 21'],
    uidl: [`1 ${M1_NAME}`, `2 ${M2_NAME}`, '3 1700000003.M3P1Q1.host,S=18,W=21'],
    quit: '+OK 1 deleted, 2 left',
  });
  t.same(out.retr, M1_LINES, `${mode}: RETR as poplib reads it`);
  t.same(out.top, ['Subject: two', '']);
  t.same((await readdir(path.join(dir, 'new'))).sort(), [], `${mode}: the message read moved out of new/, the deleted one is gone`);
  t.same((await readdir(path.join(dir, 'cur'))).sort(), [`${M1_NAME}:2,S`, M3_NAME].sort());
  return out;
}

t.test('Python poplib: USER/PASS and APOP sessions', needs('python3'), async (t) => {
  for (const mode of ['plain', 'apop'] as const) {
    const dir = await standardBox(t);
    const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
    const out = await poplibSession(t, s.port, mode, dir);
    t.same(out.capa, ['AUTH-RESP-CODE', 'IMPLEMENTATION', 'PIPELINING', 'RESP-CODES', 'SASL', 'TOP', 'UIDL', 'USER']);
  }
});

t.test('curl: list and retrieve', needs('curl'), async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const list = await run('curl', ['-sS', '--max-time', '10', '-u', 'alice:secret', `pop3://127.0.0.1:${s.port}/`]);
  t.equal(list.stdout, `1 ${M1_OCTETS}\r\n2 ${Buffer.byteLength(M2)}\r\n3 21\r\n`, list.stderr);
  const retr = await run('curl', ['-sS', '--max-time', '10', '-u', 'alice:secret', `pop3://127.0.0.1:${s.port}/1`]);
  t.equal(retr.stdout, M1_WIRE.replace(/^\.\./gm, '.'), 'curl undoes the dot-stuffing and gets the message back');
  const apop = await run('curl', ['-sS', '--max-time', '10', '--login-options', 'AUTH=+APOP', '-u', 'alice:secret', `pop3://127.0.0.1:${s.port}/2`]);
  t.equal(apop.stdout, M2, apop.stderr);
  const bad = await run('curl', ['-sS', '--max-time', '10', '-u', 'alice:nope', `pop3://127.0.0.1:${s.port}/1`]);
  t.not(bad.code, 0, 'a wrong password fails');
  t.equal(bad.stdout, '');
});

// ---- TLS ----

t.test('TLS: STLS and pop3s', async (t) => {
  const dir = await standardBox(t);
  const users: Record<string, string> = { alice: dir };
  const plugin = mailboxPlugin(users);
  const s = await pop3Server(t, plugin, {
    listeners: [
      { name: 'starttls', protocol: 'pop3', tls: 'starttls', plugins: [plugin] },
      { name: 'pop3s', protocol: 'pop3', tls: 'implicit', plugins: [plugin] },
    ],
  });
  const port = s.ports.starttls!;

  await t.test('before STLS no clear-text password is taken; APOP is', async (t) => {
    const c = await connect(t, port);
    t.same((await c.multiline('CAPA')).lines, ['TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE', 'STLS', 'IMPLEMENTATION yubin'], 'no USER, no SASL, STLS');
    const refused = '-ERR [AUTH] Plaintext authentication disallowed without TLS, use STLS';
    t.equal(await c.command('USER alice'), refused);
    t.equal(await c.command('PASS secret'), refused);
    t.equal(await c.command(`AUTH PLAIN ${b64('\0alice\0secret')}`), refused);
    t.same((await c.multiline('AUTH')).lines, [], 'no mechanism offered in clear text');
    t.notOk(s.logs.some((l) => l.event === 'login'), 'no login was even tried');
    const stamp = /<[^>]+>/.exec(c.greeting)![0];
    t.match(await c.command(`APOP alice ${createHash('md5').update(`${stamp}secret`).digest('hex')}`), /^\+OK/, 'APOP sends no password');
    t.equal(await c.command('STLS'), '-ERR already logged in', 'not after login');
    await c.command('QUIT');
  });

  await t.test('STLS\\r\\nCAPA\\r\\n in one packet: the injected CAPA is never answered', async (t) => {
    const c = await connect(t, port);
    c.write('STLS\r\nCAPA\r\n');
    t.equal(await c.readLine(), '+OK Begin TLS negotiation');
    t.equal(c.pending().length, 0);
    await c.upgrade();
    await sleep(400);
    t.equal(c.pending().length, 0, 'nothing came through TLS on its own');
    const capa = await c.multiline('CAPA');
    t.same(capa.lines, ['TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE', 'USER', 'SASL PLAIN', 'IMPLEMENTATION yubin'], 'inside TLS: USER and SASL, no STLS');
    t.equal(await c.command('STLS'), '-ERR already using TLS');
    t.equal(await c.command('USER alice'), '+OK');
    t.match(await c.command('PASS secret'), /^\+OK/);
    await c.command('QUIT');
  });

  await t.test('USER before STLS is forgotten after it', async (t) => {
    const c = await connect(t, port);
    t.equal(await c.command('STLS'), '+OK Begin TLS negotiation');
    await c.upgrade();
    t.equal(await c.command('PASS secret'), '-ERR USER first');
  });

  await t.test('a client that breaks the handshake does not hurt the server', async (t) => {
    const c = await connect(t, port);
    c.write('STLS\r\n');
    t.equal(await c.readLine(), '+OK Begin TLS negotiation');
    c.write('this is not a ClientHello\r\n\r\n');
    await c.closed;
    const again = await connect(t, port);
    t.equal(await again.command('NOOP'), '+OK');
    const raw = await import('node:net').then((net) => net.connect(s.ports.pop3s!, '127.0.0.1'));
    raw.on('error', () => undefined);
    raw.end('GET / HTTP/1.0\r\n\r\n');
    await new Promise((r) => raw.on('close', r));
  });

  await t.test('pop3s with the raw client', async (t) => {
    const c = await connect(t, s.ports.pop3s!, { tls: true });
    t.match(c.greeting, /^\+OK mx\.test POP3 ready </);
    t.notOk((await c.multiline('CAPA')).lines.includes('STLS'));
    t.equal(await c.command('USER alice'), '+OK', 'implicit TLS allows clear-text passwords');
    await c.command('QUIT');
  });

  await t.test('curl over pop3s', needs('curl'), async (t) => {
    const r = await run('curl', ['-sS', '-k', '--max-time', '10', '-u', 'alice:secret', `pop3s://127.0.0.1:${s.ports.pop3s}/2`]);
    t.equal(r.stdout, M2, r.stderr);
    const stls = await run('curl', ['-sS', '-k', '--ssl-reqd', '--max-time', '10', '-u', 'alice:secret', `pop3://127.0.0.1:${port}/2`]);
    t.equal(stls.stdout, M2, `curl with STLS: ${stls.stderr}`);
  });

  await t.test('Python poplib: stls() and POP3_SSL', needs('python3'), async (t) => {
    const out = await poplibSession(t, port, 'stls', dir);
    t.equal(out.stls, '+OK Begin TLS negotiation');
    users.alice = await standardBox(t);
    await poplibSession(t, s.ports.pop3s!, 'pop3s', users.alice);
  });
});

// ---- limits ----

t.test('limits: idle timeout, line length, connections, failed logins per connection', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }), {
    listener: { limits: { idleTimeout: '1s', maxLineLength: 512, maxConnections: 2, maxAuthFailures: 2 } },
    config: { loginThrottle: { freeFailures: 100, lockoutAfter: 200 } },
  });

  await t.test('idle for too long: autologout, nothing applied', async (t) => {
    const c = await login(t, s.port);
    t.equal(await c.command('DELE 1'), '+OK message 1 deleted');
    const started = Date.now();
    t.equal(await c.readLine(3_000), '-ERR autologout: idle for too long');
    t.ok(Date.now() - started >= 900, 'after the idle timeout');
    await c.closed;
    t.same((await readdir(path.join(dir, 'new'))).sort(), [M1_NAME, M2_NAME], 'the deletion was not applied');
  });

  await t.test('a line over maxLineLength: -ERR and close', async (t) => {
    const c = await connect(t, s.port);
    c.write(`USER ${'x'.repeat(600)}\r\nNOOP\r\n`);
    t.equal(await c.readLine(), '-ERR line too long');
    await c.closed;
    t.equal(c.pending().length, 0, 'the NOOP behind it was not run');
    const ok = await connect(t, s.port);
    t.equal(await ok.command(`USER ${'x'.repeat(500)}`), '+OK', 'a line within the limit is fine');
  });

  await t.test('maxConnections', async (t) => {
    await allClosed(s);
    const a = await connect(t, s.port);
    const b = await connect(t, s.port);
    const c = await connect(t, s.port);
    t.equal(c.greeting, '-ERR [SYS/TEMP] too many connections');
    await c.closed;
    a.close();
    b.close();
    await Promise.all([a.closed, b.closed]);
  });

  await t.test('maxAuthFailures failed logins close the connection', async (t) => {
    await allClosed(s);
    const c = await connect(t, s.port);
    await c.command('USER alice');
    t.equal(await c.command('PASS one'), '-ERR [AUTH] Authentication failed');
    t.equal(await c.command('USER alice'), '+OK');
    t.equal(await c.command('PASS two'), '-ERR [AUTH] Authentication failed');
    await c.closed;
  });
});

t.test('failed logins are throttled across connections; a known client network keeps its account', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir, bob: dir }), { config: { loginThrottle: { freeFailures: 2, delay: '1s', lockoutAfter: 4 } } });
  const attempt = async (user: string, password: string) => {
    const c = await connect(t, s.port);
    await c.command(`USER ${user}`);
    const started = Date.now();
    const reply = await c.command(`PASS ${password}`);
    const ms = Date.now() - started;
    c.close();
    return { reply, ms };
  };
  for (let i = 0; i < 3; i++) {
    const r = await attempt('alice', 'wrong');
    t.equal(r.reply, '-ERR [AUTH] Authentication failed');
    t.ok(r.ms < 800, `failure ${i + 1} answered at once`);
  }
  const fourth = await attempt('alice', 'secret');
  t.match(fourth.reply, /^\+OK maildrop/, 'the right password still works');
  t.ok(fourth.ms >= 950, `after three failures the answer waits (${fourth.ms} ms)`);
  t.match(s.logs.find((l) => l.event === 'auth-delay'), { user: 'alice', wait: 1000 });
  // alice has now logged in from this network: the IP's three failures no longer count against her.
  t.equal((await attempt('alice', 'wrong')).reply, '-ERR [AUTH] Authentication failed');
  t.match((await attempt('alice', 'secret')).reply, /^\+OK maildrop/, 'not locked out: her own network is known');
  // bob never logged in from here: alice's first three failures count for him, and one of his own makes four.
  t.equal((await attempt('bob', 'wrong')).reply, '-ERR [AUTH] Authentication failed');
  t.equal((await attempt('bob', 'secret')).reply, '-ERR [SYS/TEMP] Too many failed logins, try again later', 'locked out: not even the right password is checked');
  t.match(s.logs.filter((l) => l.event === 'login').at(-1), { result: 'locked-out', plugin: 'core', user: 'bob' });
});

// ---- shutdown ----

t.test('drain: sessions are told and closed, and nothing they marked is applied', async (t) => {
  const dir = await standardBox(t);
  const s = await pop3Server(t, mailboxPlugin({ alice: dir }));
  const c = await login(t, s.port);
  t.equal(await c.command('DELE 2'), '+OK message 2 deleted');
  const idle = await connect(t, s.port);
  const stopped = s.server.stop(5_000);
  t.equal(await c.readLine(), '-ERR [SYS/TEMP] server shutting down');
  t.equal(await idle.readLine(), '-ERR [SYS/TEMP] server shutting down');
  await Promise.all([c.closed, idle.closed]);
  await stopped;
  t.same((await readdir(path.join(dir, 'new'))).sort(), [M1_NAME, M2_NAME]);
  await t.rejects(Pop3TestClient.connect(s.port), 'no longer accepting');
});
