/**
 * ratelimit on one node (the default SQLite store; test/shared-redis.test.ts
 * has two nodes over Redis): per client IP, per authenticated user, the
 * window, what counts (accepted messages, not attempts), exemptions, a store
 * that fails, and option errors.
 */
import t from 'tap';
import { answer, definePlugin, MemoryStore, parseConfig, Tokens, type KeyValueStore } from '../../core/index.js';
import { startTestServer, type TestServer } from '../../core/testing/index.js';

/** Accepts any password: the user is whoever logs in. */
const anyLogin = definePlugin({ name: 'any-login', setup: () => ({ hooks: { auth: () => answer.accept('OK', 235, '2.7.0') } }) });
/** RELAYCLIENT for 127.0.0.30, as a tcprules rule would set it. */
const relay = definePlugin({
  name: 'relay',
  setup: () => ({
    hooks: {
      connect({ connection }) {
        if (connection.remoteIp === '127.0.0.30') connection.state.relayClient = '';
        return answer.continue();
      },
    },
  }),
});

async function send(s: TestServer, from: string, options: { source?: string; user?: string } = {}): Promise<string> {
  const c = await s.connect({ localAddress: options.source ?? '127.0.0.1' });
  try {
    await c.ehlo('client.test');
    if (options.user) {
      const r = await c.command(`AUTH PLAIN ${Buffer.from(`\0${options.user}\0pw`).toString('base64')}`);
      if (r.code !== 235) throw new Error(`AUTH: ${r.code}`);
    }
    const r = await c.mail({ from, to: 'postmaster@example.test', data: 'Subject: hi\r\n\r\nhello\r\n' });
    return r.data ? String(r.data.code) : `${r.mail.code} ${r.mail.enhanced} ${r.mail.text}`;
  } finally {
    await c.quit().catch(() => undefined);
  }
}

t.test('per client IP: accepted messages count, refused attempts do not', async (t) => {
  const s = await startTestServer({ plugins: ['ratelimit'], pluginOptions: { ratelimit: { ip: { limit: 2, window: '1h' } } } });
  t.teardown(() => s.close());
  // Transactions given up after MAIL cost nothing.
  const c = await s.connect({ localAddress: '127.0.0.20' });
  await c.ehlo('client.test');
  for (let i = 0; i < 3; i++) {
    t.equal((await c.command(`MAIL FROM:<a${i}@sender.example>`)).code, 250);
    await c.command('RSET');
  }
  await c.quit();
  t.equal(await send(s, 'a@sender.example', { source: '127.0.0.20' }), '250', 'first message');
  t.equal(await send(s, 'b@sender.example', { source: '127.0.0.20' }), '250', 'second, another sender, same IP');
  t.match(await send(s, 'c@sender.example', { source: '127.0.0.20' }), /^451 4\.7\.1 Rate limit exceeded for your IP address 127\.0\.0\.20 \(2 messages, limit 2 per 3600 s\), try again later$/);
  t.equal(await send(s, 'c@sender.example', { source: '127.0.0.21' }), '250', 'another IP has its own count');
  t.equal(await send(s, '', { source: '127.0.0.20' }).then((r) => r.slice(0, 3)), '451', 'the null sender counts per IP too');
  const lines = s.logs.filter((l) => l.plugin === 'ratelimit');
  t.equal(lines.length, 2, 'one line per decision');
  t.match(lines[0], { hook: 'mail', action: 'defer', code: 451 });
});

t.test('per sender, with its window; the null sender is not a sender', async (t) => {
  const s = await startTestServer({ plugins: ['ratelimit'], pluginOptions: { ratelimit: { sender: { limit: 1, window: '1s' } } } });
  t.teardown(() => s.close());
  t.equal(await send(s, 'news@sender.example'), '250');
  t.match(await send(s, 'NEWS@sender.example'), /^451 4\.7\.1 Rate limit exceeded for sender news@sender\.example/, 'case-insensitive');
  t.equal(await send(s, ''), '250', '<>');
  t.equal(await send(s, ''), '250', '<> again');
  await new Promise((r) => setTimeout(r, 1_100));
  t.equal(await send(s, 'news@sender.example'), '250', 'a new window');
});

