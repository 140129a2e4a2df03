/**
 * The "done when", as a new user runs it: the default config, the
 * CLI, `yubin serve`, swaks, Python's poplib and curl.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { CLI, needs, ROOT, run, serve, tempDir, waitFor, yubin } from './helpers.js';
import { pop } from './peers/mail-clients.js';

const PASSWORD = 'alice pw';

t.test('default config: domain and user from the CLI, SMTP in, POP3 out, catch-all, submission with AUTH', needs('swaks', 'python3', 'curl'), async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  const original = await readFile(path.join(ROOT, 'config/yubin.yaml'), 'utf8');
  // The embedded config as shipped, but with its data in a temporary directory, ephemeral ports,
  // and remote delivery held: this test sends nothing beyond loopback.
  const text = original
    .replace('dataDir: ../var', `dataDir: ${path.join(dir, 'var')}`)
    .replace(/127\.0\.0\.1:2\d{3}/g, '127.0.0.1:0')
    .concat('\nqueue:\n  concurrencyRemote: 0\n');
  t.not(text, original);
  await writeFile(config, text);
  const y = (...args: string[]) => yubin([...args, '-c', config]);

  t.equal((await y('domain', 'add', 'example.test', '--password', 'pm pw')).code, 0);
  const add = await run(process.execPath, [CLI, 'user', 'add', 'alice@example.test', '--password-stdin', '-c', config], { input: `${PASSWORD}\n` });
  t.equal(add.code, 0, add.stderr);

  const server = await serve(t, config, 3);
  const { smtp, submission, pop3 } = server.ports;

  const sent = await run('swaks', ['--server', `127.0.0.1:${smtp}`, '--to', 'alice@example.test', '--from', 'sender@remote.test', '--header', 'Subject: hello alice', '--body', 'line one\n.dot line\nlast line']);
  t.match(sent.stdout, /250 2\.0\.0 Ok: queued as/);
  const newDir = path.join(dir, 'var/domains/example.test/alice/Maildir/new');
  const name = await waitFor(async () => (await readdir(newDir).catch(() => []))[0]);
  const stored = await readFile(path.join(newDir, name));
  t.match(stored.toString(), /^Return-Path: <sender@remote\.test>\nDelivered-To: alice@example\.test\n/);

  const retr = await pop(pop3!, 'alice@example.test', PASSWORD, `out['stat'] = list(p.stat())
r = p.retr(1)
out['lines'] = [base64.b64encode(l).decode() for l in r[1]]
out['octets'] = r[2]
p.quit()`);
  t.same(retr.stat, [1, stored.length + stored.toString().split('\n').length - 1], 'STAT counts CRLF octets');
  const lines = (retr.lines as string[]).map((l) => Buffer.from(l, 'base64').toString('latin1'));
  t.equal(lines.join('\n') + '\n', stored.toString('latin1'), 'RETR returns the stored bytes, line for line');

  const curl = await run('curl', ['-s', '-u', `alice@example.test:${PASSWORD}`, `pop3://127.0.0.1:${pop3}/1`]);
  t.equal(curl.code, 0, curl.stderr);
  t.equal(curl.stdout.replace(/\r\n/g, '\n'), stored.toString(), 'curl pop3:// prints the message');
  t.match(curl.stdout, /\r\n\.dot line\r\n/, 'dot-stuffing undone by the client');

  const dele = await pop(pop3!, 'alice@example.test', PASSWORD, `p.dele(1)
out['quit'] = p.quit().decode()`);
  t.match(dele.quit, /^\+OK/);
  t.same(await readdir(newDir), [], 'DELE + QUIT removed it');
  t.same(await readdir(path.join(dir, 'var/domains/example.test/alice/Maildir/cur')), []);

  const nobody = await run('swaks', ['--server', `127.0.0.1:${smtp}`, '--to', 'nobody@example.test', '--from', 'sender@remote.test']);
  t.match(nobody.stdout, /550 5\.1\.1 Sorry, no mailbox here by that name/);
  t.equal((await y('domain', 'catchall', 'example.test', 'delete')).code, 0);
  const dropped = await run('swaks', ['--server', `127.0.0.1:${smtp}`, '--to', 'nobody@example.test', '--from', 'sender@remote.test']);
  t.match(dropped.stdout, /250 /, 'accepted once the catch-all says delete');
  t.notMatch(dropped.stdout, /[45]\d\d /);

  const noAuth = await run('swaks', ['--server', `127.0.0.1:${submission}`, '--to', 'friend@remote.test', '--from', 'alice@example.test']);
  t.match(noAuth.stdout, /530 5\.7\.0 Authentication required/, 'submission refuses without AUTH');
  const auth = await run('swaks', ['--server', `127.0.0.1:${submission}`, '--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', PASSWORD, '--to', 'friend@remote.test', '--from', 'alice@example.test']);
  t.match(auth.stdout, /235 2\.7\.0/);
  t.match(auth.stdout, /250 2\.0\.0 Ok: queued/, 'and relays after AUTH over STARTTLS');
  const queue = JSON.parse((await y('queue', 'list', '--json')).stdout) as Array<{ recipients: Array<{ address: string }> }>;
  t.ok(
    queue.some((m) => m.recipients.some((r) => r.address === 'friend@remote.test')),
    'the relayed message waits in the queue',
  );

  // A domain added while the server runs is local at once: no restart, no waiting.
  t.equal((await y('domain', 'add', 'second.test', '--password', 'pm2')).code, 0);
  const second = await run('swaks', ['--server', `127.0.0.1:${smtp}`, '--to', 'postmaster@second.test', '--from', 'sender@remote.test']);
  t.match(second.stdout, /250 2\.0\.0 Ok: queued/, 'the new domain takes mail at once');
  await waitFor(async () => (await readdir(path.join(dir, 'var/domains/second.test/postmaster/Maildir/new')))[0]);

  t.equal((await y('user', 'mod', 'alice@example.test', '--disable', 'pop')).code, 0);
  const refused = await pop(pop3!, 'alice@example.test', PASSWORD, `out['stat'] = list(p.stat())`);
  t.match(refused.error, /^-ERR/, 'POP disabled: the login is refused');
  const stillSmtp = await run('swaks', ['--server', `127.0.0.1:${submission}`, '--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', PASSWORD, '--quit-after', 'AUTH']);
  t.match(stillSmtp.stdout, /235 2\.7\.0/, 'but SMTP AUTH still works (acceptance check 5)');
  await server.stop();
});
