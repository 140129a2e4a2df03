/**
 * `yubin why` on a big journal: fills a journal with about a million
 * decisions shaped like a busy MX's (connections with their hook decisions,
 * queued messages with delivery attempts, bounces), then times `yubin why`
 * as an admin runs it (a new process each time, start-up included) for an
 * IP, an address, a domain, a queue id and a Message-ID.
 *
 *   npm run bench:journal -- [--events 1000000] [--workdir DIR]
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { JournalDb } from '../../core/journal/db.js';
import { toEntry, type JournalEntry } from '../../core/journal/entry.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const { values } = parseArgs({ options: { events: { type: 'string', default: '1000000' }, workdir: { type: 'string' }, runs: { type: 'string', default: '5' } } });
const target = Number(values.events);
const dir = path.resolve(values.workdir ?? path.join(root, 'bench/.peers/journal'));
rmSync(dir, { recursive: true, force: true });
mkdirSync(path.join(dir, 'var'), { recursive: true });
writeFileSync(path.join(dir, 'yubin.yaml'), `dataDir: ${path.join(dir, 'var')}\nlisteners:\n  - { name: mx, protocol: smtp, listen: 127.0.0.1:0 }\n`);
const db = new JournalDb(path.join(dir, 'var/journal.sqlite'));

const t0 = Date.now() - 7 * 86_400_000;
const ipOf = (i: number) => `198.51.${(i >> 8) & 255}.${i & 255}`;
let events = 0;
let batch: JournalEntry[] = [];
const add = (rec: Record<string, unknown>) => {
  batch.push(toEntry({ level: 30, ...rec })!);
  events++;
  if (batch.length >= 10_000) {
    db.insert(batch);
    batch = [];
  }
};
const started = process.hrtime.bigint();
for (let c = 0; events < target; c++) {
  const time = t0 + c * 600;
  const conn = `c${c.toString(36)}`;
  const ip = ipOf(c % 20_000); // each client comes back: about 5 connections per IP per 100,000
  const base = { time, listener: 'mx', conn, ip };
  add({ ...base, event: 'connect', local: '0.0.0.0:25', msg: 'connection opened' });
  add({ ...base, hook: 'mail', plugin: 'core', action: 'accept', code: 250, from: `sender${c % 5000}@example${c % 300}.org`, msg: 'mail: core accept' });
  if (c % 4 === 0) {
    add({ ...base, plugin: 'rblsmtpd', rule: 'rbl', zone: 'bl.example.net', query: 'x', msg: 'rblsmtpd: 451 listed' });
    add({ ...base, hook: 'rcpt', plugin: 'rblsmtpd', action: 'defer', code: 451, reason: `listed in bl.example.net`, rcpt: `user${c % 1000}@example.jp`, msg: 'rcpt: rblsmtpd defer' });
  } else {
    const id = `Q${c.toString(36).toUpperCase()}`;
    const rcpt = `user${c % 1000}@example.jp`;
    add({ ...base, hook: 'rcpt', plugin: 'vpopmail', action: 'accept', code: 250, rcpt, msg: 'rcpt accept' });
    add({ ...base, event: 'queued', hook: 'queue', plugin: 'core', action: 'accept', code: 250, id, size: 5120, from: `sender${c % 5000}@example${c % 300}.org`, to: [rcpt], messageId: `<${c}.bench@example${c % 300}.org>`, msg: 'message queued' });
    add({ time: time + 50, component: 'queue', event: 'delivery', id, rcpt, channel: 'local', attempt: 1, result: 'success', text: 'vpopmail: delivered', msg: 'delivery' });
    add({ time: time + 60, component: 'queue', event: 'queue-end', id, msg: 'end' });
  }
  add({ ...base, event: 'close', msg: 'connection closed' });
}
db.insert(batch);
const fillSeconds = Number(process.hrtime.bigint() - started) / 1e9;
db.close();
const size = statSync(path.join(dir, 'var/journal.sqlite')).size;

const cli = path.join(root, 'dist/core/cli.js');
const queries: Record<string, string> = {
  ip: ipOf(1234),
  address: 'user42@example.jp',
  domain: 'example77.org',
  'queue id': `Q${(4001).toString(36).toUpperCase()}`,
  'Message-ID': '<4001.bench@example101.org>',
};
const results: Record<string, { medianMs: number; maxMs: number; stories: number }> = {};
const runs = Number(values.runs);
for (const [what, q] of Object.entries(queries)) {
  const times: number[] = [];
  let stories = 0;
  for (let i = 0; i < runs; i++) {
    const s = process.hrtime.bigint();
    const r = spawnSync(process.execPath, [cli, 'why', q, '--json', '-c', path.join(dir, 'yubin.yaml')], { encoding: 'utf8', maxBuffer: 1 << 28 });
    times.push(Number(process.hrtime.bigint() - s) / 1e6);
    if (r.status !== 0) throw new Error(`why ${q}: ${r.stderr}`);
    stories = (JSON.parse(r.stdout) as unknown[]).length;
  }
  times.sort((a, b) => a - b);
  results[what] = { medianMs: Math.round(times[Math.floor(times.length / 2)]!), maxMs: Math.round(times.at(-1)!), stories };
}
const startup = [] as number[];
for (let i = 0; i < runs; i++) {
  const s = process.hrtime.bigint();
  spawnSync(process.execPath, [cli, '--version']);
  startup.push(Number(process.hrtime.bigint() - s) / 1e6);
}
startup.sort((a, b) => a - b);
const out = {
  date: new Date().toISOString(),
  events,
  journalBytes: size,
  fillSeconds: Math.round(fillSeconds * 10) / 10,
  insertsPerSecond: Math.round(events / fillSeconds),
  whyWallMs: results,
  nodeStartupMs: Math.round(startup[Math.floor(startup.length / 2)]!),
  note: 'each `yubin why` is a new process: the times include Node start-up (nodeStartupMs is `yubin --version` alone)',
};
mkdirSync(path.join(root, 'bench/results'), { recursive: true });
const file = path.join(root, 'bench/results', `journal-${out.date.slice(0, 10)}.json`);
writeFileSync(file, JSON.stringify(out, null, 2));
console.log(JSON.stringify(out, null, 2));
console.log(`written ${file}`);
