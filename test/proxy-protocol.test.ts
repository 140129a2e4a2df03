/**
 * PROXY protocol v1 and v2 (issue 16): on a listener with `proxy`, the client a
 * trusted proxy names is the one tcprules, the per-IP limits, the log, the
 * Received line and POP3 logins see; a peer that is not a trusted proxy is
 * refused, and a bad, oversized or missing header drops the connection.
 * Everything over loopback, the "proxy" being the test itself on 127.0.0.1.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { parseProxyHeader, V1_MAX_LENGTH } from '../core/net/proxy-protocol.js';
import { Pop3TestClient, SmtpTestClient, startTestServer, type TestListener, type TestServer } from '../core/testing/index.js';
import { serve, sleep, tempDir, waitFor, yubin } from './helpers.js';

// ---- headers, as a proxy writes them ----

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** A v2 PROXY (command 1) header for TCP over IPv4, with optional TLV bytes after the addresses. */
function v2(src: string, dst = '127.0.0.1', sport = 40001, dport = 25, tlvs = Buffer.alloc(0)): Buffer {
  const block = Buffer.alloc(12);
  src.split('.').forEach((o, i) => (block[i] = Number(o)));
  dst.split('.').forEach((o, i) => (block[4 + i] = Number(o)));
  block.writeUInt16BE(sport, 8);
  block.writeUInt16BE(dport, 10);
  return v2Raw(0x21, 0x11, Buffer.concat([block, tlvs]));
}

/** A v2 header from its version/command byte, family/protocol byte and address block. */
function v2Raw(versionCommand: number, family: number, block: Buffer, length = block.length): Buffer {
  const head = Buffer.alloc(4);
  head[0] = versionCommand;
  head[1] = family;
  head.writeUInt16BE(length, 2);
  return Buffer.concat([SIGNATURE, head, block]);
}

const v1 = (src: string, dst = '127.0.0.1', sport = 40001, dport = 25) => `PROXY TCP4 ${src} ${dst} ${sport} ${dport}\r\n`;

// ---- the parser on its own ----

