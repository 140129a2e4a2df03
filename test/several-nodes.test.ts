/**
 * A site of several nodes, as an administrator would run it: two `yubin
 * serve` nodes sharing one PostgreSQL (accounts), one redis-server (login
 * throttle, rate limits) and one mailbox directory, and a Dovecot serving
 * IMAP from those mailboxes with yubin's accounts (its Lua passdb asking
 * node A over the login socket).
 *
 * A user added by the CLI on node A gets mail through node B at once and
 * reads it over IMAP and over POP3 on node A; a rate limit of 10 messages a
 * minute holds across both nodes; an attacker spreading guesses over both
 * nodes and IMAP is locked out; with redis-server killed, mail still flows
 * (the rate limit's documented fail-open).
 */
import { chmod, chown, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { needs, yubinAs, run, serve, tempDir, waitFor, type ServeProcess } from './helpers.js';
import { asMailUser, dovecotLuaMissing, mailUser, startDovecotOverSocket } from './peers/dovecot.js';
import { needsPostgres, startPostgres } from './peers/postgres.js';
import { imap, popStat } from './peers/mail-clients.js';
import { startRedis } from './peers/redis.js';

function peersNeeded(): { skip: string | false } {
  const missing = [dovecotLuaMissing()].filter((m): m is string => m !== undefined);
  for (const o of [needsPostgres(), needs('redis-server', 'swaks', 'python3', 'setpriv')]) if (o.skip) missing.push(o.skip);
  if (!missing.length) return { skip: false };
  if (process.env.CI === 'true') {
    t.fail(`${missing.join('; ')}: CI must install them`);
    return { skip: false };
  }
  return { skip: missing.join('; ') };
}

async function swaks(port: number, to: string, from = 'sender@remote.test'): Promise<string> {
  return (await run('swaks', ['--server', `127.0.0.1:${port}`, '--to', to, '--from', from, '--header', `Subject: for ${to}`])).stdout;
}

t.test('two nodes sharing PostgreSQL, Redis and the mailboxes; Dovecot serving IMAP from them', peersNeeded(), async (t) => {
  const user = mailUser();
  const as = (cmd: readonly string[]) => asMailUser(user, cmd);
  const pg = await startPostgres(t);
  const url = await pg.createDatabase('mail');
  const redis = await startRedis(t);
  const dir = await tempDir(t, 'yubin-nodes-');
  if (process.getuid!() === 0) await chown(dir, user.uid, user.gid);
  await chmod(dir, 0o755);

  const configs = await Promise.all(
    ['a', 'b'].map(async (node) => {
      const file = path.join(dir, `${node}.yaml`);
      await writeFile(
        file,
        `dataDir: ${dir}/var-${node}
store: { backend: redis, url: "${redis.url}" }
loginThrottle: { shared: true, freeFailures: 3, delay: 10ms, lockoutAfter: 4, rememberSuccess: 0 }
plugins:
  vpopmail: { store: { backend: postgres, url: "${url}" }, root: ${dir}/domains, authSocket: auth.sock }
  ratelimit: { sender: { limit: 10, window: 1m } }
delivery:
  plugins: [vpopmail]
queue:
  concurrencyRemote: 0
listeners:
  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [ratelimit, vpopmail] }
  - { name: pop3, protocol: pop3, listen: "127.0.0.1:0", allowInsecureAuth: true, plugins: [vpopmail] }
`,
      );
      return file;
    }),
  );
  const [configA, configB] = configs as [string, string];
  const y = yubinAs(t, as, configA);
  const a: ServeProcess = await serve(t, configA, 2, as([]));
  const b: ServeProcess = await serve(t, configB, 2, as([]));
  const dovecot = await startDovecotOverSocket({ dir, user, socket: path.join(dir, 'var-a/auth.sock') });
  t.teardown(dovecot.stop);

  // Added on node A while both run; mail for them goes in through node B at once.
  await y('domain', 'add', 'example.test', '--password', 'pm pw');
  await y('user', 'add', 'alice@example.test', '--password', 'alice pw');
  await y('user', 'add', 'bob@example.test', '--password', 'bob pw');
  t.match(await swaks(b.ports.smtp!, 'alice@example.test'), /250 2\.0\.0 Ok: queued as/, 'node B takes mail for a user node A just added');
  const inbox = path.join(dir, 'domains/example.test/alice/Maildir');
  await waitFor(async () => ((await readdir(path.join(inbox, 'new')).catch(() => [])).length ? true : undefined));

  const read = await imap(dovecot.port, 'alice@example.test', 'alice pw', `typ, data = m.select('INBOX')
out['exists'] = int(data[0])
typ, data = m.fetch('1', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
out['subject'] = data[0][1].decode().strip()`);
  t.notOk(read.error, String(read.error ?? ''));
  t.equal(read.exists, 1, 'IMAP through Dovecot sees it');
  t.equal(read.subject, 'Subject: for alice@example.test');
  t.same(((await popStat(a.ports.pop3!, 'alice@example.test', 'alice pw')).stat as number[] | undefined)?.[0], 1, 'and POP3 on node A');

  // 10 messages a minute per sender, counted across both nodes.
  for (let i = 0; i < 10; i++) t.match(await swaks((i % 2 ? a : b).ports.smtp!, 'alice@example.test', 'bulk@remote.test'), /250 2\.0\.0 Ok: queued/, `message ${i + 1} of 10`);
  t.match(await swaks(a.ports.smtp!, 'alice@example.test', 'bulk@remote.test'), /451 4\.7\.1 Rate limit exceeded for sender bulk@remote\.test/, 'the 11th on node A: 451');
  t.match(await swaks(b.ports.smtp!, 'alice@example.test', 'bulk@remote.test'), /451 4\.7\.1 Rate limit exceeded/, 'and on node B');

  // Guesses at bob spread over node A's and node B's POP3 and Dovecot's IMAP: four in all lock him out everywhere.
  t.match((await popStat(a.ports.pop3!, 'bob@example.test', 'guess 1')).error, /^-ERR/);
  t.match((await popStat(b.ports.pop3!, 'bob@example.test', 'guess 2')).error, /^-ERR/);
  t.match((await imap(dovecot.port, 'bob@example.test', 'guess 3')).error, /AUTHENTICATIONFAILED|Authentication failed/);
  t.match((await popStat(b.ports.pop3!, 'bob@example.test', 'guess 4')).error, /^-ERR/);
  t.match((await popStat(a.ports.pop3!, 'bob@example.test', 'bob pw')).error, /^-ERR/, 'his own password refused on node A: locked out');
  t.match((await imap(dovecot.port, 'bob@example.test', 'bob pw')).error, /AUTHENTICATIONFAILED|Authentication failed/, 'and over IMAP');
  t.ok(
    [...a.logs, ...b.logs].some((l) => /locked out/.test(String(l.msg ?? l.reason ?? ''))),
    'a node logged the lockout',
  );

  // redis-server gone: mail still flows (ratelimit's onStoreFailure: accept, the default).
  await redis.stop();
  t.match(await swaks(b.ports.smtp!, 'alice@example.test', 'other@remote.test'), /250 2\.0\.0 Ok: queued/, 'accepted uncounted while Redis is down');

  t.same(
    dovecot.log().split('\n').filter((l) => /Error|Panic|Fatal/.test(l) && !/bob@example\.test/.test(l)),
    [],
    'nothing went wrong in Dovecot',
  );
  await dovecot.stop();
  await a.stop();
  await b.stop();
});