t.test('per authenticated user; exemptions', async (t) => {
  const s = await startTestServer({
    listener: { allowInsecureAuth: true },
    plugins: [relay, anyLogin, 'ratelimit'],
    pluginOptions: { ratelimit: { user: { limit: 1, window: '1h' }, ip: { limit: 3, window: '1h' }, exempt: ['relayclient'] } },
  });
  t.teardown(() => s.close());
  t.equal(await send(s, 'alice@example.test', { user: 'alice@example.test' }), '250');
  t.match(await send(s, 'alice@example.test', { user: 'Alice@example.test' }), /^451 4\.7\.1 Rate limit exceeded for user alice@example\.test/);
  t.equal(await send(s, 'bob@example.test', { user: 'bob@example.test' }), '250', 'another user');
  for (let i = 0; i < 5; i++) t.equal(await send(s, 'x@example.test', { source: '127.0.0.30', user: 'alice@example.test' }), '250', `RELAYCLIENT is exempt (${i + 1})`);
});

/** A store that is down, as a Redis that does not answer. */
class DownStore extends MemoryStore {
  override async get(): Promise<string | undefined> {
    throw new Error('connection refused');
  }
  override async incr(): Promise<number> {
    throw new Error('connection refused');
  }
}

for (const onStoreFailure of ['accept', 'defer'] as const) {
  t.test(`the store down, onStoreFailure: ${onStoreFailure}`, async (t) => {
    const s = await startTestServer({
      plugins: ['ratelimit'],
      pluginOptions: { ratelimit: { sender: { limit: 1, window: '1m' }, onStoreFailure } },
      configure: (c) => c.register(Tokens.Store, { useValue: new DownStore() as KeyValueStore }),
    });
    t.teardown(() => s.close());
    for (let i = 0; i < 3; i++) {
      const r = await send(s, 'news@sender.example');
      if (onStoreFailure === 'accept') t.equal(r, '250', `accepted uncounted (${i + 1})`);
      else t.equal(r, '451 4.3.0 Temporary rate limit failure, try again later', `deferred (${i + 1})`);
    }
    const down = s.logs.filter((l) => l.event === 'shared-store');
    t.equal(down.length, 1, 'one line for the outage, not one per message');
    t.match(down[0], { feature: 'ratelimit', state: 'down', err: 'connection refused' });
  });
}

t.test('option errors name the option', async (t) => {
  const start = (options: Record<string, unknown>) => startTestServer({ plugins: ['ratelimit'], pluginOptions: { ratelimit: options } });
  await t.rejects(start({}), /ratelimit.*give at least one of sender, ip and user/);
  await t.rejects(start({ sender: { limit: 10, window: '0s' } }), /sender\.window.*not a window/);
  await t.rejects(start({ ip: { limit: 0, window: '1m' } }), /ip\.limit/);
  await t.rejects(start({ ip: { limit: 5, window: '1m' }, exempt: ['everyone'] }), /exempt/);
  const yaml = (extra: string) => `store: { backend: sqlite }\n${extra}\nlisteners:\n  - { name: mx, protocol: smtp, listen: "127.0.0.1:0" }\n`;
  t.throws(() => parseConfig(yaml('loginThrottle: { shared: true }'), '/etc/yubin/y.yaml'), /y\.yaml:2: loginThrottle\.shared: needs store\.backend: redis/);
  t.throws(() => parseConfig(yaml('connectionCounts: { shared: true }'), '/etc/yubin/y.yaml'), /connectionCounts\.shared: needs store\.backend: redis/);
  t.throws(() => parseConfig(yaml('loginThrottle: { onStoreFailure: open }'), '/etc/yubin/y.yaml'), /loginThrottle\.onStoreFailure/);
});
