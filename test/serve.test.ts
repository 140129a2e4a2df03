/** `yubin serve` as an operator runs it: the default config, SIGHUP, SIGTERM, kill -9. */
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { Spool } from '../core/queue/spool.js';
import { SmtpTestClient } from '../core/testing/index.js';
import { needs, ROOT, run, serve, sleep, tempDir } from './helpers.js';

/** Holds local delivery (qmail's concurrency 0): what is accepted stays in the spool. */
const HOLD = 'queue: { concurrencyLocal: 0 }\n';

const listenerYaml = (name: string, plugins: string[], extra = '') => `  - name: ${name}\n    protocol: smtp\n    listen: 127.0.0.1:0\n    plugins: [${plugins.join(', ')}]\n${extra}`;

t.test('the embedded default config, as README says: swaks to postmaster@localhost lands in its Maildir, relaying is refused', needs('swaks'), async (t) => {
  // A copy of config/yubin.yaml in a temporary tree, so its ../var is not the checkout's.
  const dir = await tempDir(t);
  await mkdir(path.join(dir, 'config'));
  const config = path.join(dir, 'config/yubin.yaml');
  await copyFile(path.join(ROOT, 'config/yubin.yaml'), config);
  const server = await serve(t, config, 4);
  t.same(server.ports, { smtp: 2525, submission: 2587, pop3: 2110, http: 2080 });
  const ok = await run('swaks', ['--server', '127.0.0.1:2525', '--to', 'postmaster@localhost', '--from', 'root@localhost']);
  t.equal(ok.code, 0, 'swaks succeeds');
  t.match(ok.stdout, /<- {2}250 2\.0\.0 Ok: queued as (\w+)/);
  const id = /queued as (\w+)/.exec(ok.stdout)![1]!;
  await server.waitLog((l) => l.event === 'delivery' && l.id === id);
  const box = path.join(dir, 'var/mail/localhost/postmaster/Maildir/new');
  const files = await readdir(box);
  t.equal(files.length, 1, 'delivered by the maildir plugin under dataDir');
  t.match(await readFile(path.join(box, files[0]!), 'utf8'), /^Return-Path: <root@localhost>\nDelivered-To: postmaster@localhost\n[\s\S]*This is a test mailing/);
  const relay = await run('swaks', ['--server', '127.0.0.1:2525', '--to', 'someone@example.com', '--from', 'root@localhost']);
  t.not(relay.code, 0);
  t.match(relay.stdout, /<\*\* 553 5\.7\.1 sorry, that domain isn't in my list of allowed rcpthosts/);
  const tls = await run('swaks', ['--server', '127.0.0.1:2587', '--tls', '--to', 'postmaster@localhost', '--from', 'root@localhost']);
  t.match(tls.stdout, /TLS started with cipher/, 'submission offers STARTTLS out of the box');
  t.match(tls.stdout, /530 5\.7\.0 Authentication required/, 'and takes nothing without AUTH');
  t.ok((await readdir(path.join(dir, 'var/tls'))).includes('selfsigned.crt'), 'self-signed certificate generated into dataDir');
  const metrics = await fetch('http://127.0.0.1:2080/metrics');
  t.equal(metrics.status, 200, 'Prometheus metrics on 127.0.0.1:2080');
  t.match(await metrics.text(), /^yubin_messages_total\{listener="smtp",result="accepted"\} 1$/m, 'counting what swaks did');
  const login = await fetch('http://127.0.0.1:2080/login');
  t.equal(login.status, 200, 'the web pages on the same listener');
  t.match(await login.text(), /<form method="post" action="\/login">/);
  const client = await (await fetch('http://127.0.0.1:2080/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice@example.test')).text();
  t.match(client, /<port>2587<\/port>[\s\S]*<socketType>STARTTLS<\/socketType>/, "Thunderbird's autoconfig names the submission port");
  t.equal(await server.stop(), 0);
});

t.test('SIGHUP reloads config and plugin files without dropping connections', async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  const write = (plugins: string[], domains: string[], more = '') =>
    // An options block no listener uses is an error: badmailfrom's is written only when it is listed.
    writeFile(config, `dataDir: ./var\nlocalDomains: [localhost]\nplugins:\n  rcpthosts: { domains: [${domains.join(', ')}] }\n${plugins.includes('badmailfrom') ? '  badmailfrom: { addresses: ["@spam.example"] }\n' : ''}listeners:\n${listenerYaml('smtp', plugins)}${more}`);
  await write(['rcpthosts'], ['one.example']);
  const server = await serve(t, config, 1);
  const port = server.ports.smtp!;
  const old = await SmtpTestClient.connect(port);
  await old.ehlo();

  await write(['badmailfrom', 'rcpthosts'], ['two.example'], listenerYaml('ipv6', ['rcpthosts']).replace('127.0.0.1:0', '"[::1]:0"'));
  server.child.kill('SIGHUP');
  await server.waitLog((l) => l.event === 'reload' && l.level === 30);
  t.ok(server.ports.ipv6, 'a listener added to the config starts, here on IPv6');
  const v6 = await SmtpTestClient.connect(server.ports.ipv6!, { host: '::1' });
  t.equal(v6.greeting?.code, 220);
  await v6.ehlo();
  t.equal((await v6.command('MAIL FROM:<a@example.net>')).code, 250);
  t.equal((await v6.command('RCPT TO:<postmaster@localhost>')).code, 250);
  await v6.quit();

  t.equal((await old.command('MAIL FROM:<x@spam.example>')).code, 250, 'the open connection is still there');
  t.equal((await old.command('RCPT TO:<a@one.example>')).code, 250, 'and keeps the plugins it started with');
  await old.quit();
  const fresh = await SmtpTestClient.connect(port);
  await fresh.ehlo();
  await fresh.command('MAIL FROM:<x@spam.example>');
  t.equal((await fresh.command('RCPT TO:<postmaster@localhost>')).code, 553, 'a new connection gets the new plugin list');
  await fresh.command('RSET');
  await fresh.command('MAIL FROM:<x@ok.example>');
  t.equal((await fresh.command('RCPT TO:<a@one.example>')).code, 553, 'and the new options');
  t.equal((await fresh.command('RCPT TO:<a@two.example>')).code, 250);
  await fresh.quit();

  await writeFile(config, 'listeners: [this is not valid\n');
  server.child.kill('SIGHUP');
  await server.waitLog((l) => l.event === 'reload' && l.level === 50);
  const still = await SmtpTestClient.connect(port);
  t.equal(still.greeting?.code, 220, 'a broken config is reported and the running one kept');
  await still.quit();
  t.equal(await server.stop(), 0);
});

