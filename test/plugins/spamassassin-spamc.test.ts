/**
 * The SPAMC/1.5 client against a tiny fake spamd: request framing, responses
 * split across packets, bodies with blank lines, missing Content-length,
 * spamd error codes, truncation, timeouts, refused connections, Unix
 * sockets, stream input. (The real spamd is in spamassassin.test.ts.)
 */
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import t, { type Test } from 'tap';
import { parseSpamHeader, Spamc, SpamdError, spamdRequest } from '../../plugins/spamassassin/spamc.js';
import { levelValue, statusValue } from '../../plugins/spamassassin/index.js';
import { freePort, sleep, tempDir } from '../helpers.js';

interface Request {
  readonly head: string;
  readonly body: Buffer;
}

interface Fake {
  readonly port: number;
  readonly requests: Request[];
}

type Respond = (req: Request, socket: net.Socket) => unknown;

/** Reads one request (headers, then exactly Content-length bytes) and hands it to `respond`. */
function handle(socket: net.Socket, fake: { requests: Request[] }, respond: Respond, opts: { early?: boolean } = {}) {
  let buf = Buffer.alloc(0);
  let answered = false;

  socket.on('error', () => undefined);
  socket.on('data', (d: Buffer) => {
    if (answered) return;
    buf = Buffer.concat([buf, d]);
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = buf.subarray(0, end + 4).toString('latin1');
    const m = /Content-length: (\d+)\r\n/.exec(head);
    const want = m ? Number(m[1]) : 0;
    if (!opts.early && buf.length - end - 4 < want) return;
    answered = true;
    const req = { head, body: buf.subarray(end + 4, end + 4 + want) };
    fake.requests.push(req);
    void respond(req, socket);
  });
}

async function fakeSpamd(t: Test, respond: Respond, opts: { early?: boolean; path?: string } = {}): Promise<Fake> {
  const fake = { port: 0, requests: [] as Request[] };
  // allowHalfOpen: the client half-closes after its message, as spamc does; spamd still answers.
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    handle(s, fake, respond, opts);
  });
  await new Promise<void>((resolve) => (opts.path ? server.listen(opts.path, resolve) : server.listen(0, '127.0.0.1', resolve)));
  if (!opts.path) fake.port = (server.address() as net.AddressInfo).port;
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return fake;
}

const MESSAGE = Buffer.from('Subject: test\r\n\r\nline one\r\n\r\n\r\nline after two blank lines\r\n');

t.test('request framing: command, exact Content-length, User, then the message', async (t) => {
  const fake = await fakeSpamd(t, (_req, s) => s.end('SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.3 / 5.0\r\n\r\n'));
  const r = await new Spamc({ port: fake.port }).check(MESSAGE, 'alice@example.test');
  t.equal(fake.requests[0]!.head, `CHECK SPAMC/1.5\r\nContent-length: ${MESSAGE.length}\r\nUser: alice@example.test\r\n\r\n`);
  t.ok(fake.requests[0]!.body.equals(MESSAGE), 'message sent byte for byte');
  t.equal(r.isSpam, false);
  t.equal(r.score, 1.3);
  t.equal(r.threshold, 5);
  t.equal(r.version, '1.1');
  t.equal(r.message, 'EX_OK');
});

t.test('response split into single bytes, body with blank lines kept exactly', async (t) => {
  const body = 'Subject: x\r\nX-Spam-Status: Yes\r\n\r\n\r\nfirst\r\n\r\n\r\nlast\r\n\r\n';
  const resp = `SPAMD/1.1 0 EX_OK\r\nContent-length: ${Buffer.byteLength(body)}\r\nSpam: True ; 15.0 / 5.0\r\n\r\n${body}`;
  const fake = await fakeSpamd(t, async (_req, s) => {
    for (const ch of resp) {
      s.write(ch);
      await sleep(1);
    }
    s.end();
  });
  const r = await new Spamc({ port: fake.port }).process(MESSAGE);
  t.equal(r.body.toString(), body, 'every blank line is there');
  t.equal(r.headers['content-length'], String(Buffer.byteLength(body)));
  t.equal(r.isSpam, true);
  t.equal(r.score, 15);
});

