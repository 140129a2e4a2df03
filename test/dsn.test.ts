/**
 * DSN (RFC 3461), LIMITS (RFC 9422) and REQUIRETLS (RFC 8689) end to end:
 * Python's smtplib sends with the DSN parameters, the queue honours them
 * (success, delay and failure notices, RET, ENVID, ORCPT) and passes them on
 * to a next hop that announces DSN; REQUIRETLS mail fails rather than travel
 * in clear or to an unverified server.
 */
import t from 'tap';
import { startSink } from './peers/sink.js';
import { injectMessage, maildir, rig } from './queue-rig.js';
import { needs, run, tempDir } from './helpers.js';
import { selfSignedKeyPair } from '../core/tls.js';

/** Sends one message with smtplib: MAIL options for all, RCPT options per recipient (`addr|OPT OPT`). */
const PY_SEND = `
import smtplib, sys, json
port, sender, mail_opts, rcpts, body = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
with smtplib.SMTP('127.0.0.1', port, local_hostname='python.example') as s:
    s.ehlo()
    assert s.has_extn('dsn'), 'DSN announced'
    print('LIMITS', s.esmtp_features.get('limits', ''))
    code, msg = s.mail(sender, mail_opts)
    assert code == 250, (code, msg)
    for addr, opts in rcpts:
        code, msg = s.rcpt(addr, opts)
        assert code == 250, (addr, code, msg)
    code, msg = s.data(body.encode())
    print(code, msg.decode())
`;

async function pySend(port: number, sender: string, mailOpts: string[], rcpts: Array<[string, string[]]>, body = 'Subject: dsn test\r\nMessage-ID: <dsn@example.test>\r\n\r\nthe body line\r\n'): Promise<string> {
  const r = await run('python3', ['-c', PY_SEND, String(port), sender, JSON.stringify(mailOpts), JSON.stringify(rcpts), body]);
  if (r.code !== 0) throw new Error(`smtplib failed: ${r.stderr}`);
  return r.stdout;
}

const RCPTHOSTS = { rcpthosts: { domains: ['example.test', 'localhost', 'remote.test'] } };

t.test('NOTIFY=SUCCESS,DELAY to a local mailbox: a success notice with ENVID and ORCPT; the mail is delivered', needs('python3'), async (t) => {
  const { server } = await rig(t, { config: {} });
  const out = await pySend(server.port, 'alice@example.test', ['RET=HDRS', 'ENVID=env+2B1'], [['bob@example.test', ['NOTIFY=SUCCESS,DELAY', 'ORCPT=rfc822;Bob+2Bx@example.test']]]);
  t.match(out, /LIMITS RCPTMAX=100/, 'LIMITS announced with the listener\'s recipient limit');
  t.match(out, /250 2\.0\.0 Ok: queued as/);
  await server.server.queue.idle();
  t.equal((await maildir(server, 'example.test', 'bob')).length, 1, 'delivered');
  const [report] = await maildir(server, 'example.test', 'alice');
  t.ok(report, 'the sender has a report');
  t.match(report, /^Return-Path: <>\n/);
  t.match(report, /\nSubject: Successful Mail Delivery Report\n/);
  t.match(report, /\nOriginal-Envelope-Id: env\+1\n/, 'ENVID, decoded from xtext');
  t.match(report, /\nOriginal-Recipient: rfc822;Bob\+x@example\.test\nFinal-Recipient: rfc822; bob@example\.test\nAction: delivered\nStatus: 2\.0\.0\n/);
  t.match(report, /Content-Type: text\/rfc822-headers\n\n[^]*Subject: dsn test\n/, 'headers only');
  t.notMatch(report, /the body line/);
  t.ok(server.logs.some((l) => l.event === 'success-notice'), 'logged');
  t.same(await server.server.spool.list(), [], 'the queue is empty');
});

t.test('NOTIFY=NEVER that fails: no bounce; the recipient without NOTIFY beside it gets one', async (t) => {
  const { server, clock } = await rig(t, { sink: { rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) } });
  const id = await injectMessage(server, { to: [{ address: 'quiet@remote.test', params: { NOTIFY: 'NEVER' } }, 'loud@remote.test'], received: clock.now() });
  await server.server.queue.idle();
  const bounces = await maildir(server, 'example.test', 'alice');
  t.equal(bounces.length, 1, 'one bounce');
  t.match(bounces[0], /Final-Recipient: rfc822; loud@remote\.test/);
  t.notMatch(bounces[0], /quiet@remote\.test/, 'the NOTIFY=NEVER recipient is not in it');
  t.ok(server.logs.some((l) => l.event === 'bounce' && l.result === 'not-requested' && l.id === id));
  t.same(await server.server.spool.list(), []);
});