t.test('SIGTERM drains: idle sessions get 421, a message in progress is finished, then exit 0', async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  // The queue is held (concurrency 0) so the message stays in the spool to be looked at.
  await writeFile(config, `dataDir: ./var\n${HOLD}listeners:\n${listenerYaml('smtp', ['rcpthosts'])}`);
  const server = await serve(t, config, 1);
  const port = server.ports.smtp!;
  const idle = await SmtpTestClient.connect(port);
  await idle.ehlo();
  const busy = await SmtpTestClient.connect(port);
  await busy.ehlo();
  await busy.command('MAIL FROM:<a@example.net>');
  await busy.command('RCPT TO:<postmaster@localhost>');
  t.equal((await busy.command('DATA')).code, 354);
  busy.write('Subject: in flight\r\n\r\nfirst half\r\n');

  server.child.kill('SIGTERM');
  await server.waitLog((l) => l.event === 'stop');
  const bye = await idle.read(5000);
  t.equal(bye.code, 421, 'idle session told to go');
  await sleep(200);
  const refused = await new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(true));
  });
  t.ok(refused, 'no new connections once draining');
  t.equal(server.child.exitCode, null, 'still running while a message is in progress');
  busy.write('second half\r\n.\r\n');
  const done = await busy.read(5000);
  t.equal(done.code, 250, 'the message in progress is accepted');
  const after = await busy.read(5000);
  t.equal(after.code, 421, 'then that session is closed too');
  t.equal(await server.exited, 0, 'exit 0');
  t.equal((await new Spool(path.join(dir, 'var/queue')).list()).length, 1, 'the drained message is on disk');
});

t.test('a message answered 250 survives kill -9', async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, `dataDir: ./var\n${HOLD}listeners:\n${listenerYaml('smtp', ['rcpthosts'])}`);
  const server = await serve(t, config, 1);
  const c = await SmtpTestClient.connect(server.ports.smtp!);
  await c.ehlo();
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `Subject: durable ${i}\n\n${'payload '.repeat(200)}\nend ${i}\n` });
    ids.push(/queued as (\w+)/.exec(r.data!.text)![1]!);
  }
  // One more, cut off in the middle: it was never acknowledged.
  await c.command('MAIL FROM:<a@example.net>');
  await c.command('RCPT TO:<postmaster@localhost>');
  await c.command('DATA');
  c.write('Subject: never acknowledged\r\n\r\nhalf');
  await sleep(100);
  await server.stop('SIGKILL');
  const spool = new Spool(path.join(dir, 'var/queue'));
  for (const [i, id] of ids.entries()) {
    const env = await spool.readEnvelope(id);
    let text = '';
    for await (const chunk of await spool.openMessage(id, env)) text += (chunk as Buffer).toString();
    t.equal(env.recipients.length, 1);
    t.ok(text.endsWith(`end ${i}\r\n`), `message ${i} complete on disk`);
  }
  // Restart: committed messages stay, the half-written one is cleaned away.
  const again = await serve(t, config, 1);
  const left = await readdir(path.join(dir, 'var/queue/tmp'));
  t.same(left, [], 'no half-written file after restart');
  t.equal((await spool.list()).length, 20);
  t.equal(await again.stop(), 0);
});