t.test('parser: v1 and v2, whole, in pieces and malformed', async (t) => {
  t.same(parseProxyHeader(Buffer.from(v1('192.0.2.7'))), { state: 'done', length: v1('192.0.2.7').length, header: { remoteIp: '192.0.2.7', remotePort: 40001, localIp: '127.0.0.1', localPort: 25 } });
  t.match(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\nEHLO')), { state: 'done', length: 40, header: { remoteIp: '2001:db8::7', localIp: '2001:db8::1' } });
  t.match(parseProxyHeader(Buffer.from('PROXY TCP6 2001:DB8:0:0::07 ::FFFF:192.0.2.1 1 2\r\n')), { state: 'done', header: { remoteIp: '2001:db8::7', localIp: '192.0.2.1' } }, 'v1 IPv6 in its short form, IPv4-mapped as IPv4');
  t.match(parseProxyHeader(Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n')), { state: 'done', header: 'own' });
  t.same(parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7')), { state: 'more' }, 'half a v1 line waits for more');
  t.same(parseProxyHeader(Buffer.from('PRO')), { state: 'more' });
  t.same(parseProxyHeader(SIGNATURE.subarray(0, 7)), { state: 'more' }, 'half a v2 signature waits for more');
  const full = v2('192.0.2.7');
  t.same(parseProxyHeader(full.subarray(0, 20)), { state: 'more' }, 'half a v2 address block waits for more');
  t.same(parseProxyHeader(Buffer.concat([full, Buffer.from('EHLO x\r\n')])), { state: 'done', length: 28, header: { remoteIp: '192.0.2.7', remotePort: 40001, localIp: '127.0.0.1', localPort: 25 } });
  t.match(parseProxyHeader(v2('192.0.2.7', '127.0.0.1', 1, 2, Buffer.from([0x04, 0x00, 0x03, 1, 2, 3]))), { state: 'done', length: 34, header: { remoteIp: '192.0.2.7' } }, 'TLVs skipped');
  const six = Buffer.alloc(36);
  Buffer.from([0x20, 0x01, 0x0d, 0xb8]).copy(six, 0);
  six[15] = 7;
  six[16 + 15] = 1;
  six.writeUInt16BE(1025, 32);
  t.match(parseProxyHeader(v2Raw(0x21, 0x21, six)), { state: 'done', header: { remoteIp: '2001:db8::7', localIp: '::1', remotePort: 1025 } }, 'IPv6 in its short form');
  const mapped = Buffer.alloc(36);
  mapped.writeUInt16BE(0xffff, 10);
  Buffer.from([192, 0, 2, 9]).copy(mapped, 12);
  t.match(parseProxyHeader(v2Raw(0x21, 0x21, mapped)), { state: 'done', header: { remoteIp: '192.0.2.9' } }, 'IPv4-mapped IPv6 is the IPv4 address');
  t.match(parseProxyHeader(v2Raw(0x20, 0x00, Buffer.alloc(0))), { state: 'done', header: 'own' }, 'LOCAL');
  t.match(parseProxyHeader(v2Raw(0x21, 0x00, Buffer.alloc(0))), { state: 'done', header: 'own' }, 'PROXY with UNSPEC');

  const bad: Array<[string, Buffer, RegExp]> = [
    ['an SMTP command', Buffer.from('EHLO x\r\n'), /not a PROXY header/],
    ['TCP5', Buffer.from('PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n'), /unknown protocol/],
    ['a bad address', Buffer.from('PROXY TCP4 999.1.1.1 1.2.3.5 1 2\r\n'), /address not TCP4/],
    ['an IPv6 address as TCP4', Buffer.from('PROXY TCP4 ::1 1.2.3.5 1 2\r\n'), /address not TCP4/],
    ['a port out of range', Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n'), /bad port/],
    ['a bare LF', Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n'), /CRLF/],
    ['two spaces', Buffer.from('PROXY TCP4  1.2.3.4 1.2.3.5 1 2\r\n'), /expected PROXY/],
    ['a v1 line too long', Buffer.from(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_LENGTH)}`), /longer than 107/],
    ['version 1 in a v2 header', v2Raw(0x11, 0x11, Buffer.alloc(12)), /version 1/],
    ['command 2', v2Raw(0x22, 0x11, Buffer.alloc(12)), /unknown command/],
    ['family 4', v2Raw(0x21, 0x41, Buffer.alloc(12)), /unknown address family/],
    ['a short address block', v2Raw(0x21, 0x11, Buffer.alloc(8)), /8 bytes, 12 needed/],
    ['a 64 KiB header', v2Raw(0x21, 0x11, Buffer.alloc(0), 65535), /over the limit/],
  ];
  for (const [what, buf, reason] of bad) {
    const r = parseProxyHeader(buf);
    t.equal(r.state, 'invalid', what);
    if (r.state === 'invalid') t.match(r.reason, reason, what);
  }
});

// ---- SMTP ----

/** Tells the client, at MAIL, what IP the session has and what tcprules set. */
const echo = definePlugin({
  name: 'echo-ip',
  setup: () => ({
    hooks: {
      mail: ({ connection }) => answer.accept(`ip=${connection.remoteIp}:${connection.remotePort} local=${connection.localIp}:${connection.localPort} env=${JSON.stringify(connection.state.env)}`, 250, '2.1.0'),
    },
  }),
});

const RULES = ['192.0.2.7:deny', '192.0.2.8:allow,RELAYCLIENT="",WHO="proxied"', '127.0.0.1:allow,WHO="loopback"', ''].join('\n');

async function smtpServer(t: Test, listeners: ReadonlyArray<Omit<TestListener, 'plugins'>>): Promise<TestServer> {
  const dir = await tempDir(t);
  const file = path.join(dir, 'tcp.smtp');
  await writeFile(file, RULES);
  const s = await startTestServer({
    listeners: listeners.map((l) => ({ ...l, plugins: ['tcprules', echo, 'rcpthosts'] })),
    pluginOptions: { tcprules: { file }, rcpthosts: { domains: ['example.test'] } },
  });
  t.teardown(() => s.close());
  return s;
}

async function connect(t: Test, s: TestServer, listener: string, preamble?: Buffer | string, options: { tls?: boolean; timeout?: number } = {}): Promise<SmtpTestClient> {
  const c = await s.connect({ listener, preamble, ...options });
  t.teardown(() => c.close());
  return c;
}

/** What the session's MAIL hook says about the client, after EHLO. */
async function whoAmI(c: SmtpTestClient): Promise<string> {
  await c.ehlo();
  const r = await c.command('MAIL FROM:<a@example.net>');
  await c.command('RSET');
  return r.text;
}

/** Waits until the server closes; true if it did. */
async function droppedSilently(t: Test, c: SmtpTestClient, what: string): Promise<void> {
  t.equal(c.greeting, undefined, `${what}: no greeting`);
  await c.waitClosed();
  t.equal(c.received, '', `${what}: not a byte`);
}

const PROXIED = [{ name: 'smtp', proxy: { trusted: ['10.0.0.0/8', '127.0.0.1', '::1'], timeout: '400ms' } }];

t.test('v2 from a trusted proxy: tcprules, relaying, the Received line and the log see the proxied client', async (t) => {
  const s = await smtpServer(t, PROXIED);

  const denied = await connect(t, s, 'smtp', v2('192.0.2.7'));
  await droppedSilently(t, denied, 'tcprules denies 192.0.2.7');
  t.ok(s.logs.some((l) => l.plugin === 'tcprules' && l.action === 'disconnect' && l.ip === '192.0.2.7'), 'the deny is logged for 192.0.2.7');

  const c = await connect(t, s, 'smtp', v2('192.0.2.8', '198.51.100.25', 40123, 25));
  t.equal(c.greeting?.code, 220, 'greeted');
  t.match(await whoAmI(c), 'ip=192.0.2.8:40123 local=198.51.100.25:25 env={"RELAYCLIENT":"","WHO":"proxied"}');
  const sent = await c.mail({ from: 'a@example.net', to: 'someone@elsewhere.example', data: 'Subject: hi\n\nthrough the proxy\n' });
  t.equal(sent.rcpt[0]?.code, 250, 'RELAYCLIENT from the rule for 192.0.2.8 lets it relay');
  t.equal(sent.data?.code, 250);
  await c.quit();
  const [queued] = await s.queued();
  t.match(queued?.text, /^Received: from client\.example\.test \(\[192\.0\.2\.8\]\)/, 'the Received line names 192.0.2.8');
  t.equal(queued?.envelope.remoteIp, '192.0.2.8', "the envelope's remoteIp");
  t.ok(s.logs.some((l) => l.event === 'connect' && l.ip === '192.0.2.8' && l.port === 40123), 'the connect log line has ip 192.0.2.8');
  t.notOk(s.logs.some((l) => l.event === 'connect' && l.ip === '127.0.0.1'), 'the proxy itself is never the client');

  // A command in the same segment as the header reaches the session: answered as a command (or as an early talker's, if
  // it is parsed before the greeting goes out), never taken for part of the header.
  const raw = net.connect({ port: s.ports.smtp!, host: '127.0.0.1' });
  t.teardown(() => raw.destroy());
  raw.write(Buffer.concat([v2('192.0.2.8'), Buffer.from('QUIT\r\n')]));
  let got = '';
  raw.on('data', (d: Buffer) => (got += d.toString()));
  await new Promise((r) => raw.once('close', r));
  t.match(got, /^(?:220 [^\r]*\r\n221 |554 5\.5\.1 )/, "the bytes after the header are the session's");
});

t.test('v1 likewise; PROXY UNKNOWN and v2 LOCAL keep the real address', async (t) => {
  const s = await smtpServer(t, PROXIED);
  await droppedSilently(t, await connect(t, s, 'smtp', v1('192.0.2.7')), 'v1: tcprules denies 192.0.2.7');
  const c = await connect(t, s, 'smtp', v1('192.0.2.8', '127.0.0.1', 50000, 2525));
  t.match(await whoAmI(c), 'ip=192.0.2.8:50000 local=127.0.0.1:2525 env={"RELAYCLIENT":"","WHO":"proxied"}');

  const unknown = await connect(t, s, 'smtp', 'PROXY UNKNOWN\r\n');
  t.match(await whoAmI(unknown), /^ip=127\.0\.0\.1:\d+ .*"WHO":"loopback"/, 'UNKNOWN: the socket address');
  const local = await connect(t, s, 'smtp', v2Raw(0x20, 0x11, Buffer.alloc(12, 9)));
  t.match(await whoAmI(local), /^ip=127\.0\.0\.1:\d+ .*"WHO":"loopback"/, 'LOCAL: the socket address, whatever the block says');
  const unspec = await connect(t, s, 'smtp', v2Raw(0x21, 0x00, Buffer.alloc(0)));
  t.match(await whoAmI(unspec), /^ip=127\.0\.0\.1:\d+/, 'PROXY with UNSPEC: the socket address');
});

t.test('a peer that is not a trusted proxy is refused, its header never read; without proxy a PROXY line is an unknown command', async (t) => {
  const s = await smtpServer(t, [{ name: 'behind', proxy: { trusted: ['10.0.0.0/8'] } }, { name: 'plain' }]);
  const c = await connect(t, s, 'behind', v2('192.0.2.8'));
  t.equal(c.greeting?.code, 421, '421');
  t.match(c.greeting?.text, /^mx\.test Connections through the proxy only/);
  t.equal(c.greeting?.enhanced, '4.7.0');
  await c.waitClosed();
  const line = s.logs.find((l) => l.listener === 'behind' && l.reason === 'not a trusted proxy');
  t.equal(line?.ip, '127.0.0.1', 'logged with the peer, not the address it claimed');
  t.notOk(s.logs.some((l) => l.ip === '192.0.2.8'), 'nobody saw 192.0.2.8');
  const bare = await connect(t, s, 'behind');
  t.equal(bare.greeting?.code, 421, 'without a header too');

  const plain = await connect(t, s, 'plain');
  t.equal(plain.greeting?.code, 220);
  const r = await plain.command('PROXY TCP4 192.0.2.8 127.0.0.1 1 25');
  t.equal(r.code, 500, 'a listener without proxy: an unknown command, as before');
  t.match(await whoAmI(plain), /^ip=127\.0\.0\.1:/);
});

t.test('malformed, oversized and missing headers drop the connection; the listener keeps serving', async (t) => {
  const s = await smtpServer(t, PROXIED);
  const cases: Array<[string, Buffer | string | undefined, RegExp]> = [
    ['SMTP instead of a header', 'EHLO x\r\n', /not a PROXY header/],
    ['a bad v1 address', 'PROXY TCP4 192.0.2.300 127.0.0.1 1 25\r\n', /address not TCP4/],
    ['an unknown v2 command', v2Raw(0x2f, 0x11, Buffer.alloc(12)), /unknown command/],
    ['a v1 line with no end', `PROXY TCP4 ${'1'.repeat(150)}`, /longer than 107/],
    ['a v2 header of 64 KiB', v2Raw(0x21, 0x11, Buffer.alloc(100), 65535), /over the limit/],
    ['no header at all', undefined, /no complete PROXY header within 400 ms/],
    ['half a header', SIGNATURE.subarray(0, 10), /no complete PROXY header within 400 ms/],
  ];
  for (const [what, preamble, reason] of cases) {
    const before = s.logs.length;
    const started = Date.now();
    const c = await connect(t, s, 'smtp', preamble);
    await droppedSilently(t, c, what);
    t.ok(Date.now() - started < 5_000, `${what}: dropped in time`);
    const line = await waitFor(() => s.logs.slice(before).find((l) => l.msg === 'bad PROXY header, connection dropped'));
    t.match(line, { listener: 'smtp', ip: '127.0.0.1', reason }, `${what}: one line naming the listener, peer and reason`);
  }
  const ok = await connect(t, s, 'smtp', v2('192.0.2.8'));
  t.equal(ok.greeting?.code, 220, 'still serving');
  t.notOk(s.logs.some((l) => l.event === 'connect' && l.ip === '127.0.0.1'), 'no session was ever opened for a dropped connection');
});

t.test('implicit TLS: the header comes before the handshake', async (t) => {
  const s = await smtpServer(t, [{ name: 'smtps', tls: 'implicit', proxy: { trusted: ['127.0.0.1'] } }]);
  const c = await connect(t, s, 'smtps', v2('192.0.2.8'), { tls: true });
  t.equal(c.greeting?.code, 220);
  t.match(await whoAmI(c), /^ip=192\.0\.2\.8:40001 /);
});

t.test('per-IP limits count the proxied client, not the proxy', async (t) => {
  const s = await smtpServer(t, [{ ...PROXIED[0], limits: { maxConnectionsPerIp: 1 } }]);
  const a = await connect(t, s, 'smtp', v2('192.0.2.8'));
  t.equal(a.greeting?.code, 220);
  const b = await connect(t, s, 'smtp', v2('192.0.2.8'));
  t.equal(b.greeting?.code, 421, 'a second connection from 192.0.2.8');
  const c = await connect(t, s, 'smtp', v2('192.0.2.9'));
  t.equal(c.greeting?.code, 220, 'another client through the same proxy');
  // Parked (idle after the greeting) and woken again: still 192.0.2.9.
  await sleep(50);
  t.match(await whoAmI(c), /^ip=192\.0\.2\.9:/);
});

// ---- POP3 ----

t.test('POP3 behind a proxy: the login sees and logs the proxied client; untrusted peers and bad headers are refused', async (t) => {
  const dir = path.join(await tempDir(t), 'Maildir');
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(dir, sub), { recursive: true });
  const seen: string[] = [];
  const box = definePlugin({
    name: 'one-box',
    setup: () => ({
      hooks: {
        auth(ctx) {
          seen.push(ctx.connection.remoteIp);
          if (!ctx.verify('secret')) return answer.reject(535, '5.7.8', 'no');
          ctx.mailbox(dir);
          return answer.accept('welcome', 235, '2.7.0');
        },
      },
    }),
  });
  const s = await startTestServer({
    listeners: [
      { name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, plugins: [box], proxy: { trusted: ['127.0.0.1'], timeout: '300ms' } },
      { name: 'pop3-10', protocol: 'pop3', allowInsecureAuth: true, plugins: [box], proxy: { trusted: ['10.0.0.0/8'] } },
    ],
  });
  t.teardown(() => s.close());

  const c = await Pop3TestClient.connect(s.ports.pop3!, { preamble: v2('192.0.2.8', '127.0.0.1', 41000, 110) });
  t.teardown(() => c.close());
  t.match(c.greeting, /^\+OK /);
  t.equal(await c.command('USER alice'), '+OK');
  t.match(await c.command('PASS secret'), /^\+OK /);
  t.same(seen, ['192.0.2.8'], 'the auth hook sees 192.0.2.8');
  t.ok(s.logs.some((l) => l.event === 'login' && l.ip === '192.0.2.8' && l.user === 'alice'), 'the login is logged with ip 192.0.2.8');
  await c.command('QUIT');

  const v1c = await Pop3TestClient.connect(s.ports.pop3!, { preamble: v1('192.0.2.9') });
  t.teardown(() => v1c.close());
  await v1c.command('USER alice');
  await v1c.command('PASS secret');
  t.equal(seen.at(-1), '192.0.2.9', 'v1 too');

  const untrusted = await Pop3TestClient.connect(s.ports['pop3-10']!, { preamble: v2('192.0.2.8') });
  t.teardown(() => untrusted.close());
  t.equal(untrusted.greeting, '-ERR [SYS/PERM] connections through the proxy only', 'a peer outside 10.0.0.0/8 is refused');

  for (const [what, preamble] of [
    ['garbage', 'USER alice\r\n'],
    ['nothing', undefined],
  ] as const) {
    const before = s.logs.length;
    const dropped = await Pop3TestClient.connect(s.ports.pop3!, { preamble }).then(
      (x) => x.greeting,
      (err: Error) => `closed: ${err.message}`,
    );
    t.notMatch(dropped, /^\+OK/, `${what}: no greeting`);
    t.ok(await waitFor(() => s.logs.slice(before).find((l) => l.listener === 'pop3' && l.msg === 'bad PROXY header, connection dropped')), `${what}: logged`);
  }
  t.equal(seen.length, 2, 'no login from any refused connection');
});

// ---- config ----

t.test('a bad proxy address is a one-line config error naming the key', async (t) => {
  const dir = await tempDir(t);
  const cases: Array<[string, RegExp]> = [
    ['[127.0.0.1, 10.0.0.0/33]', /bad\.yaml:\d+: listeners\[0\]\(smtp\)\.proxy\.trusted\[1\]: bad CIDR block 10\.0\.0\.0\/33$/],
    ['[proxy.example]', /listeners\[0\]\(smtp\)\.proxy\.trusted\[0\]: not an IP address, CIDR block or prefix: proxy\.example$/],
    ['[]', /listeners\[0\]\(smtp\)\.proxy\.trusted: name at least one proxy address or CIDR block$/],
  ];
  for (const [trusted, expected] of cases) {
    await writeFile(path.join(dir, 'bad.yaml'), `listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n    proxy:\n      trusted: ${trusted}\n`);
    const r = await yubin(['check-config', '--config', path.join(dir, 'bad.yaml')]);
    t.equal(r.code, 2, `${trusted}: exit 2`);
    t.match(r.stderr.trim(), expected, r.stderr.trim());
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
  await writeFile(path.join(dir, 'good.yaml'), 'listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n    proxy: { trusted: [10.0.0.0/8, "::1"] }\n');
  const good = await yubin(['check-config', '--config', path.join(dir, 'good.yaml')]);
  t.equal(good.code, 0, good.stderr);
  t.match(good.stdout, /^  proxy: PROXY header \(v1 or v2\) required from 10\.0\.0\.0\/8, ::1 within 5 s; other peers refused$/m, 'check-config says what the listener expects');
});

// ---- workers ----

t.test('workers: the primary counts per-IP slots by the proxied client', async (t) => {
  const dir = await tempDir(t, 'yubin-proxy-workers-');
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    [
      'dataDir: ./var',
      'workers: 2',
      'shutdownTimeout: 2s',
      'listeners:',
      '  - name: smtp',
      '    protocol: smtp',
      '    listen: 127.0.0.1:0',
      '    proxy: { trusted: [127.0.0.1] }',
      '    limits: { maxConnectionsPerIp: 2 }',
      '',
    ].join('\n'),
  );
  const server = await serve(t, config, 1);
  const port = server.ports.smtp!;
  const open: SmtpTestClient[] = [];
  t.teardown(() => open.forEach((c) => c.close()));
  const one = async (ip: string) => {
    const c = await SmtpTestClient.connect(port, { preamble: v2(ip) });
    open.push(c);
    return c.greeting?.code;
  };
  t.equal(await one('192.0.2.8'), 220);
  t.equal(await one('192.0.2.8'), 220);
  t.equal(await one('192.0.2.8'), 421, 'the third from 192.0.2.8, whichever worker it went to');
  t.equal(await one('192.0.2.9'), 220, 'another client through the same proxy is its own count');
  await waitFor(() => (server.logs.filter((l) => l.event === 'connect').length >= 4 ? true : undefined));
  t.same(new Set(server.logs.filter((l) => l.event === 'connect').map((l) => l.ip)), new Set(['192.0.2.8', '192.0.2.9']), 'the workers log the proxied clients');
  for (const c of open) c.close();
  t.equal(await server.stop(), 0);
});
