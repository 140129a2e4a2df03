/** STARTTLS and implicit TLS: injection safety, session reset, and clients that break the handshake. */
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { SmtpTestClient, startTestServer } from '../core/testing/index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('STARTTLS is offered and works; afterwards the session starts over', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { tls: 'starttls' } });
  t.teardown(() => s.close());
  const c = await s.connect();
  const ehlo = await c.ehlo();
  t.ok(ehlo.lines.some((l) => l.endsWith('STARTTLS')), 'STARTTLS advertised');
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250, 'a transaction begun in clear text');
  t.equal((await c.startTls()).code, 220);
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 503, 'the clear-text transaction is gone');
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 503, 'and so is the EHLO');
  const again = await c.ehlo();
  t.notOk(again.lines.some((l) => l.endsWith('STARTTLS')), 'no STARTTLS inside TLS');
  const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: tls\n\nsecret\n' });
  t.equal(r.data?.code, 250);
  const [m] = await s.queued();
  t.match(m!.text, /with ESMTPS id/, 'the Received header records TLS');
  await c.quit();
});

for (const injected of ['EHLO evil.example', 'RSET', 'MAIL FROM:<evil@example.net>']) {
  t.test(`STARTTLS injection: "STARTTLS\\r\\n${injected}\\r\\n" in one packet gets no reply after the handshake`, async (t) => {
    const s = await startTestServer({ plugins: ['rcpthosts'], listener: { tls: 'starttls' } });
    t.teardown(() => s.close());
    const c = await s.connect();
    await c.ehlo();
    c.write(`STARTTLS\r\n${injected}\r\n`);
    const go = await c.read();
    t.equal(go.code, 220);
    await c.upgrade();
    // Anything answered now would be the injected command's reply.
    await sleep(400);
    const seen = await c.read(200).then(
      (r) => r,
      () => undefined,
    );
    t.equal(seen, undefined, 'no reply to the plaintext that followed STARTTLS');
    t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 503, 'the injected EHLO did not count');
    t.equal((await c.ehlo()).code, 250);
    await c.quit();
  });
}

t.test('implicit TLS listener', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { tls: 'implicit' } });
  t.teardown(() => s.close());
  const c = await s.connect({ tls: true });
  t.equal(c.greeting?.code, 220);
  const ehlo = await c.ehlo();
  t.notOk(ehlo.lines.some((l) => l.endsWith('STARTTLS')));
  const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: smtps\n\nx\n' });
  t.equal(r.data?.code, 250);
  await c.quit();
});

t.test('broken TLS clients never take the server down', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listeners: [
    { name: 'submission', tls: 'starttls', plugins: ['rcpthosts'] },
    { name: 'smtps', tls: 'implicit', plugins: ['rcpthosts'] },
  ] });
  t.teardown(() => s.close());

  // 1. STARTTLS, then garbage instead of a ClientHello.
  const a = await s.connect({ listener: 'submission' });
  await a.ehlo();
  a.write('STARTTLS\r\n');
  t.equal((await a.read()).code, 220);
  a.write('this is not TLS\r\n\r\n');
  t.ok(await a.waitClosed(5000), 'garbage handshake: connection closed');

  // 2. A client that refuses the self-signed certificate and sends an alert.
  const b = await s.connect({ listener: 'submission' });
  await b.ehlo();
  b.write('STARTTLS\r\n');
  t.equal((await b.read()).code, 220);
  const raw = (b as unknown as { socket: net.Socket }).socket;
  raw.removeAllListeners('data');
  await new Promise<void>((resolve) => {
    const secure = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: true });
    secure.on('error', () => resolve());
    secure.on('secureConnect', () => resolve());
  });

  // 3. Plain text on the implicit TLS port, and a socket reset mid-handshake.
  const plain = net.connect(s.ports.smtps!, '127.0.0.1');
  plain.on('error', () => undefined);
  plain.write('EHLO clear.example\r\n');
  await sleep(200);
  plain.destroy();
  const reset = net.connect(s.ports.smtps!, '127.0.0.1');
  reset.on('error', () => undefined);
  await new Promise((r) => reset.once('connect', r));
  reset.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x50, 0x01]));
  reset.resetAndDestroy();
  await sleep(300);

  // The server still serves both listeners.
  const c = await s.connect({ listener: 'submission' });
  t.equal(c.greeting?.code, 220);
  t.equal((await c.startTls()).code, 220);
  t.equal((await c.ehlo()).code, 250);
  await c.quit();
  const d = await SmtpTestClient.connect(s.ports.smtps!, { tls: true });
  t.equal(d.greeting?.code, 220);
  await d.quit();
  t.ok(s.logs.some((l) => l.msg === 'client connection error'), 'the failures were logged');
});
