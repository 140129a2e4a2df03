/**
 * The contract between core/smtp/smtp-server-adapter.ts and the installed
 * smtp-server. An upgrade that moves, renames or retypes an internal the
 * adapter relies on fails here, naming the member, before it can silently
 * switch off smuggling protection or the session hooks.
 *
 * Part one looks at a stock SMTPServer and the connection and parser it
 * makes for a real loopback client; part two checks through yubin's own
 * listener that each hook the adapter installs takes effect.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { SMTPServer } from 'smtp-server';
import { answer, definePlugin } from '../core/index.js';
import {
  AdaptedConnection,
  AdaptedServer,
  DataInspectingStream,
  SMTP_SERVER_INTERNALS,
  SMTP_SERVER_VERSION,
  isTlsHandshakeError,
  type InternalMember,
} from '../core/smtp/smtp-server-adapter.js';
import { startTestServer } from '../core/testing/index.js';

const installed = (createRequire(import.meta.url)('smtp-server/package.json') as { version: string }).version;
const pinned = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> }).dependencies['smtp-server'];

function kindOf(value: unknown): string {
  if (value instanceof Map) return 'Map';
  if (value instanceof Set) return 'Set';
  return value === null ? 'null' : typeof value;
}

/** Each member the adapter lists, on a real object: present, of its kind, with its arity. */
function checkMembers(t: Test, owner: string, target: object, members: Readonly<Record<string, InternalMember>>): void {
  for (const [name, want] of Object.entries(members)) {
    const value: unknown = Reflect.get(target, name);
    t.equal(kindOf(value), want.kind, `smtp-server ${installed}: ${owner}.${name} should be a ${want.kind}, the adapter relies on it`);
    if (want.arity !== undefined && typeof value === 'function') {
      t.equal(value.length, want.arity, `smtp-server ${installed}: ${owner}.${name} should take ${want.arity} argument(s), the adapter calls or overrides it so`);
    }
  }
}

