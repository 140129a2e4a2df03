/** The caching DNS service against a loopback DNS server: hits, TTL expiry, failures, in-flight sharing, size bound. */
import t, { type Test } from 'tap';
import { CachingDns, TtlNodeDns, type DnsCacheConfig } from '../core/services/dns-cache.js';
import { ManualClock } from '../core/services/clock.js';
import type { Dns, Lookup } from '../core/services/dns.js';
import { startDnsServer, type ZoneRecords } from './peers/dns.js';

const CONFIG: DnsCacheConfig = { cacheSize: 100, minTtl: 0, maxTtl: 86_400_000, negativeTtl: 300_000 };

async function setup(t: Test, zones: Record<string, ZoneRecords>, config: Partial<DnsCacheConfig> = {}) {
  const server = await startDnsServer(zones);
  t.teardown(() => server.close());
  const clock = new ManualClock(1_000_000);
  const dns = new CachingDns(new TtlNodeDns({ servers: [server.address], timeout: 500, tries: 1 }), { ...CONFIG, ...config }, () => clock.now());
  const count = (name: string, type?: string) => server.queries.filter((q) => q.name === name && (type === undefined || q.type === type)).length;
  return { server, clock, dns, count };
}

const ZONES: Record<string, ZoneRecords> = {
  'host.test': { A: ['192.0.2.1'], AAAA: ['2001:db8::1'], MX: [{ preference: 10, exchange: 'mx.host.test' }], TXT: ['v=spf1 -all'] },
  'broken.test': { servfail: true },
  '1.2.0.192.in-addr.arpa': { PTR: ['host.test'] },
};

t.test('a second lookup is answered from the cache (every type)', async (t) => {
  const { dns, count } = await setup(t, ZONES);
  for (let i = 0; i < 2; i++) {
    t.same(await dns.a('host.test'), { kind: 'found', records: ['192.0.2.1'] });
    t.same(await dns.aaaa('host.test'), { kind: 'found', records: ['2001:db8::1'] });
    t.same(await dns.mx('host.test'), { kind: 'found', records: [{ exchange: 'mx.host.test', priority: 10 }] });
    t.same(await dns.txt('HOST.test.'), { kind: 'found', records: ['v=spf1 -all'] }, 'names compare case-insensitively, trailing dot ignored');
    t.same(await dns.ptr('192.0.2.1'), { kind: 'found', records: ['host.test'] });
  }
  t.equal(count('host.test', 'A'), 1);
  t.equal(count('host.test', 'AAAA'), 1);
  t.equal(count('host.test', 'MX'), 1);
  t.equal(count('host.test', 'TXT'), 1);
  t.equal(count('1.2.0.192.in-addr.arpa', 'PTR'), 1);
});

t.test('fcrdns goes through the cached PTR and A lookups', async (t) => {
  const { dns, count } = await setup(t, ZONES);
  t.same(await dns.fcrdns('192.0.2.1'), { kind: 'confirmed', name: 'host.test', names: ['host.test'] });
  t.same(await dns.fcrdns('192.0.2.1'), { kind: 'confirmed', name: 'host.test', names: ['host.test'] });
  await dns.a('host.test');
  t.equal(count('1.2.0.192.in-addr.arpa', 'PTR'), 1);
  t.equal(count('host.test', 'A'), 1);
});

t.test('A answers expire after their TTL (60 s at the test server), on the Clock', async (t) => {
  const { dns, clock, count } = await setup(t, ZONES);
  await dns.a('host.test');
  clock.advance(59_000);
  await dns.a('host.test');
  t.equal(count('host.test', 'A'), 1, 'still fresh at 59 s');
  clock.advance(2_000);
  await dns.a('host.test');
  t.equal(count('host.test', 'A'), 2, 'asked again at 61 s');
});

t.test('TTLs are clamped to [minTtl, maxTtl]; TXT without a TTL lives min(maxTtl, 1 h)', async (t) => {
  const { dns, clock, count } = await setup(t, ZONES, { minTtl: 120_000, maxTtl: 600_000 });
  await dns.a('host.test');
  await dns.txt('host.test');
  clock.advance(100_000);
  await dns.a('host.test');
  t.equal(count('host.test', 'A'), 1, 'minTtl keeps a 60 s answer for 120 s');
  clock.advance(30_000);
  await dns.a('host.test');
  t.equal(count('host.test', 'A'), 2);
  await dns.txt('host.test');
  t.equal(count('host.test', 'TXT'), 1);
  clock.advance(500_000);
  await dns.txt('host.test');
  t.equal(count('host.test', 'TXT'), 2, 'maxTtl (10 min) below 1 h bounds the TXT answer');

  const long = await setup(t, ZONES, { maxTtl: 86_400_000 });
  await long.dns.mx('host.test');
  long.clock.advance(3_599_000);
  await long.dns.mx('host.test');
  t.equal(long.count('host.test', 'MX'), 1);
  long.clock.advance(2_000);
  await long.dns.mx('host.test');
  t.equal(long.count('host.test', 'MX'), 2, 'an hour without a TTL');
});

