/**
 * Issue 18, defect 7: the default limits must survive one client that tries to
 * take every slot. Real sockets from several 127.x source addresses (Linux
 * loopback takes any of them), swaks as the innocent client from another IP:
 *
 *  - 100 idle connections from one IP get 20 slots (maxConnectionsPerIp), on
 *    SMTP and on POP3, and another IP is still served;
 *  - a connection that never says a valid HELO/EHLO is let go after
 *    firstCommandTimeout, one that did keeps the listener's idleTimeout;
 *  - 100 slowloris clients dripping a byte every 500 ms in DATA are cut off by
 *    the minimum data rate, while a real client from another IP is served;
 *  - tcprules' MAXCONNIP lowers or lifts the per-IP limit for its clients.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { SmtpTestClient, startTestServer, type TestServer } from '../core/testing/index.js';
import { needs, run, sleep, tempDir } from './helpers.js';

/** A line-oriented raw client from a chosen source address (POP3 has no other test client that takes one). */
class LineClient {
  private buffer = '';
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(private readonly socket: net.Socket) {
    let markClosed!: () => void;
    this.closed = new Promise((resolve) => (markClosed = resolve));
    socket.setEncoding('latin1');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let i: number;
      while ((i = this.buffer.indexOf('\r\n')) >= 0) {
        this.lines.push(this.buffer.slice(0, i));
        this.buffer = this.buffer.slice(i + 2);
      }
      this.wake();
    });
    const end = () => {
      if (this.ended) return;
      this.ended = true;
      markClosed();
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
  }

  static connect(port: number, localAddress: string): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new LineClient(socket));
      });
    });
  }

  get isClosed(): boolean {
    return this.ended;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** The next line; undefined when the connection closed or nothing came within the timeout. */
  async readLine(timeout = 10_000): Promise<string | undefined> {
    const deadline = Date.now() + timeout;
    for (;;) {
      const line = this.lines.shift();
      if (line !== undefined) return line;
      if (this.ended || Date.now() >= deadline) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  async command(line: string, timeout?: number): Promise<string | undefined> {
    this.write(`${line}\r\n`);
    return this.readLine(timeout);
  }

  write(data: string): void {
    if (!this.ended && !this.socket.destroyed) this.socket.write(data);
  }

  /** Whether the server closed the connection within the timeout. */
  waitClosed(timeout = 10_000): Promise<boolean> {
    return Promise.race([this.closed.then(() => true), delay(timeout).then(() => false)]);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A timer that does not keep the process alive: for the losing side of a race. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

const SWAKS = ['--to', 'postmaster@localhost', '--from', 'a@example.net', '--timeout', '20'];

/** swaks from another IP: its exit code and whether the server said it queued the message. */
async function swaksFrom(port: number, localAddress: string) {
  const r = await run('swaks', ['--server', `127.0.0.1:${port}`, '--local-interface', localAddress, ...SWAKS], { timeout: 45_000 });
  const queued = /<[-~] +250 2\.0\.0 Ok: queued as (\S+)/.exec(r.stdout)?.[1];
  const refusal = /<\*\* +(4\d\d[^\r\n]*)/.exec(r.stdout)?.[1];
  return { ...r, queued, refusal };
}

async function smtpServer(t: Test, extra: Record<string, unknown> = {}, plugins: unknown[] = ['rcpthosts']): Promise<TestServer> {
  const s = await startTestServer({ listeners: [{ name: 'smtp', plugins: plugins as never, ...extra }] });
  t.teardown(() => s.close());
  return s;
}

/** Opens `n` SMTP connections from one IP one after the other, each waiting for its greeting (and, when refused, its close). */
async function openSequentially(s: TestServer, n: number, localAddress: string): Promise<SmtpTestClient[]> {
  const out: SmtpTestClient[] = [];
  for (let i = 0; i < n; i++) {
    const c = await s.connect({ localAddress, timeout: 5_000 });
    out.push(c);
    if (c.greeting?.code !== 220) await c.waitClosed(5_000);
  }
  return out;
}

const codes = (clients: readonly SmtpTestClient[]) => clients.map((c) => c.greeting?.code ?? 0);

t.test('default limits: 100 idle SMTP connections from one IP take 20 slots; swaks from another IP is served', needs('swaks'), async (t) => {
  const s = await smtpServer(t);
  const flood = await openSequentially(s, 100, '127.0.0.5');
  t.teardown(() => flood.forEach((c) => c.close()));
  const greeted = codes(flood);
  t.same(greeted.slice(0, 20), Array(20).fill(220), 'the first 20 connections from 127.0.0.5 are greeted 220');
  t.same(greeted.slice(20), Array(80).fill(421), 'the other 80 get 421');
  const refusal = flood[20]?.greeting;
  t.equal(refusal?.enhanced, '4.7.0', 'with 4.7.0');
  t.match(refusal?.text, /^Too many connections from your IP address \(20\), try again later/, `the per-IP limit is named: ${refusal?.text}`);
  t.ok(
    flood.slice(20).every((c) => c.closed),
    'every refused connection was closed by the server',
  );
  t.ok(
    flood.slice(0, 20).every((c) => !c.closed),
    'the 20 greeted connections are still open (idle)',
  );
  const decisions = s.logs.filter((l) => l.hook === 'connect' && l.plugin === 'core' && l.action === 'disconnect' && l.code === 421 && l.ip === '127.0.0.5');
  t.equal(decisions.length, 80, 'one connect decision logged per refused connection');
  t.match(decisions[0]?.reason, /21 connections from 127\.0\.0\.5, limit 20/);

  const sw = await swaksFrom(s.port, '127.0.0.9');
  t.equal(sw.code, 0, `swaks from 127.0.0.9 succeeds while 127.0.0.5 holds 20 slots${sw.refusal ? `; refused: ${sw.refusal}` : ''}`);
  t.ok(sw.queued, 'swaks is told 250 queued');
  const queued = await s.queued();
  t.equal(queued.length, 1, 'the message is in the queue');
  t.same(queued[0]?.envelope.recipients.map((r) => r.address), ['postmaster@localhost']);
  t.match(queued[0]?.text ?? '', /\[127\.0\.0\.9\]/, 'received from 127.0.0.9');
  t.ok(
    flood.slice(0, 20).every((c) => !c.closed),
    'the idle 20 from 127.0.0.5 still hold their slots',
  );
});

t.test('default limits: 100 idle POP3 connections from one IP take 20 slots; a client from another IP logs in', async (t) => {
  const maildir = path.join(await tempDir(t, 'yubin-limits-'), 'Maildir');
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(maildir, sub), { recursive: true });
  const mailbox = definePlugin({
    name: 'one-mailbox',
    setup: () => ({
      hooks: {
        auth(ctx) {
          if (ctx.username !== 'alice' || !ctx.verify('secret')) return answer.reject(535, '5.7.8', 'no');
          ctx.mailbox(maildir);
          return answer.accept('welcome', 235, '2.7.0');
        },
      },
    }),
  });
  const s = await startTestServer({ listeners: [{ name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, plugins: [mailbox] }] });
  t.teardown(() => s.close());
  const port = s.ports.pop3!;

  const flood: LineClient[] = [];
  t.teardown(() => flood.forEach((c) => c.close()));
  const greetings: string[] = [];
  for (let i = 0; i < 100; i++) {
    const c = await LineClient.connect(port, '127.0.0.5');
    flood.push(c);
    const g = (await c.readLine(5_000)) ?? '(nothing)';
    greetings.push(g);
    if (!g.startsWith('+OK')) await c.waitClosed(5_000);
  }
  t.ok(
    greetings.slice(0, 20).every((g) => g.startsWith('+OK')),
    'the first 20 connections from 127.0.0.5 are greeted +OK',
  );
  const refused = greetings.slice(20);
  t.equal(refused.filter((g) => g.startsWith('-ERR')).length, 80, 'the other 80 get -ERR');
  t.match(refused[0], /^-ERR \[SYS\/TEMP\] too many connections from your IP address \(20\)/, `the per-IP limit is named: ${refused[0]}`);
  t.ok(
    flood.slice(20).every((c) => c.isClosed),
    'every refused connection was closed by the server',
  );

  const real = await LineClient.connect(port, '127.0.0.9');
  t.teardown(() => real.close());
  t.match(await real.readLine(5_000), /^\+OK/, 'a client from 127.0.0.9 is greeted +OK');
  t.match(await real.command('USER alice'), /^\+OK/);
  t.match(await real.command('PASS secret'), /^\+OK/, 'and logs in');
  t.match(await real.command('STAT'), /^\+OK 0 0/);
  t.match(await real.command('QUIT'), /^\+OK/);
  t.ok(
    flood.slice(0, 20).every((c) => !c.isClosed),
    'the idle 20 from 127.0.0.5 still hold their slots',
  );
});

t.test('firstCommandTimeout: silence before a valid EHLO is cut off after it; after EHLO the idle timeout applies', async (t) => {
  const s = await smtpServer(t, { limits: { firstCommandTimeout: '1s' } });
  const started = Date.now();
  const [silent, badEhlo, good] = await Promise.all([
    s.connect({ localAddress: '127.0.0.20', timeout: 10_000 }),
    s.connect({ localAddress: '127.0.0.21', timeout: 10_000 }),
    s.connect({ localAddress: '127.0.0.22', timeout: 10_000 }),
  ]);
  t.equal(silent.greeting?.code, 220);
  t.equal((await badEhlo.command('EHLO')).code, 501, 'an EHLO without a name is not a valid first command');
  t.equal((await good.ehlo()).code, 250, 'a valid EHLO');

  const timedOut = await silent.read(10_000).catch((err: Error) => err);
  const elapsed = Date.now() - started;
  t.notOk(timedOut instanceof Error, `the silent connection gets a reply (${timedOut instanceof Error ? timedOut.message : ''})`);
  if (!(timedOut instanceof Error)) {
    t.equal(timedOut.code, 421, `silent connection: 421 ${timedOut.text}`);
    t.match(timedOut.text, /Timeout/i);
  }
  t.ok(await silent.waitClosed(5_000), 'and is closed by the server');
  t.ok(elapsed >= 900, `not before the first-command timeout (${elapsed} ms)`);
  t.ok(elapsed < 10_000, `long before the listener's idle timeout of 300 s (${elapsed} ms)`);

  t.ok(await badEhlo.waitClosed(5_000), 'the connection whose EHLO failed is closed too');
  t.match(badEhlo.received, /\r\n421 [^\r\n]*Timeout/i, 'with 421');

  await sleep(Math.max(0, started + 2_200 - Date.now()));
  t.notOk(good.closed, 'the connection that sent a valid EHLO is still open after 2 s');
  const noop = await good.command('NOOP').catch((err: Error) => err);
  t.equal(noop instanceof Error ? noop.message : noop.code, 250, 'and still served');
  await good.quit();
});

t.test('slowloris: 100 clients from one IP dripping a byte every 500 ms in DATA are cut off; swaks from another IP is served meanwhile', needs('swaks'), async (t) => {
  const s = await smtpServer(t, { limits: { idleTimeout: '2s' } });
  const N = 100;
  const drips = new Set<NodeJS.Timeout>();
  const clients: SmtpTestClient[] = [];
  t.teardown(() => {
    drips.forEach((d) => clearInterval(d));
    clients.forEach((c) => c.close());
  });
  /** Per client: what happened, and when the server closed it (ms since start). */
  const started = Date.now();
  const results = await Promise.all(
    Array.from({ length: N }, async () => {
      const c = await SmtpTestClient.connect(s.port, { localAddress: '127.0.0.7', timeout: 20_000 });
      clients.push(c);
      const closedAt = c.waitClosed(60_000).then(() => Date.now() - started);
      if (c.greeting?.code !== 220) return { c, inData: false, greeting: c.greeting?.code ?? 0, closedAt };
      try {
        if ((await c.ehlo('slow.example')).code !== 250) throw new Error('EHLO');
        if ((await c.command('MAIL FROM:<slow@example.net>')).code !== 250) throw new Error('MAIL');
        if ((await c.command('RCPT TO:<postmaster@localhost>')).code !== 250) throw new Error('RCPT');
        if ((await c.command('DATA')).code !== 354) throw new Error('DATA');
      } catch {
        return { c, inData: false, greeting: 220, closedAt };
      }
      c.write('Subject: slow\r\n\r\n');
      const drip = setInterval(() => (c.closed ? clearInterval(drip) : c.write('x')), 500);
      drips.add(drip);
      return { c, inData: true, greeting: 220, closedAt };
    }),
  );
  const inData = results.filter((r) => r.inData);
  const refused = results.filter((r) => r.greeting !== 220);
  t.equal(results.filter((r) => r.greeting === 220).length, 20, 'only 20 of the 100 are greeted');
  t.equal(refused.length, 80, 'the other 80 are refused at connect');
  t.ok(
    refused.every((r) => r.greeting === 421),
    'with 421',
  );
  t.equal(inData.length, 20, 'the 20 reach DATA and start dripping');

  // Wait for the refused ones to be gone, then send real mail while the 20 drip.
  await Promise.all(refused.map((r) => r.c.waitClosed(10_000)));
  const openAtStart = inData.filter((r) => !r.c.closed).length;
  const swaksStart = Date.now() - started;
  const sw = await swaksFrom(s.port, '127.0.0.8');
  const openAtEnd = inData.filter((r) => !r.c.closed).length;
  t.equal(openAtStart, inData.length, `every slowloris in DATA held its slot when swaks started (${openAtStart})`);
  t.comment(`slowloris still open when swaks finished: ${openAtEnd} of ${inData.length}`);
  t.equal(sw.code, 0, `swaks from 127.0.0.8 succeeds${sw.refusal ? `; refused: ${sw.refusal}` : ''}`);
  t.ok(sw.queued, 'swaks is told 250 queued');

  // Every slowloris connection is closed by the server within 15 s.
  const closedAt = await Promise.all(results.map((r) => Promise.race([r.closedAt, delay(15_000).then(() => Infinity)])));
  const stillOpen = closedAt.filter((x) => x === Infinity).length;
  t.equal(stillOpen, 0, `every slowloris connection was closed by the server within 15 s (${stillOpen} still open)`);
  const dataCut = inData.filter((r) => /\r\n421 4\.4\.2 Data rate too low, closing connection\r\n/.test(r.c.received));
  t.equal(dataCut.length, inData.length, 'those in DATA were told 421 4.4.2 Data rate too low');
  const inDataClosed = inData.map((r) => closedAt[results.indexOf(r)]!);
  t.ok(
    inDataClosed.every((x) => x >= swaksStart),
    'none of those in DATA was cut before swaks started (they held their slots meanwhile)',
  );

  const decisions = s.logs.filter((l) => l.hook === 'data' && l.plugin === 'core' && l.action === 'disconnect' && l.code === 421 && l.ip === '127.0.0.7');
  t.equal(decisions.length, inData.length, 'the core logged one data-rate decision per slowloris in DATA');
  t.match(decisions[0]?.reason, /^data rate below 500 bytes\/s \(\d+ bytes so far\)$/);

  const queued = await s.queued();
  t.equal(queued.length, 1, "only swaks' message is queued; no slowloris message was");
  t.match(queued[0]?.text ?? '', /\[127\.0\.0\.8\]/, 'received from 127.0.0.8');
});

t.test('tcprules MAXCONNIP: a rule lowers the per-IP limit for its clients, MAXCONNIP="0" lifts it', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'tcp.smtp');
  await writeFile(file, '127.0.0.40:allow,MAXCONNIP="2"\n127.0.0.42:allow,MAXCONNIP="0"\n:allow\n');
  const s = await startTestServer({ plugins: ['tcprules', 'rcpthosts'], pluginOptions: { tcprules: { file, checkInterval: 0.05 } } });
  t.teardown(() => s.close());

  const forty = await openSequentially(s, 3, '127.0.0.40');
  t.same(codes(forty), [220, 220, 421], 'the third connection from 127.0.0.40 gets 421');
  t.match(forty[2]?.greeting?.text, /Too many connections from your IP address \(2\)/, 'naming the rule limit of 2');
  t.ok(await forty[2]!.waitClosed(5_000), 'and is closed');

  const fortyOne = await openSequentially(s, 5, '127.0.0.41');
  t.same(codes(fortyOne), Array(5).fill(220), '127.0.0.41 (no MAXCONNIP) may open more than 2');

  const fortyTwo = await openSequentially(s, 25, '127.0.0.42');
  t.same(codes(fortyTwo), Array(25).fill(220), 'MAXCONNIP="0": 25 connections from 127.0.0.42 all greeted, past the listener limit of 20');

  // The limit counts open connections: one from .40 closed makes room for another.
  await forty[0]!.quit();
  await forty[0]!.waitClosed(5_000);
  await sleep(100);
  const again = await s.connect({ localAddress: '127.0.0.40', timeout: 5_000 });
  t.equal(again.greeting?.code, 220, 'after one of its two closed, 127.0.0.40 may connect again');
  for (const c of [...forty, ...fortyOne, ...fortyTwo, again]) c.close();
});
