/**
 * The decision journal and `yubin why`, as an admin would use them: a real
 * server (`yubin serve`), a real rbldnsd listing one client, a remote SMTP
 * peer that defers one recipient once and refuses another, then `yubin why`
 * by IP, by recipient, by queue id and by Message-ID, while the server runs
 * and after it stopped.
 */
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { needs, run, serve, sleep, tempDir, writeFiles, yubin } from './helpers.js';
import { startRbldnsd } from './peers/rbldnsd.js';
import { startSink } from './peers/sink.js';

t.setTimeout(3 * 60_000);

t.test('yubin why tells the story of a refused client, a deferred then delivered message and a bounce', needs('rbldnsd', 'swaks'), async (t) => {
  const dir = await tempDir(t, 'yubin-why-');
  const rbl = await startRbldnsd(t, { 'bl.test': ':127.0.0.2:Listed in bl.test, see https://bl.test/$\n127.0.0.2\n' });
  const sink = await startSink({
    rcpt: (address, attempt) => {
      if (address === 'later@remote.test' && attempt === 1) return { code: 451, message: '4.3.0 try again later, we are busy' };
      if (address === 'nobody@remote.test') return { code: 550, message: '5.1.1 no such user here' };
      return undefined;
    },
  });
  t.teardown(() => sink.close());
  await writeFiles(dir, {
    'tcp.smtp': '127.0.0.1:allow,RELAYCLIENT=""\n:allow\n',
    'yubin.yaml': `hostname: mx.example.test
dataDir: var
localDomains: [example.test]
dns: { servers: ["${rbl.address}"], timeout: 2s, tries: 1 }
queue: { retry: [1s] }
delivery:
  plugins: [maildir]
  routes:
    remote.test: { host: 127.0.0.1, port: ${sink.port}, tls: none }
plugins:
  tcprules: { file: tcp.smtp }
  rblsmtpd: { zones: [bl.test] }
listeners:
  - name: mx
    protocol: smtp
    listen: 127.0.0.1:0
    plugins: [tcprules, rcpthosts, rblsmtpd]
`,
  });
  const config = path.join(dir, 'yubin.yaml');
  const server = await serve(t, config, 1);
  const port = server.ports.mx!;
  const swaks = (...args: string[]) => run('swaks', ['--server', '127.0.0.1', '--port', String(port), '--helo', 'client.example', '--timeout', '20', ...args]);

  const listed = await swaks('--local-interface', '127.0.0.2', '--from', 'spam@example.org', '--to', 'alice@example.test');
  t.match(listed.stdout, /<\*\* 451 4\.7\.1 Listed in bl\.test/, 'the listed client gets 451 at RCPT');
  await swaks('--from', 'alice@example.test', '--to', 'later@remote.test', '--header', 'Message-Id: <why-later@example.test>', '--header', 'Subject: deferred once');
  await swaks('--from', 'alice@example.test', '--to', 'nobody@remote.test', '--header', 'Subject: will bounce');

  // Wait for the retry and the bounce (retry schedule 1 s).
  const inbox = path.join(dir, 'var/mail/example.test/alice/Maildir/new');
  for (let i = 0; i < 100 && !(sink.messages.some((m) => m.to.includes('later@remote.test')) && (await readdir(inbox).catch(() => [])).length); i++) await sleep(100);
  t.ok(sink.messages.some((m) => m.to.includes('later@remote.test')), 'delivered on the second attempt');
  const [bounceFile] = await readdir(inbox);
  t.match(await readFile(path.join(inbox, bounceFile!), 'utf8'), /no such user here/, 'the bounce reached alice');
  await sleep(300); // the journal writes in 100 ms batches

  const why = async (...args: string[]) => {
    const r = await yubin(['why', ...args, '-c', config]);
    t.equal(r.code, 0, `why ${args.join(' ')}${r.code ? `: ${r.stderr}` : ''}`);
    return r.stdout;
  };

  // By IP: the refusal, with the DNSBL's own words.
  const byIp = await why('127.0.0.2');
  t.comment(byIp);
  t.match(byIp, /127\.0\.0\.2 was temporarily refused at RCPT \(alice@example\.test\) by rblsmtpd: 451 Listed in bl\.test, see https:\/\/bl\.test\/127\.0\.0\.2/);
  t.notMatch(byIp, /later@remote\.test/, 'nothing about other clients');

  // By recipient: accepted, deferred with the remote reply, then delivered.
  const byRcpt = await why('later@remote.test');
  t.comment(byRcpt);
  t.match(byRcpt, /127\.0\.0\.1 sent message (\S+) through mx/);
  t.match(byRcpt, /delivery to later@remote\.test \(remote, attempt 1\): deferred \(next try [^)]+\): .*451 4\.3\.0 try again later, we are busy/);
  t.match(byRcpt, /delivery to later@remote\.test \(remote, attempt 2\): delivered/);
  t.match(byRcpt, /later@remote\.test: delivered/, 'and where it is now');
  const later = /message accepted as (\S+):/.exec(byRcpt)![1]!;

  // By Message-ID, with or without the brackets: the same message.
  t.match(await why('<why-later@example.test>'), new RegExp(`message ${later}: `));
  t.match(await why('why-later@example.test'), new RegExp(`message ${later}: `));

  // By queue id: the bounce, the remote's refusal and where the bounce went.
  const bouncedId = /message (\S+): from <alice@example\.test>; nobody@remote\.test/.exec(await why('nobody@remote.test'))![1]!;
  const byId = await why(bouncedId);
  t.comment(byId);
  t.match(byId, /delivery to nobody@remote\.test \(remote, attempt 1\): failed for good: .*550 5\.1\.1 no such user here/);
  t.match(byId, /bounce for nobody@remote\.test sent to <alice@example\.test> as (\S+)/);
  t.match(byId, /nobody@remote\.test: failed and bounced/);
  t.match(byId, /alice@example\.test: delivered \(maildir: delivered to example\.test\/alice\/Maildir\/new\//, "the bounce's own story: in alice's Maildir");

  // JSON, --since, and after the server has stopped.
  const json = JSON.parse(await why(later, '--json')) as Array<{ kind: string; key: string; summary: string }>;
  t.same(json.map((s) => s.kind), ['connection', 'message']);
  t.match(await why('127.0.0.2', '--since', '2h'), /rblsmtpd/);
  await sleep(1_100);
  t.match(await why('127.0.0.2', '--since', '1s'), /nothing about 127\.0\.0\.2 in the journal in the last 1s/);
  // yubin status: one open connection, the queue, the deliveries, the last refusal.
  const held = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => held.once('data', () => resolve()));
  const st = await yubin(['status', '-c', config]);
  held.destroy();
  t.match(st.stdout, /^server: running, pid \d+, up \d+s$/m);
  t.match(st.stdout, /^  mx  smtp  127\.0\.0\.1:\d+ +1\/100 connections$/m, 'the open connection is counted');
  t.match(st.stdout, /^queue: messages in queue: 0; recipients pending: local 0, remote 0$/m);
  t.match(st.stdout, /^status: local 0\/10 remote 0\/20$/m);
  t.match(st.stdout, /last refusals:\n  \S+ \S+  127\.0\.0\.2 mx: temporarily refused at RCPT for alice@example\.test by rblsmtpd: 451 Listed in bl\.test/);

  await server.stop();
  t.match(await why('127.0.0.2'), /temporarily refused at RCPT/, 'it answers with the server stopped');
  t.match((await yubin(['status', '-c', config])).stdout, /^server: not running[^]*mx  smtp  127\.0\.0\.1:0 +not listening[^]*last refusals:\n  .*rblsmtpd/m);
  const bad = await yubin(['why', '127.0.0.2', '--since', 'yesterday', '-c', config]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--since yesterday: expected a duration/);
});
