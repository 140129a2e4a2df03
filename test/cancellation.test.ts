/**
 * Issue 11, item 3: every hook context carries an AbortSignal that fires at
 * hookTimeout and when the connection closes (for deliver: when the queue
 * stops), and the slow services take it. Real sockets throughout: the SMTP
 * and POP3 clients of the harness, a loopback UDP DNS server that never
 * answers, loopback TCP servers standing in for a hung spamd and clamd.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { Readable } from 'node:stream';
import path from 'node:path';
import dnsPacket from 'dns-packet';
import t, { type Test } from 'tap';
import { answer, definePlugin, type HookName, type Hooks, type PluginDefinition } from '../core/index.js';
import { Pop3TestClient, startTestServer } from '../core/testing/index.js';
import { NodeDns } from '../core/services/dns.js';
import { CachingDns, TtlNodeDns } from '../core/services/dns-cache.js';
import { lookupDnsbl } from '../core/services/dnsbl.js';
import { MemoryStore } from '../core/services/store.js';
import { SqliteKeyValueStore } from '../core/services/store-backends.js';
import { Spamc } from '../plugins/spamassassin/spamc.js';
import { scanStream } from '../plugins/clamav/clamd.js';
import { tempDir } from './helpers.js';

/** What a hanging hook saw of its signal. */
interface Seen {
  readonly started: Promise<number>;
  readonly aborted: Promise<{ at: number; reason: unknown }>;
}

/** A plugin whose one hook never answers and reports when it started and when its signal fired. */
function hangingPlugin<K extends HookName>(name: string, hook: K): { plugin: PluginDefinition<unknown>; seen: Seen } {
  let markStarted!: (at: number) => void;
  let markAborted!: (v: { at: number; reason: unknown }) => void;
  const started = new Promise<number>((r) => (markStarted = r));
  const aborted = new Promise<{ at: number; reason: unknown }>((r) => (markAborted = r));
  const fn = ((ctx: { signal: AbortSignal }) => {
    markStarted(Date.now());
    ctx.signal.addEventListener('abort', () => markAborted({ at: Date.now(), reason: ctx.signal.reason }), { once: true });
    return new Promise<never>(() => undefined);
  }) as NonNullable<Hooks[K]>;
  return { plugin: definePlugin({ name, setup: () => ({ hooks: { [hook]: fn } as Hooks }) }), seen: { started, aborted } };
}

