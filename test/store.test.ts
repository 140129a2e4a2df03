/**
 * The KeyValueStore contract, run against every back end: memory, SQLite (a
 * temporary file) and Redis (a redis-server started here on a loopback port).
 * Memory and SQLite keep time by a ManualClock; Redis expires keys by its own
 * clock, so its expiry tests wait a short real TTL.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { ManualClock } from '../core/services/clock.js';
import { MemoryStore, type KeyValueStore } from '../core/services/store.js';
import { createStore, RedisKeyValueStore, SqliteKeyValueStore } from '../core/services/store-backends.js';
import { freePort, needs, run, sleep, tempDir } from './helpers.js';
import { startRedis } from './peers/redis.js';

interface Harness {
  readonly store: KeyValueStore;
  /** Another connection to the same state (another process, another MX host); memory has only one. */
  readonly peer: KeyValueStore;
  /** Moves time on: the ManualClock, or real time for Redis. */
  elapse(ms: number): Promise<void>;
}

type Opener = (t: Test) => Promise<Harness>;

/** The contract every back end keeps. Each subtest gets fresh, empty state. */
function contract(t: Test, open: Opener): void {
  t.test('get / set / delete', async (t) => {
    const { store } = await open(t);
    t.equal(await store.get('a'), undefined, 'absent is undefined');
    await store.set('a', 'one');
    t.equal(await store.get('a'), 'one');
    await store.set('a', 'two');
    t.equal(await store.get('a'), 'two', 'set overwrites');
    await store.set('empty', '');
    t.equal(await store.get('empty'), '', 'an empty string is a value');
    await store.set('ü:ключ', 'välue ✓');
    t.equal(await store.get('ü:ключ'), 'välue ✓', 'unicode round-trips');
    await store.delete('a');
    t.equal(await store.get('a'), undefined, 'deleted');
    await store.delete('never-there');
  });

  t.test('add sets only an absent key', async (t) => {
    const { store } = await open(t);
    t.equal(await store.add('k', 'first'), true);
    t.equal(await store.add('k', 'second'), false);
    t.equal(await store.get('k'), 'first', 'add does not overwrite');
    await store.delete('k');
    t.equal(await store.add('k', 'third'), true, 'absent again after delete');
  });

  t.test('incr counts from 0 and keeps counting', async (t) => {
    const { store } = await open(t);
    t.equal(await store.incr('n'), 1);
    t.equal(await store.incr('n'), 2);
    t.equal(await store.incr('n'), 3);
    t.equal(await store.get('n'), '3', 'readable as a string');
    await store.set('m', '41');
    t.equal(await store.incr('m'), 42, 'incr continues a value that was set');
  });

  t.test('TTL: keys expire; set without TTL keeps; add and incr restart after expiry', async (t) => {
    const { store, elapse } = await open(t);
    await store.set('a', 'x', 500);
    await store.set('b', 'x', 500);
    await store.set('b', 'kept'); // no TTL now
    t.equal(await store.add('c', 'old', 500), true);
    await store.set('d', 'forever');
    await elapse(150);
    t.equal(await store.get('a'), 'x', 'alive before its TTL');
    await elapse(500);
    t.equal(await store.get('a'), undefined, 'expired');
    t.equal(await store.get('b'), 'kept', 'a set without TTL clears the old TTL');
    t.equal(await store.get('d'), 'forever');
    t.equal(await store.add('c', 'new', 500), true, 'add over an expired key succeeds');
    t.equal(await store.get('c'), 'new');

    t.equal(await store.incr('n', 500), 1);
    await elapse(250);
    t.equal(await store.incr('n', 500), 2, 'the TTL applies on creation only…');
    await elapse(400);
    t.equal(await store.get('n'), undefined, '…and is not extended by later incr');
    t.equal(await store.incr('n', 500), 1, 'an expired counter starts again');
  });

  t.test('add is atomic: 50 concurrent callers, exactly one wins', async (t) => {
    const { store, peer } = await open(t);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? peer : store).add('race', `caller-${i}`, 60_000)));
    t.equal(results.filter(Boolean).length, 1, 'exactly one true');
    const winner = results.indexOf(true);
    t.equal(await store.get('race'), `caller-${winner}`, 'the winner’s value is kept');
  });

  t.test('incr is atomic under concurrency', async (t) => {
    const { store, peer } = await open(t);
    const values = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? peer : store).incr('hits', 60_000)));
    t.same(
      [...values].sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i + 1),
      'every caller saw a different count, 1..50',
    );
    t.equal(await peer.get('hits'), '50');
  });
}

// --- memory ---------------------------------------------------------------

t.test('memory', async (t) => {
  contract(t, async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore(() => clock.now());
    return { store, peer: store, elapse: async (ms) => clock.advance(ms) };
  });
});

// --- sqlite ---------------------------------------------------------------