t.test('SYMBOLS: rule names from the body, with or without a trailing CRLF', async (t) => {
  for (const tail of ['', '\r\n']) {
    const fake = await fakeSpamd(t, (_req, s) => s.end(`SPAMD/1.1 0 EX_OK\r\nContent-length: ${11 + tail.length}\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,NO_RE${tail}`));
    const r = await new Spamc({ port: fake.port }).symbols(MESSAGE);
    t.same(r.symbols, ['GTUBE', 'NO_RE'], `tail ${JSON.stringify(tail)}`);
  }
});

t.test('missing Content-length: the body runs to the close', async (t) => {
  const fake = await fakeSpamd(t, (_req, s) => {
    s.write('SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.5 / 5.0\r\n');
    setTimeout(() => s.end('\r\nreport\r\n\r\nmore\r\n'), 20);
  });
  const r = await new Spamc({ port: fake.port }).report(MESSAGE);
  t.equal(r.body.toString(), 'report\r\n\r\nmore\r\n');
  t.equal(r.score, -0.5);
  t.equal(r.headers['content-length'], undefined);
});

t.test('spamd error codes are SpamdError kind spamd with the code', async (t) => {
  const fake = await fakeSpamd(t, (_req, s) => s.end('SPAMD/1.0 76 Bad header line: Content-lenth: 12\r\n'));
  const err = await new Spamc({ port: fake.port }).check(MESSAGE).catch((e: unknown) => e);
  t.ok(err instanceof SpamdError);
  t.equal((err as SpamdError).kind, 'spamd');
  t.equal((err as SpamdError).code, 76);
  t.match((err as Error).message, /76 Bad header line/);

  // Error answered before the message is all sent, then closed.
  const early = await fakeSpamd(t, (_req, s) => s.end('SPAMD/1.0 64 EX_USAGE\r\n'), { early: true });
  const big = Buffer.alloc(4 * 1024 * 1024, 'a');
  const e2 = await new Spamc({ port: early.port }).check(big).catch((e: unknown) => e);
  t.ok(e2 instanceof SpamdError);
  t.match((e2 as SpamdError).kind, /spamd|io/, 'an error either way, never a verdict');
});

t.test('malformed responses are protocol errors', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['', /without a response/],
    ['HTTP/1.1 200 OK\r\n\r\n', /bad status line/],
    ['SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: True ; 6 / 5\r\n\r\nshort', /truncated: 5 of 50/],
    ['SPAMD/1.1 0 EX_OK\r\nContent-length: 2\r\nSpam: True ; 6 / 5\r\n\r\ntoo long', /longer than Content-length/],
    ['SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n', /bad Spam header/],
    ['SPAMD/1.1 0 EX_OK\r\n\r\n', /without a Spam header/],
    ['SPAMD/1.1 0 EX_OK\r\nSpam: True ; 6 / 5', /without a line end/],
  ];
  for (const [resp, re] of cases) {
    const fake = await fakeSpamd(t, (_req, s) => s.end(resp));
    const err = await new Spamc({ port: fake.port }).check(MESSAGE).catch((e: unknown) => e);
    t.ok(err instanceof SpamdError, JSON.stringify(resp));
    t.match((err as Error).message, re);
  }
});

t.test('timeout: no answer → rejects with kind timeout', async (t) => {
  const fake = await fakeSpamd(t, () => undefined);
  const started = Date.now();
  const err = await new Spamc({ port: fake.port, timeout: 300 }).check(MESSAGE).catch((e: unknown) => e);
  const took = Date.now() - started;
  t.ok(err instanceof SpamdError);
  t.equal((err as SpamdError).kind, 'timeout');
  t.match((err as Error).message, /no complete answer within 300 ms/);
  t.ok(took >= 280 && took < 2000, `took ${took} ms`);

  // A slow trickle does not extend the deadline.
  const slow = await fakeSpamd(t, async (_req, s) => {
    for (let i = 0; i < 50 && !s.destroyed; i++) {
      s.write('S');
      await sleep(20);
    }
  });
  const e2 = await new Spamc({ port: slow.port, timeout: 200 }).check(MESSAGE).catch((e: unknown) => e);
  t.equal((e2 as SpamdError).kind, 'timeout');
});