/** `p`, or a rejection after `ms`: a feature that is missing fails the test instead of hanging it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

const reasonName = (r: unknown) => (r instanceof Error || r instanceof DOMException ? r.name : typeof r);
const reasonText = (r: unknown) => (r instanceof Error || r instanceof DOMException ? r.message : String(r));

t.test('a rcpt hook that never answers: its signal fires at hookTimeout with a TimeoutError, the client gets 451 4.3.0', async (t) => {
  const { plugin, seen } = hangingPlugin('sleeper', 'rcpt');
  const s = await startTestServer({ plugins: [plugin], config: { hookTimeout: '400ms' } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250);
  const reply = await c.command('RCPT TO:<postmaster@localhost>');
  t.equal(reply.code, 451);
  t.equal(reply.enhanced, '4.3.0');
  const started = await seen.started;
  const { at, reason } = await within(seen.aborted, 2000, 'the signal');
  const elapsed = at - started;
  t.ok(elapsed >= 380 && elapsed < 1500, `fired after ${elapsed} ms, at the 400 ms timeout`);
  t.equal(reasonName(reason), 'TimeoutError');
  t.match(reasonText(reason), /sleeper.*timed out after 400 ms.*rcpt/);
  await c.quit();
});

t.test('a hook awaiting forever: the signal fires when the client hangs up, with a reason that is not a timeout', async (t) => {
  const { plugin, seen } = hangingPlugin('waiter', 'rcpt');
  const s = await startTestServer({ plugins: [plugin], config: { hookTimeout: '30s' } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  await c.command('MAIL FROM:<a@example.net>');
  c.command('RCPT TO:<postmaster@localhost>').catch(() => undefined); // never answered: we hang up first
  await within(seen.started, 5000, 'the hook');
  const closedAt = Date.now();
  c.close();
  const { at, reason } = await within(seen.aborted, 5000, 'the signal');
  t.ok(at - closedAt < 2000, `fired ${at - closedAt} ms after the hang-up, long before the 30 s hookTimeout`);
  t.not(reasonName(reason), 'TimeoutError');
  t.equal(reasonName(reason), 'AbortError');
  t.match(reasonText(reason), /connection closed/);
  // The pipeline let the plugin go at once: its abandonment is logged (not as a plugin fault).
  await new Promise((r) => setTimeout(r, 50));
  const line = s.logs.find((l) => l.plugin === 'waiter' && typeof l.reason === 'string' && /abandoned/.test(l.reason));
  t.ok(line, 'abandonment logged');
  t.equal(line?.level, 30, 'at info level');
});

t.test('POP3: the auth hook signal fires when the client hangs up mid-login', async (t) => {
  const { plugin, seen } = hangingPlugin('slowauth', 'auth');
  const s = await startTestServer({
    listeners: [{ name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, plugins: [plugin] }],
    config: { hookTimeout: '30s' },
  });
  t.teardown(() => s.close());
  const c = await Pop3TestClient.connect(s.ports.pop3!);
  t.match(c.greeting, /^\+OK/);
  t.match(await c.command('USER alice@example.test'), /^\+OK/);
  c.write('PASS secret\r\n');
  await within(seen.started, 5000, 'the auth hook');
  const closedAt = Date.now();
  c.close();
  const { at, reason } = await within(seen.aborted, 5000, 'the signal');
  t.ok(at - closedAt < 2000, `fired ${at - closedAt} ms after the hang-up`);
  t.equal(reasonName(reason), 'AbortError');
});

t.test('deliver: the hook signal fires when the server closes', async (t) => {
  const { plugin, seen } = hangingPlugin('slowbox', 'deliver');
  const s = await startTestServer({ deliver: true, deliveryPlugins: [plugin], config: { hookTimeout: '60s' } });
  let closed = false;
  t.teardown(() => (closed ? undefined : s.close()));
  const c = await s.connect();
  await c.ehlo();
  const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: hi\r\n\r\nhello\r\n' });
  t.equal(r.data?.code, 250);
  await c.quit();
  await within(seen.started, 10_000, 'the deliver hook');
  const closing = Date.now();
  await s.close();
  closed = true;
  const { at, reason } = await within(seen.aborted, 1000, 'the signal');
  t.ok(at - closing < 8000, `fired ${at - closing} ms into the close (its drain is 5 s), not at the 60 s hookTimeout`);
  t.equal(reasonName(reason), 'AbortError');
  t.match(reasonText(reason), /queue stopping/);
});

/** A UDP DNS server that drops every query while `silent`, and otherwise answers A 127.0.0.2. */
async function startSilentDns(t: Test): Promise<{ address: string; queries: number; silent: boolean }> {
  const socket = dgram.createSocket('udp4');
  const state = { address: '', queries: 0, silent: true };
  socket.on('message', (msg, rinfo) => {
    state.queries++;
    if (state.silent) return;
    const q = dnsPacket.decode(msg);
    const answers: dnsPacket.Answer[] = (q.questions ?? []).filter((x) => x.type === 'A').map((x) => ({ name: x.name, type: 'A', ttl: 60, class: 'IN', data: '127.0.0.2' }));
    socket.send(dnsPacket.encode({ id: q.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers }), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  state.address = `127.0.0.1:${socket.address().port}`;
  t.teardown(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return state;
}

t.test('DNS: an aborted lookup settles at once as failed/aborted, not after the resolver timeout', async (t) => {
  const server = await startSilentDns(t);
  const dns = new NodeDns({ servers: [server.address], timeout: 2000, tries: 1 });
  const started = Date.now();
  const result = await dns.a('hung.example.test', { signal: AbortSignal.timeout(100) });
  const elapsed = Date.now() - started;
  t.same(result, { kind: 'failed', error: 'aborted' });
  t.ok(elapsed >= 90 && elapsed < 400, `settled after ${elapsed} ms`);
  t.ok(server.queries >= 1, 'the query was sent');

  const already = new AbortController();
  already.abort();
  const before = server.queries;
  t.same(await dns.mx('x.example.test', { signal: already.signal }), { kind: 'failed', error: 'aborted' }, 'an aborted signal: no query at all');
  t.equal(server.queries, before);

  const t0 = Date.now();
  const listed = await lookupDnsbl(dns, 'bl.example.test', '127.0.0.9', { txt: true, signal: AbortSignal.timeout(100) });
  t.match(listed, { kind: 'failed', error: 'aborted' }, 'a DNSBL query abandoned is failed, never "unlisted"');
  t.ok(Date.now() - t0 < 400);
  const fc = await dns.fcrdns('127.0.0.9', { signal: AbortSignal.timeout(100) });
  t.same(fc, { kind: 'failed', error: 'aborted' });
});

t.test('DNS cache: an aborted lookup is not cached, and lets only its own caller go', async (t) => {
  const server = await startSilentDns(t);
  const dns = new CachingDns(new TtlNodeDns({ servers: [server.address], timeout: 500, tries: 1 }), { cacheSize: 100, minTtl: 0, maxTtl: 3_600_000, negativeTtl: 60_000 });
  const started = Date.now();
  const patient = dns.a('h.example.test'); // shares the query in flight, without a signal
  const result = await dns.a('h.example.test', { signal: AbortSignal.timeout(100) });
  t.ok(Date.now() - started < 400, 'the aborted caller went at once');
  t.same(result, { kind: 'failed', error: 'aborted' });
  t.equal(dns.size, 0, 'nothing cached');
  t.match(await patient, { kind: 'failed' }, 'the other caller waited for the resolver');
  t.not((await patient as { error: string }).error, 'aborted');
  t.equal(dns.size, 0);
  server.silent = false;
  const fresh = await dns.a('h.example.test', { signal: AbortSignal.timeout(2000) });
  t.same(fresh, { kind: 'found', records: ['127.0.0.2'] }, 'the next lookup asks again');
  t.equal(dns.size, 1, 'a real answer is cached');
});

/** A TCP server that accepts and never answers: a hung spamd or clamd. */
async function startHungDaemon(t: Test): Promise<{ port: number; closed: Promise<void>; connected: Promise<void> }> {
  let markClosed!: () => void;
  let markConnected!: () => void;
  const closed = new Promise<void>((r) => (markClosed = r));
  const connected = new Promise<void>((r) => (markConnected = r));
  const sockets = new Set<net.Socket>();
  // allowHalfOpen: spamc half-closes after the request; a hung spamd keeps its side open.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    markConnected();
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    // A byte now and then (no line end, no NUL: still no answer), so a client that is
    // gone answers with a reset and 'close' comes although spamc half-closed first.
    const trickle = setInterval(() => socket.write('x'), 50);
    socket.on('close', () => {
      clearInterval(trickle);
      sockets.delete(socket);
      markClosed();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, closed, connected };
}

t.test('spamd client: a signal abandons the request at once and closes the socket', async (t) => {
  const daemon = await startHungDaemon(t);
  const client = new Spamc({ port: daemon.port, timeout: 30_000 });
  const controller = new AbortController();
  const started = Date.now();
  const call = client.symbols(Buffer.from('Subject: x\r\n\r\nbody\r\n'), undefined, { signal: controller.signal });
  await within(daemon.connected, 2000, 'the connection');
  setTimeout(() => controller.abort(new Error('hook timed out')), 100);
  await t.rejects(call, { message: 'hook timed out' });
  t.ok(Date.now() - started < 1000, `settled after ${Date.now() - started} ms`);
  await within(daemon.closed, 1000, "spamd's side of the socket closing");
  t.pass('the socket was closed');
});

t.test('clamd client: a signal abandons the scan at once and closes the socket', async (t) => {
  const daemon = await startHungDaemon(t);
  const controller = new AbortController();
  const started = Date.now();
  const input = Readable.from([Buffer.from('Subject: x\r\n\r\nbody\r\n')]);
  const call = scanStream({ host: '127.0.0.1', port: daemon.port }, input, { connectTimeout: 5000, timeout: 30_000 }, { signal: controller.signal });
  await within(daemon.connected, 2000, 'the connection');
  setTimeout(() => controller.abort(new Error('connection closed')), 100);
  await t.rejects(call, { message: 'connection closed' });
  t.ok(Date.now() - started < 1000, `settled after ${Date.now() - started} ms`);
  await within(daemon.closed, 1000, "clamd's side of the socket closing");
  t.ok(input.destroyed, 'the message stream was let go too');
});

t.test('store: an operation with a fired signal rejects with its reason and changes nothing', async (t) => {
  const dir = await tempDir(t);
  const stores = [new MemoryStore(), new SqliteKeyValueStore(path.join(dir, 'state.sqlite'))];
  t.teardown(() => Promise.all(stores.map((s) => s.close())));
  const gone = new AbortController();
  gone.abort(new Error('hook timed out'));
  for (const s of stores) {
    await t.rejects(s.set('k', 'v', undefined, { signal: gone.signal }), { message: 'hook timed out' });
    await t.rejects(s.incr('n', undefined, { signal: gone.signal }), { message: 'hook timed out' });
    t.equal(await s.get('k'), undefined, 'nothing was written');
    t.equal(await s.add('k', 'v', undefined, { signal: new AbortController().signal }), true, 'a live signal changes nothing');
  }
});

t.test('a hook that answers in time never sees its signal fire, and empty chains still answer', async (t) => {
  let signal: AbortSignal | undefined;
  const quick = definePlugin({
    name: 'quick',
    setup: () => ({
      hooks: {
        mail: (ctx) => {
          signal = ctx.signal;
          return answer.continue();
        },
      },
    }),
  });
  const s = await startTestServer({ plugins: [quick], config: { hookTimeout: '200ms' } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250);
  t.ok(signal, 'the context has a signal');
  await new Promise((r) => setTimeout(r, 400));
  t.equal(signal?.aborted, false, 'not aborted after the timeout would have passed');
  await c.quit();
});
