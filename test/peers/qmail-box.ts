/**
 * A qmail + vpopmail + spamdyke box built the way shared/seed/ builds one,
 * in the real file formats, for the import tests: what vadddomain, vadduser
 * and `valias -i` leave behind, the .qmail-default switched to delete, a
 * tcp.smtp compiled with the real tcprules, a vpasswd.cdb made with tinycdb,
 * control files as config-fast writes them, the start script, a spamdyke.conf,
 * Maildirs as qmail-local fills them and two messages in qmail's queue laid
 * out as qmail-queue and qmail-send leave them (files named by inode).
 * Debian has no qmail package, so the queue files are written by hand.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface MessageInBox {
  readonly name: string;
  readonly sub: 'new' | 'cur';
  /** Seconds: the time in the name and the file's mtime, as qmail-local makes them. */
  readonly time: number;
  readonly mtime?: number;
}

export interface QmailBox {
  readonly root: string;
  readonly qmailDir: string;
  readonly vpopmailDir: string;
  readonly rcScript: string;
  readonly spamdykeConf: string;
  readonly valiasDump: string;
  /** Base names in qmail-pop3d's order (mtime), by user@domain. */
  readonly uidls: Record<string, string[]>;
  readonly passwords: Record<string, string>;
  readonly maildirs: Record<string, string>;
}

function openssl(scheme: '-1' | '-6', password: string, salt: string): string {
  return execFileSync('openssl', ['passwd', scheme, '-salt', salt, password], { encoding: 'utf8' }).trim();
}

function write(file: string, content: string | Buffer, mtime?: number): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
  if (mtime !== undefined) utimesSync(file, mtime, mtime);
}

function maildir(dir: string, messages: readonly MessageInBox[]): void {
  for (const sub of ['new', 'cur', 'tmp']) mkdirSync(path.join(dir, sub), { recursive: true });
  for (const m of messages) {
    const body = `Return-Path: <sender@example.org>\nDelivered-To: ${path.basename(path.dirname(dir))}\nSubject: old mail ${m.name}\n\nkept on the old box\n`;
    write(path.join(dir, m.sub, m.name), body, m.mtime ?? m.time);
  }
}

/** qmail's queue: a file under DIR/N/INODE with N = INODE % 23 (conf-split), as qmail-queue names it. */
function queueFile(queue: string, kind: string, inode: number, content: Buffer, split = true): void {
  write(path.join(queue, kind, split ? String(inode % 23) : '', String(inode)), content);
}

function queueMessage(queue: string, text: string, envelope: (inode: number) => void): number {
  const tmp = path.join(queue, 'mess', 'tmp-new');
  write(tmp, text);
  const inode = statSync(tmp).ino;
  mkdirSync(path.join(queue, 'mess', String(inode % 23)), { recursive: true });
  renameSync(tmp, path.join(queue, 'mess', String(inode % 23), String(inode)));
  envelope(inode);
  return inode;
}

const nul = (...fields: string[]) => Buffer.from(fields.map((f) => `${f}\0`).join(''), 'latin1');