t.test('sqlite', async (t) => {
  contract(t, async (t) => {
    const dir = await tempDir(t);
    const clock = new ManualClock(1_700_000_000_000);
    const file = path.join(dir, 'state.sqlite');
    const store = new SqliteKeyValueStore(file, () => clock.now());
    const peer = new SqliteKeyValueStore(file, () => clock.now()); // a second connection: another process
    t.teardown(async () => {
      await store.close();
      await peer.close();
    });
    return { store, peer, elapse: async (ms) => clock.advance(ms) };
  });

  t.test('add and incr stay atomic between processes sharing the file', async (t) => {
    const dir = await tempDir(t);
    const file = path.join(dir, 'state.sqlite');
    const mod = new URL('../core/services/store-sqlite.js', import.meta.url).href;
    const script = `
      const { SqliteKeyValueStore } = await import(${JSON.stringify(mod)});
      const s = new SqliteKeyValueStore(process.argv[1]);
      const won = await s.add('race', String(process.pid), 60_000);
      for (let i = 0; i < 100; i++) await s.incr('hits');
      await s.close();
      process.stdout.write(won ? 'won' : 'lost');`;
    await new SqliteKeyValueStore(file).close(); // create the schema once, before the race
    const outputs = await Promise.all(
      Array.from({ length: 4 }, () => run(process.execPath, ['--input-type=module', '-e', script, file]).then((r) => (r.code === 0 ? r.stdout : `failed: ${r.stderr}`))),
    );
    t.equal(outputs.filter((o) => o === 'won').length, 1, `exactly one process won the add (${outputs.join(', ')})`);
    const s = new SqliteKeyValueStore(file);
    t.teardown(() => s.close());
    t.equal(await s.get('hits'), '400', 'no increment lost');
  });

  t.test('state and TTLs survive closing and reopening the file', async (t) => {
    const dir = await tempDir(t);
    const clock = new ManualClock(1_700_000_000_000);
    const file = path.join(dir, 'sub/dir/state.sqlite');
    const a = new SqliteKeyValueStore(file, () => clock.now());
    await a.set('kept', 'yes');
    await a.set('short', 'yes', 1000);
    await a.incr('count');
    await a.incr('count');
    await a.close();
    await a.close(); // twice is fine
    await t.rejects(a.get('kept'), /closed/, 'a closed store rejects');

    const b = new SqliteKeyValueStore(file, () => clock.now());
    t.teardown(() => b.close());
    t.equal(await b.get('kept'), 'yes');
    t.equal(await b.get('short'), 'yes');
    t.equal(await b.incr('count'), 3);
    clock.advance(1000);
    t.equal(await b.get('short'), undefined, 'the expiry was kept in the file');
  });

  t.test('expired rows are removed lazily and by a bounded sweep', async (t) => {
    const dir = await tempDir(t);
    const clock = new ManualClock(1_700_000_000_000);
    const file = path.join(dir, 'state.sqlite');
    const s = new SqliteKeyValueStore(file, () => clock.now(), { sweepIntervalMs: 0, sweepBatch: 10 });
    t.teardown(() => s.close());
    for (let i = 0; i < 25; i++) await s.set(`old:${i}`, 'x', 100);
    await s.set('live', 'x', 10_000);
    await s.set('forever', 'x');
    const Database = (await import('better-sqlite3')).default;
    const raw = new Database(file, { readonly: true });
    t.teardown(() => raw.close());
    const rows = () => raw.prepare('SELECT count(*) FROM kv').pluck().get() as number;
    t.equal(rows(), 27);
    clock.advance(100);
    t.equal(await s.get('old:0'), undefined);
    t.equal(rows(), 26, 'reading an expired key deletes it');
    t.equal(s.sweep(), 10, 'one sweep deletes at most sweepBatch rows');
    t.equal(s.sweep(), 10);
    t.equal(s.sweep(), 4);
    t.equal(s.sweep(), 0);
    t.equal(rows(), 2, 'live rows stay');
    t.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  });

  t.test('the periodic sweep runs on an unref’d timer', async (t) => {
    const dir = await tempDir(t);
    const clock = new ManualClock(1_700_000_000_000);
    const s = new SqliteKeyValueStore(path.join(dir, 'state.sqlite'), () => clock.now(), { sweepIntervalMs: 20 });
    t.teardown(() => s.close());
    await s.set('gone', 'x', 10);
    clock.advance(10);
    await sleep(80);
    const Database = (await import('better-sqlite3')).default;
    const raw = new Database(s.file, { readonly: true });
    t.equal(raw.prepare('SELECT count(*) FROM kv').pluck().get(), 0, 'swept without being read');
    raw.close();
  });
});

// --- createStore ----------------------------------------------------------

