/**
 * IMAP from Dovecot, POP3 and SMTP from yubin, on one Maildir: Dovecot logs
 * users in through `yubin checkpassword`, finds their Maildirs where yubin
 * delivers, and the two keep each other's flags, deletions and quota usage.
 * Two yubin POP3 servers on one mailbox directory lock each other out through
 * the lock file, as two hosts sharing it over NFS would.
 */
import { existsSync } from 'node:fs';
import { chmod, chown, readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { CLI, needs, yubinAs, run, serve, sleep, tempDir, waitFor } from './helpers.js';
import { imap, pop } from './peers/mail-clients.js';
import { asMailUser, dovecotLuaMissing, dovecotMissing, mailUser, startDovecot, startDovecotOverSocket, type MailUser } from './peers/dovecot.js';

const PASSWORD = 'alice pw';

function dovecotNeeded(): { skip: string | false } {
  const missing = dovecotMissing();
  if (!missing) return needs('python3', 'swaks', 'setpriv');
  if (process.env.CI === 'true') {
    t.fail(`${missing}: CI must install it`);
    return { skip: false };
  }
  return { skip: missing };
}

/** A POP3 session held open from here (raw socket) until `quit`. */
async function holdPop3(port: number, user: string, password: string): Promise<{ greeting: string; quit(): Promise<void> }> {
  const s = net.connect(port, '127.0.0.1');
  let buf = '';
  const waiters: Array<() => void> = [];
  s.on('data', (d: Buffer) => {
    buf += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  const line = async (): Promise<string> => {
    while (!buf.includes('\r\n')) await new Promise<void>((r) => waiters.push(r));
    const i = buf.indexOf('\r\n');
    const l = buf.slice(0, i);
    buf = buf.slice(i + 2);
    return l;
  };
  await line();
  s.write(`USER ${user}\r\n`);
  await line();
  s.write(`PASS ${password}\r\n`);
  const greeting = await line();
  return {
    greeting,
    async quit() {
      s.write('QUIT\r\n');
      await line();
      s.destroy();
    },
  };
}

/** Files in a Maildir subdirectory, sorted. */
async function files(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.')).sort();
}

async function ownedBy(dir: string, user: MailUser): Promise<void> {
  if (process.getuid!() === 0) await chown(dir, user.uid, user.gid);
  // Dovecot's unprivileged processes walk through it to their sockets.
  await chmod(dir, 0o755);
}

t.test('Dovecot IMAP with yubin accounts and Maildirs; POP3 and IMAP keep each other\'s flags; the lock file', dovecotNeeded(), async (t) => {
  const user = mailUser();
  const dir = await tempDir(t, 'yubin-dovecot-');
  await ownedBy(dir, user);
  const as = (cmd: readonly string[]) => asMailUser(user, cmd);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    `dataDir: ${dir}/var
plugins:
  vpopmail:
    defaultDomain: example.test
delivery:
  plugins: [vpopmail]
queue:
  concurrencyRemote: 0
listeners:
  - name: smtp
    protocol: smtp
    listen: 127.0.0.1:0
    plugins: [vpopmail]
  - name: pop3
    protocol: pop3
    listen: 127.0.0.1:0
    allowInsecureAuth: true
    plugins: [vpopmail]
`,
  );
  const y = yubinAs(t, as, config);
  await y('domain', 'add', 'example.test', '--password', 'pm pw');
  await y('user', 'add', 'alice@example.test', '--password', PASSWORD, '--quota', '1000000S,100C');

  const server = await serve(t, config, 2, as([]));
  const { smtp, pop3 } = server.ports;

  const checkpassword = `${process.execPath} ${CLI} checkpassword -c ${config}`;
  const dovecot = await startDovecot({
    dir,
    user,
    auth: `passdb {
  driver = checkpassword
  args = ${checkpassword}
}
userdb {
  driver = prefetch
}
# Lookups without a login (doveadm user, LMTP): checkpassword's AUTHORIZED mode.
userdb {
  driver = checkpassword
  args = ${checkpassword}
}`,
  });
  t.teardown(dovecot.stop);
  const port = dovecot.port;

  for (const subject of ['one', 'two', 'three']) {
    const sent = await run('swaks', ['--server', `127.0.0.1:${smtp}`, '--to', 'alice@example.test', '--from', 'sender@remote.test', '--header', `Subject: ${subject}`, '--body', `body ${subject}`]);
    t.match(sent.stdout, /250 2\.0\.0 Ok: queued/);
    // Each in its own second: Maildir names within one second order by unpadded microseconds, and
    // the message numbers IMAP and POP3 give (which the steps below name) follow the names' times.
    await sleep(1100);
  }
  const maildir = path.join(dir, 'var/domains/example.test/alice/Maildir');
  await waitFor(async () => ((await files(path.join(maildir, 'new'))).length === 3 ? true : undefined));

  // IMAP: a bare login name takes the default domain, as yubin's POP3 does.
  const first = await imap(
    port,
    'alice',
    PASSWORD,
    `typ, data = m.select('INBOX')
out['exists'] = int(data[0])
typ, data = m.fetch('1', '(BODY[])')
out['body1'] = data[0][1].decode()
m.store('1', '+FLAGS', '\\\\Flagged')
typ, data = m.fetch('1:3', '(FLAGS)')
out['flags'] = [d.decode() for d in data]
typ, data = m.getquotaroot('INBOX')
out['quota'] = [d.decode() if isinstance(d, bytes) else str(d) for d in data[1]]`,
  );
  t.notOk(first.error, String(first.error ?? ''));
  t.equal(first.exists, 3, 'three messages delivered by yubin');
  t.match(first.body1, /^Return-Path: <sender@remote\.test>\r\nDelivered-To: alice@example\.test\r\n/);
  t.match(first.body1, /Subject: one/);
  t.match((first.flags as string[])[0], /\\Flagged/);
  t.match((first.flags as string[])[0], /\\Seen/, 'read whole over IMAP: seen');
  t.match(first.quota, [/STORAGE \d+ 977\b/], "the user's quota, as Dovecot reads it from checkpassword (KB)");
  t.match((first.quota as string[])[0], /MESSAGE 3 100/);
  const afterImap = await files(path.join(maildir, 'cur'));
  t.equal(afterImap.length, 3, 'Dovecot moved them to cur/');
  // Names sort by time and microseconds (not zero-padded), so which file is message 1 is found by its flags, not its place.
  t.ok(afterImap.every((n) => /,S=\d+,W=\d+:2,[A-Z]*$/.test(n)), "yubin's names kept, Dovecot's flags in the info");
  t.equal(afterImap.filter((n) => n.endsWith(':2,FS')).length, 1, 'the one message flagged and read: F and S');

  const lookup = await run('doveadm', ['-c', dovecot.conf, 'user', 'alice@example.test']);
  t.equal(lookup.code, 0, `doveadm user: ${lookup.stderr}`);
  t.match(lookup.stdout, new RegExp(`mail\\s+maildir:${maildir}`), 'the userdb lookup (AUTHORIZED mode) finds the Maildir');
  const unknown = await run('doveadm', ['-c', dovecot.conf, 'user', 'nobody@example.test']);
  t.not(unknown.code, 0, 'an unknown user is no user');

  // POP3 reads everything: flags set over IMAP stay, the unread ones become seen.
  const read = await pop(pop3!, 'alice@example.test', PASSWORD, `out['stat'] = list(p.stat())
for i in (1, 2, 3):
    p.retr(i)
out['quit'] = p.quit().decode()`);
  t.same(read.stat?.[0 as keyof typeof read.stat], 3);
  const afterPop = await files(path.join(maildir, 'cur'));
  t.same(afterPop.map((n) => n.slice(n.indexOf(':2,'))).sort(), [':2,FS', ':2,S', ':2,S'], 'POP3 kept F and added S');
  const flags = await imap(port, 'alice@example.test', PASSWORD, `m.select('INBOX')
typ, data = m.fetch('1:3', '(FLAGS)')
out['flags'] = [d.decode() for d in data]`);
  t.match((flags.flags as string[])[0], /\\Flagged/);
  t.ok((flags.flags as string[]).every((f) => f.includes('\\Seen')), 'IMAP sees them all seen');

  // Deleted over POP3: gone in IMAP.
  const dele = await pop(pop3!, 'alice@example.test', PASSWORD, `p.dele(1)
out['quit'] = p.quit().decode()`);
  t.match(dele.quit, /^\+OK/);
  const afterDele = await imap(port, 'alice@example.test', PASSWORD, `typ, data = m.select('INBOX')
out['exists'] = int(data[0])
typ, data = m.fetch('1', '(BODY[HEADER.FIELDS (SUBJECT)])')
out['subject'] = data[0][1].decode().strip()`);
  t.equal(afterDele.exists, 2, 'one fewer in IMAP');
  t.equal(afterDele.subject, 'Subject: two');

  // Deleted over IMAP: gone in POP3, and maildirsize follows.
  const expunge = await imap(port, 'alice@example.test', PASSWORD, `m.select('INBOX')
m.store('1', '+FLAGS', '\\\\Deleted')
m.expunge()
typ, data = m.getquotaroot('INBOX')
out['quota'] = [d.decode() if isinstance(d, bytes) else str(d) for d in data[1]]`);
  t.notOk(expunge.error);
  const left = await pop(pop3!, 'alice@example.test', PASSWORD, `out['stat'] = list(p.stat())
out['top'] = [l.decode() for l in p.top(1, 0)[1]]
p.quit()`);
  t.equal((left.stat as number[])[0], 1, 'POP3 sees one left');
  t.ok((left.top as string[]).includes('Subject: three'));
  const remaining = await files(path.join(maildir, 'cur'));
  t.equal(remaining.length, 1);
  const size = Number(/,S=(\d+)/.exec(remaining[0]!)![1]);
  const info = JSON.parse((await y('user', 'info', 'alice@example.test', '--json')).stdout) as { usage: { bytes: number; count: number } };
  t.same({ bytes: info.usage.bytes, count: info.usage.count }, { bytes: size, count: 1 }, 'maildirsize: what is left, after POP3 and IMAP deletes');
  t.match(await readFile(path.join(maildir, 'maildirsize'), 'utf8'), /^1000000S,100C\n/, 'one header both understand');
  t.match((expunge.quota as string[])[0], /MESSAGE 1 100/, 'Dovecot counts the same');

  // Refusals.
  const wrong = await imap(port, 'alice@example.test', 'not the password', `out['ok'] = True`);
  t.match(wrong.error, /AUTHENTICATIONFAILED|Authentication failed/, 'wrong password refused');
  await y('user', 'mod', 'alice@example.test', '--disable', 'imap');
  const disabled = await imap(port, 'alice@example.test', PASSWORD, `out['ok'] = True`);
  t.match(disabled.error, /AUTHENTICATIONFAILED|Authentication failed/, 'IMAP disabled for the user: refused');
  t.same((await pop(pop3!, 'alice@example.test', PASSWORD, `out['stat'] = list(p.stat())\np.quit()`)).stat, [1, (left.stat as number[])[1]], 'POP3 still works');
  await y('user', 'mod', 'alice@example.test', '--enable', 'imap');
  const info2 = JSON.parse((await y('user', 'info', 'alice@example.test', '--json')).stdout) as { lastAuth: { service: string } };
  t.ok(info2.lastAuth, 'logins recorded');

  // A second yubin (another process, as another host would be) on the same mailboxes.
  const config2 = path.join(dir, 'yubin2.yaml');
  await writeFile(
    config2,
    `dataDir: ${dir}/var2
plugins:
  vpopmail:
    database: ${dir}/var/vpopmail.sqlite
    root: ${dir}/var/domains
listeners:
  - name: pop3
    protocol: pop3
    listen: 127.0.0.1:0
    allowInsecureAuth: true
    plugins: [vpopmail]
`,
  );
  const second = await serve(t, config2, 1, as([]));
  const held = await holdPop3(pop3!, 'alice@example.test', PASSWORD);
  t.match(held.greeting, /^\+OK/, 'a session on the first server');
  t.ok((await readdir(maildir)).includes('yubin-pop3.lock'), 'holding the lock file');
  const blocked = await pop(second.ports.pop3!, 'alice@example.test', PASSWORD, `out['stat'] = list(p.stat())`);
  t.match(blocked.error, /^-ERR \[IN-USE\]/, 'the second server finds the mailbox locked');
  await held.quit();
  const free = await pop(second.ports.pop3!, 'alice@example.test', PASSWORD, `out['stat'] = list(p.stat())\np.quit()`);
  t.equal((free.stat as number[])[0], 1, 'free once the first session quit');
  t.notOk((await readdir(maildir)).includes('yubin-pop3.lock'), 'and the lock file is gone');

  t.same(
    dovecot.log().split('\n').filter((l) => /Error|Panic|Fatal|Warning/.test(l) && !l.includes('yubin checkpassword: alice@example.test: imap disabled')),
    [],
    'nothing went wrong in Dovecot',
  );
  await second.stop();
  await server.stop();
  await dovecot.stop();
});

function luaNeeded(): { skip: string | false } {
  const base = dovecotNeeded();
  if (base.skip) return base;
  const missing = dovecotLuaMissing();
  if (!missing) return { skip: false };
  if (process.env.CI === 'true') {
    t.fail(`${missing}: CI must install it`);
    return { skip: false };
  }
  return { skip: missing };
}

t.test("Dovecot's Lua passdb and userdb ask the running yubin over its socket: yubin's hashes, Maildirs and login throttle", luaNeeded(), async (t) => {
  const user = mailUser();
  const dir = await tempDir(t, 'yubin-dovecot-lua-');
  await ownedBy(dir, user);
  const as = (cmd: readonly string[]) => asMailUser(user, cmd);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    `dataDir: ${dir}/var
loginThrottle: { freeFailures: 3, delay: 10ms, lockoutAfter: 3, rememberSuccess: 0 }
plugins:
  vpopmail:
    authSocket: auth.sock
listeners:
  - name: pop3
    protocol: pop3
    listen: 127.0.0.1:0
    allowInsecureAuth: true
    plugins: [vpopmail]
`,
  );
  const y = yubinAs(t, as, config);
  await y('domain', 'add', 'example.test', '--password', 'pm pw');
  await y('user', 'add', 'alice@example.test', '--password', PASSWORD, '--quota', '1000000S,100C');
  await y('user', 'add', 'bob@example.test', '--password', 'bob pw');
  const server = await serve(t, config, 1, as([]));
  const dovecot = await startDovecotOverSocket({ dir, user, socket: path.join(dir, 'var/auth.sock') });
  t.teardown(dovecot.stop);

  const ok = await imap(dovecot.port, 'alice@example.test', PASSWORD, `typ, data = m.select('INBOX')
out['exists'] = int(data[0])
typ, data = m.getquotaroot('INBOX')
out['quota'] = [d.decode() if isinstance(d, bytes) else str(d) for d in data[1]]`);
  t.notOk(ok.error, String(ok.error ?? ''));
  t.equal(ok.exists, 0, 'logged in, an empty INBOX');
  t.match((ok.quota as string[])[0], /STORAGE 0 977/, "the user's quota from yubin");
  t.ok(existsSync(path.join(dir, 'var/domains/example.test/alice/Maildir/cur')), 'the Maildir yubin named');
  const lookup = await run('doveadm', ['-c', dovecot.conf, 'user', 'alice@example.test']);
  t.match(lookup.stdout, /mail\s+maildir:\S+\/example\.test\/alice\/Maildir/, 'userdb lookup through the socket');
  t.not((await run('doveadm', ['-c', dovecot.conf, 'user', 'nobody@example.test'])).code, 0, 'unknown user');

  // Guesses at bob over IMAP count in yubin's throttle: after three, even his password is refused.
  for (let i = 0; i < 3; i++) t.match((await imap(dovecot.port, 'bob@example.test', `guess ${i}`, `out['ok'] = True`)).error, /AUTHENTICATIONFAILED|Authentication failed/);
  t.match((await imap(dovecot.port, 'bob@example.test', 'bob pw', `out['ok'] = True`)).error, /AUTHENTICATIONFAILED|Authentication failed/, 'locked out by yubin');
  t.ok(server.logs.some((l) => String(l.msg).includes('dovecot login of bob@example.test from 127.0.0.1: locked out')), 'yubin logged the lockout');
  t.ok(server.logs.some((l) => String(l.msg).includes('dovecot login of alice@example.test from 127.0.0.1') && l.action === 'accept'), 'and the good login');
  await dovecot.stop();
  await server.stop();
});