/** A raw loopback client that waits for a reply matching a pattern. */
function rawClient(port: number): Promise<{ socket: net.Socket; until(re: RegExp): Promise<string>; closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1');
  let received = '';
  const waiting = new Set<() => void>();
  socket.on('data', (d: Buffer) => {
    received += d.toString('latin1');
    for (const check of waiting) check();
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const until = (re: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${re} in ${JSON.stringify(received)}`)), 5000);
      const check = () => {
        const m = re.exec(received);
        if (!m) return;
        received = received.slice(m.index + m[0].length);
        waiting.delete(check);
        clearTimeout(timer);
        resolve(m[0]);
      };
      waiting.add(check);
      check();
    });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve({ socket, until, closed }));
    socket.once('error', reject);
  });
}

function listen(server: SMTPServer): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.server.address() as net.AddressInfo).port)));
}

t.test('the installed smtp-server is the version the adapter was written for', async (t) => {
  t.equal(installed, SMTP_SERVER_VERSION, `installed smtp-server ${installed}, adapter written for ${SMTP_SERVER_VERSION}: check every member in SMTP_SERVER_INTERNALS, then update both`);
  t.equal(pinned, SMTP_SERVER_VERSION, `package.json must pin smtp-server exactly to ${SMTP_SERVER_VERSION} (no range), found ${pinned}`);
});

t.test('a stock server, its connection and parser have every internal the adapter uses', async (t) => {
  t.equal(Object.getPrototypeOf(AdaptedServer.prototype), SMTPServer.prototype, 'AdaptedServer extends the SMTPServer smtp-server exports');

  let inData: { sameStream: boolean; dataMode: unknown } | undefined;
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    closeTimeout: 100,
    onData(stream, _session, callback) {
      const conn = [...server.connections][0]!;
      const parser: unknown = Reflect.get(conn, '_parser');
      inData = { sameStream: Reflect.get(conn, '_dataStream') === stream, dataMode: parser && Reflect.get(parser, '_dataMode') };
      stream.resume();
      stream.on('end', () => callback());
    },
  });
  const port = await listen(server);
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  checkMembers(t, 'SMTPServer', server, SMTP_SERVER_INTERNALS.server);

  const c = await rawClient(port);
  await c.until(/^220 .*\r\n/m);
  t.equal(server.connections.size, 1, 'connect() put the connection in server.connections');
  const conn = [...server.connections][0]!;
  t.equal(
    Object.getPrototypeOf(conn),
    Object.getPrototypeOf(AdaptedConnection.prototype),
    'the SMTPConnection the adapter extends (smtp-server/lib/smtp-connection) is the class SMTPServer.connect() makes',
  );
  checkMembers(t, 'SMTPConnection', conn, SMTP_SERVER_INTERNALS.connection);
  t.equal(Reflect.get(conn, '_ready'), true, 'SMTPConnection._ready is true once the greeting is out');
  t.equal(Reflect.get(conn, '_upgrading'), false, 'SMTPConnection._upgrading is false outside STARTTLS');
  t.ok(Reflect.get(conn, '_socket') instanceof net.Socket, 'SMTPConnection._socket is the socket');
  const getHandler: unknown = Reflect.get(conn, '_getHandler');
  for (const verb of ['HELO', 'EHLO', 'AUTH']) {
    t.equal(
      typeof getHandler === 'function' && Reflect.apply(getHandler, conn, [verb]),
      Reflect.get(conn, `handler_${verb}`),
      `SMTPConnection dispatches ${verb} to handler_${verb} (the adapter overrides it by that name)`,
    );
  }

  t.equal(typeof Reflect.apply(getHandler as (v: string) => unknown, conn, ['BDAT']), 'undefined', 'smtp-server has no BDAT of its own (the adapter adds handler_BDAT; an upgrade that brings one must be reconciled)');
  t.equal(Reflect.apply(getHandler as (v: string) => unknown, conn, ['DATA']), Reflect.get(conn, 'handler_DATA'), 'SMTPConnection dispatches DATA to handler_DATA (the adapter wraps it by that name)');
  const validate = (args: Record<string, string | true>): unknown => Reflect.apply(Reflect.get(conn, '_validateMailParams') as (p: unknown) => unknown, conn, [{ address: 'a@example.net', args }]);
  t.equal(validate({ BODY: '8BITMIME' }), null, '_validateMailParams(parsed) returns null for a good MAIL FROM');
  t.match(validate({ BODY: 'BINARYMIME' }), { code: 501 }, 'and refuses BODY=BINARYMIME, which the adapter takes past it');

  const parser: unknown = Reflect.get(conn, '_parser');
  t.ok(parser && typeof parser === 'object', 'SMTPConnection._parser is the parser');
  if (parser && typeof parser === 'object') {
    t.equal(Object.getPrototypeOf(parser), Object.getPrototypeOf(DataInspectingStream.prototype), 'DataInspectingStream extends the SMTPStream class the connection parses with (smtp-server/lib/smtp-stream)');
    checkMembers(t, 'SMTPStream', parser, SMTP_SERVER_INTERNALS.stream);
  }

  c.socket.write('EHLO client.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n');
  await c.until(/^354 .*\r\n/m);
  t.equal(Reflect.get(conn, '_transactionCounter'), 0, 'SMTPConnection._transactionCounter counts messages (none yet)');
  t.equal(Reflect.get(conn, '_handlerPending'), false, 'SMTPConnection._handlerPending is false while the client sends the message');
  c.socket.write('Subject: x\r\n\r\nbody\r\n.\r\n');
  await c.until(/^250 .*queued.*\r\n/m);
  t.same(inData, { sameStream: true, dataMode: true }, 'during DATA, SMTPConnection._dataStream is the onData stream and SMTPStream._dataMode is true');
  // What answerMessage() does after a BDAT LAST is what handler_DATA does after the dot.
  t.equal(Reflect.get(conn, '_transactionCounter'), 1, 'handler_DATA counts the message in _transactionCounter');
  t.equal(Reflect.get(conn, '_dataStream'), false, 'and sets _dataStream back to false');
  t.equal(Reflect.get(conn, '_unrecognizedCommands'), 0, '_unrecognizedCommands is a number handler_DATA resets');
  t.equal(Reflect.get(conn, '_closing'), false, 'SMTPConnection._closing is false while open');
  conn.close();
  t.equal(Reflect.get(conn, '_closing'), true, 'SMTPConnection._closing is set by close()');
  await c.closed;
});

t.test('implicit TLS: sockets in the handshake are in _pendingSockets, failures carry meta.stage', async (t) => {
  const server = new SMTPServer({ logger: false, secure: true, disableReverseLookup: true, closeTimeout: 100 });
  const errors: Error[] = [];
  server.on('error', (err: Error) => errors.push(err));
  const port = await listen(server);
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));

  // A client that never starts the handshake is pending; the adapter's drain ends it.
  const idle = await rawClient(port);
  await new Promise((r) => setTimeout(r, 50));
  AdaptedServer.prototype.destroyPendingSockets.call(server);
  await idle.closed;
  t.pass('destroyPendingSockets() ended a socket still before its TLS handshake (SMTPServer._pendingSockets)');

  // Plain text where a ClientHello belongs: a handshake failure before any session.
  const garbage = await rawClient(port);
  garbage.socket.write('EHLO client.example\r\n');
  await garbage.closed;
  await new Promise((r) => setTimeout(r, 50));
  t.ok(
    errors.some((err) => isTlsHandshakeError(err)),
    `a failed implicit TLS handshake is reported with err.meta.stage "connect" (got ${JSON.stringify(errors.map((e) => (e as Error & { meta?: unknown }).meta))})`,
  );
});

t.test('_handleProxy runs before the implicit TLS handshake, under the pending guard, and its socket options are the connection\'s addresses', async (t) => {
  let pendingDuring = false;
  let sawPlainSocket = false;
  class Proxied extends SMTPServer {
    override _expectsProxyHeader(): boolean {
      return true;
    }
    override _handleProxy(socket: net.Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
      pendingDuring = this._pendingSockets.has(socket);
      sawPlainSocket = !(socket instanceof tls.TLSSocket);
      setTimeout(() => callback(null, { id: 'contract000000001', remoteAddress: '192.0.2.7', remotePort: 4321, localAddress: '198.51.100.1', localPort: 25 }), 20);
    }
  }
  let session: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number } | undefined;
  const server = new Proxied({
    logger: false,
    secure: true,
    disableReverseLookup: true,
    closeTimeout: 100,
    onConnect(s, callback) {
      session = { remoteAddress: s.remoteAddress, remotePort: s.remotePort, localAddress: s.localAddress, localPort: s.localPort };
      callback();
    },
  });
  const port = await listen(server);
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
  t.teardown(() => c.destroy());
  await new Promise((resolve) => c.once('data', resolve));
  t.ok(sawPlainSocket, '_handleProxy gets the TCP socket, before the TLS handshake');
  t.ok(pendingDuring, 'with _expectsProxyHeader() true, the socket is in _pendingSockets while _handleProxy runs');
  t.same(session, { remoteAddress: '192.0.2.7', remotePort: 4321, localAddress: '198.51.100.1', localPort: 25 }, 'the socket options _handleProxy gives are the session\'s addresses');
});

// ---- the adapter's hooks take effect on yubin's listener ----

const smuggle = 'Subject: first\r\n\r\nfirst message\n.\nMAIL FROM:<admin@bank.example>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n';

t.test('the strict DATA parser is installed: a bare-LF smuggling attempt gets 451, also after STARTTLS', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { tls: 'starttls' } });
  t.teardown(() => s.close());
  for (const starttls of [false, true]) {
    const c = await s.connect();
    if (starttls) t.equal((await c.startTls()).code, 220); // smtp-server makes a new parser for the TLS session
    await c.ehlo();
    t.equal((await c.command('MAIL FROM:<user@sender.example>')).code, 250);
    t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250);
    t.equal((await c.command('DATA')).code, 354);
    c.write(smuggle);
    const reply = await c.read();
    t.equal(reply.code, 451, `${starttls ? 'after STARTTLS' : 'plain'}: the bare LF is refused (DataInspectingStream via _createParser)`);
    t.match(reply.text, /smtplf/);
    t.ok(await c.waitClosed(3000), 'and the connection is closed');
  }
  t.same(await s.queued(), [], 'nothing was queued');
});

t.test('BDAT reaches handler_BDAT; a chunk in the same read as its command goes to the byte-count mode', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<a@example.net> BODY=BINARYMIME')).code, 250, 'BODY=BINARYMIME gets past _validateMailParams');
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250);
  t.equal((await c.command('DATA')).code, 503, 'DATA goes through the dataCommand hook (handler_DATA)');
  const body = 'Subject: x\r\n\r\nRSET\r\n';
  c.write(`BDAT ${body.length} LAST\r\n${body}NOOP\r\n`);
  const last = await c.read();
  t.equal(last.code, 250, `BDAT LAST answered by onData's reply: ${last.text}`);
  t.match(last.text, /queued as/);
  t.equal((await c.read()).code, 250, 'NOOP after it (handed back by the parser through _write)');
  t.equal((await s.queued()).length, 1);
  await c.quit();
});

t.test("greeting, HELO/EHLO and AUTH are yubin's, at once", async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { greeting: 'contract' } });
  t.teardown(() => s.close());
  const c = await s.connect();
  t.equal(c.greeting?.code, 220, 'greeted (socketReady via init(), sendGreeting via _sendGreeting)');
  t.match(c.greeting?.text ?? '', / contract$/, "the listener's greeting, not smtp-server's");
  t.equal((await c.command('EHLO not a hostname')).code, 501, 'a malformed EHLO is refused by the greet hook');
  const ehlo = await c.ehlo();
  t.equal(ehlo.code, 250);
  t.notMatch(ehlo.lines[0] ?? '', /Nice to meet you/, "the EHLO reply is the helo hook's, not smtp-server's handler_EHLO");
  t.ok(ehlo.lines.some((l) => /ENHANCEDSTATUSCODES/.test(l)), "with yubin's extension list");
  const auth = await c.command('AUTH PLAIN');
  t.equal(auth.code, 502, `AUTH goes through the authCommand hook (${auth.code} ${auth.text})`);
  await c.quit();
});