t.test('connection refused is kind connect', async (t) => {
  const port = await freePort();
  const err = await new Spamc({ port, connectTimeout: 500, timeout: 1000 }).ping().catch((e: unknown) => e);
  t.ok(err instanceof SpamdError);
  t.equal((err as SpamdError).kind, 'connect');
  t.match((err as Error).message, new RegExp(`127\\.0\\.0\\.1:${port}.*ECONNREFUSED`));
});

t.test('Unix socket and PING', async (t) => {
  const dir = await tempDir(t);
  const sock = path.join(dir, 'spamd.sock');
  const fake = await fakeSpamd(t, (req, s) => s.end(req.head.startsWith('PING ') ? 'SPAMD/1.5 0 PONG\r\n' : 'SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n'), { path: sock });
  const c = new Spamc({ socket: sock });
  t.equal(await c.ping(), true);
  t.equal(fake.requests[0]!.head, 'PING SPAMC/1.5\r\n\r\n', 'PING has no Content-length');
  t.equal((await c.check(MESSAGE)).isSpam, false);
});

t.test('stream input with its length; a wrong length is an error', async (t) => {
  const fake = await fakeSpamd(t, (_req, s) => s.end('SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n'));
  const parts = [MESSAGE.subarray(0, 7), MESSAGE.subarray(7, 20), MESSAGE.subarray(20)];
  await new Spamc({ port: fake.port }).check({ stream: Readable.from(parts), length: MESSAGE.length });
  t.ok(fake.requests[0]!.body.equals(MESSAGE), 'streamed message arrives whole');
  t.match(fake.requests[0]!.head, `Content-length: ${MESSAGE.length}\r\n`);

  const short = await fakeSpamd(t, (_req, s) => s.end('SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n'), { early: true });
  const err = await new Spamc({ port: short.port, timeout: 2000 })
    .check({ stream: Readable.from([MESSAGE]), length: MESSAGE.length + 10 })
    .then(() => undefined)
    .catch((e: unknown) => e);
  t.ok(err instanceof SpamdError, 'rejected');
  t.match((err as Error).message, /stream gave \d+ bytes, Content-length said/);
});

t.test('request helpers: User without line breaks, commands that need a message', async (t) => {
  await t.rejects(spamdRequest('CHECK', undefined, { port: 1 }), /needs a message/);
  await t.rejects(spamdRequest('CHECK', MESSAGE, { port: 1, user: 'a\r\nX: y' }), /line break/);
});

t.test('Spam header and added header values', async (t) => {
  t.same(parseSpamHeader('True ; 15 / 5'), { isSpam: true, score: 15, threshold: 5 });
  t.same(parseSpamHeader('False ; -2.1 / 5.0'), { isSpam: false, score: -2.1, threshold: 5 });
  t.same(parseSpamHeader('Yes ; 6.2 / 5.0'), { isSpam: true, score: 6.2, threshold: 5 });
  t.equal(parseSpamHeader('True ; x / 5'), undefined);
  t.equal(levelValue(1005.2), '*'.repeat(50));
  t.equal(levelValue(3.9), '***');
  t.equal(levelValue(-1), '');
  t.equal(statusValue(false, 0.04, 5, []), 'No, score=0.0 required=5.0 tests=none');
  const long = statusValue(true, 12.345, 5, Array.from({ length: 12 }, (_, i) => `SOME_LONG_RULE_NAME_${i}`));
  t.match(long, /^Yes, score=12\.3 required=5\.0 tests=SOME_LONG_RULE_NAME_0,/);
  for (const line of `X-Spam-Status: ${long}`.split('\r\n')) t.ok(line.length <= 100, 'folded');
  t.match(long, /\r\n\tSOME_LONG/);
  t.equal(long.replace(/\r\n\t/g, ''), 'Yes, score=12.3 required=5.0 tests=' + Array.from({ length: 12 }, (_, i) => `SOME_LONG_RULE_NAME_${i}`).join(','));
});
