/**
 * rblsmtpd: the reference's acceptance checks against a real rbldnsd (and,
 * where queries must be counted or a SERVFAIL is needed, the loopback
 * dns-packet server), over connections from different 127.x addresses.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer, definePlugin, reverseIp } from '../../core/index.js';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { cleanText, fromVariable, parseCodeFilter } from '../../plugins/rblsmtpd/rules.js';
import { needs, sleep, tempDir, writeFiles } from '../helpers.js';
import { startDnsServer } from '../peers/dns.js';
import { startRbldnsd } from '../peers/rbldnsd.js';

// ---------------------------------------------------------------- unit parts

t.test('reverseIp builds the query names (IPv4, IPv6 nibbles, IPv4-mapped)', async (t) => {
  t.equal(reverseIp('192.0.2.1'), '1.2.0.192');
  t.equal(reverseIp('::ffff:127.0.0.2'), '2.0.0.127');
  t.equal(reverseIp('::1'), `1.${Array(31).fill('0').join('.')}`);
  t.equal(reverseIp('2001:db8::567:89ab'), 'b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2', 'RFC 5782 section 2.4 example');
  t.throws(() => reverseIp('not-an-ip'));
});

t.test('RBLSMTPD values, reply text cleaning, code filters', async (t) => {
  t.same(fromVariable(''), { kind: 'skip' });
  t.same(fromVariable('-Blocked'), { kind: 'refuse', code: 553, text: 'Blocked' });
  t.same(fromVariable('Slow down'), { kind: 'refuse', code: 451, text: 'Slow down' });
  t.equal(cleanText('a\tb\u00e9c'), 'a?b?c', 'bytes outside 32..126 become ?');
  t.equal(cleanText('x'.repeat(300)).length, 200, 'cut to 200 characters');
  const f = parseCodeFilter('127.0.0.[2..11]');
  if (typeof f === 'string') throw new Error(f);
  t.same(['127.0.0.1', '127.0.0.2', '127.0.0.11', '127.0.0.12', '127.0.1.2', 'x'].map(f), [false, true, true, false, false, false]);
  const g = parseCodeFilter('127.0.[0;1].[2;4..6]');
  if (typeof g === 'string') throw new Error(g);
  t.same(['127.0.1.2', '127.0.0.5', '127.0.0.3', '127.0.2.4'].map(g), [true, true, false, false]);
  t.type(parseCodeFilter('127.0.0'), 'string');
  t.type(parseCodeFilter('127.0.0.[9..2]'), 'string');
  t.type(parseCodeFilter('127.0.0.300'), 'string');
});

t.test('options: zones or scoring are required; a bad code filter is a config error', async (t) => {
  await t.rejects(startTestServer({ plugins: ['rblsmtpd'], pluginOptions: { rblsmtpd: {} } }), /give zones, scoring or both; or rblsmtpdOnly/);
  const only = await startTestServer({ plugins: ['rblsmtpd'], pluginOptions: { rblsmtpd: { rblsmtpdOnly: true } } });
  await only.close();
  t.pass('rblsmtpdOnly: true starts without zones (rblsmtpd without -r)');
  await t.rejects(
    startTestServer({ plugins: ['rblsmtpd'], pluginOptions: { rblsmtpd: { scoring: { threshold: 1, zones: [{ zone: 'x.test', weight: 1, codes: '127.0.0' }] } } } }),
    /code filter/,
  );
});

// ---------------------------------------------------------------- helpers


const BL_ZONE = [
  ':127.0.0.2:Listed in bl.test: $',
  '127.0.0.2',
  '127.0.0.3 :127.0.0.3:Other listing for $',
  '127.0.0.4 :127.0.0.4:Third listing for $',
  '127.0.0.6',
  '',
].join('\n');
const OK_ZONE = ':127.0.0.2:whitelisted\n127.0.0.2\n127.0.0.4\n';
const SC_ZONE = ':127.0.0.2:scored\n127.0.0.2\n127.0.0.3\n127.0.0.4\n';

/** One probe: EHLO, MAIL, RCPT; the replies' codes and RCPT text. */
async function probe(s: TestServer, ip: string, auth?: string): Promise<{ mail: number; rcpt: number; line: string }> {
  const c = await s.connect({ localAddress: ip });
  await c.ehlo();
  if (auth) await c.command(`AUTH PLAIN ${Buffer.from(auth).toString('base64')}`);
  const mail = await c.command('MAIL FROM:<someone@example.net>');
  const rcpt = await c.command('RCPT TO:<postmaster@localhost>');
  await c.quit();
  return { mail: mail.code, rcpt: rcpt.code, line: `${rcpt.code} ${rcpt.enhanced ? `${rcpt.enhanced} ` : ''}${rcpt.text}` };
}

