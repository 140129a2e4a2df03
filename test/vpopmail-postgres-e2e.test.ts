/**
 * Two yubin nodes sharing one PostgreSQL mail store, as an administrator runs
 * them: `yubin domain add` / `user add` against the postgres config, mail for
 * the new user taken at once on both nodes, POP3 logins, and 4xx answers (with
 * a log line naming PostgreSQL) while the database is down.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { needs, run, serve, tempDir, waitFor, yubin, type ServeProcess } from './helpers.js';
import { popStat } from './peers/mail-clients.js';
import { needsPostgres, startPostgres } from './peers/postgres.js';

/** One message through swaks; its transcript (stdout) and exit code. */
function swaks(port: number, to: string, extra: string[] = []) {
  return run('swaks', ['--server', `127.0.0.1:${port}`, '--to', to, '--from', 'sender@remote.test', '--header', `Subject: for ${to}`, ...extra]);
}

async function writeConfig(dir: string, url: string): Promise<string> {
  const file = path.join(dir, 'yubin.yaml');
  await writeFile(
    file,
    [
      `dataDir: ${path.join(dir, 'var')}`,
      'plugins:',
      `  vpopmail: { store: { backend: postgres, url: "${url}" }, root: ${path.join(path.dirname(dir), 'domains')} }`,
      'delivery:',
      '  plugins: [vpopmail]',
      'queue:',
      '  concurrencyRemote: 0',
      'listeners:',
      '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [vpopmail] }',
      '  - { name: pop3, protocol: pop3, listen: "127.0.0.1:0", allowInsecureAuth: true, plugins: [vpopmail] }',
      '',
    ].join('\n'),
  );
  return file;
}

const pgOk = needsPostgres();
const tools = needs('swaks', 'python3');

t.test('backend postgres without url: a one-line config error naming the option', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'yubin.yaml');
  await writeFile(file, ['dataDir: ./var', 'plugins:', '  vpopmail: { store: { backend: postgres } }', 'listeners:', '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [vpopmail] }', ''].join('\n'));
  const check = await yubin(['check-config', file]);
  t.equal(check.code, 2);
  t.match(check.stderr, /^yubin: .*plugins\.vpopmail\.store\.url: .*backend postgres needs url.*\n$/);
  const add = await yubin(['domain', 'add', 'example.test', '--password', 'x', '-c', file]);
  t.equal(add.code, 2);
  t.equal(add.stderr, 'yubin: plugins.vpopmail.store.url: backend postgres needs url (e.g. postgres://yubin@db.example.net/yubin)\n');
});

t.test('two nodes on one PostgreSQL: CLI changes are live on both, POP3 works, a database outage is 4xx', { skip: pgOk.skip || tools.skip }, async (t) => {
  const peer = await startPostgres(t);
  const url = await peer.createDatabase('mail');
  // Both nodes see one mailbox tree (in production a shared file system); each has its own queue.
  const base = await tempDir(t);
  const nodeDirs = [path.join(base, 'a'), path.join(base, 'b')];
  const [configA, configB] = await Promise.all(
    nodeDirs.map(async (d) => {
      await mkdir(d, { recursive: true });
      return writeConfig(d, url);
    }),
  );
  const y = (...args: string[]) => yubin([...args, '-c', configA!]);

  t.equal((await y('domain', 'add', 'example.test', '--password', 'pm pw')).code, 0);
  const add = await y('user', 'add', 'alice@example.test', '--password', 'alice pw');
  t.equal(add.code, 0, add.stderr);
  t.notOk(existsSync(path.join(nodeDirs[0]!, 'var/vpopmail.sqlite')), 'no SQLite file: the CLI wrote to PostgreSQL');

  const a: ServeProcess = await serve(t, configA!, 2);
  const b: ServeProcess = await serve(t, configB!, 2);

  const sent = await swaks(a.ports.smtp!, 'alice@example.test');
  t.match(sent.stdout, /250 2\.0\.0 Ok: queued as/, sent.stdout);
  const aliceNew = path.join(base, 'domains/example.test/alice/Maildir/new');
  await waitFor(async () => ((await readdir(aliceNew).catch(() => [])).length ? true : undefined));
  t.same((await popStat(a.ports.pop3!, 'alice@example.test', 'alice pw')).stat?.[0], 1, 'POP3 login on node A sees the message');
  t.same((await popStat(b.ports.pop3!, 'alice@example.test', 'alice pw')).stat?.[0], 1, 'and on node B');

  // A domain and user added while both nodes run: node B takes mail for them at once.
  t.equal((await y('domain', 'add', 'new.test', '--password', 'pm2')).code, 0);
  const bob = await y('user', 'add', 'bob@new.test', '--password', 'bob pw');
  t.equal(bob.code, 0, bob.stderr);
  const cliDone = performance.now();
  const toBob = await swaks(b.ports.smtp!, 'bob@new.test');
  const accepted = performance.now() - cliDone;
  t.match(toBob.stdout, /250 2\.0\.0 Ok: queued as/, 'node B took mail for a domain added a moment ago on node A');
  t.comment(`from the CLI's exit to node B's 250 for the new user: ${accepted.toFixed(0)} ms (swaks' own start-up included)`);
  await waitFor(async () => ((await readdir(path.join(base, 'domains/new.test/bob/Maildir/new')).catch(() => [])).length ? true : undefined));
  t.same((await popStat(b.ports.pop3!, 'bob@new.test', 'bob pw')).stat?.[0], 1, 'bob logs in on node B');

  // PostgreSQL down: never "no such user", never accepted-then-lost.
  await peer.stop();
  const down = await swaks(a.ports.smtp!, 'alice@example.test', ['--quit-after', 'RCPT']);
  t.match(down.stdout, /<\*\* 451 4\.3\.0 /, 'RCPT for a known domain: 451');
  const downB = await swaks(b.ports.smtp!, 'carol@new.test', ['--quit-after', 'RCPT']);
  t.match(downB.stdout, /<\*\* 4\d\d /, 'on node B as well');
  const foreign = await swaks(a.ports.smtp!, 'someone@unknown.test', ['--quit-after', 'RCPT']);
  t.match(foreign.stdout, /<\*\* 4\d\d /, 'a domain that may be ours but cannot be checked: 4xx, not "relaying denied"');
  const pop = await popStat(a.ports.pop3!, 'alice@example.test', 'alice pw');
  t.match(pop.error, /^-ERR \[SYS\/TEMP\]/, 'POP3 login: a temporary error, not a wrong password');
  const named = new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${peer.port}/mail unreachable`);
  const logged = a.logs.filter((l) => named.test(String(l.msg)));
  t.ok(logged.length >= 1, 'the log names PostgreSQL and where it is');
  t.ok(logged.length <= 2, `not one line per lookup (${logged.length})`);

  await peer.start();
  const back = await waitFor(async () => {
    const r = await swaks(a.ports.smtp!, 'alice@example.test', ['--quit-after', 'RCPT']);
    return /<-  250 /.test(r.stdout) && !/<\*\* /.test(r.stdout) ? r : undefined;
  }, 20_000);
  t.ok(back, 'after PostgreSQL is back, mail is taken again');
  t.ok(a.logs.some((l) => /reachable again/.test(String(l.msg))), 'and the log says so');
});
