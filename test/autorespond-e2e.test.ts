/**
 * Vacation replies as an admin sets them up: `yubin serve` with
 * `delivery.plugins: [autorespond, vpopmail]`, a domain and user from the
 * CLI, `yubin vacation set` while the server runs, mail from outside with
 * swaks, and the outside sender's domain routed to a loopback sink that
 * records what comes back.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { needs, run, serve, sleep, tempDir, waitFor, writeFiles, yubin } from './helpers.js';
import { startSink } from './peers/sink.js';

/** Header fields of a message, unfolded, names lower-cased. */
function headersOf(data: string): Map<string, string> {
  const head = data.slice(0, data.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
  return new Map(head.split('\r\n').map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
}

t.test('yubin vacation: one RFC 3834 reply per sender, none to lists or <>, every message still delivered', needs('swaks'), async (t) => {
  const dir = await tempDir(t, 'yubin-vacation-');
  const sink = await startSink();
  t.teardown(() => sink.close());
  await writeFiles(dir, {
    'yubin.yaml': `hostname: mx.example.test
dataDir: var
localDomains: []
queue: { retry: [1s] }
delivery:
  plugins: [autorespond, vpopmail]
  routes:
    remote.test: { host: 127.0.0.1, port: ${sink.port}, tls: none }
listeners:
  - name: mx
    protocol: smtp
    listen: 127.0.0.1:0
    plugins: [rcpthosts, vpopmail]
`,
    'away.txt': 'I am away until January.\nFor anything urgent, write to bob@example.test.\n',
  });
  const config = path.join(dir, 'yubin.yaml');
  const y = (...args: string[]) => yubin([...args, '-c', config]);
  t.equal((await y('domain', 'add', 'example.test', '--password', 'pm pw')).code, 0);
  t.equal((await y('user', 'add', 'alice@example.test', '--password', 'alice pw')).code, 0);

  const server = await serve(t, config, 1);
  const port = server.ports.mx!;
  const swaks = async (from: string, ...args: string[]) => {
    const r = await run('swaks', ['--server', '127.0.0.1', '--port', String(port), '--helo', 'client.remote.test', '--timeout', '20', '--from', from, '--to', 'alice@example.test', ...args]);
    const id = /250 2\.0\.0 Ok: queued as (\S+)/.exec(r.stdout)?.[1];
    if (!id) throw new Error(`not queued: ${r.stdout}`);
    return id;
  };
  /** The plugin's line about this message. */
  const decision = (id: string) => server.waitLog((l) => l.plugin === 'autorespond' && l.id === id);

  // Usage errors: one line, exit 2, nothing written.
  const refusals: Array<[string[], RegExp]> = [
    [['alice', '--body', 'x'], /^yubin: invalid address: alice \(expected user@domain\)\n$/],
    [['alice@example.test', '--end', '2026-13-01', '--body', 'x'], /^yubin: invalid --end: 2026-13-01 \(expected YYYY-MM-DD/],
    [['alice@example.test', '--start', 'next week', '--body', 'x'], /^yubin: invalid --start: next week /],
    [['alice@example.test', '--start', '2030-01-10', '--end', '2030-01-05', '--body', 'x'], /^yubin: --end 2030-01-05 is not after --start 2030-01-10\n$/],
    [['alice@example.test', '--end', '2020-01-01', '--body', 'x'], /^yubin: --end 2020-01-01 is already past/],
    [['alice@example.test'], /^yubin: the reply's text is missing: --body TEXT or --body-file FILE\n$/],
    [['alice@example.test', '--body', 'x', '--body-file', 'away.txt'], /^yubin: give only one of --body and --body-file\n$/],
  ];
  // Side by side: each is a new yubin process.
  const results = await Promise.all(refusals.map(([args]) => y('vacation', 'set', ...args)));
  refusals.forEach(([args, message], i) => {
    const r = results[i]!;
    t.equal(r.code, 2, `vacation set ${args.join(' ')}: exit 2`);
    t.match(r.stderr, message);
    t.equal(r.stderr.split('\n').length, 2, 'one line');
  });
  t.equal((await y('vacation', 'show', 'bob')).code, 2, 'show: a bad address is a usage error too');
  t.equal((await y('vacation', 'show', 'alice@example.test')).stdout, 'no vacation set for alice@example.test\n');
  t.notOk(existsSync(path.join(dir, 'var/autorespond.sqlite')), 'no file is made until a vacation is set');

  // Set while the server runs: it counts at once.
  const set = await y('vacation', 'set', 'Alice@Example.test', '--body-file', path.join(dir, 'away.txt'), '--end', '2099-12-31');
  t.equal(set.code, 0, set.stderr);
  t.match(set.stdout, /^vacation on for alice@example\.test, from now until 2100-01-01 00:00 [+-]\d\d:\d\d\n$/);
  t.equal(set.stderr, '', 'no warning: autorespond is in delivery.plugins');

  const first = await swaks('bob@remote.test', '--header', 'Subject: Lunch on Friday?', '--header', 'Message-Id: <lunch-1@remote.test>');
  t.match(await decision(first), { decision: 'replied', rcpt: 'alice@example.test', sender: 'bob@remote.test', level: 30 });
  const reply = await waitFor(() => sink.messages[0]);
  t.equal(reply.from, '', 'the reply comes from the null sender');
  t.same(reply.to, ['bob@remote.test']);
  const hdr = headersOf(reply.data);
  t.equal(hdr.get('from'), 'alice@example.test');
  t.equal(hdr.get('to'), 'bob@remote.test');
  t.equal(hdr.get('subject'), 'Auto: Lunch on Friday?');
  t.equal(hdr.get('auto-submitted'), 'auto-replied');
  t.equal(hdr.get('in-reply-to'), '<lunch-1@remote.test>');
  t.equal(hdr.get('references'), '<lunch-1@remote.test>');
  t.match(hdr.get('message-id'), /^<\S+@mx\.example\.test>$/);
  t.match(hdr.get('date'), /^\w{3}, \d{2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$/);
  t.match(reply.data, /\r\n\r\nI am away until January\.\r\nFor anything urgent, write to bob@example\.test\.\r\n/);

  const second = await swaks('bob@remote.test', '--header', 'Subject: Re: Lunch on Friday?');
  t.match(await decision(second), { decision: 'not-replied', reason: 'already replied to this sender in this vacation period' });
  const list = await swaks('carol@remote.test', '--header', 'Subject: [users] news', '--header', 'List-Id: Users <users.lists.remote.test>');
  t.match(await decision(list), { decision: 'not-replied', reason: 'List-Id header: list mail', sender: 'carol@remote.test' });
  const bounce = await swaks('<>', '--header', 'Subject: Delivery Status Notification');
  t.match(await decision(bounce), { decision: 'not-replied', reason: 'null sender <>', sender: '' });
  const daemon = await swaks('MAILER-DAEMON@remote.test', '--header', 'Subject: failure notice');
  t.match(await decision(daemon), { decision: 'not-replied', reason: /mailer-daemon@/ });

  // Unknown users are still refused at RCPT: autorespond serves verify, so the check stays on.
  const nobody = await run('swaks', ['--server', '127.0.0.1', '--port', String(port), '--from', 'bob@remote.test', '--to', 'nobody@example.test']);
  t.match(nobody.stdout, /<\*\* 550 5\.1\.1 Sorry, no mailbox here by that name/);

  const show = JSON.parse((await y('vacation', 'show', 'alice@example.test', '--json')).stdout) as Record<string, unknown>;
  t.match(show, { address: 'alice@example.test', enabled: true, state: 'active', start: null, end: /^(2099-12-31|2100-01-01)T/, subject: null });
  t.match(show.repliedTo, [{ sender: 'bob@remote.test', queueId: /^[0-9A-Z]+$/ }]);
  t.match((await y('vacation', 'show', 'alice@example.test')).stdout, /^alice@example\.test: on, answering now\n[\s\S]*  replied: 1 sender since /);

  // Off: no more replies, and the mail still arrives.
  const off = await y('vacation', 'off', 'alice@example.test');
  t.equal(off.stdout, 'vacation off for alice@example.test\n');
  const later = await swaks('dave@remote.test', '--header', 'Subject: are you back?');
  await server.waitLog((l) => l.event === 'delivery' && l.id === later && l.result === 'success');
  t.match((await y('vacation', 'show', 'alice@example.test', '--json')).stdout, /"state": "off"/);

  // A new set is a new period: bob is answered once more.
  t.equal((await y('vacation', 'set', 'alice@example.test', '--subject', 'Away', '--body', 'Still away.')).code, 0);
  const again = await swaks('bob@remote.test', '--header', 'Subject: ping');
  t.match(await decision(again), { decision: 'replied' });
  await waitFor(() => sink.messages[1]);
  t.equal(headersOf(sink.messages[1]!.data).get('subject'), 'Away', 'the chosen subject');
  t.match(headersOf(sink.messages[1]!.data).get('in-reply-to'), /^<\S+>$/, "threaded under swaks' own Message-Id");

  await sleep(300);
  t.equal(sink.messages.length, 2, 'two replies in all');
  const inbox = path.join(dir, 'var/domains/example.test/alice/Maildir/new');
  t.equal((await readdir(inbox)).length, 7, "alice's mailbox got every message");

  // The journal tells it: the decision, and the reply queued from alice's delivery.
  await sleep(300);
  const why = await y('why', first);
  t.match(why.stdout, /autorespond: replied to <bob@remote\.test> for alice@example\.test as (\S+)/);
  t.match(why.stdout, /a deliver plugin sent a new message from <> to bob@remote\.test as \S+/);

  t.equal(await server.stop(), 0, 'stops cleanly');
});
