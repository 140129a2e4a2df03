/** The hook pipeline as plugin authors meet it: answers, faults, timeouts, order, per-listener plugin lists. */
import t from 'tap';
import { answer, definePlugin, type HookName, type PluginDefinition } from '../core/index.js';
import { startTestServer } from '../core/testing/index.js';

/** A plugin whose one hook does what the test says. */
function hookPlugin<K extends HookName>(name: string, hook: K, fn: NonNullable<import('../core/hooks.js').Hooks[K]>): PluginDefinition<unknown> {
  return definePlugin({ name, setup: () => ({ hooks: { [hook]: fn } }) });
}

const thrower = hookPlugin('thrower', 'rcpt', () => {
  throw new Error('database is on fire');
});

t.test('a plugin that throws yields 451 4.3.0 naming nothing to the client, a log line naming it, and the server goes on', async (t) => {
  const s = await startTestServer({ plugins: [thrower, 'rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  await c.command('MAIL FROM:<a@example.net>');
  const r = await c.command('RCPT TO:<postmaster@localhost>');
  t.equal(r.code, 451);
  t.equal(r.enhanced, '4.3.0');
  t.notMatch(r.text, /fire/, 'the exception text stays in the log');
  const line = s.logs.find((l) => l.plugin === 'thrower');
  t.ok(line, 'logged');
  t.equal(line?.hook, 'rcpt');
  t.match(line?.reason, /database is on fire/);
  t.equal(line?.level, 50, 'at error level');
  await c.quit();
  // The next connection is served normally (and fails the same way, no worse).
  const d = await s.connect();
  t.equal(d.greeting?.code, 220);
  await d.ehlo();
  t.equal((await d.command('MAIL FROM:<a@example.net>')).code, 250);
  t.equal((await d.command('RCPT TO:<postmaster@localhost>')).code, 451);
  await d.quit();
});

t.test('a plugin that never answers times out into 451', async (t) => {
  const hang = hookPlugin('hang', 'mail', () => new Promise<never>(() => undefined));
  const s = await startTestServer({ plugins: [hang], config: { hookTimeout: '200ms' } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const started = Date.now();
  const r = await c.command('MAIL FROM:<a@example.net>');
  t.equal(r.code, 451);
  t.ok(Date.now() - started >= 180, 'after the configured timeout');
  t.match(String(s.logs.find((l) => l.plugin === 'hang')?.reason), /timed out after 200 ms/);
  await c.quit();
});

t.test('a malformed answer from a JavaScript plugin is a fault, never an accept', async (t) => {
  const bad = hookPlugin('bad', 'rcpt', (() => ({ action: 'reject', code: 250, enhanced: '2.0.0', text: 'ok?' })) as never);
  const nothing = hookPlugin('nothing', 'mail', (() => undefined) as never);
  const s = await startTestServer({ listeners: [
    { name: 'a', plugins: [bad, 'rcpthosts'] },
    { name: 'b', plugins: [nothing] },
  ] });
  t.teardown(() => s.close());
  const c = await s.connect({ listener: 'a' });
  await c.ehlo();
  await c.command('MAIL FROM:<a@example.net>');
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 451);
  await c.quit();
  const d = await s.connect({ listener: 'b' });
  await d.ehlo();
  t.equal((await d.command('MAIL FROM:<a@example.net>')).code, 451);
  await d.quit();
});

t.test('answers: reject, defer, disconnect, discard, accept text, and order', async (t) => {
  const calls: string[] = [];
  const first = definePlugin({
    name: 'first',
    setup: () => ({
      hooks: {
        mail: ({ sender }) => {
          calls.push('first');
          if (sender?.local === 'slow') return answer.defer(450, '4.7.1', 'come back later');
          if (sender?.local === 'evil') return answer.reject(550, '5.7.1', 'no evil here');
          if (sender?.local === 'rude') return answer.disconnect('bye now');
          if (sender?.local === 'vip') return answer.accept('Welcome back, VIP', 250, '2.1.0');
          return answer.continue();
        },
        rcpt: ({ recipient }) => (recipient.local === 'blackhole' ? answer.discard('Accepted') : answer.continue()),
      },
    }),
  });
  const second = definePlugin({
    name: 'second',
    setup: () => ({
      hooks: {
        mail: () => {
          calls.push('second');
          return answer.continue();
        },
      },
    }),
  });
  const s = await startTestServer({ plugins: [first, second, 'rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const slow = await c.command('MAIL FROM:<slow@example.net>');
  t.same([slow.code, slow.enhanced, slow.text], [450, '4.7.1', 'come back later'], 'the plugin words reach the client');
  const evil = await c.command('MAIL FROM:<evil@example.net>');
  t.same([evil.code, evil.enhanced, evil.text], [550, '5.7.1', 'no evil here']);
  calls.length = 0;
  const vip = await c.command('MAIL FROM:<vip@example.net>');
  t.same([vip.code, vip.enhanced, vip.text], [250, '2.1.0', 'Welcome back, VIP']);
  t.same(calls, ['first'], 'accept skips the rest of the hook');
  t.equal((await c.command('RCPT TO:<blackhole@localhost>')).code, 250, 'discard looks like an accept');
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  c.write('Subject: x\r\n\r\ny\r\n.\r\n');
  t.equal((await c.read()).code, 250);
  const [m] = await s.queued();
  t.same(m?.envelope.recipients.map((r) => r.address), ['postmaster@localhost'], 'the discarded recipient is not delivered to');
  calls.length = 0;
  await c.command('MAIL FROM:<x@example.net>');
  t.same(calls, ['first', 'second'], 'continue passes to the next plugin, in list order');
  await c.command('RSET');
  const rude = await c.command('MAIL FROM:<rude@example.net>');
  t.equal(rude.code, 421);
  t.ok(await c.waitClosed(), 'disconnect closes the connection');
});

t.test('connect and helo hooks answer the greeting and HELO/EHLO', async (t) => {
  const gate = definePlugin({
    name: 'gate',
    setup: () => ({
      hooks: {
        connect: ({ connection }) => (connection.remoteIp === '127.0.0.9' ? answer.reject(554, '5.7.1', 'go away') : answer.continue()),
        helo: ({ hostname, verb }) => (hostname === 'localhost' ? answer.reject(550, '5.7.1', `${verb} localhost is a lie`) : answer.continue()),
      },
    }),
  });
  const s = await startTestServer({ plugins: [gate, 'rcpthosts'] });
  t.teardown(() => s.close());
  const refused = await s.connect({ localAddress: '127.0.0.9' });
  t.equal(refused.greeting?.code, 554);
  t.equal(refused.greeting?.text, 'go away');
  t.ok(await refused.waitClosed());
  const c = await s.connect();
  const liar = await c.command('EHLO localhost');
  t.same([liar.code, liar.text], [550, 'EHLO localhost is a lie']);
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 503, 'a refused EHLO does not count as a greeting');
  t.equal((await c.ehlo('honest.example')).code, 250);
  t.equal((await c.command('MAIL FROM:<a@example.net>')).code, 250);
  await c.quit();
});

t.test('data and queue hooks see the message, can add headers, and a queue plugin can take over', async (t) => {
  let seen: { size: number; subject: string[]; body: string } | undefined;
  const inspector = definePlugin({
    name: 'inspector',
    setup: () => ({
      hooks: {
        data: async ({ message }) => {
          const chunks: Buffer[] = [];
          for await (const c of message.stream()) chunks.push(c as Buffer);
          seen = { size: message.size, subject: message.header('subject'), body: Buffer.concat(chunks).toString() };
          if (message.header('subject')[0] === 'spam') return answer.reject(554, '5.7.1', 'looks like spam');
          message.addHeader('X-Inspected', 'yes');
          return answer.continue();
        },
        queue: ({ message, transaction }) =>
          message.header('subject')[0] === 'elsewhere' ? answer.accept(`queued elsewhere as ${transaction.id}`, 250, '2.0.0') : answer.continue(),
      },
    }),
  });
  const s = await startTestServer({ plugins: [inspector, 'rcpthosts'] });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const spam = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: spam\n\nbuy\n' });
  t.same([spam.data?.code, spam.data?.text], [554, 'looks like spam']);
  const ham = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: ham\n\nhello\n' });
  t.equal(ham.data?.code, 250);
  t.same(seen?.subject, ['ham']);
  t.equal(seen?.size, 'Subject: ham\r\n\r\nhello\r\n'.length, 'size counts the octets the client sent');
  t.match(seen?.body, /^Received: from .*\r\nSubject: ham\r\n\r\nhello\r\n$/s);
  const other = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: elsewhere\n\nx\n' });
  t.match(other.data?.text, /^queued elsewhere as /);
  const queued = await s.queued();
  t.equal(queued.length, 1, 'only the ham is in our spool');
  t.match(queued[0]!.text, /^X-Inspected: yes\r\nReceived: /, 'added headers go on top');
  await c.quit();
});

t.test('two listeners in one process run different plugin lists', async (t) => {
  const refuseAll = hookPlugin('refuse-all', 'rcpt', () => answer.reject(550, '5.7.1', 'refused on this listener'));
  const s = await startTestServer({
    listeners: [
      { name: 'mx', plugins: ['rcpthosts'] },
      { name: 'strict', plugins: [refuseAll, 'rcpthosts'] },
    ],
  });
  t.teardown(() => s.close());
  const mx = await s.connect({ listener: 'mx' });
  const strict = await s.connect({ listener: 'strict' });
  await mx.ehlo();
  await strict.ehlo();
  const a = await mx.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: a\n\nx\n' });
  const b = await strict.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: b\n\nx\n' });
  t.equal(a.data?.code, 250);
  t.equal(b.rcpt[0]?.code, 550);
  t.equal(b.rcpt[0]?.text, 'refused on this listener');
  const queued = await s.queued();
  t.same(queued.map((m) => m.envelope.listener), ['mx']);
  t.ok(s.logs.some((l) => l.listener === 'strict' && l.plugin === 'refuse-all' && l.action === 'reject'));
  await mx.quit();
  await strict.quit();
});

t.test('AUTH through an auth-hook plugin: offered only over TLS, relaying after success, failures limited', async (t) => {
  const auth = definePlugin({
    name: 'auth-stub',
    setup: () => ({
      hooks: {
        auth: ({ username, password }) =>
          username === 'alice' && password === 'secret' ? answer.accept('welcome', 235, '2.7.0') : answer.reject(535, '5.7.8', 'bad credentials'),
      },
    }),
  });
  const s = await startTestServer({ plugins: [auth, 'rcpthosts'], listener: { tls: 'starttls', requireAuth: true } });
  t.teardown(() => s.close());
  const c = await s.connect();
  const clear = await c.ehlo();
  t.notOk(clear.lines.some((l) => l.includes('AUTH')), 'no AUTH before TLS');
  const plain = Buffer.from('\0alice\0secret').toString('base64');
  t.equal((await c.command(`AUTH PLAIN ${plain}`)).code, 538, 'AUTH in clear text is refused');
  await c.startTls();
  const secure = await c.ehlo();
  t.ok(secure.lines.some((l) => l.endsWith('AUTH PLAIN LOGIN')), 'AUTH offered after STARTTLS');
  t.equal((await c.command('MAIL FROM:<alice@example.test>')).code, 530);
  const bad = await c.command(`AUTH PLAIN ${Buffer.from('\0alice\0wrong').toString('base64')}`);
  t.same([bad.code, bad.enhanced], [535, '5.7.8']);
  const good = await c.command(`AUTH PLAIN ${plain}`);
  t.equal(good.code, 235);
  t.equal((await c.command('MAIL FROM:<alice@example.test>')).code, 250);
  t.equal((await c.command('RCPT TO:<friend@elsewhere.example>')).code, 250, 'an authenticated client may relay');
  await c.quit();

  const d = await s.connect();
  await d.ehlo();
  await d.startTls();
  await d.ehlo();
  const codes = [];
  for (let i = 0; i < 3; i++) codes.push((await d.command(`AUTH PLAIN ${Buffer.from(`\0alice\0guess${i}`).toString('base64')}`)).code);
  t.same(codes, [535, 535, 421], 'the third failure ends the session');
  t.ok(await d.waitClosed());
});
