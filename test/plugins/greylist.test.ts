/**
 * Greylisting over the KeyValueStore: the verdict sequence with a ManualClock
 * on memory and SQLite, keying (pair, /24 and /64 triplets, case, null
 * sender), and two Greylist instances (two MX hosts) over one redis-server.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { ManualClock } from '../../core/services/clock.js';
import { MemoryStore, type KeyValueStore } from '../../core/services/store.js';
import { RedisKeyValueStore, SqliteKeyValueStore } from '../../core/services/store-backends.js';
import { clientNetwork as clientNet } from '../../core/index.js';
import { DEFAULT_GREYLIST, Greylist, type GreylistOptions } from '../../plugins/spamdyke/greylist.js';
import { needs, sleep, tempDir } from '../helpers.js';
import { startRedis } from '../peers/redis.js';

const MIN = 60_000;
const DAY = 86_400_000;

/** Records the keys a store is asked about. */
class KeySpy implements KeyValueStore {
  readonly keys = new Set<string>();
  constructor(private readonly inner: KeyValueStore) {}
  get(k: string) {
    this.keys.add(k);
    return this.inner.get(k);
  }
  set(k: string, v: string, ttl?: number) {
    this.keys.add(k);
    return this.inner.set(k, v, ttl);
  }
  add(k: string, v: string, ttl?: number) {
    this.keys.add(k);
    return this.inner.add(k, v, ttl);
  }
  delete(k: string) {
    this.keys.add(k);
    return this.inner.delete(k);
  }
  incr(k: string, ttl?: number) {
    this.keys.add(k);
    return this.inner.incr(k, ttl);
  }
  close() {
    return this.inner.close();
  }
}

type Backend = (t: Test, clock: ManualClock) => Promise<KeyValueStore>;

const backends: Record<string, Backend> = {
  memory: async (_t, clock) => new MemoryStore(() => clock.now()),
  sqlite: async (t, clock) => {
    const dir = await tempDir(t);
    const s = new SqliteKeyValueStore(path.join(dir, 'state.sqlite'), () => clock.now());
    t.teardown(() => s.close());
    return s;
  },
};

const attempt = { ip: '192.0.2.10', sender: 'alice@example.org', recipient: 'bob@example.net' };

t.test('DEFAULT_GREYLIST', async (t) => {
  t.same(DEFAULT_GREYLIST, { key: 'sender-recipient', minDelayMs: 300_000, retryWindowMs: 2 * DAY, whitelistLifetimeMs: 36 * DAY });
});

t.test('clientNetwork: /24 for IPv4, /64 for IPv6', async (t) => {
  t.equal(clientNet('192.0.2.10'), '192.0.2.0/24');
  t.equal(clientNet('192.0.2.99'), '192.0.2.0/24');
  t.equal(clientNet('192.0.3.1'), '192.0.3.0/24');
  t.equal(clientNet('::ffff:192.0.2.7'), '192.0.2.0/24', 'IPv4-mapped IPv6 is its IPv4 /24');
  t.equal(clientNet('2001:DB8:1:2::1'), '2001:db8:1:2::/64');
  t.equal(clientNet('2001:db8:0001:0002:ffff:1:2:3'), '2001:db8:1:2::/64');
  t.equal(clientNet('2001:db8::1'), '2001:db8:0:0::/64');
  t.equal(clientNet('::1'), '0:0:0:0::/64');
  t.equal(clientNet('[2001:db8:1:2::5]'), '2001:db8:1:2::/64', 'brackets are dropped');
});

