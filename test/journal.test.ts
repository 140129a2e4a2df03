/**
 * The journal's parts on their own: which log lines become entries and by
 * which terms they are found, and pruning by age and by size.
 */
import path from 'node:path';
import t from 'tap';
import { JournalDb } from '../core/journal/db.js';
import { termsFor, toEntry } from '../core/journal/entry.js';
import { sentence } from '../core/journal/story.js';
import { tempDir } from './helpers.js';

const T0 = Date.UTC(2026, 11, 1, 9, 0, 0);

t.test('log lines to entries: terms by IP, address, domain, queue id and Message-ID; a transaction id is no queue id', async (t) => {
  const queued = toEntry({ level: 30, time: T0, pid: 1, listener: 'mx', conn: 'c1', ip: '192.0.2.7', event: 'queued', id: 'Q1', from: 'Alice@Example.org', to: ['bob@example.jp'], messageId: '<X@y.z>', msg: 'message queued' });
  t.same(queued?.qid, 'Q1');
  t.same([...(queued?.terms ?? [])].sort(), ['a:alice@example.org', 'a:bob@example.jp', 'd:example.jp', 'd:example.org', 'ip:192.0.2.7', 'm:x@y.z', 'q:q1']);
  t.notMatch(queued?.record, /"pid"|"time"/, 'pino bookkeeping left out');
  const mail = toEntry({ level: 30, time: T0, conn: 'c1', ip: '192.0.2.7', hook: 'mail', action: 'accept', id: 'Q1', from: 'a@b.c' });
  t.equal(mail?.qid, undefined, 'in a session, id is the transaction until the message is queued');
  t.equal(toEntry({ level: 20, conn: 'c1', msg: 'debug' }), undefined, 'debug lines are not kept');
  t.equal(toEntry({ level: 30, event: 'ready', msg: 'ready' })?.conn, undefined);
  t.equal(toEntry({ level: 30, msg: 'no connection, no message, no event' }), undefined);
  const bounce = toEntry({ level: 30, event: 'bounce', id: 'Q1', bounceId: 'B1', to: 'alice@example.org', rcpts: ['nobody@remote.test'] });
  t.ok(bounce?.terms.includes('q:b1') && bounce.terms.includes('a:nobody@remote.test'));
  t.same(termsFor(' <X@Y.z> '), ['ip:<x@y.z>', 'a:x@y.z', 'd:<x@y.z>', 'q:<x@y.z>', 'm:x@y.z']);
});

t.test('sentences for the lines the server writes', async (t) => {
  t.equal(sentence({ event: 'connect', ip: '192.0.2.7', listener: 'mx', local: '0.0.0.0:25' }), '192.0.2.7 connected to mx (0.0.0.0:25)');
  t.equal(sentence({ hook: 'rcpt', plugin: 'vpopmail', action: 'reject', code: 550, reason: 'Sorry, no mailbox here by that name. (#5.1.1)', rcpt: 'x@example.jp' }), 'refused at RCPT for x@example.jp by vpopmail: 550 Sorry, no mailbox here by that name. (#5.1.1)');
  t.equal(sentence({ hook: 'auth', plugin: 'core', action: 'defer', code: 454, reason: 'locked out after 10 failed logins (by ip)', user: 'alice@example.jp', method: 'PLAIN' }), 'temporarily refused at login as alice@example.jp by core: 454 locked out after 10 failed logins (by ip) (method PLAIN)');
  t.equal(sentence({ plugin: 'spamdyke', msg: 'spamdyke refused: graylist', rule: 'graylist', ptr: 'client.example' }), 'spamdyke: refused: graylist (ptr client.example)');
  t.equal(sentence({ level: 30, msg: 'bookkeeping' }), undefined);
});

t.test('pruning: by age, then the oldest tenth at a time while over the size limit', async (t) => {
  const db = new JournalDb(path.join(await tempDir(t), 'journal.sqlite'));
  t.teardown(() => db.close());
  const day = 86_400_000;
  const entries = Array.from({ length: 2000 }, (_, i) => toEntry({ level: 30, time: T0 + i * (day / 100), conn: `c${i}`, ip: `192.0.2.${i % 250}`, event: 'connect', msg: 'x'.repeat(200) })!);
  db.insert(entries);
  const now = T0 + 20 * day;
  t.equal(db.prune(now, 14 * day, 1e12), 600, 'everything older than 14 days: 6 days of 100 a day');
  t.same(db.find(['ip:192.0.2.0'], 0).length > 0, true);
  const before = db.usedBytes();
  const removed = db.prune(now, 14 * day, before / 2);
  t.ok(removed > 0 && db.usedBytes() <= before / 2, `size: ${removed} removed, ${db.usedBytes()} of ${before} bytes in use`);
  const oldest = db.events(db.find(['ip:192.0.2.100', 'ip:192.0.2.101'], 0))[0]!;
  t.ok(oldest.time > T0 + 6 * day, 'the oldest went first');
  db.insert([toEntry({ level: 30, time: now, conn: 'new', ip: '198.51.100.1', event: 'connect' })!]);
  t.equal(db.find(['ip:198.51.100.1'], 0).length, 1, 'and new events still go in');
});

t.test('--since finds the first event at or after a time by bisection, across a pruned start', async (t) => {
  const db = new JournalDb(path.join(await tempDir(t), 'journal.sqlite'));
  t.teardown(() => db.close());
  const minute = 60_000;
  // 1,000 events a minute apart, all with one IP; several share a time (a busy millisecond).
  db.insert(Array.from({ length: 1000 }, (_, i) => toEntry({ level: 30, time: T0 + Math.floor(i / 4) * minute, conn: `c${i}`, ip: '192.0.2.1', event: 'connect' })!));
  const times = (since: number) => db.events(db.find(['ip:192.0.2.1'], since)).map((e) => e.time);
  t.equal(times(0).length, 1000, 'since 0: all');
  t.same(times(T0 + 100 * minute).slice(0, 5), [T0 + 100 * minute, T0 + 100 * minute, T0 + 100 * minute, T0 + 100 * minute, T0 + 101 * minute], 'an exact time: every event of that millisecond');
  t.equal(times(T0 + 100 * minute - 1).length, 600, 'just before it: the same 600');
  t.equal(times(T0 + 250 * minute).length, 0, 'after the last: none');
  db.prune(T0 + 14 * 86_400_000 + 50 * minute, 14 * 86_400_000, 1e12);
  t.equal(times(0).length, 800, 'pruning the first 50 minutes left 800');
  t.equal(times(T0 + 200 * minute).length, 200);
});

t.test('the stored record is the line pino wrote, less time and pid', async (t) => {
  const line = '{"level":30,"time":"2026-12-01T09:00:00.000Z","pid":42,"listener":"mx","conn":"c1","ip":"192.0.2.7","event":"connect","msg":"connection opened"}\n';
  const entry = toEntry(JSON.parse(line) as Record<string, unknown>, line)!;
  t.equal(entry.record, '{"level":30,"listener":"mx","conn":"c1","ip":"192.0.2.7","event":"connect","msg":"connection opened"}');
  t.equal(entry.time, T0);
  const odd = '{"time":1,"level":30,"conn":"c1","event":"connect"}';
  t.equal(toEntry(JSON.parse(odd) as Record<string, unknown>, odd)!.record, '{"level":30,"conn":"c1","event":"connect"}', 'a line in another shape is serialised again');
});
