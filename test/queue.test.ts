/**
 * The queue end to end over real sockets: local Maildir delivery, remote
 * delivery to an SMTP sink found through a loopback DNS server, retries on
 * qmail's schedule with a clock the test moves, bounces in RFC 3464 shape,
 * double and triple bounces, lifetime expiry, and restarts mid-schedule.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { ManualClock } from '../core/index.js';
import { startTestServer } from '../core/testing/index.js';
import { startDnsServer } from './peers/dns.js';
import { startSink } from './peers/sink.js';
import { BIRTH, inject, maildir, rig, send } from './queue-rig.js';
import { freePort, freePorts, tempDir } from './helpers.js';
import { selfSignedKeyPair } from '../core/tls.js';

t.test('a message to a local address lands in its Maildir (Return-Path, Delivered-To, LF line ends, nothing in tmp)', async (t) => {
  const { server } = await rig(t);
  const id = await send(server, 'alice@example.net', ['Bob@example.test']);
  await server.server.queue.idle();
  const mails = await maildir(server, 'example.test', 'bob');
  t.equal(mails.length, 1);
  const lines = mails[0]!.split('\n');
  t.equal(lines[0], 'Return-Path: <alice@example.net>');
  t.equal(lines[1], 'Delivered-To: bob@example.test');
  t.match(lines[2], /^Received: from client\.example/);
  t.notOk(mails[0]!.includes('\r'), 'stored with LF line ends, as qmail stores them');
  t.match(mails[0], /\n\nhello there\n$/);
  t.same(await readdir(path.join(server.dataDir, 'mail/example.test/bob/Maildir/tmp')), []);
  t.same(await server.server.spool.list(), [], 'the queue is empty once delivered');
  const names = await readdir(path.join(server.dataDir, 'mail/example.test/bob/Maildir/new'));
  t.match(names[0], /^\d+\.M\d+P\d+Q\d+\.[^,]+,S=\d+,W=\d+$/, 'unique time.MusecPpidQseq.host name with Maildir++ size and CRLF size');
  t.ok(server.logs.some((l) => l.event === 'delivery' && l.id === id && l.result === 'success'), 'the delivery is logged');
});

t.test('remote: MX through the DNS service, one SMTP transaction for two recipients of one domain', async (t) => {
  const { server, sink, dns } = await rig(t);
  // Queued the way sendmail and bounces queue: the relay guard is SMTP's business, not the queue's.
  const id = await inject(server, 'alice@example.test', ['one@remote.test', 'two@remote.test'], 'Subject: out\r\n\r\nbody\r\n');
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'one transaction');
  t.same(sink.messages[0]!.to, ['one@remote.test', 'two@remote.test']);
  t.equal(sink.messages[0]!.from, 'alice@example.test');
  t.match(sink.messages[0]!.data, /Subject: out/);
  t.ok(dns.queries.some((q) => q.name === 'remote.test' && q.type === 'MX'), 'asked for the MX');
  t.same(await server.server.spool.list(), []);
  t.ok(id);
});

t.test('a mail store that cannot say which domains are local (PostgreSQL down): remote delivery waits instead of sending our own mail away', async (t) => {
  const { server, sink, clock } = await rig(t);
  let down = true;
  const remove = server.server.services.localDomains.addSource({ has: () => false, list: () => [], incomplete: () => down });
  t.teardown(remove);
  const id = await inject(server, 'alice@example.test', ['someone@remote.test']);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 0, 'not sent');
  const state = await server.server.spool.readState(id);
  t.equal(state?.recipients[0]?.status, 'pending', 'deferred');
  t.match(state?.recipients[0]?.error, /Cannot tell now whether remote\.test is one of my domains: a mail store is unavailable/);
  down = false;
  clock.advance(400_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'sent once the store answers again');
});

t.test('451 then 250: deferred on qmail schedule (birth + 400 s), retried, delivered once', async (t) => {
  const { server, sink, clock } = await rig(t, { sink: { data: (n) => (n === 1 ? { code: 451, message: '4.3.0 try later' } : undefined) } });
  const id = await inject(server, 'alice@example.test', ['one@remote.test']);
  await server.server.queue.idle();
  t.equal(sink.dataAttempts, 1);
  t.equal(sink.messages.length, 0);
  const state = await server.server.spool.readState(id);
  t.equal(state?.recipients[0]?.status, 'pending');
  t.equal(state?.recipients[0]?.next, BIRTH + 400_000, 'next = birth + (0 + 20)^2 s');
  t.match(state?.recipients[0]?.error, /451 4\.3\.0 try later/);
  clock.advance(399_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.equal(sink.dataAttempts, 1, 'not before its time');
  clock.advance(1_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.equal(sink.dataAttempts, 2);
  t.equal(sink.messages.length, 1, 'delivered once');
  t.same(await server.server.spool.list(), []);
});

t.test('a held local channel does not stop the remote recipients of the same message from being retried', async (t) => {
  const { server, sink, clock } = await rig(t, { sink: { data: (n) => (n === 1 ? { code: 451, message: '4.3.0 later' } : undefined) }, config: { queue: { concurrencyLocal: 0 } } });
  const id = await inject(server, 'alice@example.test', ['bob@example.test', 'far@remote.test']);
  await server.server.queue.idle();
  t.equal(sink.dataAttempts, 1);
  clock.advance(400_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'the remote recipient got it on its retry');
  const st = await server.server.spool.readState(id);
  t.same(
    st?.recipients.map((r) => r.status),
    ['pending', 'delivered'],
    'the local one still waits for its channel',
  );
  t.same(server.server.queue.counts(), { waiting: 0, active: 0, held: 1 });
});

t.test('a configured retry list replaces the qmail schedule', async (t) => {
  const { server, sink, clock } = await rig(t, { sink: { data: (n) => (n < 3 ? { code: 451, message: '4.3.0 later' } : undefined) }, config: { queue: { retry: ['60s', '2m'] } } });
  const id = await inject(server, 'alice@example.test', ['one@remote.test']);
  await server.server.queue.idle();
  t.equal((await server.server.spool.readState(id))?.recipients[0]?.next, BIRTH + 60_000);
  clock.advance(60_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.equal((await server.server.spool.readState(id))?.recipients[0]?.next, BIRTH + 60_000 + 120_000);
  clock.advance(120_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1);
  t.equal(sink.dataAttempts, 3);
});

t.test('550: a bounce in RFC 3464 shape reaches the local sender\'s Maildir', async (t) => {
  const { server, sink } = await rig(t, { sink: { rcpt: (a) => (a.startsWith('nobody') ? { code: 550, message: '5.1.1 no such user here' } : undefined) } });
  const id = await inject(server, 'alice@example.test', ['nobody@remote.test', 'nobody2@remote.test', 'ok@remote.test']);
  await server.server.queue.idle();
  t.same(sink.messages.map((m) => m.to), [['ok@remote.test']], 'the accepted recipient got it');
  const bounces = await maildir(server, 'example.test', 'alice');
  t.equal(bounces.length, 1, 'both failed recipients in one bounce');
  const b = bounces[0]!;
  t.match(b, /^Return-Path: <>\n/, 'null sender');
  t.match(b, /\nFrom: MAILER-DAEMON <MAILER-DAEMON@mx\.test>\n/);
  t.match(b, /\nTo: alice@example\.test\n/);
  t.match(b, /Content-Type: multipart\/report; report-type=delivery-status; boundary="([^"]+)"/);
  t.match(b, /\n<nobody@remote\.test>:\nRemote host mx\.remote\.test said: 550 5\.1\.1 no such user here\n/, 'qmail-style paragraph');
  t.match(b, /Content-Type: message\/delivery-status\n\nReporting-MTA: dns; mx\.test\n/);
  t.match(b, /Final-Recipient: rfc822; nobody@remote\.test\nAction: failed\nStatus: 5\.1\.1\nRemote-MTA: dns; mx\.remote\.test\nDiagnostic-Code: smtp; 550 5\.1\.1 no such user here\n/);
  t.match(b, /Final-Recipient: rfc822; nobody2@remote\.test/);
  t.notMatch(b, /Final-Recipient: rfc822; ok@remote\.test/);
  t.match(b, /Content-Type: text\/rfc822-headers\n\nSubject: out\nMessage-ID: <orig@example\.test>\n/, 'the original headers');
  t.ok(server.logs.some((l) => l.event === 'bounce' && l.id === id));
  t.same(await server.server.spool.list(), []);
});

t.test('null MX, unknown domain, unreachable MX: bounce, bounce, next MX', async (t) => {
  const { server, sink } = await rig(t, {
    zones: {
      'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
      'two.test': {
        MX: [
          { preference: 10, exchange: 'dead.two.test' },
          { preference: 20, exchange: 'live.two.test' },
        ],
      },
      'dead.two.test': { A: ['127.0.0.9'] },
      'live.two.test': { A: ['127.0.0.1'] },
    },
  });
  await inject(server, 'alice@example.test', ['a@nullmx.test']);
  await inject(server, 'alice@example.test', ['a@nxdomain.test']);
  await inject(server, 'alice@example.test', ['a@two.test']);
  await server.server.queue.idle();
  t.same(
    sink.messages.map((m) => m.to),
    [['a@two.test']],
    'the second MX took it after the first refused the connection',
  );
  const bounces = (await maildir(server, 'example.test', 'alice')).join('\n====\n');
  t.match(bounces, /<a@nullmx\.test>:\nSorry, nullmx\.test does not accept mail \(null MX\)/);
  t.match(bounces, /Status: 5\.1\.10/);
  t.match(bounces, /<a@nxdomain\.test>:\nSorry, I couldn't find any host named nxdomain\.test/);
});

t.test('DNS failure defers (never bounces); lifetime expiry bounces "in the queue too long"', async (t) => {
  const { server, clock } = await rig(t, { zones: { 'broken.test': { servfail: true } }, config: { queue: { lifetime: '600s' } } });
  const id = await inject(server, 'alice@example.test', ['a@broken.test']);
  await server.server.queue.idle();
  const st = await server.server.spool.readState(id);
  t.equal(st?.recipients[0]?.status, 'pending');
  t.match(st?.recipients[0]?.error, /DNS lookup of the MX of broken\.test failed/);
  t.same(await maildir(server, 'example.test', 'alice'), [], 'no bounce for a DNS failure');
  clock.advance(400_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.equal((await server.server.spool.readState(id))?.recipients[0]?.attempts, 2);
  clock.advance(1_200_000); // next slot is beyond birth + 600 s: that attempt is the last
  server.server.queue.wake();
  await server.server.queue.idle();
  const bounces = await maildir(server, 'example.test', 'alice');
  t.equal(bounces.length, 1);
  t.match(bounces[0], /I'm not going to try again; this message has been in the queue too long\./);
  t.match(bounces[0], /Status: 5\.4\.7/);
  t.same(await server.server.spool.list(), []);
});

t.test('a bounce that bounces goes to the postmaster; a failed double bounce is dropped and logged', async (t) => {
  const { server, sink } = await rig(t, { sink: { rcpt: () => ({ code: 550, message: '5.1.1 unknown' }) }, config: { queue: { doubleBounceTo: 'postmaster@remote.test' } } });
  // A bounce (null sender) to a remote address that refuses it: the double bounce goes to
  // doubleBounceTo, which is remote and refuses too: the triple bounce is dropped.
  await inject(server, '', ['gone@remote.test']);
  await server.server.queue.idle();
  t.same(
    sink.rcptAttempts.get('postmaster@remote.test'),
    1,
    'the double bounce was tried at the postmaster',
  );
  t.ok(server.logs.some((l) => l.event === 'bounce' && l.result === 'discarded'), 'triple bounce logged');
  t.same(await server.server.spool.list(), []);
  t.notOk([...sink.rcptAttempts.keys()].some((a) => a === ''), 'nothing is sent to the null sender');
});

t.test('double bounce to the local postmaster by default', async (t) => {
  const { server } = await rig(t, { sink: { rcpt: () => ({ code: 550, message: '5.1.1 unknown' }) } });
  await inject(server, '', ['gone@remote.test']);
  await server.server.queue.idle();
  const pm = await maildir(server, 'example.test', 'postmaster');
  t.equal(pm.length, 0, 'hostname mx.test is not local: the first local domain is used');
  const lh = await maildir(server, 'localhost', 'postmaster');
  t.equal(lh.length, 1);
  t.match(lh[0], /the bounce bounced!/);
});

t.test('restart mid-schedule: the retry time survives, a delivered recipient is not delivered again', async (t) => {
  const dataDir = await tempDir(t);
  const sink = await startSink({ data: (n) => (n === 1 ? { code: 451, message: '4.3.0 busy' } : undefined) });
  t.teardown(() => sink.close());
  const clock = new ManualClock(BIRTH);
  const first = await rig(t, { dataDir, clock, sinkPeer: sink });
  const id = await inject(first.server, 'alice@example.test', ['bob@example.test', 'far@remote.test']);
  await first.server.server.queue.idle();
  t.equal((await maildir(first.server, 'example.test', 'bob')).length, 1, 'local recipient delivered');
  t.equal(sink.dataAttempts, 1);
  await first.server.close();

  clock.advance(60_000);
  const second = await rig(t, { dataDir, clock, sinkPeer: sink });
  await second.server.server.queue.idle();
  t.equal(sink.dataAttempts, 1, 'not retried at start: its time has not come');
  t.equal((await maildir(second.server, 'example.test', 'bob')).length, 1, 'the local recipient is not delivered again');
  clock.advance(340_000);
  second.server.server.queue.wake();
  await second.server.server.queue.idle();
  t.equal(sink.dataAttempts, 2);
  t.equal(sink.messages.length, 1);
  t.equal((await maildir(second.server, 'example.test', 'bob')).length, 1);
  t.notOk(await second.server.server.spool.has(id));
});

t.test('a message already carrying our Delivered-To line bounces as a loop', async (t) => {
  const { server } = await rig(t);
  await inject(server, 'alice@example.test', ['bob@example.test'], 'Delivered-To: bob@example.test\r\nSubject: loop\r\n\r\nx\r\n');
  await server.server.queue.idle();
  t.equal((await maildir(server, 'example.test', 'bob')).length, 0);
  const b = await maildir(server, 'example.test', 'alice');
  t.match(b[0], /This message is looping: it already has my Delivered-To line/);
  t.match(b[0], /Status: 5\.4\.6/);
});

t.test('two yubin instances: A sends to B, the MX of b.test; B delivers to its Maildir', async (t) => {
  const b = await startTestServer({ deliver: true, config: { localDomains: ['b.test'], delivery: { plugins: ['maildir'] } } });
  t.teardown(() => b.close());
  const dns = await startDnsServer({ 'b.test': { MX: [{ preference: 10, exchange: 'mx.b.test' }] }, 'mx.b.test': { A: ['127.0.0.1'] } });
  t.teardown(() => dns.close());
  const a = await startTestServer({ deliver: true, config: { dns: { servers: [dns.address] }, delivery: { remotePort: b.port } } });
  t.teardown(() => a.close());
  await inject(a, 'alice@example.test', ['carol@b.test']);
  await a.server.queue.idle();
  for (let i = 0; i < 50 && (await maildir(b, 'b.test', 'carol')).length === 0; i++) await b.server.queue.idle();
  const got = await maildir(b, 'b.test', 'carol');
  t.equal(got.length, 1);
  t.match(got[0], /Received: from mx\.test \(.*\[127\.0\.0\.1\]\)/, 'B recorded A');
  t.match(got[0], /Subject: out/);
});

t.test('a local recipient that no deliver plugin claims bounces with 5.1.1', async (t) => {
  const { server, sink } = await rig(t, { delivery: { plugins: [] } });
  await inject(server, 'someone@remote.test', ['bob@example.test']);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'the bounce went to the remote sender');
  t.equal(sink.messages[0]!.from, '', 'with the null sender');
  t.match(sink.messages[0]!.data, /<bob@example\.test>:\r\nSorry, no mailbox here by that name\. \(#5\.1\.1\)/);
  t.same(await server.server.spool.list(), []);
});

t.test('smarthost: all remote mail through one relay, with STARTTLS and AUTH; an unverifiable certificate is refused', async (t) => {
  const tlsDir = await tempDir(t);
  const pair = await selfSignedKeyPair(tlsDir, 'relay.test');
  const relay = await startSink({ tls: pair, auth: { user: 'relayuser', pass: 's3cret' } });
  t.teardown(() => relay.close());
  const smarthost = { host: '127.0.0.1', port: relay.port, tls: 'starttls', user: 'relayuser', password: 's3cret', verifyCertificate: false };
  const { server } = await rig(t, { delivery: { smarthost } });
  await inject(server, 'alice@example.test', ['x@anywhere.example', 'y@elsewhere.example']);
  await server.server.queue.idle();
  t.equal(relay.messages.length, 2, 'one transaction per destination domain, both through the relay');
  t.same(relay.auths, ['relayuser', 'relayuser']);
  t.same(relay.secure, [true, true], 'under TLS');

  const strict = await rig(t, { delivery: { smarthost: { ...smarthost, verifyCertificate: true } } });
  const id = await inject(strict.server, 'alice@example.test', ['z@anywhere.example']);
  await strict.server.server.queue.idle();
  const st = await strict.server.server.spool.readState(id);
  t.equal(st?.recipients[0]?.status, 'pending', 'a certificate that does not verify: deferred, not sent');
  t.match(st?.recipients[0]?.error, /certificate/i);
  t.equal(relay.messages.length, 2);
});

t.test('routes (smtproutes): a domain, then .parent keys, then the smarthost; host "" is the MX after all', async (t) => {
  const exact = await startSink();
  const below = await startSink();
  const smart = await startSink();
  t.teardown(async () => Promise.all([exact.close(), below.close(), smart.close()]));
  const { server, sink } = await rig(t, {
    delivery: {
      routes: {
        'partner.example': { host: '127.0.0.1', port: exact.port, tls: 'none' },
        '.partner.example': { host: '127.0.0.1', port: below.port },
        'remote.test': { host: '' },
      },
      smarthost: { host: '127.0.0.1', port: smart.port, tls: 'none' },
    },
  });
  await inject(server, 'alice@example.test', ['a@partner.example', 'b@mx.eu.partner.example', 'c@remote.test', 'd@elsewhere.example']);
  await server.server.queue.idle();
  t.same(exact.messages.map((m) => m.to), [['a@partner.example']], 'the exact key');
  t.same(below.messages.map((m) => m.to), [['b@mx.eu.partner.example']], 'the nearest .parent key');
  t.same(sink.messages.map((m) => m.to), [['c@remote.test']], 'host "": the MX, not the smarthost');
  t.same(smart.messages.map((m) => m.to), [['d@elsewhere.example']], 'everything else: the smarthost');
  t.same(await server.server.spool.list(), []);
});

t.test('a message larger than the remote SIZE bounces at once (5.3.4), without a DATA attempt', async (t) => {
  const { server, sink } = await rig(t, { sink: { size: 1000 } });
  await inject(server, 'alice@example.test', ['big@remote.test'], `Subject: big\r\n\r\n${'x'.repeat(2000)}\r\n`);
  await server.server.queue.idle();
  t.equal(sink.dataAttempts, 0);
  const [b] = await maildir(server, 'example.test', 'alice');
  t.match(b, /<big@remote\.test>:\nRemote host mx\.remote\.test said: Message size larger than allowed 1000/);
  t.match(b, /Status: 5\.3\.4/);
});

t.test('per-domain concurrency: never more parallel deliveries to one domain than concurrencyPerDomain', async (t) => {
  const { server, sink } = await rig(t, { sink: { dataDelayMs: 150 }, config: { queue: { concurrencyPerDomain: 2 } } });
  for (let i = 0; i < 6; i++) await inject(server, 'alice@example.test', [`u${i}@remote.test`]);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 6);
  t.equal(sink.maxConcurrent, 2);
});

t.test('queue.destinations: a domain\'s own concurrency, and a rate delay between its deliveries', async (t) => {
  const { server, sink } = await rig(t, { sink: { dataDelayMs: 100 }, config: { queue: { concurrencyPerDomain: 5, destinations: { 'remote.test': { concurrency: 3 } } } } });
  for (let i = 0; i < 6; i++) await inject(server, 'alice@example.test', [`u${i}@remote.test`]);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 6);
  t.equal(sink.maxConcurrent, 3, "the domain's own 3, not concurrencyPerDomain's 5");

  const paced = await rig(t, { config: { queue: { destinations: { 'remote.test': { rateDelay: '250ms' } } } } });
  const started = performance.now();
  for (let i = 0; i < 4; i++) await inject(paced.server, 'alice@example.test', [`p${i}@remote.test`]);
  await paced.server.server.queue.idle();
  const elapsed = performance.now() - started;
  t.equal(paced.sink.messages.length, 4);
  t.equal(paced.sink.maxConcurrent, 1, 'one at a time');
  t.ok(elapsed >= 3 * 250, `4 deliveries 250 ms apart took ${Math.round(elapsed)} ms`);
  t.equal(paced.sink.connections, 1, 'and over one session, reused within its 5 s idle time');
});

t.test('delay warning: optional, once, to the sender, while the message stays queued', async (t) => {
  const { server, clock } = await rig(t, { sink: { rcpt: () => ({ code: 451, message: '4.4.0 later' }) }, config: { queue: { delayWarning: '1h' } } });
  const id = await inject(server, 'alice@example.test', ['slow@remote.test']);
  await server.server.queue.idle();
  t.equal((await maildir(server, 'example.test', 'alice')).length, 0, 'no notice before an hour');
  for (const step of [1600_000, 2000_000, 2000_000]) {
    clock.advance(step);
    server.server.queue.wake();
    await server.server.queue.idle();
  }
  const notes = await maildir(server, 'example.test', 'alice');
  t.equal(notes.length, 1, 'one notice, not one per attempt');
  t.match(notes[0], /Subject: Delayed Mail \(still being retried\)/);
  t.match(notes[0], /Action: delayed\nStatus: 4\.4\.0/);
  t.ok(await server.server.spool.has(id), 'still queued');
});

t.test('an MX that is this server is a loop: bounced, never sent to ourselves', async (t) => {
  const port = await freePort();
  const dns = await startDnsServer({ 'loop.test': { MX: [{ preference: 10, exchange: 'mx.loop.test' }] }, 'mx.loop.test': { A: ['127.0.0.1'] } });
  t.teardown(() => dns.close());
  const s = await startTestServer({
    deliver: true,
    listener: { listen: `127.0.0.1:${port}` },
    config: { dns: { servers: [dns.address] }, delivery: { plugins: ['maildir'], remotePort: port } },
  });
  t.teardown(() => s.close());
  await inject(s, 'alice@example.test', ['someone@loop.test']);
  await s.server.queue.idle();
  const [b] = await maildir(s, 'example.test', 'alice');
  t.match(b, /<someone@loop\.test>:\nSorry, the MX mx\.loop\.test of loop\.test is this server: mail would loop back to myself\./);
});

t.test('two hosts of ours relaying to each other: the hop count stops the loop and the sender gets a bounce', async (t) => {
  const [portA, portB] = await freePorts(2);
  const dns = await startDnsServer({ 'pingpong.test': { MX: [{ preference: 10, exchange: 'mx.pingpong.test' }] }, 'mx.pingpong.test': { A: ['127.0.0.1'] } });
  t.teardown(() => dns.close());
  // Each relays pingpong.test (rcpthosts, as a backup MX would) and finds the other as its MX.
  const host = (port: number, other: number, name: string, domain: string) =>
    startTestServer({
      deliver: true,
      plugins: ['rcpthosts'],
      pluginOptions: { rcpthosts: { domains: ['pingpong.test', domain] } },
      listener: { listen: `127.0.0.1:${port}` },
      config: { hostname: name, localDomains: [domain], dns: { servers: [dns.address] }, delivery: { plugins: ['maildir'], remotePort: other } },
    });
  const a = await host(portA, portB, 'a.test', 'a.test');
  t.teardown(() => a.close());
  const b = await host(portB, portA, 'b.test', 'b.test');
  t.teardown(() => b.close());
  await inject(a, 'alice@a.test', ['ball@pingpong.test']);
  const deadline = Date.now() + 30_000;
  while ((await maildir(a, 'a.test', 'alice')).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const [bounce] = await maildir(a, 'a.test', 'alice');
  t.ok(bounce, 'the sender got a bounce');
  t.match(bounce, /554 5\.4\.6 Too many hops/);
  t.ok((bounce!.match(/^Received: /gm) ?? []).length >= 50, 'the returned headers show the hops the message made before it was stopped');
});
