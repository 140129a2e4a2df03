/**
 * The queue as an operator sees it, with `yubin serve` running: sendmail the
 * way cron and PHP call it, `queue stat|list|flush|delete|bounce`, and a
 * remote peer found through a loopback DNS server that defers, then accepts.
 */
import { chmod, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Spool } from '../core/queue/spool.js';
import { startDnsServer } from './peers/dns.js';
import { startSink, type Sink } from './peers/sink.js';
import { CLI, run, serve, tempDir, yubin, type ServeProcess } from './helpers.js';

interface Setup {
  readonly dir: string;
  readonly config: string;
  readonly sink: Sink;
}

async function setup(t: Test, sinkOptions: Parameters<typeof startSink>[0] = {}): Promise<Setup> {
  const dir = await tempDir(t);
  const sink = await startSink(sinkOptions);
  t.teardown(() => sink.close());
  const dns = await startDnsServer({ 'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] }, 'mx.remote.test': { A: ['127.0.0.1'] } });
  t.teardown(() => dns.close());
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    [
      'hostname: mx.example.test',
      'dataDir: ./var',
      'localDomains: [example.test]',
      `dns: { servers: ["${dns.address}"], timeout: 2s, tries: 1 }`,
      `delivery: { plugins: [maildir], remotePort: ${sink.port}, connectTimeout: 2s }`,
      'listeners:',
      '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [rcpthosts] }',
      '',
    ].join('\n'),
  );
  return { dir, config, sink };
}

const sendmailCmd = (s: Setup, args: string[], input: string) => run(process.execPath, [CLI, 'sendmail', '-C', s.config, ...args], { input });

async function maildir(s: Setup, user: string): Promise<string[]> {
  const box = path.join(s.dir, 'var/mail/example.test', user, 'Maildir/new');
  const names = (await readdir(box).catch(() => [] as string[])).sort();
  return Promise.all(names.map((n) => readFile(path.join(box, n), 'utf8')));
}

async function until(test: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

const queueIds = (s: Setup) => new Spool(path.join(s.dir, 'var/queue')).list().catch(() => [] as string[]);

t.test('sendmail -t -i (PHP mail()) to a remote address; the peer defers; queue list shows why and when; flush delivers', async (t) => {
  const s = await setup(t, { data: (n) => (n === 1 ? { code: 451, message: '4.7.1 greylisted, come back later' } : undefined) });
  const server: ServeProcess = await serve(t, s.config, 1);
  const msg = 'To: Far Away <far@remote.test>\nBcc: hidden@remote.test\nSubject: from php\n\nline one\n.\nline after a lone dot\n';
  const sent = await sendmailCmd(s, ['-t', '-i', '-fwww-data@example.test'], msg);
  t.equal(sent.code, 0, sent.stderr);
  t.equal(sent.stdout + sent.stderr, '', 'silent on success, like sendmail');
  await server.waitLog((l) => l.event === 'delivery' && l.result === 'deferral');
  const [id] = await queueIds(s);
  t.ok(id);

  const stat = await yubin(['queue', 'stat', '-c', s.config]);
  t.equal(stat.code, 0);
  t.equal(stat.stdout, 'messages in queue: 1\nrecipients pending: 2 (local 0, remote 2)\n');
  const list = await yubin(['queue', 'list', '-c', s.config]);
  t.equal(list.code, 0);
  t.match(list.stdout, new RegExp(`^${id}  \\S+Z  age \\d+s  \\d+ bytes  <www-data@example\\.test>\\n`));
  t.match(list.stdout, /\tremote\t<far@remote\.test>\tnext \S+, 1 attempts\n\t\tlast error: Remote host mx\.remote\.test said: 451 4\.7\.1 greylisted, come back later/);
  t.match(list.stdout, /<hidden@remote\.test>/, 'Bcc recipients are in the envelope');
  const json = JSON.parse((await yubin(['queue', 'list', '--json', '-c', s.config])).stdout) as Array<{ id: string; recipients: Array<{ nextAttempt: string; lastError: string; attempts: number }> }>;
  t.equal(json[0]!.id, id);
  const next = Date.parse(json[0]!.recipients[0]!.nextAttempt) - Date.now();
  t.ok(next > 350_000 && next <= 400_000, `next attempt about 400 s after birth (${next} ms from now)`);

  const flush = await yubin(['queue', 'flush', '-c', s.config]);
  t.equal(flush.code, 0, flush.stderr);
  t.match(flush.stdout, /^flush: 1 messages scheduled for delivery now\n$/);
  await until(async () => (await queueIds(s)).length === 0);
  t.equal(s.sink.messages.length, 1, 'delivered on the flush');
  const got = s.sink.messages[0]!;
  t.same(got.to.sort(), ['far@remote.test', 'hidden@remote.test']);
  t.equal(got.from, 'www-data@example.test');
  t.notMatch(got.data, /^Bcc:/m, 'Bcc header removed');
  t.match(got.data, /^Received: \(yubin sendmail invoked by uid \d+\);/);
  t.match(got.data, /\r\nline one\r\n\.\r\nline after a lone dot\r\n/, '-i keeps the lone dot (dot-stuffed on the wire, unstuffed by the peer)');
  t.match(got.data, /^Date: /m, 'Date added');
  t.match(got.data, /^Message-ID: <.+@mx\.example\.test>/m, 'Message-ID added');
  t.equal((await yubin(['queue', 'stat', '-c', s.config])).stdout, 'messages in queue: 0\nrecipients pending: 0 (local 0, remote 0)\n');
  t.equal(await server.stop(), 0);
});

t.test('cron\'s invocation (-FCronDaemon -i -B8BITMIME -oem root) delivers to a local Maildir, also through a symlink named sendmail', async (t) => {
  const s = await setup(t);
  const server = await serve(t, s.config, 1);
  const r = await sendmailCmd(s, ['-FCronDaemon', '-i', '-B8BITMIME', '-oem', 'root'], 'Subject: Cron <root@host> run-parts\n\noutput\n');
  t.equal(r.code, 0, r.stderr);
  await until(async () => (await maildir(s, 'root')).length === 1);
  const [m] = await maildir(s, 'root');
  t.match(m, /^Return-Path: <\S+@example\.test>\nDelivered-To: root@example\.test\n/, 'unqualified names get the default domain');
  t.match(m, /^From: "CronDaemon" <\S+@example\.test>$/m, '-F names the From header');

  const bin = path.join(s.dir, 'bin');
  await mkdir(bin);
  // npm makes a package's bin executable when it installs it; the build alone does not.
  await chmod(CLI, 0o755);
  await symlink(CLI, path.join(bin, 'sendmail'));
  const viaLink = await run(path.join(bin, 'sendmail'), ['-C', s.config, '-t'], { input: 'To: postmaster\nSubject: via link\n\nhi\n.\nnot part of it\n' });
  t.equal(viaLink.code, 0, viaLink.stderr);
  await until(async () => (await maildir(s, 'postmaster')).length === 1);
  const [pm] = await maildir(s, 'postmaster');
  t.match(pm, /Subject: via link\n[\s\S]*\n\nhi\n$/, 'without -i a lone dot ends the message');
  t.equal(await server.stop(), 0);
});

t.test('sendmail while the server is down: the message waits in the spool and goes at start', async (t) => {
  const s = await setup(t);
  const r = await sendmailCmd(s, ['alice'], 'Subject: queued offline\n\nhello\n');
  t.equal(r.code, 0, r.stderr);
  t.equal((await queueIds(s)).length, 1);
  const server = await serve(t, s.config, 1);
  await until(async () => (await maildir(s, 'alice')).length === 1);
  t.equal(await server.stop(), 0);
});

t.test('sendmail and queue refuse bad input with one line and the right exit code', async (t) => {
  const s = await setup(t);
  const noRcpt = await sendmailCmd(s, [], 'Subject: x\n\ny\n');
  t.equal(noRcpt.code, 65);
  t.equal(noRcpt.stderr, 'sendmail: no recipients: name them as arguments or use -t with To/Cc/Bcc headers\n');
  const badOpt = await sendmailCmd(s, ['-bs'], '');
  t.equal(badOpt.code, 64);
  t.match(badOpt.stderr, /^sendmail: unsupported option -bs/);
  t.equal(badOpt.stderr.split('\n').length, 2, 'one line');
  const badAddr = await sendmailCmd(s, ['a b@example.test'], 'x\n');
  t.equal(badAddr.code, 65);
  const badConfig = await run(process.execPath, [CLI, 'sendmail', '-C', path.join(s.dir, 'missing.yaml'), 'root'], { input: 'x\n' });
  t.equal(badConfig.code, 78);
  for (const cmd of ['delete', 'bounce']) {
    const r = await yubin(['queue', cmd, 'NOSUCHID', '-c', s.config]);
    t.equal(r.code, 2, `${cmd} of an unknown id`);
    t.equal(r.stderr, 'yubin: no message NOSUCHID in the queue\n');
  }
  const flush = await yubin(['queue', 'flush', '-c', s.config]);
  t.equal(flush.code, 1);
  t.equal(flush.stderr, 'yubin: the server is not running: queued messages are tried when it starts\n');
});

t.test('queue bounce sends a DSN to the local sender; queue delete removes without one', async (t) => {
  const s = await setup(t, { rcpt: () => ({ code: 450, message: '4.2.0 mailbox busy' }) });
  const server = await serve(t, s.config, 1);
  t.equal((await sendmailCmd(s, ['-f', 'alice@example.test', 'x@remote.test'], 'Subject: first\n\n1\n')).code, 0);
  t.equal((await sendmailCmd(s, ['-f', 'alice@example.test', 'y@remote.test'], 'Subject: second\n\n2\n')).code, 0);
  await until(async () => server.logs.filter((l) => l.event === 'delivery' && l.result === 'deferral').length === 2);
  const entries = JSON.parse((await yubin(['queue', 'list', '--json', '-c', s.config])).stdout) as Array<{ id: string; recipients: Array<{ address: string }> }>;
  const first = entries.find((e) => e.recipients[0]!.address === 'x@remote.test')!.id;
  const second = entries.find((e) => e.recipients[0]!.address === 'y@remote.test')!.id;

  const b = await yubin(['queue', 'bounce', first, '-c', s.config]);
  t.equal(b.code, 0, b.stderr);
  t.match(b.stdout, /pending recipients bounce to <alice@example\.test>/);
  await until(async () => (await maildir(s, 'alice')).length === 1);
  const [dsn] = await maildir(s, 'alice');
  t.match(dsn, /<x@remote\.test>:\nThis message was bounced by the administrator/);
  t.match(dsn, /Content-Type: message\/delivery-status/);
  t.match(dsn, /Subject: first/);

  const d = await yubin(['queue', 'delete', second, '-c', s.config]);
  t.equal(d.code, 0, d.stderr);
  t.equal(d.stdout, `message ${second} deleted\n`);
  await until(async () => (await queueIds(s)).length === 0);
  t.equal((await maildir(s, 'alice')).length, 1, 'no bounce for a deleted message');
  t.equal(await server.stop(), 0);
});

t.test('a held queue (concurrency 0) keeps mail until a reload releases it', async (t) => {
  const s = await setup(t);
  const original = await readFile(s.config, 'utf8');
  await writeFile(s.config, `${original}queue: { concurrencyLocal: 0, concurrencyRemote: 0 }\n`);
  const server = await serve(t, s.config, 1);
  t.equal((await sendmailCmd(s, ['bob'], 'Subject: held\n\nwait\n')).code, 0);
  t.equal((await sendmailCmd(s, ['far@remote.test'], 'Subject: held too\n\nwait\n')).code, 0);
  await new Promise((r) => setTimeout(r, 500));
  t.equal((await maildir(s, 'bob')).length, 0, 'held');
  t.match((await yubin(['queue', 'stat', '-c', s.config])).stdout, /messages in queue: 2\nrecipients pending: 2 \(local 1, remote 1\)/);
  await writeFile(s.config, original);
  server.child.kill('SIGHUP');
  await until(async () => (await maildir(s, 'bob')).length === 1 && s.sink.messages.length === 1);
  // The spool entry goes once both deliveries are recorded, a moment after the mail has arrived.
  await until(async () => (await queueIds(s)).length === 0);
  t.equal((await queueIds(s)).length, 0, 'the queue is empty');
  t.equal(await server.stop(), 0);
});