t.test('NOTIFY=NEVER alone that fails: no bounce at all (smtplib end to end)', needs('python3'), async (t) => {
  const { server, sink } = await rig(t, { sink: { rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) }, plugins: RCPTHOSTS });
  await pySend(server.port, 'alice@example.test', [], [['gone@remote.test', ['NOTIFY=NEVER']]]);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 0);
  t.same(await maildir(server, 'example.test', 'alice'), [], 'no bounce');
  t.same(await server.server.spool.list(), [], 'nothing left in the queue');
});

t.test('a next hop that announces DSN is handed NOTIFY, ORCPT, RET and ENVID, and we send no success notice', needs('python3'), async (t) => {
  const { server, sink } = await rig(t, { sink: { dsn: true }, plugins: RCPTHOSTS });
  await pySend(server.port, 'alice@example.test', ['RET=FULL', 'ENVID=abc+2Bdef'], [
    ['one@remote.test', ['NOTIFY=SUCCESS', 'ORCPT=rfc822;one+2Bx@remote.test']],
    ['two@remote.test', ['NOTIFY=SUCCESS', 'ORCPT=rfc822;two@remote.test']],
    ['three@remote.test', []],
  ]);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 3, 'one transaction per distinct NOTIFY/ORCPT');
  const one = sink.messages.find((m) => m.to.includes('one@remote.test'))!;
  t.equal(one.mailParams.RET, 'FULL');
  t.equal(one.mailParams.ENVID, 'abc+def', 'ENVID arrives as the client meant it (xtext there and back)');
  t.same(one.rcptParams, [{ NOTIFY: 'SUCCESS', ORCPT: 'rfc822;one+x@remote.test' }]);
  const three = sink.messages.find((m) => m.to.includes('three@remote.test'))!;
  t.same(three.rcptParams, [{}], 'no NOTIFY where the client gave none');
  t.same(await maildir(server, 'example.test', 'alice'), [], 'the next hop reports success, not us');
});

t.test('a next hop without DSN: the sender is told the message was relayed', needs('python3'), async (t) => {
  const { server, sink } = await rig(t, { plugins: RCPTHOSTS });
  await pySend(server.port, 'alice@example.test', [], [['far@remote.test', ['NOTIFY=SUCCESS,FAILURE']]]);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1);
  t.same(sink.messages[0]!.rcptParams, [{}], 'nothing of DSN sent to a server that did not announce it');
  const [report] = await maildir(server, 'example.test', 'alice');
  t.match(report, /Final-Recipient: rfc822; far@remote\.test\nAction: relayed\nStatus: 2\.0\.0\n/);
  t.match(report, /<far@remote\.test>: \(relayed\)/);
});

t.test('RET=FULL returns the whole message in a failure notice; RET=HDRS its headers', async (t) => {
  const { server, clock } = await rig(t, { sink: { rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) } });
  for (const ret of ['FULL', 'HDRS']) {
    await injectMessage(server, { to: ['x@remote.test'], senderParams: { RET: ret }, body: `Subject: ret ${ret}\r\n\r\nbody of ${ret}\r\n`, received: clock.now() });
  }
  await server.server.queue.idle();
  const bounces = await maildir(server, 'example.test', 'alice');
  const full = bounces.find((b) => b.includes('Subject: ret FULL'))!;
  const hdrs = bounces.find((b) => b.includes('Subject: ret HDRS'))!;
  t.match(full, /Content-Type: message\/rfc822\n\nSubject: ret FULL\n\nbody of FULL\n/, 'the whole message');
  t.match(hdrs, /Content-Type: text\/rfc822-headers\n\nSubject: ret HDRS\n/);
  t.notMatch(hdrs, /body of HDRS/);
});

t.test('NOTIFY=DELAY: a delay notice after 4 h without delayWarning; NOTIFY=FAILURE: none', async (t) => {
  const { server, clock } = await rig(t, { sink: { rcpt: () => ({ code: 451, message: '4.4.0 later' }) } });
  const delayed = await injectMessage(server, { to: [{ address: 'slow@remote.test', params: { NOTIFY: 'DELAY,FAILURE' } }], received: clock.now() });
  await injectMessage(server, { sender: 'carol@example.test', to: [{ address: 'slow2@remote.test', params: { NOTIFY: 'FAILURE' } }], received: clock.now() });
  await server.server.queue.idle();
  for (let i = 0; i < 8; i++) {
    clock.advance(2000_000);
    server.server.queue.wake();
    await server.server.queue.idle();
  }
  const notes = await maildir(server, 'example.test', 'alice');
  t.equal(notes.length, 1, 'one delay notice');
  t.match(notes[0], /Subject: Delayed Mail \(still being retried\)/);
  t.match(notes[0], /Action: delayed\nStatus: 4\.4\.0/);
  t.same(await maildir(server, 'example.test', 'carol'), [], 'NOTIFY without DELAY: no notice');
  t.ok(await server.server.spool.has(delayed), 'still queued');
});