t.test('createStore dispatches on store.backend', async (t) => {
  const dir = await tempDir(t);
  const clock = new ManualClock(1_700_000_000_000);
  const mem = createStore({ backend: 'memory', file: 'state.sqlite', prefix: 'yubin:' }, dir, clock);
  t.type(mem, MemoryStore);
  await mem.close();
  const sql = createStore({ backend: 'sqlite', file: 'var/state.sqlite', prefix: 'yubin:' }, dir, clock);
  t.type(sql, SqliteKeyValueStore);
  await sql.set('k', 'v', 50);
  clock.advance(50);
  t.equal(await sql.get('k'), undefined, 'the sqlite store keeps time by the given Clock');
  await sql.close();
  t.ok(existsSync(path.join(dir, 'var/state.sqlite')), 'the file is resolved against dataDir');
  t.throws(() => createStore({ backend: 'redis', file: 'state.sqlite', prefix: 'yubin:' }, dir, clock), /store\.url/, 'redis without a URL names store.url');
  const red = createStore({ backend: 'redis', file: 'state.sqlite', prefix: 'yubin:', url: 'redis://127.0.0.1:1/0' }, dir, clock);
  t.type(red, RedisKeyValueStore);
  await red.close();
});

// --- redis ----------------------------------------------------------------

t.test('redis', needs('redis-server'), async (t) => {
  const server = await startRedis(t);
  let n = 0;
  contract(t, async (t) => {
    // A fresh prefix per subtest: empty state on the shared server.
    const prefix = `test${++n}:`;
    const store = new RedisKeyValueStore(server.url, { prefix });
    const peer = new RedisKeyValueStore(server.url, { prefix }); // another MX host
    t.teardown(async () => {
      await store.close();
      await peer.close();
    });
    return { store, peer, elapse: (ms) => sleep(ms) };
  });

  t.test('two stores on one server share state (two MX hosts); prefixes keep clusters apart', async (t) => {
    const mx1 = new RedisKeyValueStore(server.url, { prefix: 'yubin:' });
    const mx2 = new RedisKeyValueStore(server.url, { prefix: 'yubin:' });
    const other = new RedisKeyValueStore(server.url, { prefix: 'other:' });
    t.teardown(async () => {
      await mx1.close();
      await mx2.close();
      await other.close();
    });
    await mx1.set('greylist:x', 'seen', 60_000);
    t.equal(await mx2.get('greylist:x'), 'seen');
    t.equal(await mx2.add('greylist:x', 'again'), false);
    t.equal(await mx1.incr('c'), 1);
    t.equal(await mx2.incr('c'), 2);
    t.equal(await other.get('greylist:x'), undefined, 'another prefix sees nothing');
    await mx2.delete('greylist:x');
    t.equal(await mx1.get('greylist:x'), undefined);
  });

  t.test('a Redis that goes away: calls reject quickly, nothing crashes', async (t) => {
    const own = await startRedis(t);
    const errors: Error[] = [];
    const s = new RedisKeyValueStore(own.url, { prefix: 'p:', onError: (e) => errors.push(e) });
    t.teardown(() => s.close());
    await s.set('k', 'v');
    t.equal(await s.get('k'), 'v');
    await own.stop();
    for (let i = 0; i < 3; i++) {
      const start = Date.now();
      await t.rejects(s.get('k'), { name: 'RedisStoreUnavailable' });
      t.ok(Date.now() - start < 2000, `rejected in ${Date.now() - start} ms`);
      await sleep(150);
    }
    t.ok(errors.length > 0, 'connection errors were reported to onError, not thrown');

    // It comes back (on the same port): the store reconnects by itself.
    await startRedis(t, own.port);
    const deadline = Date.now() + 5000;
    let back: string | undefined;
    while (Date.now() < deadline) {
      back = await s.get('k').catch(() => 'unavailable');
      if (back !== 'unavailable') break;
      await sleep(100);
    }
    t.equal(back, undefined, 'reconnected (the new server is empty)');
    await s.set('k', 'again');
    t.equal(await s.get('k'), 'again');
  });
});

t.test('a dead Redis (nothing listening) rejects in under 2 s without crashing', async (t) => {
  const port = await freePort();
  const s = new RedisKeyValueStore(`redis://127.0.0.1:${port}/0`, { prefix: 'x:' });
  t.teardown(() => s.close());
  const ops: Array<() => Promise<unknown>> = [() => s.get('a'), () => s.set('a', 'b', 1000), () => s.add('a', 'b'), () => s.incr('a', 1000), () => s.delete('a')];
  for (const op of ops) {
    const start = Date.now();
    await t.rejects(op(), { name: 'RedisStoreUnavailable' });
    t.ok(Date.now() - start < 2000, `rejected in ${Date.now() - start} ms`);
  }
  await sleep(300); // reconnect attempts keep failing in the background: still no crash
  t.pass('the process is still alive');
});
