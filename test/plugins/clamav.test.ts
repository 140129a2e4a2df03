/**
 * clamav: the data-hook plugin against a real clamd (one custom EICAR
 * signature), and against fake servers for what clamd cannot be made to do
 * on demand (stay silent, be skipped).
 *
 * Found: the EICAR string base64-encoded in a multipart attachment is
 * detected by the raw .ndb body signature, because clamd recognises the
 * INSTREAM data as a mail file and scans the decoded MIME parts; no second
 * signature form is needed.
 */
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import t, { type Test } from 'tap';
import { startTestServer } from '../../core/testing/index.js';
import { parseInstreamReply, ping, scanStream } from '../../plugins/clamav/index.js';
import { needs, tempDir } from '../helpers.js';
import { EICAR, EICAR_SIGNATURE, startClamd } from '../peers/clamd.js';

const FROM = 'sender@example.net';
const TO = 'postmaster@localhost';

function mimeWithAttachment(content: string): string {
  const b64 = Buffer.from(content).toString('base64').replace(/.{1,76}/g, '$&\n');
  return [
    `From: <${FROM}>`,
    `To: <${TO}>`,
    'Subject: the file you asked for',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="=_b0undary"',
    '',
    'This is a multi-part message in MIME format.',
    '',
    '--=_b0undary',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'See the attachment.',
    '',
    '--=_b0undary',
    'Content-Type: application/octet-stream; name="eicar.com"',
    'Content-Transfer-Encoding: base64',
    'Content-Disposition: attachment; filename="eicar.com"',
    '',
    b64.trimEnd(),
    '',
    '--=_b0undary--',
    '',
  ].join('\n');
}

const CLEAN = `From: <${FROM}>\nTo: <${TO}>\nSubject: hello\n\nNothing to see here.\n`;

