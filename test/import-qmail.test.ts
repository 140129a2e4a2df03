/**
 * `yubin import qmail` as a user moving off the seed box would run it: a box
 * built exactly as shared/seed/ builds one (test/peers/qmail-box.ts), then
 * `yubin import qmail --to site`, `yubin check-config`, `yubin serve`, and
 * real clients: Python poplib logs the old users in with their old
 * passwords and sees the same UIDLs in qmail-pop3d's order, smtplib and
 * swaks show that a tcp.smtp relay IP relays and others do not, that
 * @hogehoge.com gets 553 and that an unknown user is taken and dropped, and
 * the two messages qmail still had queued arrive. Then --dry-run, a second
 * run, --maildirs copy and move, and a tcp.smtp.cdb without its source.
 */
import { existsSync } from 'node:fs';
import { cp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import YAML from 'yaml';
import { startDnsServer, type DnsServer } from './peers/dns.js';
import { buildQmailBox, type QmailBox } from './peers/qmail-box.js';
import { startSink, type Sink } from './peers/sink.js';
import { needs, run, serve, sleep, tempDir, yubin, type RunResult } from './helpers.js';

t.setTimeout(5 * 60_000);

const POP3 = `
import json, poplib, ssl, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3(host, port, timeout=10)
p.stls(context=ssl._create_unverified_context())
try:
    p.user(user)
    p.pass_(password)
except poplib.error_proto as e:
    print(json.dumps({'error': e.args[0].decode()}))
    sys.exit(0)
uidl = [line.decode().split(' ', 1)[1] for line in p.uidl()[1]]
print(json.dumps({'uidl': uidl}))
p.quit()
`;

/** One SMTP transaction; every reply code, and DATA's when a recipient was taken. */
const SMTP = `
import json, smtplib, sys
host, port, sender, rcpts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(',')
s = smtplib.SMTP(host, port, local_hostname='client.example', timeout=20)
s.ehlo()
out = {'mail': s.mail(sender)[0], 'rcpt': [], 'data': None}
for r in rcpts:
    code, msg = s.rcpt(r)
    out['rcpt'].append([code, msg.decode()])
if any(c == 250 for c, _ in out['rcpt']):
    out['data'] = s.data(b'Subject: after the move\\r\\n\\r\\nhello\\r\\n')[0]
s.quit()
print(json.dumps(out))
`;

interface SmtpResult {
  mail: number;
  rcpt: Array<[number, string]>;
  data: number | null;
}

async function smtp(host: string, port: number, from: string, to: string[]): Promise<SmtpResult> {
  const r = await run('python3', ['-c', SMTP, host, String(port), from, to.join(',')]);
  if (r.code !== 0) throw new Error(`smtplib: ${r.stderr}`);
  return JSON.parse(r.stdout) as SmtpResult;
}

async function pop3(port: number, user: string, password: string): Promise<{ uidl?: string[]; error?: string }> {
  const r = await run('python3', ['-c', POP3, '::1', String(port), user, password]);
  if (r.code !== 0) throw new Error(`poplib: ${r.stderr}`);
  return JSON.parse(r.stdout) as { uidl?: string[]; error?: string };
}

function importArgs(box: QmailBox, to: string, ...more: string[]): string[] {
  return ['import', 'qmail', '--to', to, '--qmail-dir', box.qmailDir, '--vpopmail-dir', box.vpopmailDir, '--rc-script', box.rcScript, '--valias-dump', box.valiasDump, ...more];
}

async function ok(t: Test, r: RunResult, what: string): Promise<RunResult> {
  t.equal(r.code, 0, `${what}: exit 0${r.code ? `\n${r.stderr}${r.stdout}` : ''}`);
  return r;
}

/** Every message file of a Maildir: name → mtime in seconds. */
async function messages(maildir: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const sub of ['new', 'cur']) {
    for (const name of await readdir(path.join(maildir, sub)).catch(() => [] as string[])) out[`${sub}/${name}`] = Math.floor((await stat(path.join(maildir, sub, name))).mtimeMs / 1000);
  }
  return out;
}

interface Rig {
  readonly dir: string;
  readonly box: QmailBox;
  readonly sink: Sink;
  readonly dns: DnsServer;
}