async function server(t: Test, dnsAddress: string, rblsmtpd: Record<string, unknown>, extra: { plugins?: unknown[]; pluginOptions?: Record<string, unknown>; listener?: Record<string, unknown> } = {}) {
  const s = await startTestServer({
    plugins: [...((extra.plugins ?? []) as never[]), 'rblsmtpd', 'rcpthosts'],
    pluginOptions: { ...extra.pluginOptions, rblsmtpd },
    config: { dns: { servers: [dnsAddress], timeout: 1000, tries: 1 } },
    ...(extra.listener ? { listener: extra.listener } : {}),
  });
  t.teardown(() => s.close());
  return s;
}

// ---------------------------------------------------------------- against rbldnsd

t.test('against rbldnsd', needs('rbldnsd'), async (t) => {
  const rbl = await startRbldnsd(t, { 'bl.test': BL_ZONE, 'ok.test': OK_ZONE, 'sc.test': SC_ZONE });

  t.test('listed: MAIL 250, RCPT 451 with the zone TXT; one log line with the DNS detail (acceptance check 4)', async (t) => {
    const s = await server(t, rbl.address, { zones: ['bl.test'] });
    const r = await probe(s, '127.0.0.2');
    t.same([r.mail, r.rcpt], [250, 451]);
    t.equal(r.line, '451 4.7.1 Listed in bl.test: 127.0.0.2');
    const c = await s.connect({ localAddress: '127.0.0.2' });
    await c.ehlo();
    await c.command('MAIL FROM:<a@example.net>');
    t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 451);
    t.equal((await c.command('RCPT TO:<other@localhost>')).code, 451, 'every RCPT');
    t.equal((await c.command('DATA')).code, 503, 'no recipient, no DATA');
    await c.quit();
    const lines = s.logs.filter((l) => l.plugin === 'rblsmtpd' && l.rule === 'rbl');
    t.equal(lines.length, 2, 'one line per refused connection');
    t.match(lines[0], { zone: 'bl.test', query: '2.0.0.127.bl.test', codes: ['127.0.0.2'], txt: 'Listed in bl.test: 127.0.0.2', code: 451, ip: '127.0.0.2' });
    t.match(lines[0]?.msg, /rblsmtpd: 451 Listed in bl.test: 127.0.0.2/);
    const other = await probe(s, '127.0.0.3');
    t.equal(other.line, '451 4.7.1 Other listing for 127.0.0.3', 'the per-entry text');
  });

  t.test('permanent (-b) → 553', async (t) => {
    const s = await server(t, rbl.address, { zones: ['bl.test'], permanent: true });
    t.equal((await probe(s, '127.0.0.2')).line, '553 5.7.1 Listed in bl.test: 127.0.0.2');
  });

  t.test('not listed passes', async (t) => {
    const s = await server(t, rbl.address, { zones: ['bl.test'], permanent: true });
    const r = await probe(s, '127.0.0.5');
    t.same([r.mail, r.rcpt], [250, 250]);
    t.notOk(s.logs.some((l) => l.plugin === 'rblsmtpd' && l.rule));
  });

  t.test('anti-RBL: -a allow -r block accepts; -r block -a allow refuses (acceptance check 5)', async (t) => {
    const allowFirst = await server(t, rbl.address, { zones: [{ zone: 'ok.test', allow: true }, 'bl.test'] });
    t.equal((await probe(allowFirst, '127.0.0.2')).rcpt, 250, 'allow list first wins');
    t.equal((await probe(allowFirst, '127.0.0.3')).rcpt, 451, 'not in the allow list: the blocklist decides');
    const blockFirst = await server(t, rbl.address, { zones: ['bl.test', { zone: 'ok.test', allow: true }] });
    t.equal((await probe(blockFirst, '127.0.0.2')).rcpt, 451, 'blocklist first wins');
  });

  t.test('a fixed text per zone; replyMap hides the zone name', async (t) => {
    const fixed = await server(t, rbl.address, { zones: [{ zone: 'bl.test', text: 'Go away' }] });
    t.equal((await probe(fixed, '127.0.0.2')).line, '451 4.7.1 Go away');
    const mapped = await server(t, rbl.address, { zones: ['bl.test'], replyMap: { 'bl.test': 'Your address is on a blocklist' }, permanent: true });
    const r = await probe(mapped, '127.0.0.2');
    t.equal(r.line, '553 5.7.1 Your address is on a blocklist');
    t.notMatch(r.line, /bl\.test/);
    t.match(mapped.logs.find((l) => l.plugin === 'rblsmtpd' && l.rule), { zone: 'bl.test' }, 'the log still names it');
  });

  t.test('scoring: weights add up, a code filter limits a zone, negative weights allow', async (t) => {
    const s = await server(t, rbl.address, {
      scoring: {
        threshold: 2,
        zones: [
          { zone: 'bl.test', weight: 1, codes: '127.0.0.[3..11]' },
          { zone: 'sc.test', weight: 1 },
          { zone: 'ok.test', weight: -5 },
        ],
      },
    });
    const r3 = await probe(s, '127.0.0.3');
    t.equal(r3.line, '451 4.7.1 Service unavailable; client [127.0.0.3] blocked using bl.test', 'bl.test (code .3) + sc.test = 2');
    t.match(s.logs.find((l) => l.plugin === 'rblsmtpd' && l.rule === 'scoring'), { score: 2, zone: 'bl.test', codes: ['bl.test=127.0.0.3', 'sc.test=127.0.0.2'] });
    t.equal((await probe(s, '127.0.0.2')).rcpt, 250, 'code 127.0.0.2 filtered out: score 1');
    t.equal((await probe(s, '127.0.0.4')).rcpt, 250, 'listed in both, but the allow list weighs -5');
    t.equal((await probe(s, '127.0.0.6')).rcpt, 250, 'bl.test only (filtered code): 0');

    const mapped = await server(t, rbl.address, {
      permanent: true,
      replyMap: { 'bl.test': 'Blocked by policy' },
      scoring: { threshold: 1.5, zones: [{ zone: 'bl.test', weight: 1 }, { zone: 'sc.test', weight: 0.5 }] },
    });
    t.equal((await probe(mapped, '127.0.0.3')).line, '553 5.7.1 Blocked by policy');
    t.equal((await probe(mapped, '127.0.0.6')).rcpt, 250, 'bl.test alone: 1 < 1.5');
  });

  t.test('whitelisted, relay and authenticated clients are not checked', async (t) => {
    const dir = await tempDir(t);
    await writeFiles(dir, { whitelist: '127.0.0.2\n', 'tcp.smtp': '127.0.0.3:allow,RELAYCLIENT=""\n:allow\n' });
    const authStub = definePlugin({
      name: 'auth-stub',
      setup: () => ({ hooks: { auth: ({ password }) => (password === 'secret' ? answer.accept('welcome', 235, '2.7.0') : answer.reject(535, '5.7.8', 'no')) } }),
    });
    const s = await server(
      t,
      rbl.address,
      { zones: ['bl.test'], permanent: true },
      {
        plugins: ['tcprules', 'whitelist', authStub],
        pluginOptions: { tcprules: { file: path.join(dir, 'tcp.smtp') }, whitelist: { file: path.join(dir, 'whitelist') } },
        listener: { allowInsecureAuth: true },
      },
    );
    t.equal((await probe(s, '127.0.0.2')).rcpt, 250, 'whitelisted');
    t.equal((await probe(s, '127.0.0.3')).rcpt, 250, 'RELAYCLIENT');
    t.equal((await probe(s, '127.0.0.4')).rcpt, 553, 'the same listing without an exemption');
    t.equal((await probe(s, '127.0.0.4', '\0alice\0secret')).rcpt, 250, 'authenticated');
  });
});