/** A fake clamd: counts connections, and either answers `reply` after the terminating chunk or stays silent. */
async function fakeClamd(t: Test, listen: { port: 0 } | { path: string }, reply?: string) {
  const state = { connections: 0, closed: 0, received: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    state.connections++;
    sockets.add(s);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      state.received += d.length;
      buf = Buffer.concat([buf, d]);
      if (reply !== undefined && buf.length >= 14 && buf.subarray(buf.length - 4).equals(Buffer.alloc(4))) s.end(reply);
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      state.closed++;
      sockets.delete(s);
    });
  });
  await new Promise<void>((resolve) => server.listen('path' in listen ? listen.path : { host: '127.0.0.1', port: 0 }, resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const port = 'path' in listen ? 0 : (server.address() as net.AddressInfo).port;
  return { state, port };
}

t.test('parseInstreamReply', async (t) => {
  t.same(parseInstreamReply('stream: OK'), { kind: 'clean' });
  t.same(parseInstreamReply('stream: Win.Test.EICAR_HDB-1 FOUND'), { kind: 'infected', signature: 'Win.Test.EICAR_HDB-1' });
  const failure = (reply: string) => {
    try {
      parseInstreamReply(reply);
      return undefined;
    } catch (err) {
      return err;
    }
  };
  t.match(failure('INSTREAM size limit exceeded. ERROR'), { name: 'ClamdError', reason: 'error' });
  t.match(failure('what?'), { name: 'ClamdError', reason: 'protocol' });
});

t.test('real clamd', needs('clamd'), async (t) => {
  const clamd = await startClamd(t);
  const target = { host: clamd.host, port: clamd.port };
  const limits = { timeout: 10_000, connectTimeout: 2_000 };

  t.test('client: PING, EICAR in three chunks, hello', async (t) => {
    t.ok(await ping(target, limits), 'PONG');
    const e = Buffer.from(EICAR);
    const three = Readable.from([e.subarray(0, 20), e.subarray(20, 40), e.subarray(40)]);
    t.match(await scanStream(target, three, limits), { kind: 'infected', signature: EICAR_SIGNATURE, bytes: 68 });
    t.match(await scanStream(target, Readable.from([Buffer.from('hello')]), limits), { kind: 'clean', bytes: 5 });
  });

  const s = await startTestServer({ plugins: ['clamav'], pluginOptions: { clamav: { host: clamd.host, port: clamd.port } } });
  t.teardown(() => s.close());

  t.test('EICAR as a base64 MIME attachment → 554 naming the signature, logged', async (t) => {
    const data = mimeWithAttachment(EICAR);
    t.notOk(data.includes(EICAR), 'the raw string is not in the message, only its base64');
    const c = await s.connect();
    await c.ehlo();
    const r = await c.mail({ from: FROM, to: TO, data });
    await c.quit();
    t.equal(r.data?.code, 554);
    t.equal(r.data?.enhanced, '5.7.1');
    t.equal(r.data?.text, `Virus found: ${EICAR_SIGNATURE}`);
    t.equal((await s.queued()).length, 0, 'nothing queued');
    const line = s.logs.find((l) => l.plugin === 'clamav' && l.result === 'infected');
    t.match(line, { signature: EICAR_SIGNATURE, elapsedMs: Number });
  });

  t.test('a clean message is accepted with X-Virus-Scanned: clamav', async (t) => {
    const c = await s.connect();
    await c.ehlo();
    const r = await c.mail({ from: FROM, to: TO, data: CLEAN });
    await c.quit();
    t.equal(r.data?.code, 250);
    const q = await s.queued();
    t.equal(q.length, 1);
    t.match(q[0]!.text, /^X-Virus-Scanned: clamav\r?$/m);
    t.ok(s.logs.some((l) => l.plugin === 'clamav' && l.result === 'clean' && typeof l.elapsedMs === 'number'), 'logged clean');
  });

  t.test("clamd's own size limit (StreamMaxLength) is no verdict → 451 with onError defer", async (t) => {
    const small = await startClamd(t, { streamMaxLength: '1K' });
    const d = await startTestServer({ plugins: ['clamav'], pluginOptions: { clamav: { host: small.host, port: small.port, onError: 'defer' } } });
    t.teardown(() => d.close());
    const c = await d.connect();
    await c.ehlo();
    const r = await c.mail({ from: FROM, to: TO, data: CLEAN + 'x'.repeat(70) + '\n'.repeat(1) + ('y'.repeat(70) + '\n').repeat(40) });
    await c.quit();
    t.equal(r.data?.code, 451);
    t.match(d.logs.find((l) => l.plugin === 'clamav' && l.result === 'unchecked'), { reason: 'error', err: /size limit/ });
  });

  t.test('clamd stopped: accept unchecked by default, 451 with onError defer; both logged', async (t) => {
    const d = await startTestServer({ plugins: ['clamav'], pluginOptions: { clamav: { host: clamd.host, port: clamd.port, onError: 'defer' } } });
    t.teardown(() => d.close());
    await clamd.stop();
    const before = (await s.queued()).length;

    const c = await s.connect();
    await c.ehlo();
    const r = await c.mail({ from: FROM, to: TO, data: CLEAN });
    await c.quit();
    t.equal(r.data?.code, 250, 'accepted');
    const q = await s.queued();
    t.equal(q.length, before + 1);
    t.match(q.at(-1)!.text, /^X-Virus-Scanned: unchecked \(clamd unavailable\)\r?$/m);
    t.match(s.logs.find((l) => l.plugin === 'clamav' && l.result === 'unchecked'), { reason: 'connect', onError: 'accept' });

    const c2 = await d.connect();
    await c2.ehlo();
    const r2 = await c2.mail({ from: FROM, to: TO, data: CLEAN });
    await c2.quit();
    t.equal(r2.data?.code, 451);
    t.equal(r2.data?.enhanced, '4.7.1');
    t.equal((await d.queued()).length, 0);
    t.match(d.logs.find((l) => l.plugin === 'clamav' && l.result === 'unchecked'), { reason: 'connect', onError: 'defer' });
  });
});

t.test('a message over maxSize is skipped without contacting clamd', async (t) => {
  const fake = await fakeClamd(t, { port: 0 }, 'stream: OK\0');
  const s = await startTestServer({ plugins: ['clamav'], pluginOptions: { clamav: { port: fake.port, maxSize: 1000 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const r = await c.mail({ from: FROM, to: TO, data: CLEAN + ('z'.repeat(70) + '\n').repeat(30) });
  t.equal(r.data?.code, 250);
  t.equal(fake.state.connections, 0, 'clamd never contacted');
  t.match(s.logs.find((l) => l.plugin === 'clamav' && l.result === 'skipped'), { maxSize: 1000 });
  t.match((await s.queued())[0]!.text, /^X-Virus-Scanned: unchecked \(message too large\)\r?$/m);

  // A small one goes to the same fake and is scanned.
  const r2 = await c.mail({ from: FROM, to: TO, data: CLEAN });
  await c.quit();
  t.equal(r2.data?.code, 250);
  t.equal(fake.state.connections, 1, 'the small one was sent');
});

t.test('clamd that accepts and never answers: our timeout fires and the socket is destroyed', async (t) => {
  const fake = await fakeClamd(t, { port: 0 });
  const s = await startTestServer({ plugins: ['clamav'], pluginOptions: { clamav: { port: fake.port, timeout: 500 } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const started = Date.now();
  const r = await c.mail({ from: FROM, to: TO, data: CLEAN });
  const took = Date.now() - started;
  await c.quit();
  t.equal(r.data?.code, 250, 'accepted unchecked (default onError)');
  t.ok(took >= 450 && took < 5_000, `answered after the timeout (${took} ms)`);
  t.match((await s.queued())[0]!.text, /^X-Virus-Scanned: unchecked \(clamd unavailable\)\r?$/m);
  t.match(s.logs.find((l) => l.plugin === 'clamav' && l.result === 'unchecked'), { reason: 'timeout', err: /500 ms/ });
  t.equal(fake.state.connections, 1);
  t.ok(fake.state.received > 0, 'the message was streamed');
  for (let i = 0; i < 50 && fake.state.closed < 1; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(fake.state.closed, 1, 'our side closed the connection');
});

t.test('Unix socket', async (t) => {
  const dir = await tempDir(t);
  const sock = path.join(dir, 'clamd.sock');
  const fake = await fakeClamd(t, { path: sock }, 'stream: Fake.Sig FOUND\0');
  const s = await startTestServer({ plugins: ['clamav'], pluginOptions: { clamav: { socket: sock } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const r = await c.mail({ from: FROM, to: TO, data: CLEAN });
  await c.quit();
  t.equal(r.data?.code, 554);
  t.equal(r.data?.text, 'Virus found: Fake.Sig');
  t.equal(fake.state.connections, 1);
});
