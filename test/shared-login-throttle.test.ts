/**
 * The login throttle's counts in Redis (core/services/shared-login-throttle.ts),
 * driven directly: two throttles over two connections to one real
 * redis-server stand for two nodes.
 */
import t from 'tap';
import { createLogger } from '../core/logger.js';
import { SystemClock } from '../core/services/clock.js';
import { DEFAULT_LOGIN_THROTTLE } from '../core/services/login-throttle.js';
import { SharedLoginThrottle, type SharedLoginThrottleConfig } from '../core/services/shared-login-throttle.js';
import { RedisKeyValueStore } from '../core/services/store-redis.js';
import { needs } from './helpers.js';
import { startRedis } from './peers/redis.js';

const log = createLogger({ level: 'fatal', format: 'json' });

t.test('two nodes: reservations are atomic, counts fade, lockouts end, known networks are shared', needs('redis-server'), async (t) => {
  const redis = await startRedis(t);
  const config: SharedLoginThrottleConfig = { ...DEFAULT_LOGIN_THROTTLE, freeFailures: 1000, lockoutAfter: 10, window: 600, lockout: 900, onStoreFailure: 'local' };
  const node = () => {
    const store = new RedisKeyValueStore(redis.url, { prefix: 'u:' });
    t.teardown(() => store.close());
    return new SharedLoginThrottle(config, new SystemClock(), () => store, log);
  };
  const [a, b] = [node(), node()];

  // 200 attempts at once, half on each node, for one account from 200 addresses: lockoutAfter get through.
  const tickets = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).take(`10.0.${i >> 8}.${i & 255}`, 'victim@dom.test')));
  const through = tickets.filter((k) => !k.verdict.locked);
  t.equal(through.length, 10, 'exactly lockoutAfter attempts reserved a password check');
  t.ok(tickets.filter((k) => k.verdict.locked).every((k) => k.verdict.by === 'account'), 'the rest refused by the account count');
  for (const k of through) k.failed();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(a.stats.lockouts.account + b.stats.lockouts.account, 1, 'one lockout begun, counted once');
  t.match(await a.preview('10.9.9.9', 'victim@dom.test'), { locked: true, failures: 10, by: 'account' }, 'locked at node a');
  t.match(await b.preview('10.9.9.9', 'victim@dom.test'), { locked: true, by: 'account' }, 'and node b');
  await new Promise((r) => setTimeout(r, 1_000));
  t.match(await b.preview('10.9.9.9', 'victim@dom.test'), { locked: false, failures: 0 }, 'the lockout ends after `lockout`');

  // Failures below lockoutAfter fade after `window` without a new one.
  (await a.take('10.1.1.1', 'carol@dom.test')).failed();
  (await b.take('10.1.1.1', 'carol@dom.test')).failed();
  await new Promise((r) => setTimeout(r, 50));
  t.match(await a.preview('10.1.1.1', 'carol@dom.test'), { failures: 2 }, 'two failures, one at each node');
  await new Promise((r) => setTimeout(r, 700));
  t.match(await a.preview('10.1.1.1', 'carol@dom.test'), { failures: 0 }, 'forgotten after the window');

  // A success at node a makes the network known at node b: only the pair counts there.
  (await a.take('10.2.2.1', 'dave@dom.test')).succeeded();
  for (let i = 0; i < 10; i++) (await b.take(`10.3.3.${i + 1}`, 'dave@dom.test')).failed();
  await new Promise((r) => setTimeout(r, 50));
  t.match(await b.preview('10.3.3.99', 'dave@dom.test'), { locked: true, by: 'account' }, 'dave locked for unknown networks');
  t.match(await b.preview('10.2.2.7', 'dave@dom.test'), { locked: false, failures: 0 }, 'but not from the /24 he logged in from at node a');
  // A released attempt gives its reservation back.
  const held = await a.take('10.4.4.4', 'erin@dom.test');
  t.match(await b.preview('10.4.4.4', 'erin@dom.test'), { failures: 1 }, 'an attempt in progress counts');
  held.released();
  await new Promise((r) => setTimeout(r, 50));
  t.match(await b.preview('10.4.4.4', 'erin@dom.test'), { failures: 0 }, 'released, it no longer does');
});