async function rig(t: Test): Promise<Rig> {
  const dir = await tempDir(t, 'yubin-import-');
  const sink = await startSink();
  // The resolver the new site asks: ::1 has a name that resolves back (spamdyke's rDNS checks), nobody is on the DNSBL.
  const ptr = `1.${'0.'.repeat(31)}ip6.arpa`;
  const dns = await startDnsServer({ [ptr]: { PTR: ['client.example'] }, 'client.example': { AAAA: ['::1'] } });
  t.teardown(async () => {
    await sink.close();
    await dns.close();
  });
  return { dir, box: buildQmailBox(path.join(dir, 'box'), { routePort: sink.port }), sink, dns };
}

t.test('the seed box moves over: POP3 state, relay rules, badmailfrom, the catch-all and the queue', needs('python3', 'swaks', 'openssl', 'tcprules', 'cdb'), async (t) => {
  const { dir, box, sink, dns } = await rig(t);
  const site = path.join(dir, 'site');

  // --dry-run: the same report, nothing written.
  const dry = await ok(t, await yubin([...importArgs(box, site), '--dry-run', '--json']), 'dry run');
  const dryReport = JSON.parse(dry.stdout) as { counts: Record<string, number>; desUsers: string[]; items: Array<{ status: string; source: string; detail: string }> };
  t.notOk(existsSync(site), '--dry-run wrote nothing');
  t.same(dryReport.desUsers, ['jiro@example.net'], 'the DES users are listed');

  const first = await ok(t, await yubin(importArgs(box, site)), 'import');
  t.comment(first.stdout);
  t.match(first.stdout, /control\/badmailfrom: badmailfrom plugin, 1 entry \(553 at RCPT\)/);
  t.match(first.stdout, /example\.jp: vpopmail domain, 3 users, catch-all delete/);
  t.match(first.stdout, /vpasswd:4: .* \(skipped\)/, 'the malformed vpasswd line is named with file:line and skipped');
  t.match(first.stdout, /jiro@example\.net: DES crypt password.*yubin user passwd jiro@example\.net/);
  t.match(first.stdout, /saburo@example\.net: 2 of 2 messages have mtimes out of step/);
  t.match(first.stdout, /runs \|\/usr\/local\/bin\/autorespond/, 'a program in valias is reported as not mapped');
  t.match(first.stdout, /shiro@example\.net: DES crypt password: replaced by an scrypt hash of the clear-text copy vpopmail kept/);
  t.match(first.stdout, /2 domains, 6 users, 4 aliases, 2 queued messages/);
  t.match(first.stdout, /2 messages into the queue/);
  const counts = /(\d+) mapped, (\d+) not mapped, (\d+) need attention/.exec(first.stdout);
  t.ok(counts, 'the report ends with its counts');
  t.same(dryReport.counts, { mapped: Number(counts![1]), 'not-mapped': Number(counts![2]), attention: Number(counts![3]) }, '--dry-run reported the same counts');

  t.match(first.stdout, /blacklist_ip: copied to spamdyke\/blacklist_ip \(spamdyke ipBlacklistFile\)/);
  t.match(first.stdout, /senderWhitelistFile .*gone_whitelist does not exist: left out/);
  t.equal(await readFile(path.join(site, 'spamdyke/blacklist_ip'), 'utf8'), '203.0.113.66\n', "the files spamdyke.conf names come along");
  const configFile = path.join(site, 'yubin.yaml');
  await ok(t, await yubin(['check-config', '-c', configFile]), 'check-config on the imported site');

  // The test's own changes: every listener on [::] with a port of the system's choosing, and the loopback resolver.
  const config = YAML.parse(await readFile(configFile, 'utf8')) as { listeners: Array<{ name: string; listen: string }>; dns?: unknown };
  for (const l of config.listeners) l.listen = '[::]:0';
  config.dns = { servers: [dns.address], timeout: '2s', tries: 1 };
  await writeFile(configFile, YAML.stringify(config));
  const server = await serve(t, configFile, config.listeners.length);
  const { mx, pop3: pop3Port } = server.ports as { mx: number; pop3: number };

  // POP3: the old users, old passwords, the same UIDLs in qmail-pop3d's order.
  for (const address of ['taro@example.jp', 'hanako@example.jp', 'postmaster@example.jp']) {
    const r = await pop3(pop3Port!, address, box.passwords[address]!);
    const expected = box.uidls[address]!;
    // The queued message for hanako may have arrived already: it comes last, after the old ones.
    t.same(r.uidl?.slice(0, expected.length), expected, `${address}: same UIDLs, same order`);
  }
  t.match((await pop3(pop3Port!, 'taro', box.passwords['taro@example.jp']!)).uidl, box.uidls['taro@example.jp']!, 'a bare name logs in to vpopmail defaultdomain');
  t.same((await pop3(pop3Port!, 'saburo@example.net', box.passwords['saburo@example.net']!)).uidl?.sort(), [...box.uidls['saburo@example.net']!].sort(), 'a dir_control-hashed user from vpasswd.cdb');
  t.match((await pop3(pop3Port!, 'taro@example.jp', 'wrong')).error, /^-ERR/, 'a wrong password is refused');
  t.same((await pop3(pop3Port!, 'shiro@example.net', box.passwords['shiro@example.net']!)).uidl, [], 'a DES user with a clear-text copy logs in');
  t.match((await pop3(pop3Port!, 'jiro@example.net', 'anything')).error, /^-ERR/, 'a DES user without one cannot, until reset');

  // The two messages qmail had queued: hanako's into her old Maildir, friend@partner.example through smtproutes.
  const deadline = Date.now() + 20_000;
  const hanakoNew = path.join(box.maildirs['hanako@example.jp']!, 'new');
  const queuedLocal = async () => {
    for (const n of await readdir(hanakoNew)) if ((await readFile(path.join(hanakoNew, n), 'utf8')).includes('Subject: queued local')) return true;
    return false;
  };
  while (Date.now() < deadline && !((await queuedLocal()) && sink.messages.some((m) => m.to.includes('friend@partner.example')))) await sleep(100);
  t.ok(await queuedLocal(), "qmail's queued local message is in hanako's Maildir");
  const remote = sink.messages.find((m) => m.to.includes('friend@partner.example'));
  t.equal(remote?.from, 'taro@example.jp', "qmail's todo message went out through the smtproutes relay, envelope kept");
  t.match(remote?.data, /Subject: queued remote\r\n/);

  // Relaying: 127. is RELAYCLIENT in tcp.smtp; ::1 falls to ":allow".
  const relayed = await run('swaks', ['--server', '127.0.0.1', '--port', String(mx), '--from', 'taro@example.jp', '--to', 'someone@partner.example', '--helo', 'client.example', '--timeout', '20']);
  t.equal(relayed.code, 0, `127.0.0.1 relays\n${relayed.stdout}`);
  const refused = await smtp('::1', mx!, 'someone@example.org', ['someone@partner.example']);
  t.equal(refused.rcpt[0]![0], 553, '::1 may not relay');
  t.match(refused.rcpt[0]![1], /rcpthosts/);

  // badmailfrom: @hogehoge.com.
  const bad = await smtp('::1', mx!, 'spammer@hogehoge.com', ['taro@example.jp']);
  t.equal(bad.rcpt[0]![0], 553, 'mail from @hogehoge.com gets 553');

  // An unknown user of example.jp (catch-all delete): greylisted once (spamdyke.conf), then taken and dropped.
  const before = await messages(box.maildirs['taro@example.jp']!);
  const firstTry = await smtp('::1', mx!, 'friend@example.org', ['nobody@example.jp']);
  t.equal(firstTry.rcpt[0]![0], 451, 'greylisted on the first try (graylist-level=always)');
  await sleep(1_200);
  const retry = await smtp('::1', mx!, 'friend@example.org', ['nobody@example.jp']);
  t.same([retry.rcpt[0]![0], retry.data], [250, 250], 'taken on the retry');
  const dropped = await server.waitLog((l) => l.rcpt === 'nobody@example.jp' && l.action === 'discard', 10_000);
  t.equal(dropped.plugin, 'vpopmail', 'dropped at RCPT by the catch-all (the log says so; the client only sees 250)');
  t.same(await messages(box.maildirs['taro@example.jp']!), before, 'and dropped: no mailbox got it');
  t.notOk(sink.messages.some((m) => m.to.includes('friend@example.org')), 'no bounce');

  await server.stop();

  // Running it again: idempotent. The yubin.yaml the test edited is left alone; the queue is not injected twice.
  const again = await ok(t, await yubin(importArgs(box, site)), 'second import');
  t.match(again.stdout, /0 messages into the queue/);
  t.match(again.stdout, /yubin\.yaml: edited since the last import: left as it is, the imported version is yubin\.yaml\.new/);
  t.equal(YAML.parse(await readFile(configFile, 'utf8')).listeners[0].listen, '[::]:0', 'the edited yubin.yaml kept');
  const list = await ok(t, await yubin(['user', 'list', 'example.jp', '-c', configFile]), 'user list');
  t.match(list.stdout, /taro@example\.jp/);
});

