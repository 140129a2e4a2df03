/**
 * Hardening (issue 18, defect 6): backscatter. What could only bounce later
 * is refused in the SMTP session, so no bounce carrying an attacker's text
 * ever goes to a forged sender: addresses no deliver plugin would take (the
 * verify hook, asked at RCPT) and messages that already carry the
 * Delivered-To line local delivery would add (a loop), at the end of DATA.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { startTestServer } from '../core/testing/index.js';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { hashPassword } from '../plugins/vpopmail/passwords.js';
import { needs, run } from './helpers.js';
import { startSink } from './peers/sink.js';

/** The embedded default's shape: vpopmail and maildir deliver, remote mail (bounces) goes to a sink. */
async function site(t: Test, listenerPlugins = ['rcpthosts', 'vpopmail']) {
  const sink = await startSink();
  const server = await startTestServer({
    deliver: true,
    listeners: [{ name: 'smtp', plugins: listenerPlugins }],
    pluginOptions: { rcpthosts: { domains: [] }, vpopmail: {} },
    config: {
      localDomains: ['localhost'],
      delivery: { plugins: ['vpopmail', 'maildir'], smarthost: { host: '127.0.0.1', port: sink.port, tls: 'none' } },
      queue: { retry: ['1s'] },
    },
  });
  const store = new SqliteStore(path.join(server.dataDir, 'vpopmail.sqlite'));
  t.teardown(async () => {
    store.close();
    await server.close();
    await sink.close();
  });
  store.addDomain({ name: 'dom.test' });
  store.addUser({ domain: 'dom.test', name: 'alice', passwordHash: await hashPassword('pw pw pw') });
  /** Lets the queue finish, then: what reached the sink (bounces), and the log lines about bounces. */
  const settle = async () => {
    await server.server.queue.idle();
    return { sunk: sink.messages.length, bounces: server.logs.filter((l) => l.event === 'bounce') };
  };
  const inbox = (user: string, domain = 'dom.test') =>
    readdir(domain === 'localhost' ? path.join(server.dataDir, 'mail', domain, user, 'Maildir', 'new') : path.join(server.dataDir, 'domains', domain, user, 'Maildir', 'new')).catch(() => []);
  return { server, store, sink, settle, inbox };
}

function swaks(port: number, args: string[]) {
  return run('swaks', ['--server', `127.0.0.1:${port}`, '--timeout', '20', '--from', 'victim@remote.example', ...args]);
}

t.test('"a/b"@localhost is refused at RCPT (550 5.1.1), not accepted and bounced to the sender', needs('swaks'), async (t) => {
  const s = await site(t);
  const r = await swaks(s.server.port, ['--to', '"a/b"@localhost', '--header', 'Subject: attacker text']);
  t.match(r.stdout, /<\*\*\s+550 5\.1\.1 Sorry, no mailbox here by that name/, 'refused in the session');
  t.equal(r.code, 24, 'swaks: the recipient was refused');
  const { sunk, bounces } = await s.settle();
  t.same([sunk, bounces.length], [0, 0], 'no bounce queued or sent');
  t.same(await s.server.queued(), [], 'nothing in the queue');
});

t.test('an unknown user of a vpopmail domain is refused at RCPT even where the listener does not run vpopmail', needs('swaks'), async (t) => {
  // Only rcpthosts on the listener: before, the core took any recipient of a local domain and the queue bounced it.
  const s = await site(t, ['rcpthosts']);
  const r = await swaks(s.server.port, ['--to', 'nobody@dom.test']);
  t.match(r.stdout, /<\*\*\s+550 5\.1\.1 /);
  const good = await swaks(s.server.port, ['--to', 'alice@dom.test']);
  t.equal(good.code, 0, 'a real user is still taken');
  const { sunk, bounces } = await s.settle();
  t.same([sunk, bounces.length], [0, 0], 'no bounce');
  t.equal((await s.inbox('alice')).length, 1);
});

t.test('a forged Delivered-To of the recipient is refused at the end of DATA (554 5.4.6), not bounced', needs('swaks'), async (t) => {
  const s = await site(t);
  for (const [to, line] of [
    ['alice@dom.test', 'Delivered-To: alice@dom.test'],
    ['alice-news@dom.test', 'Delivered-To: ALICE@dom.test'], // an extension address is delivered to alice, with alice's line
    ['bob@localhost', 'Delivered-To: bob@localhost'],
  ] as const) {
    const r = await swaks(s.server.port, ['--to', to, '--add-header', line, '--header', 'Subject: loop']);
    t.match(r.stdout, /<\*\*\s+554 5\.4\.6 This message is looping/, `${to}: refused after the dot`);
  }
  const { sunk, bounces } = await s.settle();
  t.same([sunk, bounces.length], [0, 0], 'no bounce queued or sent');
  t.same(await s.inbox('alice'), [], 'nothing delivered');
  const fine = await swaks(s.server.port, ['--to', 'alice@dom.test', '--add-header', 'Delivered-To: someone@else.example']);
  t.equal(fine.code, 0, "another host's Delivered-To line is no loop here");
  await s.settle();
  t.equal((await s.inbox('alice')).length, 1);
});

t.test('verify: a deliver plugin that cannot tell defers at RCPT; one that answers nothing leaves the recipient to it', async (t) => {
  let verifyDown = true;
  const custom = definePlugin({
    name: 'custom',
    setup: () => ({
      hooks: {
        verify({ recipient }) {
          if (recipient.local === 'later') return verifyDown ? answer.defer(451, '4.3.0', 'directory down') : answer.accept();
          return answer.continue();
        },
        deliver() {
          return answer.continue();
        },
      },
    }),
  });
  const legacy = definePlugin({ name: 'legacy', setup: () => ({ hooks: { deliver: () => answer.accept('kept') } }) });
  for (const [plugins, unknown] of [
    [[custom], 550],
    [[custom, legacy], 250], // a deliver plugin without verify may take anything: no refusal on its behalf
  ] as const) {
    const s = await startTestServer({ plugins: ['rcpthosts'], config: { localDomains: ['localhost'] }, deliveryPlugins: plugins });
    t.teardown(() => s.close());
    const c = await s.connect();
    await c.ehlo('client.example');
    await c.command('MAIL FROM:<a@remote.example>');
    verifyDown = true;
    const later = await c.command('RCPT TO:<later@localhost>');
    t.same([later.code, later.text], [451, 'directory down'], "the plugin's temporary answer");
    verifyDown = false;
    t.equal((await c.command('RCPT TO:<later@localhost>')).code, 250, 'and its accept');
    t.equal((await c.command('RCPT TO:<unknown@localhost>')).code, unknown, `with ${plugins.map((p) => p.name).join(' + ')}: nobody claims it: ${unknown}`);
    await c.quit();
  }
});