for (const [name, open] of Object.entries(backends)) {
  t.test(name, async (t) => {
    t.test('new → too-soon → retried → whitelisted a week later → renewed → forgotten', async (t) => {
      const clock = new ManualClock(1_700_000_000_000);
      const spy = new KeySpy(await open(t, clock));
      const g = new Greylist(spy, () => clock.now(), DEFAULT_GREYLIST);

      t.same(await g.check(attempt), { kind: 'defer', reason: 'new', retryInMs: 5 * MIN });
      clock.advance(1 * MIN);
      t.same(await g.check(attempt), { kind: 'defer', reason: 'too-soon', retryInMs: 4 * MIN });
      clock.advance(3 * MIN);
      t.same(await g.check(attempt), { kind: 'defer', reason: 'too-soon', retryInMs: 1 * MIN }, 'a too-soon retry does not reset the first-seen time');
      clock.advance(1 * MIN);
      t.same(await g.check(attempt), { kind: 'pass', reason: 'retried' }, 'exactly minDelay after the first attempt');
      clock.advance(1 * MIN);
      t.same(await g.check(attempt), { kind: 'pass', reason: 'whitelisted' });
      clock.advance(7 * DAY);
      t.same(await g.check(attempt), { kind: 'pass', reason: 'whitelisted' }, 'a week later');
      clock.advance(35 * DAY);
      t.same(await g.check(attempt), { kind: 'pass', reason: 'whitelisted' }, '42 days after the first pass: the lifetime was renewed');
      clock.advance(36 * DAY);
      t.same(await g.check(attempt), { kind: 'defer', reason: 'new', retryInMs: 5 * MIN }, 'unseen for 36 days: greylisted again');

      t.ok([...spy.keys].length > 0 && [...spy.keys].every((k) => k.startsWith('greylist:')), `every key is under greylist: (${[...spy.keys].join(', ')})`);
    });

    t.test('a retry after the window starts over', async (t) => {
      const clock = new ManualClock(1_700_000_000_000);
      const g = new Greylist(await open(t, clock), () => clock.now(), DEFAULT_GREYLIST);
      t.equal((await g.check(attempt)).reason, 'new');
      clock.advance(2 * DAY);
      t.same(await g.check(attempt), { kind: 'defer', reason: 'new', retryInMs: 5 * MIN }, 'window over: new again');
      clock.advance(2 * MIN);
      t.same(await g.check(attempt), { kind: 'defer', reason: 'too-soon', retryInMs: 3 * MIN }, 'counted from the new first attempt');
      clock.advance(3 * MIN);
      t.same(await g.check(attempt), { kind: 'pass', reason: 'retried' });
    });

    t.test('sender-recipient mode: the client IP is not part of the key; case and the null sender', async (t) => {
      const clock = new ManualClock(1_700_000_000_000);
      const g = new Greylist(await open(t, clock), () => clock.now(), { ...DEFAULT_GREYLIST, key: 'sender-recipient' });
      t.equal((await g.check(attempt)).reason, 'new');
      clock.advance(5 * MIN);
      t.same(await g.check({ ip: '198.51.100.1', sender: 'Alice@Example.ORG', recipient: '<BOB@example.net>' }), { kind: 'pass', reason: 'retried' }, 'another IP, other case');
      t.equal((await g.check({ ...attempt, recipient: 'carol@example.net' })).reason, 'new', 'another recipient is another pair');

      t.equal((await g.check({ ...attempt, sender: '' })).reason, 'new', 'null sender');
      clock.advance(5 * MIN);
      t.equal((await g.check({ ...attempt, sender: '<>' })).reason, 'retried', '"" and <> are the same null sender');
      t.equal(g.id({ ...attempt, sender: '' }), '<>|bob@example.net');
    });

    t.test('triplet mode: the /24 groups IPv4 clients, the /64 IPv6 clients', async (t) => {
      const clock = new ManualClock(1_700_000_000_000);
      const g = new Greylist(await open(t, clock), () => clock.now(), { ...DEFAULT_GREYLIST, key: 'triplet' });
      t.equal((await g.check({ ...attempt, ip: '192.0.2.10' })).reason, 'new');
      clock.advance(5 * MIN);
      t.equal((await g.check({ ...attempt, ip: '192.0.2.99' })).reason, 'retried', '192.0.2.99 shares the /24 of 192.0.2.10');
      t.equal((await g.check({ ...attempt, ip: '192.0.3.1' })).reason, 'new', '192.0.3.1 is another /24');
      t.equal((await g.check({ ...attempt, ip: '192.0.2.200' })).reason, 'whitelisted', 'the whitelist is per /24 too');

      t.equal((await g.check({ ...attempt, ip: '2001:db8:1:2::1' })).reason, 'new');
      clock.advance(5 * MIN);
      t.equal((await g.check({ ...attempt, ip: '2001:db8:1:2:abcd:ef01:2345:6789' })).reason, 'retried', 'same /64');
      t.equal((await g.check({ ...attempt, ip: '2001:db8:1:3::1' })).reason, 'new', 'another /64');
      t.equal(g.id({ ...attempt, ip: '2001:DB8:1:2::9' }), '2001:db8:1:2::/64|alice@example.org|bob@example.net');
    });

    t.test('concurrent first attempts: one records the time, the rest are too soon', async (t) => {
      const clock = new ManualClock(1_700_000_000_000);
      const g = new Greylist(await open(t, clock), () => clock.now(), DEFAULT_GREYLIST);
      const verdicts = await Promise.all(Array.from({ length: 20 }, () => g.check(attempt)));
      t.ok(verdicts.every((v) => v.kind === 'defer'), 'all deferred');
      t.equal(verdicts.filter((v) => v.reason === 'new').length, 1, 'exactly one new');
    });
  });
}

t.test('redis: two MX hosts (two Greylist instances) share one greylist', needs('redis-server'), async (t) => {
  const url = (await startRedis(t)).url;
  const mx1Store = new RedisKeyValueStore(url, { prefix: 'yubin:' });
  const mx2Store = new RedisKeyValueStore(url, { prefix: 'yubin:' });
  t.teardown(async () => {
    await mx1Store.close();
    await mx2Store.close();
  });
  // Redis expires keys by its own clock: real time, short durations.
  const options: GreylistOptions = { key: 'triplet', minDelayMs: 300, retryWindowMs: 1000, whitelistLifetimeMs: 1200 };
  const mx1 = new Greylist(mx1Store, Date.now, options);
  const mx2 = new Greylist(mx2Store, Date.now, options);

  t.match(await mx1.check(attempt), { kind: 'defer', reason: 'new', retryInMs: 300 });
  const soon = await mx2.check({ ...attempt, ip: '192.0.2.77' });
  t.match(soon, { kind: 'defer', reason: 'too-soon' }, 'mx2 knows the first attempt made at mx1');
  await sleep(400);
  t.same(await mx2.check(attempt), { kind: 'pass', reason: 'retried' }, 'the retry reaches mx2 and passes');
  await sleep(800);
  t.same(await mx1.check(attempt), { kind: 'pass', reason: 'whitelisted' }, 'mx1 sees the whitelist mx2 wrote');
  await sleep(800);
  t.same(await mx2.check(attempt), { kind: 'pass', reason: 'whitelisted' }, 'after the first lifetime: renewed by the pass at mx1');
  await sleep(1400);
  t.equal((await mx1.check(attempt)).reason, 'new', 'the whitelist lifetime ran out');
  await sleep(1200);
  t.equal((await mx2.check(attempt)).reason, 'new', 'the retry window ran out: new again');

  const both = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? mx1 : mx2).check({ ...attempt, recipient: 'race@example.net' })));
  t.equal(both.filter((v) => v.reason === 'new').length, 1, 'concurrent first attempts at both hosts: exactly one new');
});