t.test('--maildirs copy and move keep names, flags and mtimes; a tcp.smtp.cdb without its source', needs('openssl', 'tcprules', 'cdb'), async (t) => {
  const { dir, box } = await rig(t);
  const site = path.join(dir, 'copied');
  const cdb = path.join(box.vpopmailDir, 'etc/tcp.smtp.cdb');
  const r = await ok(t, await yubin(importArgs(box, site, '--maildirs', 'copy', '--tcprules', cdb, '--port-offset', '10000')), 'import --maildirs copy');
  const listeners = (YAML.parse(await readFile(path.join(site, 'yubin.yaml'), 'utf8')) as { listeners: Array<{ listen: string }> }).listeners;
  t.same(listeners.map((l) => l.listen), ['0.0.0.0:10025', '0.0.0.0:10587', '0.0.0.0:10110'], '--port-offset: beside the old server');
  t.match(r.stdout, /tcp\.smtp\.cdb: tcprules plugin, file tcp\.smtp \(decompiled from the cdb\)/);
  const rules = await readFile(path.join(site, 'tcp.smtp'), 'utf8');
  t.match(rules, /^127\.:allow,RELAYCLIENT=""$/m, "the cdb's rules, as tcprules compiled them");
  t.match(rules, /^198\.51\.100\.7:allow,RELAYCLIENT=""$/m);
  t.match(rules, /^:allow$/m);
  await ok(t, await yubin(['check-config', '-c', path.join(site, 'yubin.yaml')]), 'check-config');
  for (const address of ['taro@example.jp', 'hanako@example.jp', 'saburo@example.net']) {
    const [name, domain] = address.split('@') as [string, string];
    const copied = path.join(site, 'var/domains', domain, name, 'Maildir');
    t.same(await messages(copied), await messages(box.maildirs[address]!), `${address}: the same files, flags and mtimes`);
  }
  t.equal(await readFile(path.join(site, 'var/domains/example.jp/taro/Maildir/maildirsize'), 'utf8'), '0S\n 417 3\n', 'maildirsize as it was');
  t.match((await ok(t, await yubin(importArgs(box, site, '--maildirs', 'copy', '--tcprules', cdb, '--port-offset', '10000')), 'again')).stdout, /0 messages copied/, 'a second copy brings nothing twice');

  // move: the old Maildirs are emptied into the site.
  const moved = path.join(dir, 'moved');
  const original = await messages(box.maildirs['taro@example.jp']!);
  await cp(box.root, path.join(dir, 'box-backup'), { recursive: true, preserveTimestamps: true });
  await ok(t, await yubin(importArgs(box, moved, '--maildirs', 'move')), 'import --maildirs move');
  t.same(await messages(path.join(moved, 'var/domains/example.jp/taro/Maildir')), original, 'moved with names and mtimes');
  t.same(await messages(box.maildirs['taro@example.jp']!), {}, 'nothing left behind');
});

t.test('bad arguments: one line naming the problem, exit 2', async (t) => {
  const dir = await tempDir(t);
  const cases: Array<[string[], RegExp]> = [
    [['import', 'qmail', '--to', dir, '--maildirs', 'sideways'], /--maildirs sideways: expected in-place, copy or move/],
    [['import', 'qmail', '--to', dir, '--port-offset', 'x'], /--port-offset x: expected a number/],
    [['import', 'qmail', '--to', dir, '--qmail-dir', path.join(dir, 'nope')], /--qmail-dir .*nope: no such directory/],
    [['import', 'qmail'], /required option '--to <dir>'/],
  ];
  for (const [args, message] of cases) {
    const r = await yubin(args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, message);
  }
});