t.test("a silent refusal by a connect hook closes without a word (refuse via _refuse; smtp-server's would say 421)", async (t) => {
  const silent = definePlugin({
    name: 'silent-refusal',
    setup: () => ({ hooks: { connect: async () => answer.disconnect('go away', '4.7.0', { silent: true }) } }),
  });
  const s = await startTestServer({ plugins: [silent] });
  t.teardown(() => s.close());
  const c = await s.connect({ timeout: 3000 });
  t.equal(c.greeting, undefined, 'no reply at all');
  t.ok(await c.waitClosed(3000), 'and the connection is closed');
});

const holdGreeting = definePlugin({
  name: 'hold-greeting',
  setup: () => ({
    hooks: {
      async connect() {
        await new Promise((r) => setTimeout(r, 300));
        return answer.continue();
      },
    },
  }),
});

t.test('a command before the greeting reaches the earlyTalker hook (554, not 421)', async (t) => {
  const s = await startTestServer({ plugins: [holdGreeting] });
  t.teardown(() => s.close());
  const c = await rawClient(s.port);
  c.socket.write('EHLO early.example\r\n');
  const reply = await c.until(/^\d{3} .*\r\n/m);
  t.match(reply, /^554 5\.5\.1 /, `early talker answered by the hook: ${reply.trim()}`);
  await c.closed;
});

t.test("the idle timeout is the connection's own (_armTimeout): firstCommandTimeout cuts a silent client", async (t) => {
  const s = await startTestServer({ listener: { limits: { firstCommandTimeout: '1s' } } });
  t.teardown(() => s.close());
  const started = Date.now();
  const c = await s.connect({ timeout: 8000 });
  const reply = await c.read();
  t.equal(reply.code, 421, `timed out with 421 after ${Date.now() - started} ms`);
  t.ok(Date.now() - started < 8000, "long before smtp-server's socketTimeout");
});