t.test('none is kept for negativeTtl; failed is never kept', async (t) => {
  const { dns, clock, count } = await setup(t, ZONES, { negativeTtl: 10_000 });
  t.same(await dns.a('nowhere.test'), { kind: 'none', reason: 'nxdomain' });
  t.same(await dns.a('nowhere.test'), { kind: 'none', reason: 'nxdomain' });
  t.equal(count('nowhere.test'), 1);
  clock.advance(10_001);
  await dns.a('nowhere.test');
  t.equal(count('nowhere.test'), 2, 'asked again after negativeTtl');

  t.equal((await dns.a('broken.test')).kind, 'failed');
  t.equal((await dns.a('broken.test')).kind, 'failed');
  t.equal((await dns.txt('broken.test')).kind, 'failed');
  t.equal((await dns.txt('broken.test')).kind, 'failed');
  t.equal(count('broken.test', 'A'), 2, 'each failed A lookup asked the server');
  t.equal(count('broken.test', 'TXT'), 2, 'each failed TXT lookup asked the server');
});

t.test('parallel identical queries share one DNS query; a shared failure is not cached', async (t) => {
  const { dns, count } = await setup(t, ZONES);
  const answers = await Promise.all(Array.from({ length: 20 }, () => dns.a('host.test')));
  t.ok(answers.every((a) => a.kind === 'found'));
  t.equal(count('host.test', 'A'), 1, '20 callers, one query');
  const failed = await Promise.all(Array.from({ length: 5 }, () => dns.txt('broken.test')));
  t.ok(failed.every((a) => a.kind === 'failed'));
  t.equal(count('broken.test', 'TXT'), 1, 'in flight together: one query');
  await dns.txt('broken.test');
  t.equal(count('broken.test', 'TXT'), 2, 'but not kept');
});

t.test('at most cacheSize answers; the least recently used goes first', async (t) => {
  const zones: Record<string, ZoneRecords> = {};
  for (let i = 0; i < 5; i++) zones[`h${i}.test`] = { A: [`192.0.2.${i + 10}`] };
  const { dns, count } = await setup(t, zones, { cacheSize: 3 });
  await dns.a('h0.test');
  await dns.a('h1.test');
  await dns.a('h2.test');
  await dns.a('h0.test'); // h0 now most recently used; h1 is the oldest
  t.equal(count('h0.test'), 1);
  await dns.a('h3.test'); // evicts h1
  t.equal(dns.size, 3);
  await dns.a('h0.test');
  await dns.a('h2.test');
  t.equal(count('h0.test'), 1, 'h0 kept');
  t.equal(count('h2.test'), 1, 'h2 kept');
  await dns.a('h1.test');
  t.equal(count('h1.test'), 2, 'h1 was evicted');
});

t.test('a Dns without TTLs works too, with the fixed lifetime; a throwing one counts as failed', async (t) => {
  let calls = 0;
  const inner: Dns = {
    mx: async () => ({ kind: 'none', reason: 'nodata' }),
    a: async (): Promise<Lookup<string>> => {
      calls++;
      return { kind: 'found', records: ['192.0.2.9'] };
    },
    aaaa: async () => {
      throw new Error('boom');
    },
    txt: async () => ({ kind: 'none', reason: 'nodata' }),
    ptr: async () => ({ kind: 'none', reason: 'nodata' }),
    fcrdns: async () => ({ kind: 'none' }),
  };
  const clock = new ManualClock(0);
  const dns = new CachingDns(inner, CONFIG, () => clock.now());
  await dns.a('x.test');
  clock.advance(3_599_000);
  await dns.a('x.test');
  t.equal(calls, 1);
  clock.advance(2_000);
  await dns.a('x.test');
  t.equal(calls, 2);
  t.match(await dns.aaaa('x.test'), { kind: 'failed', error: 'boom' });
});

t.test('the service container wraps the DNS in the cache when cacheSize > 0', async (t) => {
  const { createServiceContainer, Tokens } = await import('../core/services/index.js');
  const { createLogger } = await import('../core/logger.js');
  const { Writable } = await import('node:stream');
  const log = createLogger({ level: 'fatal', destination: new Writable({ write: (_c, _e, cb) => cb() }), format: 'json' });
  const base = { servers: [], timeout: 1000, tries: 1, minTtl: 0, maxTtl: 1000, negativeTtl: 1000 };
  t.type(createServiceContainer(log, [], { ...base, cacheSize: 10 }).resolve(Tokens.Dns), CachingDns);
  t.notOk(createServiceContainer(log, [], { ...base, cacheSize: 0 }).resolve(Tokens.Dns) instanceof CachingDns);
});
