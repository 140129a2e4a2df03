/**
 * The PostgreSQL mail store against a real PostgreSQL (test/peers/postgres.ts):
 * the MailStore contract SQLite also passes, the schema's version, change
 * notifications from one node to another, and what happens when the
 * database goes away and comes back.
 */
import { Writable } from 'node:stream';
import pg from 'pg';
import { pino } from 'pino';
import t from 'tap';
import { CHANGE_CHANNEL, POSTGRES_SCHEMA_VERSION, PostgresStore } from '../../plugins/vpopmail/postgres-store.js';
import { needsPostgres, startPostgres, type PostgresPeer } from '../peers/postgres.js';
import { mailStoreContract } from './mail-store-contract.js';
import { sleep, waitFor } from '../helpers.js';

const { skip } = needsPostgres();

/** A pino logger whose lines land in an array. */
function capturingLog() {
  const lines: Array<{ level: number; msg: string }> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as { level: number; msg: string });
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

let databases = 0;
async function freshUrl(peer: PostgresPeer): Promise<string> {
  return peer.createDatabase(`store${++databases}`);
}

if (skip) {
  t.pass('PostgreSQL store', { skip });
} else {
  const peer = await startPostgres(t);

  mailStoreContract(t, async (t) => {
    const s = new PostgresStore(await freshUrl(peer));
    t.teardown(() => s.close());
    return s;
  });

  t.test('a new database gets the whole schema at first use; a newer one is refused, not damaged', async (t) => {
    const url = await freshUrl(peer);
    const s = new PostgresStore(url);
    t.same(await s.domainNames(), []);
    await s.close();
    const c = new pg.Client(url);
    await c.connect();
    t.teardown(() => c.end());
    t.same((await c.query('SELECT component, version FROM yubin_schema')).rows, [{ component: 'vpopmail', version: POSTGRES_SCHEMA_VERSION }]);
    await c.query('UPDATE yubin_schema SET version = version + 1');
    const { log, lines } = capturingLog();
    const newer = new PostgresStore(url, { log });
    t.teardown(() => newer.close());
    await t.rejects(newer.getDomain('x.test'), { name: 'StoreUnavailable', message: /schema version \d+ is newer than this yubin knows \(\d+\)/ });
    await t.rejects(newer.addDomain({ name: 'x.test' }), { name: 'StoreUnavailable' });
    t.equal(lines.filter((l) => /is newer than this yubin knows/.test(l.msg)).length, 1, 'said once in the log');
    t.same((await c.query('SELECT count(*)::int AS n FROM domains')).rows, [{ n: 0 }], 'nothing written');
  });

  t.test('two nodes: a write on one reaches the other through NOTIFY within milliseconds', async (t) => {
    const url = await freshUrl(peer);
    const cli = new PostgresStore(url);
    const server = new PostgresStore(url);
    t.teardown(() => Promise.all([cli.close(), server.close()]));
    await cli.addDomain({ name: 'example.test' });
    server.changeCounter();
    await waitFor(() => (server.listening ? true : undefined), 5000);
    const waits: number[] = [];
    const whole: number[] = [];
    for (let i = 0; i < 20; i++) {
      const before = server.changeCounter();
      const heard = new Promise<number>((resolve) => {
        const off = server.onChange(() => {
          off();
          resolve(performance.now());
        });
      });
      const started = performance.now();
      await cli.addUser({ domain: 'example.test', name: `u${i}`, passwordHash: 'h' });
      // After the commit's answer: what the CLI waits for before it says "added". Often the other node heard first.
      const committed = performance.now();
      const at = await Promise.race([heard, sleep(2000).then(() => Number.NaN)]);
      waits.push(Math.max(0, at - committed));
      whole.push(at - started);
      t.not(server.changeCounter(), before, `change ${i} seen`);
    }
    waits.sort((a, b) => a - b);
    whole.sort((a, b) => a - b);
    t.comment(`other node heard it, after the writer's commit returned: median ${waits[10]!.toFixed(2)} ms, max ${waits[19]!.toFixed(2)} ms (20 writes)`);
    t.comment(`from the write's start (BEGIN ... NOTIFY ... COMMIT) to the other node's onChange: median ${whole[10]!.toFixed(2)} ms, max ${whole[19]!.toFixed(2)} ms`);
    t.ok(whole.every((w) => w < 250), 'every change heard within 250 ms of the write');
    t.equal((await server.getUser('example.test', 'u19'))?.name, 'u19', 'and the read sees it');
  });

  t.test('the LISTEN connection dropped: counted as a change, reconnected, notifications resume', async (t) => {
    const url = await freshUrl(peer);
    const { log, lines } = capturingLog();
    const server = new PostgresStore(url, { log });
    const cli = new PostgresStore(url);
    t.teardown(() => Promise.all([cli.close(), server.close()]));
    await server.getDomain('warm.test'); // the schema exists before anyone LISTENs
    server.changeCounter();
    await waitFor(() => (server.listening ? true : undefined), 5000);
    const before = server.changeCounter();
    const admin = new pg.Client(url);
    await admin.connect();
    t.teardown(() => admin.end());
    const killed = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN ${CHANGE_CHANNEL}'`);
    t.equal(killed.rowCount, 1, 'the listening backend terminated');
    await waitFor(() => (server.changeCounter() !== before ? true : undefined), 2000);
    t.pass('the drop moved the counter: caches re-read');
    await waitFor(() => (server.listening ? true : undefined), 5000);
    t.match(lines.map((l) => l.msg), [/lost the change notifications of PostgreSQL 127\.0\.0\.1:\d+\/store\d+/, /listening for changes .* again/]);
    const mid = server.changeCounter();
    await cli.addDomain({ name: 'after.test' });
    await waitFor(() => (server.changeCounter() !== mid ? true : undefined), 2000);
    t.pass('a write after the reconnection is heard');
  });

  t.test('PostgreSQL stopped: StoreUnavailable naming it, logged once; started again: answers, and notifications resume', async (t) => {
    const own = await startPostgres(t);
    const url = await own.createDatabase('down');
    const { log, lines } = capturingLog();
    const s = new PostgresStore(url, { log });
    t.teardown(() => s.close());
    await s.addDomain({ name: 'example.test' });
    s.changeCounter();
    await waitFor(() => (s.listening ? true : undefined), 5000);
    await own.stop();
    const where = new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${own.port}/down unreachable: .*(ECONNREFUSED|terminat)`);
    await t.rejects(s.getDomain('example.test'), { name: 'StoreUnavailable', message: where });
    await t.rejects(s.getUser('example.test', 'x'), { name: 'StoreUnavailable', message: where });
    await t.rejects(s.addUser({ domain: 'example.test', name: 'x', passwordHash: 'h' }), { name: 'StoreUnavailable' });
    t.equal(lines.filter((l) => / unreachable: /.test(l.msg)).length, 1, 'one log line for the outage, not one per query');
    t.notOk(s.listening);
    await own.start();
    await waitFor(async () => ((await s.getDomain('example.test').catch(() => undefined)) ? true : undefined), 10_000);
    t.ok(lines.some((l) => /reachable again/.test(l.msg)), 'the return is logged');
    await waitFor(() => (s.listening ? true : undefined), 10_000);
    t.pass('listening again');
  });
}