t.test('LIMITS: MAILMAX and RCPTDOMAINMAX announced and held', async (t) => {
  const { server: s } = await rig(t, { plugins: RCPTHOSTS, listener: { limits: { maxMessagesPerConnection: 1, maxRecipientDomains: 1 } } });
  const c = await s.connect();
  const ehlo = await c.ehlo('client.example');
  t.ok(ehlo.lines.some((l) => /^250[- ]LIMITS RCPTMAX=100 MAILMAX=1 RCPTDOMAINMAX=1$/.test(l)), ehlo.lines.join(' | '));
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.test>')).code, 250);
  const other = await c.command('RCPT TO:<x@remote.test>');
  t.equal(other.code, 452);
  t.equal(other.enhanced, '4.5.3');
  t.match(other.text, /Too many recipient domains \(at most 1 per message\)/);
  t.equal((await c.command('RSET')).code, 250);
  const second = await c.command('MAIL FROM:<a@example.net>');
  t.equal(second.code, 421, 'a second message in the connection');
  t.equal(second.enhanced, '4.7.0');
  t.match(second.text, /Too many messages in one connection \(at most 1\)/);
  c.close();
});

t.test('REQUIRETLS: announced only over TLS, refused in clear; a message with it fails rather than go to a server in clear or unverified', async (t) => {
  const pair = await selfSignedKeyPair(await tempDir(t), 'mx.remote.test');
  const unverified = await startSink({ tls: pair });
  t.teardown(() => unverified.close());
  const { server, sink: clear, clock } = await rig(t, { listener: { tls: 'starttls' } });
  const c = await server.connect();
  const plain = await c.ehlo('client.example');
  t.notOk(plain.lines.some((l) => /REQUIRETLS/.test(l)), 'not in clear');
  t.equal((await c.command('MAIL FROM:<a@example.net> REQUIRETLS')).code, 530, 'REQUIRETLS refused without TLS');
  await c.startTls();
  const secure = await c.ehlo('client.example');
  t.ok(secure.lines.some((l) => /^250[- ]REQUIRETLS$/.test(l)), 'announced after STARTTLS');
  t.equal((await c.command('MAIL FROM:<a@example.net> REQUIRETLS')).code, 250);
  c.close();

  await injectMessage(server, { to: ['x@remote.test'], senderParams: { REQUIRETLS: true }, received: clock.now() });
  await server.server.queue.idle();
  t.equal(clear.messages.length, 0, 'never sent in clear');
  const [bounce] = await maildir(server, 'example.test', 'alice');
  t.match(bounce, /Status: 5\.7\.10/);
  t.match(bounce, /REQUIRETLS/);
  t.match(bounce, /Content-Type: text\/rfc822-headers/, 'headers only (RFC 8689 5)');
  t.notMatch(bounce, /\n\nbody\n/, 'not the body');

  // The same to a server with STARTTLS and REQUIRETLS but a certificate nobody vouches for.
  const { server: other, clock: otherClock } = await rig(t, { sinkPeer: unverified });
  await injectMessage(other, { to: ['y@remote.test'], senderParams: { REQUIRETLS: true }, received: otherClock.now() });
  await other.server.queue.idle();
  t.equal(unverified.messages.length, 0, 'never sent to an unverified server');
  const [bounce2] = await maildir(other, 'example.test', 'alice');
  t.match(bounce2, /Status: 5\.7\.10/);
});

t.test('the bounce of a REQUIRETLS message is queued with REQUIRETLS itself (RFC 8689 5)', async (t) => {
  const { server, clock } = await rig(t, { config: { queue: { concurrencyLocal: 0 } } });
  const id = await injectMessage(server, { to: ['x@remote.test'], senderParams: { REQUIRETLS: true }, received: clock.now() });
  await server.server.queue.idle();
  const queued = (await server.server.spool.list()).filter((m) => m !== id);
  t.equal(queued.length, 1, 'one bounce waiting for the held local channel');
  const env = await server.server.spool.readEnvelope(queued[0]!);
  t.equal(env.kind, 'bounce');
  t.same(env.senderParams, { REQUIRETLS: true }, 'REQUIRETLS on the bounce');
});

t.test('BODY=BINARYMIME cannot be relayed with DATA: returned 5.6.3, not sent', async (t) => {
  const { server, sink, clock } = await rig(t);
  await injectMessage(server, { to: ['bin@remote.test'], senderParams: { BODY: 'BINARYMIME' }, received: clock.now() });
  await server.server.queue.idle();
  t.equal(sink.messages.length, 0, 'never sent');
  const [bounce] = await maildir(server, 'example.test', 'alice');
  t.match(bounce, /Status: 5\.6\.3/);
  t.match(bounce, /BINARYMIME/);
});
