/** spamdyke: connection filters decided at connect, answered at RCPT, against a loopback DNS server. */
import net from 'node:net';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import t, { type Test } from 'tap';
import { answer, definePlugin, ManualClock, NodeDns, Tokens, type Dns } from '../../core/index.js';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { startDnsServer, type DnsServer, type ZoneRecords } from '../peers/dns.js';
import { tempDir } from '../helpers.js';

const rev = (ip: string) => `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
/** PTR for the IP and, when `confirm`, the name's A record back to it. */
function host(ip: string, name: string, confirm = true): Record<string, ZoneRecords> {
  return { [rev(ip)]: { PTR: [name] }, ...(confirm ? { [name]: { A: [ip] } } : {}) };
}

const ZONES: Record<string, ZoneRecords> = {
  ...host('127.0.0.10', 'p1234-ipad56.tokyo.ocn.ne.jp'),
  ...host('127.0.0.11', 'mail.example.com'),
  ...host('127.0.0.13', 'host13.example.org', false),
  ...host('127.0.0.14', '127-0-0-14.dyn.example.de'),
  [rev('127.0.0.15')]: { servfail: true },
  ...host('127.0.0.16', 'mail16.example.com'),
  '16.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['Listed: see http://bl.test/lookup?127.0.0.16'] },
  '16.0.0.127.bl2.test': { A: ['127.0.0.3'] },
  ...host('127.0.0.17', 'mail.listed.test'),
  'listed.test.rhs.test': { A: ['127.0.0.2'] },
  ...host('127.0.0.20', 'host.spammer.test'),
  ...host('127.0.0.21', 'mail-xx1-f23.google.com'),
  'hasmx.test': { MX: [{ preference: 10, exchange: 'mx.hasmx.test' }] },
  'aonly.test': { A: ['192.0.2.1'] },
  'broken.test': { servfail: true },
  'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
  'sender.rhs.test': { A: ['127.0.0.2'] },
};

let dns: DnsServer;
t.before(async () => {
  dns = await startDnsServer(ZONES);
});
t.teardown(() => dns.close());

/** Uncached, so a zone changed between sessions is seen at once. */
function testDns(server: string): Dns {
  return new NodeDns({ servers: [server], timeout: 1000, tries: 1 });
}

const auth = definePlugin({
  name: 'auth-stub',
  setup: () => ({
    hooks: { auth: ({ password }) => (password === 'secret' ? answer.accept('welcome', 235, '2.7.0') : answer.reject(535, '5.7.8', 'bad credentials')) },
  }),
});

async function server(t: Test, opts: Record<string, unknown>, extra: { plugins?: unknown[]; clock?: ManualClock } = {}): Promise<TestServer> {
  const s = await startTestServer({
    plugins: [auth, ...((extra.plugins as never[]) ?? []), 'spamdyke'],
    pluginOptions: { spamdyke: opts },
    listener: { allowInsecureAuth: true },
    config: { dns: { servers: [dns.address], timeout: 1000, tries: 1 } },
    configure: (c) => {
      c.register(Tokens.Dns, { useValue: testDns(dns.address) });
      if (extra.clock) c.register(Tokens.Clock, { useValue: extra.clock });
    },
  });
  t.teardown(() => s.close());
  return s;
}

interface Session {
  mail: { code: number; text: string };
  rcpt: Array<{ code: number; enhanced: string | undefined; text: string }>;
  data?: { code: number; enhanced: string | undefined; text: string } | undefined;
}

async function session(s: TestServer, ip: string, o: { from?: string; to?: string[]; login?: boolean; data?: boolean } = {}): Promise<Session> {
  const c = await s.connect({ localAddress: ip });
  await c.ehlo();
  if (o.login) {
    const r = await c.command(`AUTH PLAIN ${Buffer.from('\0alice\0secret').toString('base64')}`);
    if (r.code !== 235) throw new Error(`AUTH failed: ${r.code} ${r.text}`);
  }
  const mail = await c.command(`MAIL FROM:<${o.from ?? 'someone@example.net'}>`);
  const rcpt = [];
  for (const to of o.to ?? ['postmaster@example.test']) {
    const r = await c.command(`RCPT TO:<${to}>`);
    rcpt.push({ code: r.code, enhanced: r.enhanced, text: r.text });
  }
  let data;
  if (o.data && rcpt.some((r) => r.code === 250)) {
    const go = await c.command('DATA');
    if (go.code === 354) {
      c.write('Subject: hi\r\n\r\nhello\r\n.\r\n');
      const r = await c.read();
      data = { code: r.code, enhanced: r.enhanced, text: r.text };
    }
  }
  await c.quit();
  return { mail: { code: mail.code, text: mail.text }, rcpt, data };
}

const refusals = (s: TestServer) => s.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('spamdyke refused'));

t.test('S25R: a dynamic-looking client gets 450 at RCPT (MAIL 250), a server name passes', async (t) => {
  const s = await server(t, { s25r: { enabled: true, rdnsWhitelistPattern: ['^mail-[a-z0-9-]+\\.google\\.com$'] } });
  const dyn = await session(s, '127.0.0.10');
  t.equal(dyn.mail.code, 250, 'MAIL still 250');
  t.same(dyn.rcpt[0], { code: 450, enhanced: '4.7.1', text: 'Refused. Your reverse DNS entry looks like a dynamic address. Try again later.' });
  const log = refusals(s)[0]!;
  t.match(log, { rule: 's25r', s25r: 1, ptr: 'p1234-ipad56.tokyo.ocn.ne.jp', ip: '127.0.0.10', rcpt: 'postmaster@example.test' }, 'decision log names rule and PTR');
  t.equal((await session(s, '127.0.0.11')).rcpt[0]!.code, 250, 'mail.example.com passes');
  t.equal((await session(s, '127.0.0.12')).rcpt[0]!.code, 450, 'no PTR is rule 0');
  t.equal((await session(s, '127.0.0.13')).rcpt[0]!.code, 450, 'an unconfirmed PTR counts as no name (rule 0)');
  t.equal((await session(s, '127.0.0.21')).rcpt[0]!.code, 250, 'Google outbound name excused by the pattern whitelist');
  t.equal((await session(s, '127.0.0.15')).rcpt[0]!.code, 250, 'PTR lookup failure: fail open');
  t.ok(s.logs.some((l) => l.msg === 'spamdyke: rDNS lookup failed, rDNS rules skipped (fail open)'), 'the failure is logged');
  t.equal((await session(s, '127.0.0.10', { login: true })).rcpt[0]!.code, 250, 'authenticated after connect: not filtered');
});

t.test('S25R IP whitelist', async (t) => {
  const s = await server(t, { s25r: { enabled: true, ipWhitelist: ['127.0.0.10'] } });
  t.equal((await session(s, '127.0.0.10')).rcpt[0]!.code, 250);
  t.equal((await session(s, '127.0.0.12')).rcpt[0]!.code, 450);
});

t.test('empty, unresolvable and IP-in-cc rDNS', async (t) => {
  const s = await server(t, { rejectEmptyRdns: true, rejectUnresolvableRdns: true, rejectIpInCcRdns: true });
  const empty = await session(s, '127.0.0.12');
  t.equal(empty.mail.code, 250);
  t.same(empty.rcpt[0], { code: 451, enhanced: '4.7.25', text: 'Refused. You have no reverse DNS entry.' });
  t.same((await session(s, '127.0.0.13')).rcpt[0], { code: 451, enhanced: '4.7.25', text: 'Refused. Your reverse DNS entry does not resolve.' });
  t.same((await session(s, '127.0.0.14')).rcpt[0], {
    code: 554,
    enhanced: '5.7.1',
    text: 'Refused. Your reverse DNS entry contains your IP address and a country code.',
  });
  t.equal((await session(s, '127.0.0.11')).rcpt[0]!.code, 250);
  t.equal((await session(s, '127.0.0.15')).rcpt[0]!.code, 250, 'a DNS failure is not "no rDNS" nor "unresolvable"');
  t.match(refusals(s).map((l) => l.rule), ['empty-rdns', 'unresolvable-rdns', 'ip-in-cc-rdns']);
});

t.test('DNSBL: TXT text, the default text, the decision log; AUTH bypasses', async (t) => {
  const s = await server(t, { dnsBlacklistEntry: ['bl.test'] });
  const r = await session(s, '127.0.0.16', { to: ['postmaster@example.test', 'abuse@example.test'] });
  t.equal(r.mail.code, 250);
  t.same(r.rcpt, [
    { code: 554, enhanced: '5.7.1', text: 'Listed: see http://bl.test/lookup?127.0.0.16' },
    { code: 554, enhanced: '5.7.1', text: 'Listed: see http://bl.test/lookup?127.0.0.16' },
  ]);
  t.match(refusals(s)[0], { plugin: String, rule: 'dns-blacklist', zone: 'bl.test', codes: ['127.0.0.2'], txt: 'Listed: see http://bl.test/lookup?127.0.0.16', ptr: 'mail16.example.com' });
  t.equal((await session(s, '127.0.0.16', { login: true })).rcpt[0]!.code, 250, 'after AUTH: no rejection');
  t.equal((await session(s, '127.0.0.11')).rcpt[0]!.code, 250, 'unlisted client');

  const s2 = await server(t, { dnsBlacklistEntry: ['bl2.test'] });
  t.same((await session(s2, '127.0.0.16')).rcpt[0], { code: 554, enhanced: '5.7.1', text: 'Refused. Your IP address is listed in the RBL at bl2.test' });

  const s3 = await server(t, { dnsBlacklistEntry: ['bl2.test'], replies: { 'dns-blacklist': { code: 451, text: 'Later, {zone} says no' } } });
  t.same((await session(s3, '127.0.0.16')).rcpt[0], { code: 451, enhanced: '4.7.1', text: 'Later, bl2.test says no' }, 'replies override');

  const s4 = await server(t, { dnsWhitelistEntry: ['bl.test'], rejectEmptyRdns: true, dnsBlacklistEntry: ['bl2.test'] });
  t.equal((await session(s4, '127.0.0.16')).rcpt[0]!.code, 250, 'DNS whitelist bypasses every filter');
});

t.test('RHSBL on the rDNS name and on the sender domain', async (t) => {
  const s = await server(t, { rhsBlacklistEntry: ['rhs.test'] });
  t.same((await session(s, '127.0.0.17')).rcpt[0], { code: 554, enhanced: '5.7.1', text: 'Refused. Your domain name is listed in the RHSBL at rhs.test' });
  t.match(refusals(s)[0], { rule: 'rhs-blacklist', zone: 'rhs.test', query: 'listed.test.rhs.test', codes: ['127.0.0.2'], ptr: 'mail.listed.test' });
  t.equal((await session(s, '127.0.0.11')).rcpt[0]!.code, 250);
  t.equal((await session(s, '127.0.0.11', { from: 'x@sender' })).rcpt[0]!.code, 554, 'sender domain listed');
});

t.test('reject-sender=no-mx: MX or A fallback; a DNS failure is not "no MX"', async (t) => {
  const s = await server(t, { rejectSender: ['no-mx'] });
  const no = await session(s, '127.0.0.11', { from: 'a@nomx.test' });
  t.equal(no.mail.code, 250, 'MAIL 250');
  t.same(no.rcpt[0], { code: 451, enhanced: '4.1.8', text: 'Refused. The domain of your sender address has no mail exchanger (MX).' });
  t.match(refusals(s)[0], { rule: 'sender-no-mx', domain: 'nomx.test', sender: 'a@nomx.test' });
  t.equal((await session(s, '127.0.0.11', { from: 'a@hasmx.test' })).rcpt[0]!.code, 250, 'has MX');
  t.equal((await session(s, '127.0.0.11', { from: 'a@aonly.test' })).rcpt[0]!.code, 250, 'A fallback');
  t.equal((await session(s, '127.0.0.11', { from: 'a@broken.test' })).rcpt[0]!.code, 250, 'SERVFAIL: fail open');
  t.equal((await session(s, '127.0.0.11', { from: 'a@nullmx.test' })).rcpt[0]!.code, 451, 'null MX');
  t.equal((await session(s, '127.0.0.11', { from: '' })).rcpt[0]!.code, 250, 'null sender is not checked');
});

t.test('list files in spamdyke formats; whitelists bypass everything', async (t) => {
  const dir = await tempDir(t);
  const f = (name: string, text: string) => {
    const p = path.join(dir, name);
    return writeFile(p, text).then(() => p);
  };
  const s = await server(t, {
    rejectEmptyRdns: true,
    checkInterval: 0.1,
    ipBlacklistFile: await f('ip-black', '# blocked\n127.0.1.0/24\n127.0.5-6.9\n'),
    ipWhitelistFile: await f('ip-white', '127.0.2\n'),
    rdnsBlacklistFile: await f('rdns-black', '.spammer.test\n'),
    senderBlacklistFile: await f('sender-black', '@bad.test\nsomeone@evil.test\n'),
    senderWhitelistFile: await f('sender-white', 'friend@good.test\n'),
    recipientBlacklistFile: await f('rcpt-black', 'nobody@example.test\n'),
    recipientWhitelistFile: await f('rcpt-white', 'postmaster@example.test\n'),
  });
  t.same((await session(s, '127.0.1.5', { to: ['x@example.test'] })).rcpt[0], { code: 554, enhanced: '5.7.1', text: 'Refused. Your IP address is blacklisted.' });
  t.equal((await session(s, '127.0.6.9', { to: ['x@example.test'] })).rcpt[0]!.code, 554, 'octet range');
  t.equal((await session(s, '127.0.2.5', { to: ['x@example.test'] })).rcpt[0]!.code, 250, 'IP whitelist (prefix) beats empty rDNS');
  t.same((await session(s, '127.0.0.20', { to: ['x@example.test'] })).rcpt[0], { code: 554, enhanced: '5.7.1', text: 'Refused. Your domain name is blacklisted.' });
  t.same((await session(s, '127.0.0.11', { from: 'a@sub.bad.test', to: ['x@example.test'] })).rcpt[0], {
    code: 554,
    enhanced: '5.7.1',
    text: 'Refused. Your sender address has been blacklisted.',
  });
  t.same((await session(s, '127.0.0.11', { to: ['nobody@example.test'] })).rcpt[0], { code: 554, enhanced: '5.7.1', text: 'Refused. Mail is not being accepted at this address.' });
  t.equal((await session(s, '127.0.0.12', { from: 'friend@good.test', to: ['x@example.test'] })).rcpt[0]!.code, 250, 'sender whitelist');
  t.equal((await session(s, '127.0.0.12', { to: ['postmaster@example.test'] })).rcpt[0]!.code, 250, 'recipient whitelist');
  t.equal((await session(s, '127.0.0.12', { to: ['x@example.test'] })).rcpt[0]!.code, 451, 'otherwise empty rDNS');
  await f('ip-black', '127.0.9.0/24\n');
  await new Promise((r) => setTimeout(r, 300));
  t.same(
    (await session(s, '127.0.1.5', { to: ['x@example.test'] })).rcpt[0],
    { code: 451, enhanced: '4.7.25', text: 'Refused. You have no reverse DNS entry.' },
    'file re-read when it changes: no longer IP-blacklisted, only the empty rDNS is left',
  );
});

t.test('max-recipients=2: the third RCPT is deferred', async (t) => {
  const s = await server(t, { maxRecipients: 2 });
  const r = await session(s, '127.0.0.11', { to: ['a@example.test', 'b@example.test', 'c@example.test'], data: true });
  t.same(
    r.rcpt.map((x) => x.code),
    [250, 250, 452],
  );
  t.same(r.rcpt[2], { code: 452, enhanced: '4.5.3', text: 'Too many recipients. Try the remaining addresses again later.' });
  t.equal(r.data?.code, 250, 'the first two are delivered');
  const q = await s.queued();
  t.same(q[0]!.envelope.recipients.map((x: { address: string }) => x.address), ['a@example.test', 'b@example.test']);
});

// Greylisting (plugins/spamdyke/greylist.ts) — kept last.

const GREY = 'Your address has been graylisted. Try again later.';

/** Marks clients from 127.0.0.30 as RELAYCLIENT, the way tcprules does. */
const relay = definePlugin({
  name: 'relay-stub',
  setup: () => ({
    hooks: {
      connect: ({ connection }) => {
        if (connection.remoteIp.endsWith('127.0.0.30')) connection.state.relayClient = '';
        return answer.continue();
      },
    },
  }),
});

t.test('greylisting: new pair 451 4.7.1, accepted after the delay, at once a week later', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 5));
  const s = await server(t, { graylist: { enabled: true, minDelay: 300 }, ipWhitelistEntry: ['127.0.0.31'] }, { clock, plugins: [relay] });
  const first = await session(s, '127.0.0.11', { data: true });
  t.equal(first.mail.code, 250);
  t.same(first.rcpt[0], { code: 451, enhanced: '4.7.1', text: GREY });
  t.match(refusals(s)[0], { rule: 'graylist', reason: 'new', sender: 'someone@example.net', rcpt: 'postmaster@example.test' });
  clock.advance(60_000);
  t.same((await session(s, '127.0.0.11')).rcpt[0], { code: 451, enhanced: '4.7.1', text: GREY }, 'retry too soon');
  t.match(refusals(s)[1], { rule: 'graylist', reason: 'too-soon' });
  clock.advance(241_000);
  const retry = await session(s, '127.0.0.11', { data: true });
  t.equal(retry.rcpt[0]!.code, 250, 'accepted after the delay');
  t.equal(retry.data?.code, 250);
  clock.advance(7 * 86_400_000);
  t.equal((await session(s, '127.0.0.11')).rcpt[0]!.code, 250, 'accepted at once a week later');
  t.equal((await session(s, '127.0.0.16')).rcpt[0]!.code, 250, 'spamdyke keys on (sender, recipient): another IP passes too');
  t.equal((await session(s, '127.0.0.11', { to: ['other@example.test'] })).rcpt[0]!.code, 451, 'another recipient is a new pair');

  t.equal((await session(s, '127.0.0.11', { from: 'auth@example.net', login: true })).rcpt[0]!.code, 250, 'authenticated: never greylisted');
  t.equal((await session(s, '127.0.0.30', { from: 'relay@example.net' })).rcpt[0]!.code, 250, 'RELAYCLIENT: never greylisted');
  t.equal((await session(s, '127.0.0.31', { from: 'white@example.net' })).rcpt[0]!.code, 250, 'whitelisted: never greylisted');
  t.equal((await session(s, '127.0.0.11', { from: 'white@example.net' })).rcpt[0]!.code, 451, 'the same pair from an ordinary client is greylisted');
});

t.test('greylisting the null sender happens after DATA', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 5));
  const s = await server(t, { graylist: { enabled: true, minDelay: 300 } }, { clock });
  const r = await session(s, '127.0.0.11', { from: '', data: true });
  t.equal(r.rcpt[0]!.code, 250, 'RCPT accepted for <>');
  t.same(r.data, { code: 451, enhanced: '4.7.1', text: GREY }, 'deferred after DATA');
  t.same(await s.queued(), []);
  clock.advance(301_000);
  t.equal((await session(s, '127.0.0.11', { from: '', data: true })).data?.code, 250, 'retry accepted');
});

t.test('taRgrey: S25R matches are greylisted instead of refused, pass on retry', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 5));
  const s = await server(t, { s25r: { enabled: true }, taRgrey: { enabled: true }, graylist: { minDelay: 300 } }, { clock });
  t.same((await session(s, '127.0.0.10')).rcpt[0], { code: 451, enhanced: '4.7.1', text: GREY }, 'S25R match greylisted');
  t.match(refusals(s)[0], { rule: 'graylist', s25r: 1, ptr: 'p1234-ipad56.tokyo.ocn.ne.jp' });
  t.equal((await session(s, '127.0.0.11', { from: 'x@example.net' })).rcpt[0]!.code, 250, 'a server-looking client is not greylisted');
  clock.advance(301_000);
  const retry = await session(s, '127.0.0.10', { data: true });
  t.equal(retry.rcpt[0]!.code, 250, 'passes on retry after the delay');
  t.equal(retry.data?.code, 250);
});

t.test('taRgrey with a tarpit: a client that waits it out is accepted', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 5));
  const s = await server(t, { s25r: { enabled: true }, taRgrey: { enabled: true, tarpit: 0.3 } }, { clock });
  const started = Date.now();
  const r = await session(s, '127.0.0.10');
  t.equal(r.rcpt[0]!.code, 250);
  t.ok(Date.now() - started >= 290, 'the answer came after the tarpit delay');
  t.ok(s.logs.some((l) => l.msg === 'spamdyke: S25R client waited out the tarpit, accepted'));
});

t.test('taRgrey with a tarpit: a client that hangs up is recorded and passes greylisting on retry', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 5));
  const s = await server(t, { s25r: { enabled: true }, taRgrey: { enabled: true, tarpit: 0.3 }, graylist: { minDelay: 300 } }, { clock });
  const c = await s.connect({ localAddress: '127.0.0.10' });
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<bot@example.net>')).code, 250);
  c.write('RCPT TO:<postmaster@example.test>\r\n');
  await new Promise((r) => setTimeout(r, 50));
  c.close();
  await new Promise((r) => setTimeout(r, 400));
  t.notOk(s.logs.some((l) => l.msg === 'spamdyke: S25R client waited out the tarpit, accepted'), 'not counted as having waited');
  clock.advance(301_000);
  const retry = await session(s, '127.0.0.10', { from: 'bot@example.net' });
  t.equal(retry.rcpt[0]!.code, 250, 'the retry passes through the greylist');
  t.notOk(s.logs.some((l) => l.msg === 'spamdyke: S25R client waited out the tarpit, accepted'), 'by the greylist, not by the tarpit');
});

t.test('greetingDelaySecs: a client that talks before the delayed greeting is refused', async (t) => {
  const s = await server(t, { greetingDelaySecs: 0.5 });
  const early = await new Promise<string>((resolve, reject) => {
    const sock = net.connect({ port: s.port, host: '127.0.0.1', localAddress: '127.0.0.40' });
    let out = '';
    sock.on('connect', () => sock.write('EHLO early.example\r\n'));
    sock.on('data', (d: Buffer) => (out += d.toString()));
    sock.on('error', reject);
    sock.on('close', () => resolve(out));
  });
  t.equal(early, '554 5.5.1 Refused. You are not following the SMTP protocol.\r\n');
  const started = Date.now();
  const patient = await session(s, '127.0.0.41', { from: 'a@example.net' });
  t.ok(Date.now() - started >= 450, 'the greeting waited');
  t.equal(patient.mail.code, 250, 'a client that waits is served');
});

t.test('idleTimeoutSecs and connectionTimeoutSecs lower the listener limits for this connection', async (t) => {
  const idle = await server(t, { idleTimeoutSecs: 0.4 });
  const c = await idle.connect({ localAddress: '127.0.0.42' });
  await c.ehlo();
  // Silent for a second: past spamdyke's 0.4 s, far below the listener's 5 minutes.
  await new Promise((r) => setTimeout(r, 1_000));
  const after = await c.command('NOOP').then(
    (r) => `${r.code} ${r.text}`,
    (err: Error) => `closed: ${err.message}`,
  );
  t.match(after, /^(421 |closed)/, `the idle client was let go (${after})`);

  const total = await server(t, { connectionTimeoutSecs: 0.6 });
  const d = await total.connect({ localAddress: '127.0.0.43' });
  await d.ehlo();
  const begun = Date.now();
  let last = 0;
  while (Date.now() - begun < 10_000) {
    const r = await d.command('NOOP').catch(() => undefined);
    if (!r) break;
    last = r.code;
    if (r.code === 421) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(last, 421, 'a busy client is cut off at the connection time limit');
});