// ---------------------------------------------------------------- counted queries, failures, IPv6

t.test('RBLSMTPD from tcprules: "" skips every lookup; text refuses without DNS (acceptance checks 1-3)', async (t) => {
  const dns = await startDnsServer({
    '2.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['listed'] },
    '3.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['listed'] },
    '4.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['listed'] },
  });
  t.teardown(() => dns.close());
  const dir = await tempDir(t);
  await writeFiles(dir, { 'tcp.smtp': '127.0.0.2:allow,RBLSMTPD=""\n127.0.0.3:allow,RBLSMTPD="Slow down"\n127.0.0.4:allow,RBLSMTPD="-Blocked"\n:allow\n' });
  const s = await server(t, dns.address, { zones: ['bl.test'] }, { plugins: ['tcprules'], pluginOptions: { tcprules: { file: path.join(dir, 'tcp.smtp') } } });
  const pass = await probe(s, '127.0.0.2');
  t.same([pass.mail, pass.rcpt], [250, 250], 'RBLSMTPD="" passes although listed');
  t.equal((await probe(s, '127.0.0.3')).line, '451 4.7.1 Slow down');
  const blocked = await probe(s, '127.0.0.4');
  t.same([blocked.mail, blocked.line], [250, '553 5.7.1 Blocked']);
  await sleep(50);
  t.same(dns.queries, [], 'not a single DNS query');
  t.match(s.logs.find((l) => l.plugin === 'rblsmtpd' && l.rule === 'RBLSMTPD'), { code: 451, text: 'Slow down' });
  t.equal((await probe(s, '127.0.0.5')).rcpt, 250);
  t.ok(dns.queries.some((q) => q.name === '5.0.0.127.bl.test'), 'without RBLSMTPD the zone is asked');
});

