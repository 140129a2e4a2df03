/**
 * The files of a qmail + vpopmail box in their real formats, made by the real
 * tools where there are some (tinycdb's `cdb` for vpasswd.cdb and
 * morercpthosts.cdb, ucspi-tcp's `tcprules`), read back by yubin and checked
 * against `cdb -d` and `tcprulescheck`: cdb files, tcp.smtp.cdb, vpasswd,
 * control files, users/assign, .qmail files, spamdyke.conf, the start script,
 * the queue. The first step of `yubin import qmail` (issue 12).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { CdbError, cdbGet, cdbRecords } from '../core/cdb.js';
import { domainDirs, readAssign } from '../plugins/qmail/assign.js';
import { readControl } from '../plugins/qmail/control.js';
import { readQmailQueue } from '../plugins/qmail/queue.js';
import { readRcScript } from '../plugins/qmail/rc-script.js';
import { fromSpamdykeConf } from '../plugins/spamdyke/conf.js';
import { options as spamdykeOptions } from '../plugins/spamdyke/options.js';
import { rulesFromCdb } from '../plugins/tcprules/cdb.js';
import { findRule, parseRules } from '../plugins/tcprules/rules.js';
import { catchallFrom, parseDotQmail } from '../plugins/vpopmail/dot-qmail.js';
import { verifyPassword } from '../plugins/vpopmail/passwords.js';
import { parseValiasDump } from '../plugins/vpopmail/valias-dump.js';
import { parseVlimits } from '../plugins/vpopmail/vlimits.js';
import { parseVpasswd, vpasswdFromCdb, type VpasswdEntry } from '../plugins/vpopmail/vpasswd.js';
import { needs, run, tempDir } from './helpers.js';

t.test('records and lookups agree with tinycdb on 600 keys, repeats included', needs('cdb'), async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'test.cdb');
  const lines: string[] = [];
  for (let i = 0; i < 600; i++) lines.push(`key${i} value-${i}-${'x'.repeat(i % 37)}`);
  lines.push('key7 second-value', 'vpasswd-like one:two:three');
  const made = await run('cdb', ['-c', '-m', file], { input: lines.join('\n') + '\n' });
  t.equal(made.code, 0, made.stderr);
  const buf = await readFile(file);
  // `cdb -d` dumps every record as +klen,dlen:key->data, in file order.
  const dump = await run('cdb', ['-d', file]);
  const expected = [...dump.stdout.matchAll(/^\+\d+,\d+:(.*?)->(.*)$/gm)].map((m) => `${m[1]}=${m[2]}`);
  t.equal(expected.length, 602);
  t.same([...cdbRecords(buf)].map((r) => `${r.key}=${r.data}`), expected, 'every record, in order');
  t.same(cdbGet(buf, 'key7').map(String), ['value-7-xxxxxxx', 'second-value'], 'both values of a repeated key, in order');
  t.same(cdbGet(buf, 'key599').map(String), [`value-599-${'x'.repeat(599 % 37)}`]);
  t.same(cdbGet(buf, 'vpasswd-like').map(String), ['one:two:three']);
  t.same(cdbGet(buf, 'absent'), [], 'a missing key');
  for (let i = 0; i < 600; i += 37) t.equal(String(cdbGet(buf, `key${i}`)[0]), `value-${i}-${'x'.repeat(i % 37)}`);
});

t.test('a file that is not a cdb is an error naming what is wrong', async (t) => {
  t.throws(() => [...cdbRecords(Buffer.from('hello'))], new CdbError('not a cdb: 5 bytes, shorter than the 2048-byte header'));
  const bad = Buffer.alloc(2048 + 16);
  for (let i = 0; i < 256; i++) bad.writeUInt32LE(2048 + 8, i * 8);
  bad.writeUInt32LE(100, 2048); // a key length that runs past the records
  t.throws(() => [...cdbRecords(bad)], /cdb record at 2048: key 100 \+ data 0 bytes run past the records/);
  const outside = Buffer.alloc(2048);
  outside.writeUInt32LE(9999, 0);
  t.throws(() => cdbGet(outside, 'x'), /hash table 0 at 9999 .* lies outside the file/);
});

t.test('tcp.smtp.cdb from the real tcprules decodes to rules that answer as tcprulescheck does', needs('tcprules', 'tcprulescheck'), async (t) => {
  const dir = await tempDir(t);
  const source = [
    '# the seed guide\'s tcp.smtp, and more',
    '127.:allow,RELAYCLIENT=""',
    '192.168.10.20:allow,RELAYCLIENT=""',
    '192.168.10.21:allow,RELAYCLIENT="",RBLSMTPD=""',
    '10.1.2.3-5:deny',
    '10.9.:allow,RBLSMTPD="-refused, go away"',
    '172.16.0.1:allow,GREETING=/say "hi"/,MAXCONNIP="3"',
    '=mail.example.net:allow,RELAYCLIENT=""',
    '=.spam.example:deny',
    ':allow',
    '',
  ].join('\n');
  const cdb = path.join(dir, 'tcp.smtp.cdb');
  const made = await run('tcprules', [cdb, path.join(dir, 'tcp.smtp.tmp')], { input: source });
  t.equal(made.code, 0, made.stderr);
  const decoded = rulesFromCdb(await readFile(cdb));
  t.equal(decoded.rules, 11, 'one rule per key: the range is three');
  t.same(decoded.skipped, []);
  await writeFile(path.join(dir, 'decoded.tcp'), decoded.text);
  const rules = parseRules(decoded.text);

  const cases: Array<[string, string?]> = [
    ['127.0.0.1'],
    ['192.168.10.20'],
    ['192.168.10.21'],
    ['192.168.10.22'],
    ['10.1.2.4'],
    ['10.1.2.6'],
    ['10.9.8.7'],
    ['172.16.0.1'],
    ['203.0.113.5', 'mail.example.net'],
    ['203.0.113.6', 'mx.spam.example'],
    ['198.51.100.1'],
  ];
  for (const [ip, host] of cases) {
    const env: NodeJS.ProcessEnv = { ...process.env, TCPREMOTEIP: ip };
    if (host) env.TCPREMOTEHOST = host;
    else delete env.TCPREMOTEHOST;
    const check = await run('tcprulescheck', [cdb], { env });
    const theirs = {
      action: /deny connection/.test(check.stdout) ? 'deny' : 'allow',
      vars: Object.fromEntries([...check.stdout.matchAll(/^set environment variable (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!])),
    };
    const rule = findRule(rules, ip, host);
    const ours = { action: rule?.action ?? 'allow', vars: { ...(rule?.vars ?? {}) } };
    t.same(ours, theirs, `${ip}${host ? ` (${host})` : ''}: ${theirs.action} ${JSON.stringify(theirs.vars)}`);
  }
});

t.test('vpasswd and vpasswd.cdb (made as vpopmail makes it) read the same; hashes kept; bad lines named and skipped', needs('cdb', 'openssl'), async (t) => {
  const dir = await tempDir(t);
  const md5 = (await run('openssl', ['passwd', '-1', '-salt', 'abcdefgh', 'secret1'])).stdout.trim();
  const sha = (await run('openssl', ['passwd', '-6', '-salt', 'abcdefghijklmnop', 'secret2'])).stdout.trim();
  const dom = '/home/vpopmail/domains/example.jp';
  const lines = [
    `postmaster:${md5}:1:0:Postmaster:${dom}/postmaster:NOQUOTA:secret1`,
    `alice:${sha}:1:${0x02 | 0x1000}:Alice:${dom}/alice:10000000S,1000C`,
    `old:abZKf3bYkzYuU:1:0:Old DES user:${dom}/0/old:NOQUOTA`,
    'broken line without fields',
    `bob:${md5}:x:0:Bob:${dom}/bob:NOQUOTA`,
    `carol:${md5}:1:0:Carol:${dom}/carol:5 apples`,
    `alice:${md5}:1:0:Alice again:${dom}/alice2:NOQUOTA`,
  ];
  const text = lines.join('\n') + '\n';
  const read = parseVpasswd(text, 'vpasswd');
  t.same(read.entries.map((e) => e.name), ['postmaster', 'alice', 'old']);
  t.same(
    read.problems.map((p) => `${p.where}: ${p.reason}`),
    [
      'vpasswd:4: no name:fields line',
      'vpasswd:5: pwflag "x" is not a number',
      'vpasswd:6: quota "5 apples" is neither NOQUOTA nor a Maildir++ quota',
      'vpasswd:7: user alice again: the first one is kept',
    ],
  );
  const [pm, alice, old] = read.entries as [VpasswdEntry, VpasswdEntry, VpasswdEntry];
  t.equal(pm.hash, md5, 'the hash exactly as it was');
  t.equal(pm.clear, 'secret1');
  t.ok(await verifyPassword('secret1', pm.hash), 'the old $1$ password still logs in');
  t.ok(await verifyPassword('secret2', alice.hash), 'the old $6$ password still logs in');
  t.equal(alice.scheme, 'sha512-crypt');
  t.equal(alice.flags.noPop, true, 'gid flag 0x02: POP disabled');
  t.equal(alice.flags.domainAdmin, true, "qmailadmin's QA_ADMIN bit (0x1000): a domain admin in the web pages");
  t.equal(alice.otherBits, 0, 'no bit left over');
  t.equal(alice.quota, '10000000S,1000C');
  t.equal(old.scheme, 'des-crypt', 'DES crypt recognised (it can no longer be checked: the import lists these users)');

  // vpopmail's make_vpasswd_cdb: key = name, data = the rest of the line after "name:".
  const good = lines.filter((l) => /^(postmaster|alice|old):/.test(l)).slice(0, 3);
  const cdbInput = good.map((l) => {
    const i = l.indexOf(':');
    const [k, v] = [l.slice(0, i), l.slice(i + 1)];
    return `+${Buffer.byteLength(k)},${Buffer.byteLength(v)}:${k}->${v}\n`;
  });
  const file = path.join(dir, 'vpasswd.cdb');
  const made = await run('cdb', ['-c', file], { input: cdbInput.join('') + '\n' });
  t.equal(made.code, 0, made.stderr);
  const fromCdb = vpasswdFromCdb(await readFile(file), 'vpasswd.cdb');
  t.same(fromCdb.problems, []);
  const strip = (e: VpasswdEntry) => ({ ...e, where: '' });
  t.same(fromCdb.entries.map(strip), read.entries.map(strip), 'the cdb gives the same users, fields and hashes');
  t.equal(fromCdb.entries[1]!.where, 'vpasswd.cdb[alice]');
});

t.test("qmail's control files as config/setup writes them, with morercpthosts.cdb from tinycdb; bad values named and left out", needs('cdb'), async (t) => {
  const dir = await tempDir(t);
  const control = path.join(dir, 'control');
  await mkdir(control);
  const files: Record<string, string> = {
    me: 'mail.example.net\n',
    defaultdomain: 'example.net\n',
    plusdomain: 'example.net\n',
    locals: 'localhost\nmail.example.net\n',
    rcpthosts: '# ours\nexample.net\n.example.net \nexample.jp\n',
    virtualdomains: 'example.jp:example.jp\nbroken-line\n',
    badmailfrom: '@hogehoge.com\nspammer@example.org\nnot an address\n',
    databytes: '10485760\n',
    smtpgreeting: 'mail.example.net ESMTP ready\n',
    timeoutsmtpd: '1200\n',
    timeoutremote: '1200\n',
    concurrencylocal: '10\n',
    concurrencyremote: '40\n',
    queuelifetime: 'a week\n',
    smtproutes: ':[192.0.2.25]:587\nexample.org:\nlists.example.com:relay.example.com\nbad route here\n',
  };
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(control, name), text);
  // qmail-newmrh writes the domains as keys with empty data.
  const made = await run('cdb', ['-c', path.join(control, 'morercpthosts.cdb')], { input: '+9,0:second.jp->\n+8,0:third.jp->\n\n' });
  t.equal(made.code, 0, made.stderr);

  const { control: c, problems } = readControl(control);
  t.equal(c.me, 'mail.example.net');
  t.equal(c.defaultDomain, 'example.net');
  t.same(c.locals, ['localhost', 'mail.example.net']);
  t.same(c.rcpthosts, ['example.net', '.example.net', 'example.jp'], 'comment skipped, trailing blank ignored');
  t.same(c.moreRcpthosts, ['second.jp', 'third.jp'], 'from the cdb when only it is there');
  t.same(c.virtualDomains, [{ domain: 'example.jp', prefix: 'example.jp' }]);
  t.same(c.badmailfrom, ['@hogehoge.com', 'spammer@example.org']);
  t.equal(c.databytes, 10485760);
  t.equal(c.smtpGreeting, 'mail.example.net ESMTP ready');
  t.same([c.timeoutSmtpd, c.timeoutRemote, c.concurrencyLocal, c.concurrencyRemote], [1200, 1200, 10, 40]);
  t.equal(c.queueLifetime, undefined, 'a value qmail would not read is left out');
  t.same(c.smtproutes, [
    { domain: '', host: '192.0.2.25', port: 587 },
    { domain: 'example.org', host: '', port: undefined },
    { domain: 'lists.example.com', host: 'relay.example.com', port: undefined },
  ]);
  t.same(
    problems.map((p) => `${path.relative(dir, p.where)}: ${p.reason}`),
    [
      'control/virtualdomains:2: expected domain:prefix, got "broken-line"',
      'control/badmailfrom:3: "not an address" is neither an address nor @domain',
      'control/smtproutes:4: expected domain:relay[:port], got "bad route here"',
      'control/queuelifetime:1: "a week" is not a number',
    ],
  );
});

t.test(".qmail-default and .qmail-ALIAS files as vpopmail's vadddomain and valias write them", async (t) => {
  const dom = '/usr/local/vpopmail/domains/example.jp';
  const users: Record<string, string> = { [`${dom}/postmaster`]: 'postmaster', [`${dom}/0/alice`]: 'alice' };
  const catchall = (text: string) => catchallFrom(parseDotQmail(text, '.qmail-default').lines, 'example.jp', (d) => users[d]);
  t.same(catchall("| /usr/local/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n"), { kind: 'bounce-no-mailbox' });
  t.same(catchall("| /usr/local/vpopmail/bin/vdelivermail '' delete\n"), { kind: 'delete' }, "the seed's switch to delete");
  t.same(catchall('| /home/vpopmail/bin/vdelivermail "" Someone@Other.example\n'), { kind: 'forward', address: 'someone@other.example' });
  t.same(catchall(`| /home/vpopmail/bin/vdelivermail '' ${dom}/postmaster\n`), { kind: 'forward', address: 'postmaster@example.jp' }, 'vadddomain -e postmaster: a mailbox directory');
  t.same(catchall(`| /home/vpopmail/bin/vdelivermail '' ${dom}/0/alice/Maildir/\n`), { kind: 'forward', address: 'alice@example.jp' }, 'a hashed directory, with Maildir/');
  t.match(catchall(`| /home/vpopmail/bin/vdelivermail '' ${dom}/nobody\n`), { where: '.qmail-default:1', reason: /no mailbox of example\.jp/ });
  t.match(catchall('| /usr/bin/procmail\n'), { reason: /not a catch-all yubin can hold/ });

  // valias -i alice@example.jp root@example.jp writes .qmail-root with the line as given.
  const alias = parseDotQmail('# made by valias\nalice@example.jp\n&bob@example.jp\n./alice/Maildir/\n/var/mail/alice\n| /usr/bin/autorespond 86400 3 msg .\nnot an address\n', '.qmail-root');
  t.same(
    alias.lines.map((l) => `${l.where} ${l.kind} ${'address' in l ? l.address : 'path' in l ? l.path : 'command' in l ? l.command : ''}`),
    [
      '.qmail-root:2 forward alice@example.jp',
      '.qmail-root:3 forward bob@example.jp',
      '.qmail-root:4 maildir ./alice/Maildir/',
      '.qmail-root:5 mbox /var/mail/alice',
      '.qmail-root:6 program /usr/bin/autorespond 86400 3 msg .',
    ],
  );
  t.same(alias.problems, [{ where: '.qmail-root:7', reason: '"not an address" is not an address, a file, a Maildir or a program' }]);
});

t.test('spamdyke.conf becomes spamdyke plugin options; every other line is reported by name', async (t) => {
  const conf = [
    '# /etc/spamdyke/spamdyke.conf',
    'log-level=info',
    'local-domains-file=/var/qmail/control/rcpthosts',
    'idle-timeout-secs=60',
    'graylist-level=always-create-dir',
    'graylist-dir=/var/spamdyke/graylist',
    'graylist-min-secs=300',
    'graylist-max-secs=1814400',
    'reject-empty-rdns',
    'reject-unresolvable-rdns',
    'reject-ip-in-cc-rdns',
    'dns-blacklist-entry=zen.spamhaus.org',
    'dns-blacklist-entry=bl.spamcop.net',
    'ip-whitelist-file=/etc/spamdyke/whitelist_ip',
    'sender-blacklist-file=/etc/spamdyke/blacklist_senders',
    'reject-sender=no-mx',
    'max-recipients=50',
    'rejection-text-dns-blacklist=Your IP is listed in {zone}',
    'rejection-text-smtp-auth-required=Log in first',
    'tls-certificate-file=/var/qmail/control/servercert.pem',
    'sender-whitelist-file',
    'idle-timeout-secs=soon',
    'frobnicate=yes',
  ].join('\n');
  const r = fromSpamdykeConf(conf, 'spamdyke.conf');
  t.same(r.options, {
    idleTimeoutSecs: 60,
    rejectEmptyRdns: true,
    rejectUnresolvableRdns: true,
    rejectIpInCcRdns: true,
    dnsBlacklistEntry: ['zen.spamhaus.org', 'bl.spamcop.net'],
    ipWhitelistFile: '/etc/spamdyke/whitelist_ip',
    senderBlacklistFile: '/etc/spamdyke/blacklist_senders',
    rejectSender: ['no-mx'],
    maxRecipients: 50,
    graylist: { enabled: true, minDelay: 300, retryWindow: 1814400 },
    replies: { 'dns-blacklist': { text: 'Your IP is listed in {zone}' } },
  });
  const parsed = spamdykeOptions.safeParse(r.options);
  t.ok(parsed.success, 'the options pass the plugin schema');
  t.same(
    r.unmapped.map((u) => `${u.where} ${u.option}`),
    [
      'spamdyke.conf:2 log-level',
      'spamdyke.conf:3 local-domains-file',
      'spamdyke.conf:6 graylist-dir',
      'spamdyke.conf:19 rejection-text-smtp-auth-required',
      'spamdyke.conf:20 tls-certificate-file',
      'spamdyke.conf:23 frobnicate',
    ],
  );
  t.match(r.unmapped.find((u) => u.option === 'graylist-dir')?.reason, /senders retry once/);
  t.equal(r.unmapped.find((u) => u.option === 'frobnicate')?.reason, 'yubin has no such option');
  t.same(r.problems, [
    { where: 'spamdyke.conf:21', option: 'sender-whitelist-file', reason: 'needs a value' },
    { where: 'spamdyke.conf:22', option: 'idle-timeout-secs', reason: '"soon" is not a number' },
  ]);
});

t.test("the start script's tcpserver lines: ports, limits, rules file, rblsmtpd options, vchkpw", async (t) => {
  // The seed's /usr/local/etc/rc.d/qmail.sh as its author meant it (the blog lost the backquotes).
  const script = [
    '#!/bin/sh',
    'case "$1" in',
    'start)',
    '/var/qmail/rc start',
    '#SMTP',
    '/usr/local/bin/tcpserver -qv -l0 -HR -c 60 -u `id -u vpopmail` -g `id -g vpopmail` \\',
    '  -x /usr/local/vpopmail/etc/tcp.smtp.cdb 0 smtp /usr/local/bin/rblsmtpd -b -r zen.spamhaus.org -r bl.spamcop.net -a list.dnswl.org -t 30 \\',
    '  /var/qmail/bin/qmail-smtpd `hostname` /usr/local/vpopmail/bin/vchkpw /bin/true 2>&1 | /var/qmail/bin/splogger smtp &',
    '#SMTP-AUTH SUBMISSION',
    '/usr/local/bin/tcpserver -qv -l0 -HR -u `id -u vpopmail` -g `id -g vpopmail` \\',
    '  -x /usr/local/vpopmail/etc/tcp.smtp.cdb 0 submission /usr/local/bin/rblsmtpd -c \\',
    '  /var/qmail/bin/qmail-smtpd `hostname` /usr/local/vpopmail/bin/vchkpw /bin/true 2>&1 | /var/qmail/bin/splogger submission &',
    '#POP3d',
    '/usr/local/bin/tcpserver -R -H 0 110 /var/qmail/bin/qmail-popup $HOSTNAME \\',
    '  /usr/local/vpopmail/bin/vchkpw /var/qmail/bin/qmail-pop3d Maildir 2>&1 | /var/qmail/bin/splogger pop3d &',
    'tcpserver -c many 0 smtp qmail-smtpd &',
    'tcpserver 0 gopher /usr/bin/true &',
    ';;',
    'esac',
  ].join('\n');
  const { services, problems } = readRcScript(script, 'qmail.sh');
  t.same(
    services.map((s) => ({ where: s.where, host: s.host, port: s.port, kind: s.kind, c: s.maxConnections, x: s.rulesCdb, rbl: s.rblsmtpd, vchkpw: s.vchkpw })),
    [
      {
        where: 'qmail.sh:6',
        host: '0',
        port: 25,
        kind: 'smtp',
        c: 60,
        x: '/usr/local/vpopmail/etc/tcp.smtp.cdb',
        rbl: {
          zones: ['zen.spamhaus.org', 'bl.spamcop.net'],
          allowZones: ['list.dnswl.org'],
          order: [
            { zone: 'zen.spamhaus.org', allow: false },
            { zone: 'bl.spamcop.net', allow: false },
            { zone: 'list.dnswl.org', allow: true },
          ],
          permanent: true,
          ignoreFailures: true,
          timeout: 30,
        },
        vchkpw: true,
      },
      {
        where: 'qmail.sh:10',
        host: '0',
        port: 587,
        kind: 'smtp',
        c: undefined,
        x: '/usr/local/vpopmail/etc/tcp.smtp.cdb',
        rbl: { zones: [], allowZones: [], order: [], permanent: false, ignoreFailures: false, timeout: undefined },
        vchkpw: true,
      },
      { where: 'qmail.sh:14', host: '0', port: 110, kind: 'pop3', c: undefined, x: undefined, rbl: undefined, vchkpw: true },
    ],
  );
  t.same(problems, [
    { where: 'qmail.sh:16', reason: '-c many: not a number' },
    { where: 'qmail.sh:17', reason: 'port "gopher" is not a number or a service name yubin knows (smtp, submission, smtps, urd, pop3, pop-3, pop3s)' },
  ]);
});

t.test("qmail's queue: preprocessed messages and those still in todo, virtual-domain prefixes taken off", async (t) => {
  const queue = path.join(await tempDir(t), 'queue');
  const put = async (rel: string, content: string | Buffer) => {
    await mkdir(path.dirname(path.join(queue, rel)), { recursive: true });
    await writeFile(path.join(queue, rel), content);
  };
  // conf-split 23: inode 12345 lives in directory 12345 % 23 = 17.
  await put('mess/17/12345', 'Received: (qmail 4711 invoked by uid 89); 3 Dec 2026 10:00:00 -0000\nSubject: one\n\nhello\n');
  await put('info/17/12345', 'Fbob@example.net\0');
  await put('local/17/12345', 'Texample.jp-alice@example.jp\0Dexample.jp-postmaster@example.jp\0');
  await put('remote/17/12345', 'Tfriend@remote.example\0');
  // Accepted by qmail-queue, not yet seen by qmail-send: the envelope is in todo (null sender).
  await put('mess/5/2305', 'Subject: two\n\nbounce\n');
  await put('todo/2305', 'u89\0p4712\0F\0Talice@example.jp\0\0');
  // qmail-queue died before writing info: never accepted.
  await put('mess/1/24', 'Subject: half\n\n');
  // Everything done, waiting for qmail-send to clean it up.
  await put('mess/2/25', 'Subject: done\n\n');
  await put('info/2/25', 'Fa@example.net\0');
  await put('remote/2/25', 'Dz@remote.example\0');

  const { messages, problems } = readQmailQueue(queue, [{ domain: 'example.jp', prefix: 'example.jp' }]);
  t.same(
    messages.map((m) => ({ id: m.id, sender: m.sender, recipients: m.recipients, file: path.relative(queue, m.file) })),
    [
      { id: '2305', sender: '', recipients: ['alice@example.jp'], file: 'mess/5/2305' },
      { id: '12345', sender: 'bob@example.net', recipients: ['alice@example.jp', 'friend@remote.example'], file: 'mess/17/12345' },
    ],
  );
  t.same(
    problems.map((p) => `${path.relative(queue, p.where)}: ${p.reason}`),
    ['mess/1/24: no info file: qmail had not finished queueing it (qmail-queue failed), so it was never accepted', 'mess/2/25: every recipient is done: nothing left to deliver'],
  );
});

t.test("users/assign as vadddomain writes it: each vpopmail domain's directory", async (t) => {
  const text = [
    '+example.jp-:example.jp:89:89:/usr/local/vpopmail/domains/example.jp:-::',
    '+second.jp-:second.jp:89:89:/usr/local/vpopmail/domains/0/second.jp:-::',
    '=alias:alias:7790:2108:/var/qmail/alias:::',
    'garbage',
    '+broken-:x:notanumber:89:/tmp:-::',
    '.',
    '+after.jp-:after.jp:89:89:/ignored:-::',
    '',
  ].join('\n');
  const { entries, problems } = readAssign(text, 'users/assign');
  t.same([...domainDirs(entries)], [
    ['example.jp', '/usr/local/vpopmail/domains/example.jp'],
    ['second.jp', '/usr/local/vpopmail/domains/0/second.jp'],
  ]);
  t.same(entries.map((e) => `${e.kind}${e.address} ${e.uid}:${e.gid}`), ['+example.jp- 89:89', '+second.jp- 89:89', '=alias 7790:2108']);
  t.same(
    problems.map((p) => `${p.where}: ${p.reason}`),
    ['users/assign:4: expected a line starting with + or =, got "garbage"', 'users/assign:5: expected +address:user:uid:gid:/dir:..., got "+broken-:x:notanumber:89:/tmp:-::"'],
    'lines after the dot are not read, as qmail-newu does not',
  );
  t.match(readAssign('+a-:a:1:1:/a:-::\n', 'assign').problems, [{ reason: /no final line with a single dot/ }]);
});

t.test("vlimits as vmoddomlimits writes them: the default quota, disable_* as user flags, the rest named", async (t) => {
  const limits = parseVlimits('maxpopaccounts: 50\nmaxaliases: -1\ndefault_quota: 20000000\ndefault_maxmsgcount: 1000\ndisable_imap: 1\ndisable_pop: 0\ndisable_relay: 1\nquota: ten\nthis is not a limit\n', '.qmailadmin-limits');
  t.equal(limits.defaultQuota, '20000000S,1000C');
  t.same(limits.flags, ['noImap', 'noRelay'], 'a disable_* set to 0 is no flag');
  t.same(limits.unmapped.map((u) => `${u.where} ${u.key}=${u.value}`), ['.qmailadmin-limits:1 maxpopaccounts=50', '.qmailadmin-limits:8 quota=ten'], '-1 is "no limit": nothing to report');
  t.same(limits.problems, [{ where: '.qmailadmin-limits:9', reason: '"this is not a limit" is not name: value' }]);
});

t.test("vpopmail's valias table from a mysqldump: with and without a column list, quotes and escapes, malformed rows named", async (t) => {
  const dump = [
    '-- MySQL dump 10.13',
    "INSERT INTO `valias` VALUES ('Info','Example.NET','&saburo@example.net'),('info','example.net','it''s \\'quoted\\''),('x','example.net','|/bin/prog a, b');",
    "INSERT INTO valias (domain, alias, valias_line) VALUES ('example.jp','root','taro@example.jp');",
    "INSERT INTO `valias` VALUES ('broken','example.jp');",
    "INSERT INTO `valias` VALUES ('oops', 'example.jp' 'x');",
    "INSERT INTO `vpopmail` VALUES ('not','valias');",
  ].join('\n');
  const { rows, problems } = parseValiasDump(dump, 'valias.sql');
  t.same(
    rows.map((r) => [r.alias, r.domain, r.line, r.where]),
    [
      ['info', 'example.net', '&saburo@example.net', 'valias.sql:2'],
      ['info', 'example.net', "it's 'quoted'", 'valias.sql:2'],
      ['x', 'example.net', '|/bin/prog a, b', 'valias.sql:2'],
      ['root', 'example.jp', 'taro@example.jp', 'valias.sql:3'],
    ],
  );
  t.same(problems, [
    { where: 'valias.sql:4', reason: 'a row of 2 values for 3 columns' },
    { where: 'valias.sql:5', reason: 'an INSERT whose values could not be read' },
  ]);
});
