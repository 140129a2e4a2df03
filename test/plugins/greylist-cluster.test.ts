/**
 * Two yubin instances (two MX hosts) sharing one greylist through a real
 * redis-server: the first attempt at one host is greylisted, the retry at the
 * other host after the delay is accepted.
 */
import t from 'tap';
import { ManualClock, Tokens } from '../../core/index.js';
import { startTestServer } from '../../core/testing/index.js';
import { needs } from '../helpers.js';
import { startRedis } from '../peers/redis.js';

t.test('a pair greylisted at mx1 passes at mx2 after the delay', needs('redis-server'), async (t) => {
  const redis = await startRedis(t);
  const clock = new ManualClock();
  const mx = async () => {
    const s = await startTestServer({
      plugins: ['spamdyke'],
      pluginOptions: { spamdyke: { graylist: { enabled: true, minDelay: 300 } } },
      config: { store: { backend: 'redis', url: redis.url, prefix: `t${redis.port}:` } },
      configure: (c) => c.register(Tokens.Clock, { useValue: clock }),
    });
    t.teardown(() => s.close());
    return s;
  };
  const [mx1, mx2] = [await mx(), await mx()];
  const attempt = async (s: Awaited<ReturnType<typeof mx>>) => {
    const c = await s.connect({ localAddress: '127.0.0.60' });
    await c.ehlo('sender.example');
    const r = await c.mail({ from: 'news@sender.example', to: 'postmaster@example.test', data: 'Subject: hi\r\n\r\nhello\r\n' });
    await c.quit();
    return r.rcpt[0]!;
  };
  const first = await attempt(mx1);
  t.equal(first.code, 451);
  t.equal(first.enhanced, '4.7.1');
  clock.advance(60_000);
  t.equal((await attempt(mx2)).code, 451, 'too soon at the other host too: they share the first sighting');
  clock.advance(300_000);
  t.equal((await attempt(mx2)).code, 250, 'accepted at mx2 after the delay');
  t.equal((await attempt(mx1)).code, 250, 'and whitelisted for mx1 too');
  t.equal((await mx1.queued()).length + (await mx2.queued()).length, 2);
});