t.test('lookup failures: fail-open passes, failClosed answers 451 temporary RBL lookup error (acceptance check 7)', async (t) => {
  const dns = await startDnsServer({
    '2.0.0.127.broken.test': { servfail: true },
    '2.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['listed in bl.test'] },
    '2.0.0.127.ok.test': { servfail: true },
  });
  t.teardown(() => dns.close());
  const open = await server(t, dns.address, { zones: ['broken.test'] });
  const r = await probe(open, '127.0.0.2');
  t.same([r.mail, r.rcpt], [250, 250], 'fail-open: a blocklist that does not answer does not list');
  const closed = await server(t, dns.address, { zones: ['broken.test', 'bl.test'], failClosed: true, permanent: true });
  t.equal((await probe(closed, '127.0.0.2')).line, '451 4.7.1 temporary RBL lookup error', 'the failing zone decides first, with 451 even with permanent');
  t.match(closed.logs.find((l) => l.plugin === 'rblsmtpd' && l.rule === 'failClosed'), { zone: 'broken.test', query: '2.0.0.127.broken.test' });
  const noBounce = await server(t, dns.address, { zones: ['broken.test', 'bl.test'], permanent: true });
  t.equal((await probe(noBounce, '127.0.0.2')).line, '451 4.7.1 listed in bl.test', 'after a temporary failure a listing gets 451, not 553');
  const allowFails = await server(t, dns.address, { zones: [{ zone: 'ok.test', allow: true }, 'bl.test'] });
  t.equal((await probe(allowFails, '127.0.0.2')).rcpt, 250, 'fail-open: an allow list that does not answer allows (rblsmtpd -C)');
  const allowFailsClosed = await server(t, dns.address, { zones: [{ zone: 'ok.test', allow: true }, 'bl.test'], failClosed: true });
  t.equal((await probe(allowFailsClosed, '127.0.0.2')).line, '451 4.7.1 listed in bl.test', 'fail-closed: it decides nothing, the blocklist does');
});

t.test('lookups start at connect, in parallel, and are asked once per connection', async (t) => {
  const dns = await startDnsServer({ '2.0.0.127.a.test': { A: ['127.0.0.2'] }, '2.0.0.127.b.test': { A: ['127.0.0.2'] } });
  t.teardown(() => dns.close());
  const s = await server(t, dns.address, { zones: ['none.test', 'a.test', 'b.test'] });
  const c = await s.connect({ localAddress: '127.0.0.2' });
  await c.ehlo();
  await sleep(100);
  const names = dns.queries.map((q) => `${q.type} ${q.name}`);
  t.ok(['A 2.0.0.127.none.test', 'A 2.0.0.127.a.test', 'A 2.0.0.127.b.test'].every((n) => names.includes(n)), 'all zones asked before MAIL');
  await c.command('MAIL FROM:<a@example.net>');
  const r = await c.command('RCPT TO:<postmaster@localhost>');
  t.same([r.code, r.text], [451, '127.0.0.2 is listed in a.test'], 'the order decides; without TXT a default text');
  await c.command('RCPT TO:<other@localhost>');
  await c.quit();
  t.equal(dns.queries.filter((q) => q.name === '2.0.0.127.a.test' && q.type === 'A').length, 1);
});

t.test('IPv6 client ::1: the nibble query name', async (t) => {
  const nibbles = `1.${Array(31).fill('0').join('.')}`;
  const dns = await startDnsServer({ [`${nibbles}.v6.test`]: { A: ['127.0.0.2'], TXT: ['v6 listed'] } });
  t.teardown(() => dns.close());
  const s = await server(t, dns.address, { zones: ['v6.test'] }, { listener: { listen: '[::1]:0' } });
  const c = await s.connect({ host: '::1' });
  await c.ehlo();
  await c.command('MAIL FROM:<a@example.net>');
  const r = await c.command('RCPT TO:<postmaster@localhost>');
  await c.quit();
  t.same([r.code, r.text], [451, 'v6 listed']);
  t.ok(dns.queries.some((q) => q.name === `${nibbles}.v6.test` && q.type === 'TXT'));
});