export function buildQmailBox(root: string, o: { routePort: number }): QmailBox {
  const qmailDir = path.join(root, 'var/qmail');
  const vp = path.join(root, 'usr/local/vpopmail');
  const jp = path.join(vp, 'domains/example.jp');
  const net = path.join(vp, 'domains/example.net');
  const control = (name: string, text: string) => write(path.join(qmailDir, 'control', name), text);

  // config-fast, then vadddomain (rcpthosts, virtualdomains, users/assign), then the seed's edits.
  control('me', 'mail.example.jp\n');
  control('defaultdomain', 'example.jp\n');
  control('plusdomain', 'example.jp\n');
  control('locals', 'localhost\n');
  control('rcpthosts', 'example.jp\nexample.net\n');
  control('virtualdomains', 'example.jp:example.jp\nexample.net:example.net\n');
  control('badmailfrom', '@hogehoge.com\n');
  control('databytes', '10485760\n');
  control('concurrencyremote', '30\n');
  control('queuelifetime', '432000\n');
  control('smtproutes', `partner.example:127.0.0.1:${o.routePort}\n`);
  write(
    path.join(qmailDir, 'users/assign'),
    `+example.jp-:example.jp:89:89:${jp}:-::\n+example.net-:example.net:89:89:${net}:-::\n.\n`,
  );
  write(path.join(qmailDir, 'whitelist/192.0.2.50'), '');

  // vpopmail: users as vadduser writes them (clear-text copy where CLEAR_PASSWD kept one).
  const passwords = { 'postmaster@example.jp': 'pm-secret', 'taro@example.jp': 'taro-pass1', 'hanako@example.jp': 'hanako-pass6', 'saburo@example.net': 'saburo-pass', 'shiro@example.net': 'shiro-pass' };
  const md5 = openssl('-1', passwords['taro@example.jp'], 'tArOsalt');
  const sha512 = openssl('-6', passwords['hanako@example.jp'], 'hanakoSaltSalt');
  write(
    path.join(jp, 'vpasswd'),
    [
      `postmaster:${openssl('-1', passwords['postmaster@example.jp'], 'pmsalt')}:1:0:Postmaster:${jp}/postmaster:NOQUOTA:${passwords['postmaster@example.jp']}`,
      `taro:${md5}:1:0:Taro Yamada:${jp}/taro:NOQUOTA:${passwords['taro@example.jp']}`,
      `hanako:${sha512}:1:0:Hanako Suzuki:${jp}/hanako:50000000S`,
      'ichiro:broken by a hand edit', // malformed: named with file:line and skipped
      '',
    ].join('\n'),
  );
  // example.net keeps only vpasswd.cdb (tinycdb, records +klen,dlen:key->data); jiro's and shiro's hashes are DES
  // (shiro's with vpopmail's clear-text copy), saburo is dir_control-hashed.
  const netUsers = [
    ['jiro', `abJnggxhB/yWI:1:0:Jiro:${net}/jiro:NOQUOTA`],
    ['shiro', `xy.shiroDES12:1:0:Shiro:${net}/shiro:NOQUOTA:${passwords['shiro@example.net']}`],
    ['saburo', `${openssl('-1', passwords['saburo@example.net'], 'sbrsalt')}:1:0:Saburo:${net}/0/saburo:NOQUOTA`],
  ];
  const cdbInput = netUsers.map(([k, v]) => `+${Buffer.byteLength(k!)},${Buffer.byteLength(v!)}:${k}->${v}\n`).join('') + '\n';
  mkdirSync(net, { recursive: true });
  execFileSync('cdb', ['-c', path.join(net, 'vpasswd.cdb')], { input: cdbInput });
  write(path.join(vp, 'etc/defaultdomain'), 'example.jp\n');

  // vadddomain's .qmail-default, switched to delete as the seed guide says; example.net keeps bounce-no-mailbox.
  write(path.join(jp, '.qmail-default'), "| /usr/local/vpopmail/bin/vdelivermail '' delete\n");
  write(path.join(net, '.qmail-default'), "| /usr/local/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n");
  // valias -i taro@example.jp mailer-daemon@example.jp (and postmaster, root): the file backend's .qmail-ALIAS.
  for (const a of ['mailer-daemon', 'postmaster', 'root']) write(path.join(jp, `.qmail-${a}`), 'taro@example.jp\n');
  write(path.join(jp, '.qmailadmin-limits'), 'maxpopaccounts: 50\ndefault_quota: 20000000\ndisable_imap: 1\n');
  // The MySQL backend's valias table for example.net, as mysqldump writes it.
  const valiasDump = path.join(root, 'valias.sql');
  write(
    valiasDump,
    [
      '-- MySQL dump 10.13',
      'DROP TABLE IF EXISTS `valias`;',
      'CREATE TABLE `valias` (`alias` char(32) NOT NULL, `domain` char(96) NOT NULL, `valias_line` text NOT NULL) ENGINE=MyISAM;',
      "INSERT INTO `valias` VALUES ('info','example.net','&saburo@example.net'),('info','example.net','jiro@example.net'),('auto','example.net','|/usr/local/bin/autorespond 86400 3 msg .');",
      '',
    ].join('\n'),
  );

  // Maildirs as qmail-local fills them: time.pid.host names, mtime = the time in the name; cur/ after a POP3 session.
  const t0 = 1_700_000_000;
  const mailboxes: Record<string, { dir: string; messages: MessageInBox[] }> = {
    'taro@example.jp': {
      dir: `${jp}/taro/Maildir`,
      messages: [
        { name: `${t0 + 50}.4711.mail.example.jp:2,S`, sub: 'cur', time: t0 + 50 },
        { name: `${t0 + 10}.4700.mail.example.jp:2,S`, sub: 'cur', time: t0 + 10 },
        { name: `${t0 + 90}.4720.mail.example.jp`, sub: 'new', time: t0 + 90 },
      ],
    },
    'hanako@example.jp': {
      dir: `${jp}/hanako/Maildir`,
      messages: [
        { name: `${t0 + 30}.4705.mail.example.jp:2,`, sub: 'cur', time: t0 + 30 },
        { name: `${t0 + 70}.4715.mail.example.jp`, sub: 'new', time: t0 + 70 },
      ],
    },
    'postmaster@example.jp': { dir: `${jp}/postmaster/Maildir`, messages: [] },
    'jiro@example.net': { dir: `${net}/jiro/Maildir`, messages: [{ name: `${t0 + 5}.4699.mail.example.jp`, sub: 'new', time: t0 + 5 }] },
    // restored from a backup: the mtimes are not the times in the names, so the orders differ
    'saburo@example.net': {
      dir: `${net}/0/saburo/Maildir`,
      messages: [
        { name: `${t0 + 1}.4601.mail.example.jp`, sub: 'new', time: t0 + 1, mtime: t0 + 500 },
        { name: `${t0 + 2}.4602.mail.example.jp`, sub: 'new', time: t0 + 2, mtime: t0 + 400 },
      ],
    },
  };
  const uidls: Record<string, string[]> = {};
  const maildirs: Record<string, string> = {};
  for (const [address, box] of Object.entries(mailboxes)) {
    maildir(box.dir, box.messages);
    maildirs[address] = box.dir;
    uidls[address] = [...box.messages].sort((a, b) => (a.mtime ?? a.time) - (b.mtime ?? b.time)).map((m) => m.name.replace(/:.*$/, ''));
  }
  write(path.join(jp, 'taro/Maildir/maildirsize'), '0S\n 417 3\n');

  // tcprules as the seed: 127., the server's and the office's addresses relay; everyone else may connect.
  const tcpSmtp = path.join(vp, 'etc/tcp.smtp');
  write(tcpSmtp, '127.:allow,RELAYCLIENT=""\n192.0.2.10:allow,RELAYCLIENT=""\n198.51.100.7:allow,RELAYCLIENT=""\n:allow\n');
  execFileSync('tcprules', [`${tcpSmtp}.cdb`, `${tcpSmtp}.tmp`], { input: readFileSync(tcpSmtp) });
  // The .cdb is compiled from the source after it was last written: make the source the older one.
  utimesSync(tcpSmtp, t0, t0);

  const spamdykeConf = path.join(root, 'etc/spamdyke.conf');
  write(path.join(root, 'etc/spamdyke/blacklist_ip'), '203.0.113.66\n');
  write(
    spamdykeConf,
    [
      '# spamdyke for qmail-smtpd',
      'log-level=info',
      'graylist-level=always',
      `graylist-dir=${root}/var/spamdyke/graylist`,
      'graylist-min-secs=1',
      'graylist-max-secs=1814400',
      'reject-empty-rdns',
      'reject-unresolvable-rdns',
      'dns-blacklist-entry=bl.example.test',
      `ip-blacklist-file=${root}/etc/spamdyke/blacklist_ip`,
      `sender-whitelist-file=${root}/etc/spamdyke/gone_whitelist`,
      'max-recipients=50',
      '',
    ].join('\n'),
  );

  const rcScript = path.join(root, 'usr/local/etc/rc.d/qmail.sh');
  write(
    rcScript,
    [
      '#!/bin/sh',
      'name=qmail',
      'HOSTNAME=`hostname`',
      'case "$1" in',
      'start)',
      '/var/qmail/rc start',
      '#SMTP',
      '/usr/local/bin/tcpserver -qv -l0 -HR -u `id -u vpopmail` -g `id -g vpopmail` \\',
      `  -x ${tcpSmtp}.cdb 0 smtp /usr/local/bin/rblsmtpd \\`,
      `  /usr/local/bin/spamdyke -f ${spamdykeConf} /var/qmail/bin/qmail-smtpd \`hostname\` \\`,
      '  /usr/local/vpopmail/bin/vchkpw /bin/true 2>&1 | /var/qmail/bin/splogger smtp &',
      '#SMTP-AUTH SUBMISSION',
      `/usr/local/bin/tcpserver -qv -l0 -HR -c 20 -x ${tcpSmtp}.cdb 0 submission \\`,
      '  /var/qmail/bin/qmail-smtpd `hostname` /usr/local/vpopmail/bin/vchkpw /bin/true 2>&1 | /var/qmail/bin/splogger submission &',
      '#POP3d',
      '/usr/local/bin/tcpserver -R -H 0 110 /var/qmail/bin/qmail-popup $HOSTNAME \\',
      '  /usr/local/vpopmail/bin/vchkpw /var/qmail/bin/qmail-pop3d Maildir 2>&1 | /var/qmail/bin/splogger pop3d &',
      ';;',
      'esac',
      '',
    ].join('\n'),
  );

  // qmail's queue: one message preprocessed by qmail-send (info + local), one still in todo/.
  const queue = path.join(qmailDir, 'queue');
  queueMessage(queue, 'Received: (qmail 5120 invoked from network); 14 Nov 2023 22:13:20 -0000\nFrom: alice@partner.example\nTo: hanako@example.jp\nSubject: queued local\n\nstill in qmail\'s queue\n', (inode) => {
    queueFile(queue, 'info', inode, nul('Falice@partner.example'));
    queueFile(queue, 'local', inode, nul('Texample.jp-hanako@example.jp'));
  });
  queueMessage(queue, 'Received: (qmail 5121 invoked by uid 89); 14 Nov 2023 22:13:21 -0000\nFrom: taro@example.jp\nTo: friend@partner.example\nSubject: queued remote\n\nstill in qmail\'s todo\n', (inode) => {
    queueFile(queue, 'todo', inode, nul('u89', 'p5121', 'Ftaro@example.jp', 'Tfriend@partner.example', ''), false);
  });
  for (const d of ['intd', 'bounce', 'lock', 'pid']) mkdirSync(path.join(queue, d), { recursive: true });

  return { root, qmailDir, vpopmailDir: vp, rcScript, spamdykeConf, valiasDump, uidls, passwords, maildirs };
}
