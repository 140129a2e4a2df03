/** tcprules: the reference's acceptance checks, over real connections from different 127.x addresses. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer, definePlugin } from '../../core/index.js';
import { startTestServer } from '../../core/testing/index.js';
import { findRule, parseRules } from '../../plugins/tcprules/rules.js';
import { sleep, tempDir } from '../helpers.js';

/** Tells the client, at MAIL, what tcprules put into the connection state. */
const echo = definePlugin({
  name: 'echo-env',
  setup: () => ({
    hooks: {
      mail: ({ connection }) =>
        answer.accept(`env=${JSON.stringify(connection.state.env)} relay=${connection.relayAllowed} rblsmtpd=${JSON.stringify(connection.state.rblsmtpd ?? null)}`, 250, '2.1.0'),
    },
  }),
});

async function rulesServer(t: Test, rules: string, extra: Record<string, unknown> = {}) {
  const dir = await tempDir(t);
  const file = path.join(dir, 'tcp.smtp');
  await writeFile(file, rules);
  const s = await startTestServer({
    plugins: ['tcprules', echo, 'rcpthosts'],
    pluginOptions: { tcprules: { file, checkInterval: 0.05, ...extra } },
  });
  t.teardown(() => s.close());
  return { s, file };
}

async function envOf(s: Awaited<ReturnType<typeof startTestServer>>, ip: string): Promise<string | undefined> {
  const c = await s.connect({ localAddress: ip });
  if (c.greeting === undefined) return undefined;
  await c.ehlo();
  const r = await c.command('MAIL FROM:<a@example.net>');
  await c.quit();
  return r.text;
}

t.test('rule file parsing and lookup (unit)', async (t) => {
  const rules = parseRules(['# comment', '10.1.2.3:allow,X="b"', '10.:allow,X="a"', '10.1.2.3-5:allow,X="r"', '10.9.9.9:allow,X=/v/,Y="",Z=\'q\'', 'no colon here', '192.168.0.0/16:deny', '::1:allow,V6="yes"', ':allow,D="default"'].join('\n'));
  t.same(findRule(rules, '10.1.2.3')?.vars, { X: 'b' }, 'exact IP beats prefix, and the first line with a key wins');
  t.same(findRule(rules, '10.1.2.4')?.vars, { X: 'r' }, 'range expanded');
  t.same(findRule(rules, '10.1.2.6')?.vars, { X: 'a' }, 'range end respected, prefix applies');
  t.same(findRule(rules, '10.9.9.9')?.vars, { X: 'v', Y: '', Z: 'q' }, 'any quote character; empty value kept');
  t.equal(findRule(rules, '192.168.4.4')?.action, 'deny', 'CIDR (ucspi-tcp6)');
  t.same(findRule(rules, '::1')?.vars, { V6: 'yes' }, 'IPv6 exact');
  t.same(findRule(rules, '::ffff:10.1.2.3')?.vars, { X: 'b' }, 'IPv4-mapped IPv6 is the IPv4 address');
  t.same(findRule(rules, '203.0.113.1')?.vars, { D: 'default' });
  t.throws(() => parseRules('1.2.3.4:maybe'), /line 1: expected ADDRESS:allow or ADDRESS:deny/);
  t.throws(() => parseRules('1.2.3.4:allow\n1.2.3.5:allow,X'), /line 2: missing "="/);
  t.throws(() => parseRules('10.1:allow'), /neither a full IPv4 address nor a prefix/);
  const hosts = parseRules('=mail.example.com:allow,H="exact"\n=.example.com:allow,H="suffix"\n=:allow,H="any"\n127.0.:allow,H="ip-prefix"');
  t.equal(findRule(hosts, '127.0.0.1', 'mail.example.com')?.vars.H, 'exact', '=host comes before IP prefixes');
  t.equal(findRule(hosts, '127.0.0.1', 'other.example.com')?.vars.H, 'ip-prefix', 'IP prefixes before =.suffix');
  t.equal(findRule(hosts, '10.0.0.1', 'other.example.com')?.vars.H, 'suffix');
  t.equal(findRule(hosts, '10.0.0.1', 'x.example.org')?.vars.H, 'any');
  t.equal(findRule(hosts, '10.0.0.1'), undefined, 'no name known: host rules never match');
});

t.test('most specific rule wins, not file order (acceptance checks 1, 2, 4)', async (t) => {
  const { s } = await rulesServer(t, '127.:allow,X="a"\n127.0.0.3:allow,X="b"\n127.0.0.4-5:allow,X="r"\n127.0.0.7:allow,X=/v/,E=""\n');
  t.match(await envOf(s, '127.0.0.3'), /env=\{"X":"b"\}/);
  t.match(await envOf(s, '127.0.0.4'), /env=\{"X":"r"\}/);
  t.match(await envOf(s, '127.0.0.5'), /env=\{"X":"r"\}/);
  t.match(await envOf(s, '127.0.0.6'), /env=\{"X":"a"\}/, 'just past the range: the prefix rule');
  t.match(await envOf(s, '127.0.0.7'), /env=\{"X":"v","E":""\} relay=false/, 'X=/v/ same as X="v"; E="" is present and empty');
});

t.test('deny closes with zero bytes; allow runs the session (acceptance check 3)', async (t) => {
  const { s } = await rulesServer(t, ':deny\n127.0.0.1:allow\n');
  const denied = await s.connect({ localAddress: '127.0.0.2' });
  t.equal(denied.greeting, undefined, 'no greeting');
  t.ok(await denied.waitClosed());
  t.equal(denied.received, '', 'not a single byte');
  const line = s.logs.find((l) => l.plugin === 'tcprules' && l.action === 'disconnect');
  t.match(line?.reason, /denied by rule ":deny" \(line 1\)/, 'the log says which rule');
  const allowed = await s.connect({ localAddress: '127.0.0.1' });
  t.equal(allowed.greeting?.code, 220);
  await allowed.quit();
});

t.test('RELAYCLIENT lets the client relay; RBLSMTPD lands in the typed state', async (t) => {
  const { s } = await rulesServer(t, '127.0.0.20:allow,RELAYCLIENT="",RBLSMTPD=""\n127.0.0.21:allow,RBLSMTPD="-Go away"\n:allow\n');
  t.match(await envOf(s, '127.0.0.20'), /relay=true rblsmtpd=""/);
  t.match(await envOf(s, '127.0.0.21'), /relay=false rblsmtpd="-Go away"/);
  const relay = await s.connect({ localAddress: '127.0.0.20' });
  await relay.ehlo();
  await relay.command('MAIL FROM:<a@example.net>');
  t.equal((await relay.command('RCPT TO:<someone@elsewhere.example>')).code, 250, 'relay client may relay');
  await relay.quit();
  const other = await s.connect({ localAddress: '127.0.0.22' });
  await other.ehlo();
  await other.command('MAIL FROM:<a@example.net>');
  t.equal((await other.command('RCPT TO:<someone@elsewhere.example>')).code, 553, 'others may not');
  await other.quit();
});

t.test('the file is read again when it changes; a broken change keeps the old rules (acceptance check 6)', async (t) => {
  const { s, file } = await rulesServer(t, '127.0.0.30:allow,V="one"\n:allow\n');
  t.match(await envOf(s, '127.0.0.30'), /"V":"one"/);
  await sleep(60);
  await writeFile(file, '127.0.0.30:allow,V="two"\n:allow\n');
  await sleep(120);
  t.match(await envOf(s, '127.0.0.30'), /"V":"two"/, 'new rules without a restart');
  await writeFile(file, '127.0.0.30:maybe\n');
  await sleep(120);
  t.match(await envOf(s, '127.0.0.30'), /"V":"two"/, 'a malformed file leaves the previous rules in force');
  t.ok(s.logs.some((l) => l.plugin === 'tcprules' && /does not parse/.test(String(l.msg)) && /line 1/.test(String(l.err))), 'and the error is logged');
});

t.test('a malformed rule file at start is a config error naming the line', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'tcp.smtp');
  await writeFile(file, '127.:allow\n1.2.3.4:maybe\n');
  await t.rejects(startTestServer({ plugins: ['tcprules'], pluginOptions: { tcprules: { file } } }), /plugins\[0\]: plugin tcprules could not start: .*tcp\.smtp: line 2: expected ADDRESS:allow/);
});

t.test('per-IP connection limit', async (t) => {
  const { s } = await rulesServer(t, ':allow\n', { maxConnectionsPerIp: 2 });
  const a = await s.connect({ localAddress: '127.0.0.40' });
  const b = await s.connect({ localAddress: '127.0.0.40' });
  const c = await s.connect({ localAddress: '127.0.0.40' });
  const other = await s.connect({ localAddress: '127.0.0.41' });
  t.equal(a.greeting?.code, 220);
  t.equal(b.greeting?.code, 220);
  t.equal(c.greeting?.code, 421, 'third connection from one IP refused');
  t.equal(other.greeting?.code, 220, 'another IP is not affected');
  await a.quit();
  await sleep(50);
  const d = await s.connect({ localAddress: '127.0.0.40' });
  t.equal(d.greeting?.code, 220, 'a slot frees when a connection ends');
  await Promise.all([b.quit(), d.quit(), other.quit()]);
});
