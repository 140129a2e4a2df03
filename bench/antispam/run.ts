/**
 * What do the anti-spam plugins cost? yubin with rblsmtpd (three DNSBL zones
 * served by a real rbldnsd) and spamdyke (empty and unresolvable rDNS, S25R,
 * greylisting), against yubin with rcpthosts alone, all on loopback:
 *
 * (a) latency from connect to the RCPT reply, one connection at a time, from
 *     127.0.0.2..127.0.0.50: with a cold DNS cache (fresh server, each client
 *     address for the first time) and a warm one (the same addresses again);
 * (b) msgs/s for a fixed load (N messages, S concurrent sessions, a new
 *     connection per message, 1 recipient, a small message), queue held;
 * (c) memory per idle connection: RSS (and heap, after a full GC) of the
 *     yubin process before and after opening C connections that each got the
 *     greeting and said EHLO.
 *
 *     node dist/bench/antispam/run.js [--quick] [options]   (--help)
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadAverage, machineInfo, positive, repoRoot, runBench, sh, table } from '../common.js';
import { CLOCK_TICKS_PER_SECOND, OtherCpu, readMemory, readStat, sleep } from '../smtp-accept/proc.js';
import { yubinLogProblems } from '../smtp-accept/servers.js';
import { idleSession, smallMessage, transaction, type TransactionResult } from './client.js';
import { dnsStats, startDnsServer, startRbldnsd, startYubin, stopAll, type Yubin, type Zone } from './peers.js';

const HELP = `node dist/bench/antispam/run.js [options]

  --quick              smoke run: 1 cold round, 1 warm pass, 300 messages, 1 repeat, 200 connections
  --rounds N           cold rounds (a fresh server each), default 10
  --warm-passes N      warm passes over the client addresses per round, default 4
  --messages N         messages per throughput run, default 2000
  --sessions N         concurrent sessions in the throughput runs, default 20
  --repeat N           throughput runs per mode (on, off alternating; the median is reported), default 3
  --connections N      idle connections for the memory measure, default 1000
  --size BYTES         message size, default 1024
  --store memory|sqlite  greylisting store, default sqlite
  --out FILE           result JSON (default bench/results/antispam-<date>[-quick].json)
  --keep               keep the run directory (zone files, logs, spools)
`;

const ZONES = ['bl1.bench.test', 'bl2.bench.test', 'bl3.bench.test'];
const FIRST_IP = 2;
const LAST_IP = 50;
const PRIMER = '127.0.0.1';
const SENDER = 'bench@client.bench.test';
const RECIPIENT = 'postmaster@localhost';

// ---------------------------------------------------------------- the clients

type Kind = 'clean' | 'dnsbl' | 'no-rdns' | 'unconfirmed-rdns' | 's25r';
interface Client {
  readonly ip: string;
  readonly kind: Kind;
  readonly ptr?: string;
}

/** A letters-only label for n (no digits: no S25R rule can match the name). */
function letters(n: number): string {
  let s = '';
  do {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26);
  } while (n > 0);
  return s;
}

/** 127.0.0.2..50: most clean (forward-confirmed server-like names); a few listed, without rDNS, unconfirmed, or dynamic-looking. */
function clients(): Client[] {
  const out: Client[] = [];
  for (let i = FIRST_IP; i <= LAST_IP; i++) {
    const ip = `127.0.0.${i}`;
    const kind: Kind = [10, 20, 30, 40].includes(i) ? 'dnsbl' : i === 45 ? 'no-rdns' : i === 46 ? 'unconfirmed-rdns' : i === 47 ? 's25r' : 'clean';
    const ptr = kind === 'no-rdns' ? undefined : kind === 's25r' ? `dhcp-${i}-0-0-127.pool.bench.test` : `mta-${letters(i)}.sender.bench.test`;
    out.push({ ip, kind, ptr });
  }
  return out;
}

function dnsRecords(list: readonly Client[]): Record<string, { A?: string[]; PTR?: string[] }> {
  const rec: Record<string, { A?: string[]; PTR?: string[] }> = {};
  const rev = (ip: string) => ip.split('.').reverse().join('.') + '.in-addr.arpa';
  rec[rev(PRIMER)] = { PTR: ['primer.client.bench.test'] };
  rec['primer.client.bench.test'] = { A: [PRIMER] };
  for (const c of list) {
    if (!c.ptr) continue;
    rec[rev(c.ip)] = { PTR: [c.ptr] };
    // The unconfirmed name points elsewhere.
    rec[c.ptr] = { A: [c.kind === 'unconfirmed-rdns' ? '192.0.2.1' : c.ip] };
  }
  return rec;
}

function zones(list: readonly Client[]): Zone[] {
  // .10 in bl1, .20 in bl2, .30 in bl3, .40 in all three.
  const listed = (n: number) => list.filter((c) => c.kind === 'dnsbl' && (c.ip.endsWith(`.${n}`) || c.ip.endsWith('.40'))).map((c) => c.ip);
  return ZONES.map((name, i) => ({ name, listed: listed((i + 1) * 10) }));
}

// ---------------------------------------------------------------- statistics

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

function summary(samples: readonly number[]) {
  const s = [...samples].sort((a, b) => a - b);
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return { n: s.length, p50: r2(percentile(s, 50)), p90: r2(percentile(s, 90)), p99: r2(percentile(s, 99)), max: r2(s[s.length - 1] ?? NaN), mean: r2(s.reduce((a, b) => a + b, 0) / (s.length || 1)) };
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const cpuS = (pid: number) => (readStat(pid)?.cpuTicks ?? 0) / CLOCK_TICKS_PER_SECOND;

// ---------------------------------------------------------------- the run

interface Options {
  rounds: number;
  warmPasses: number;
  messages: number;
  sessions: number;
  repeat: number;
  connections: number;
  size: number;
  store: 'memory' | 'sqlite';
  out?: string;
  keep: boolean;
  quick: boolean;
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = { rounds: quick ? 1 : 10, warmPasses: quick ? 1 : 4, messages: quick ? 300 : 2000, sessions: 20, repeat: quick ? 1 : 3, connections: quick ? 200 : 1000, size: 1024, store: 'sqlite', keep: false, quick };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => argv[++i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    } else if (a === '--quick') continue;
    else if (a === '--rounds') o.rounds = positive(v(), 'rounds', o.rounds);
    else if (a === '--warm-passes') o.warmPasses = positive(v(), 'warm-passes', o.warmPasses);
    else if (a === '--messages') o.messages = positive(v(), 'messages', o.messages);
    else if (a === '--sessions') o.sessions = positive(v(), 'sessions', o.sessions);
    else if (a === '--repeat') o.repeat = positive(v(), 'repeat', o.repeat);
    else if (a === '--connections') o.connections = positive(v(), 'connections', o.connections);
    else if (a === '--size') o.size = positive(v(), 'size', o.size);
    else if (a === '--store') {
      const s = v();
      if (s !== 'memory' && s !== 'sqlite') throw new Error('--store: memory or sqlite');
      o.store = s;
    } else if (a === '--out') o.out = v();
    else if (a === '--keep') o.keep = true;
    else throw new Error(`unknown option ${a} (--help)`);
  }
  return o;
}

/** The commit checked out, read from .git without running git. */
function commitOf(root: string): string {
  try {
    const head = readFileSync(path.join(root, '.git/HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head;
    const ref = head.slice(5);
    const loose = path.join(root, '.git', ref);
    if (existsSync(loose)) return readFileSync(loose, 'utf8').trim();
    const packed = readFileSync(path.join(root, '.git/packed-refs'), 'utf8');
    return packed.split('\n').find((l) => l.endsWith(' ' + ref))?.split(' ')[0] ?? '';
  } catch {
    return '';
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const root = repoRoot();
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'yubin-antispam-'));
  const list = clients();
  const clean = list.filter((c) => c.kind === 'clean');
  const machine = machineInfo(workdir);
  const ulimit = sh('sh', ['-c', 'ulimit -n']);
  if (Number(ulimit) < o.connections * 2 + 200) process.stderr.write(`warning: ulimit -n is ${ulimit}, below 2 x ${o.connections} connections\n`);
  const message = smallMessage(SENDER, RECIPIENT, o.size);
  let serial = 0;
  const yubinProblems: string[] = [];

  const rbl = await startRbldnsd(path.join(workdir, 'rbldnsd'), zones(list));
  const dns = await startDnsServer(path.join(workdir, 'dns-server.log'), dnsRecords(list), ZONES, rbl.port);
  const dnsAddr = `127.0.0.1:${dns.port}`;
  process.stderr.write(`rbldnsd pid ${rbl.c.pid} on 127.0.0.1:${rbl.port}, dns-server pid ${dns.c.pid} on ${dnsAddr}, run directory ${workdir}\n`);

  const fresh = async (antispam: boolean): Promise<Yubin> => {
    const n = ++serial;
    return startYubin(
      { dataDir: path.join(workdir, `yubin-${n}`), dns: dnsAddr, antispam, store: o.store, zones: ZONES, maxConnections: Math.max(2000, o.connections + 100) },
      path.join(workdir, `yubin-${n}.log`),
    );
  };
  const stopYubin = async (y: Yubin) => {
    await y.c.stop();
    yubinProblems.push(...yubinLogProblems(y.c.logFile).slice(0, 5));
  };
  const tx = (y: Yubin, ip: string, data: boolean): Promise<TransactionResult> =>
    transaction({ port: y.port, localAddress: ip, helo: 'client.bench.test', from: SENDER, to: RECIPIENT, data: data ? message : undefined });
  /** Greylist priming (first attempt deferred, second passes, minDelay 0) and JIT warm-up, all from 127.0.0.1. */
  const prime = async (y: Yubin, warmup: number) => {
    const first = await tx(y, PRIMER, true);
    const second = await tx(y, PRIMER, true);
    if (!second.accepted) throw new Error(`priming: RCPT ${first.rcptCode} then ${second.rcptCode} ${second.rcptText}`);
    for (let i = 0; i < warmup; i++) await tx(y, PRIMER, false);
    return { first: first.rcptCode, second: second.rcptCode, accepted: (first.accepted ? 1 : 0) + 1 };
  };

  // ------------------------------------------------ (a) latency
  const lat = { on: { cold: [] as number[], warm: [] as number[] }, off: { cold: [] as number[], warm: [] as number[] } };
  const codes: Record<string, Record<string, Record<number, number>>> = { on: {}, off: {} };
  const primed: Record<string, unknown> = {};
  /** DNS queries that reached the DNS server during each phase (answered there / forwarded to rbldnsd), all rounds. */
  const dnsQueries = { on: { cold: { answered: 0, forwarded: 0, connections: 0 }, warm: { answered: 0, forwarded: 0, connections: 0 } }, off: { cold: { answered: 0, forwarded: 0, connections: 0 }, warm: { answered: 0, forwarded: 0, connections: 0 } } };
  for (let round = 1; round <= o.rounds; round++) {
    for (const mode of ['on', 'off'] as const) {
      process.stderr.write(`latency: round ${round}/${o.rounds}, plugins ${mode}\n`);
      const y = await fresh(mode === 'on');
      try {
        primed[mode] = await prime(y, 200);
        for (let pass = 0; pass <= o.warmPasses; pass++) {
          const phase = pass === 0 ? 'cold' : 'warm';
          const s0 = await dnsStats(dns.port);
          for (const c of list) {
            const r = await tx(y, c.ip, false);
            lat[mode][phase].push(r.rcptMs);
            const k = `${c.kind}`;
            const byKind = (codes[mode]![k] ??= {});
            byKind[r.rcptCode] = (byKind[r.rcptCode] ?? 0) + 1;
          }
          // Lookups still running after the RCPT reply (none expected) are counted in the next pass.
          const s1 = await dnsStats(dns.port);
          const q = dnsQueries[mode][phase];
          q.answered += s1.answered - s0.answered;
          q.forwarded += s1.forwarded - s0.forwarded;
          q.connections += list.length;
        }
      } finally {
        await stopYubin(y);
      }
    }
  }

  // ------------------------------------------------ (b) throughput
  interface Tp {
    mode: 'on' | 'off';
    msgsPerS: number;
    wallS: number;
    accepted: number;
    spooled: number;
    yubinCpuS: number;
    yubinMsPerMsg: number;
    dnsServerCpuS: number;
    rbldnsdCpuS: number;
    benchCpuS: number;
    otherCpuS: number;
    yubinHwmMb: number;
    refused: number;
  }
  const tp: Tp[] = [];
  for (let rep = 1; rep <= o.repeat; rep++) {
    for (const mode of (rep % 2 ? ['on', 'off'] : ['off', 'on']) as Array<'on' | 'off'>) {
      process.stderr.write(`throughput: run ${rep}/${o.repeat}, plugins ${mode}: ${o.messages} messages, ${o.sessions} sessions\n`);
      const y = await fresh(mode === 'on');
      try {
        const primedMessages = (await prime(y, 0)).accepted;
        await sleep(500);
        const other = new OtherCpu(() => [y.c.pid, dns.c.pid, rbl.c.pid]);
        const cpu0 = { y: cpuS(y.c.pid), d: cpuS(dns.c.pid), r: cpuS(rbl.c.pid), b: process.cpuUsage() };
        other.start();
        let next = 0;
        let accepted = 0;
        let refused = 0;
        const t0 = performance.now();
        await Promise.all(
          Array.from({ length: o.sessions }, async () => {
            for (;;) {
              const i = next++;
              if (i >= o.messages) return;
              const r = await tx(y, clean[i % clean.length]!.ip, true);
              if (r.accepted) accepted++;
              else refused++;
            }
          }),
        );
        const wallS = (performance.now() - t0) / 1000;
        const b = process.cpuUsage(cpu0.b);
        const yubinCpuS = cpuS(y.c.pid) - cpu0.y;
        const spooled = readdirSync(path.join(y.dataDir, 'queue/mess')).filter((n) => /^[A-Z0-9]+$/.test(n)).length - primedMessages; // less the primer's
        tp.push({
          mode,
          msgsPerS: r1(accepted / wallS),
          wallS: r2(wallS),
          accepted,
          spooled,
          refused,
          yubinCpuS: r2(yubinCpuS),
          yubinMsPerMsg: r2((yubinCpuS * 1000) / o.messages),
          dnsServerCpuS: r2(cpuS(dns.c.pid) - cpu0.d),
          rbldnsdCpuS: r2(cpuS(rbl.c.pid) - cpu0.r),
          benchCpuS: r2((b.user + b.system) / 1e6),
          otherCpuS: other.seconds(),
          yubinHwmMb: r1((readMemory(y.c.pid)?.hwmKb ?? 0) / 1024),
        });
        process.stderr.write(`  ${tp[tp.length - 1]!.msgsPerS} msgs/s\n`);
      } finally {
        await stopYubin(y);
      }
    }
  }

  // ------------------------------------------------ (c) memory per idle connection
  const mem: Record<string, unknown>[] = [];
  for (const mode of ['on', 'off'] as const) {
    process.stderr.write(`memory: ${o.connections} idle connections, plugins ${mode}\n`);
    const y = await fresh(mode === 'on');
    const socks: net.Socket[] = [];
    try {
      await prime(y, 0);
      // Warm-up: every client address once, so the DNS cache and the code paths are warm before "before".
      for (let pass = 0; pass < 2; pass++) for (const c of list) await tx(y, c.ip, true);
      await sleep(1000);
      const before = { rssKb: readMemory(y.c.pid)!.rssKb, usage: await y.memory() };
      const rssBeforeGcKb = readMemory(y.c.pid)!.rssKb;
      let k = 0;
      const batch = 50;
      while (socks.length < o.connections) {
        const n = Math.min(batch, o.connections - socks.length);
        socks.push(...(await Promise.all(Array.from({ length: n }, () => idleSession(y.port, list[k++ % list.length]!.ip, 'client.bench.test')))));
      }
      await sleep(2000);
      const rssAfterNoGcKb = readMemory(y.c.pid)!.rssKb;
      const usage = await y.memory();
      const after = { rssKb: readMemory(y.c.pid)!.rssKb, usage };
      const per = (a: number, b: number) => r1((a - b) / o.connections);
      mem.push({
        mode,
        connections: socks.length,
        rssBeforeMb: r1(before.rssKb / 1024),
        rssAfterMb: r1(after.rssKb / 1024),
        rssPerConnKb: per(after.rssKb, before.rssKb),
        rssPerConnNoGcKb: per(rssAfterNoGcKb, rssBeforeGcKb),
        heapUsedBeforeMb: r1(before.usage.heapUsed / 2 ** 20),
        heapUsedAfterMb: r1(after.usage.heapUsed / 2 ** 20),
        heapPerConnKb: per(after.usage.heapUsed / 1024, before.usage.heapUsed / 1024),
        externalPerConnKb: per((after.usage.external + after.usage.arrayBuffers) / 1024, (before.usage.external + before.usage.arrayBuffers) / 1024),
      });
    } finally {
      for (const s of socks) s.destroy();
      await stopYubin(y);
    }
  }

  // ------------------------------------------------ report
  const latRow = (mode: 'on' | 'off', phase: 'cold' | 'warm') => ({ mode, phase, ...summary(lat[mode][phase]) });
  const latency = [latRow('on', 'cold'), latRow('on', 'warm'), latRow('off', 'cold'), latRow('off', 'warm')];
  const med = (mode: 'on' | 'off', key: keyof Tp) => median(tp.filter((t) => t.mode === mode).map((t) => t[key] as number));
  const throughput = {
    on: { msgsPerS: r1(med('on', 'msgsPerS')), yubinMsPerMsg: r2(med('on', 'yubinMsPerMsg')) },
    off: { msgsPerS: r1(med('off', 'msgsPerS')), yubinMsPerMsg: r2(med('off', 'yubinMsPerMsg')) },
  };
  const ratios = {
    msgsPerSOnOverOff: r2(throughput.on.msgsPerS / throughput.off.msgsPerS),
    yubinCpuPerMsgOnOverOff: r2(throughput.on.yubinMsPerMsg / throughput.off.yubinMsPerMsg),
    latencyP50ColdOnOverOff: r2(latency[0]!.p50 / latency[2]!.p50),
    latencyP50WarmOnOverOff: r2(latency[1]!.p50 / latency[3]!.p50),
    latencyP99ColdOnOverOff: r2(latency[0]!.p99 / latency[2]!.p99),
    latencyP99WarmOnOverOff: r2(latency[1]!.p99 / latency[3]!.p99),
  };

  const out: string[] = [];
  out.push('(a) connect → RCPT reply, ms, one connection at a time');
  out.push(table([['plugins', 'cache', 'n', 'p50', 'p90', 'p99', 'max', 'mean'], ...latency.map((l) => [l.mode, l.phase, String(l.n), String(l.p50), String(l.p90), String(l.p99), String(l.max), String(l.mean)])]));
  const perConn = (m: 'on' | 'off', p: 'cold' | 'warm') => {
    const q = dnsQueries[m][p];
    return `${m}/${p} ${r2(q.answered / q.connections)} + ${r2(q.forwarded / q.connections)}`;
  };
  out.push('', `DNS queries per connection reaching the DNS server (PTR/A answered there + DNSBL forwarded to rbldnsd): ${[perConn('on', 'cold'), perConn('on', 'warm'), perConn('off', 'cold'), perConn('off', 'warm')].join(', ')}`);
  out.push('', `RCPT replies by client kind (all rounds and passes): ${JSON.stringify(codes)}`);
  out.push('', `(b) ${o.messages} messages, ${o.sessions} sessions, new connection per message, 1 recipient, ${o.size} bytes, queue held`);
  out.push(
    table([
      ['plugins', 'msgs/s', 'wall s', 'accepted', 'yubin CPU s (ms/msg)', 'dns-server CPU s', 'rbldnsd CPU s', 'client CPU s', 'other CPU s', 'yubin VmHWM MB'],
      ...tp.map((t) => [t.mode, String(t.msgsPerS), String(t.wallS), String(t.accepted), `${t.yubinCpuS} (${t.yubinMsPerMsg})`, String(t.dnsServerCpuS), String(t.rbldnsdCpuS), String(t.benchCpuS), String(t.otherCpuS), String(t.yubinHwmMb)]),
    ]),
  );
  out.push(`median msgs/s: on ${throughput.on.msgsPerS}, off ${throughput.off.msgsPerS}`);
  out.push('', `(c) ${o.connections} idle connections (greeting + EHLO), yubin process, after a full GC`);
  out.push(
    table([
      ['plugins', 'RSS before MB', 'RSS after MB', 'RSS KB/conn', 'RSS KB/conn (no GC)', 'heap before MB', 'heap after MB', 'heap KB/conn', 'external KB/conn'],
      ...mem.map((m) => [m.mode, m.rssBeforeMb, m.rssAfterMb, m.rssPerConnKb, m.rssPerConnNoGcKb, m.heapUsedBeforeMb, m.heapUsedAfterMb, m.heapPerConnKb, m.externalPerConnKb].map(String)),
    ]),
  );
  out.push('', 'ratios (plugins on / off):');
  out.push(table([['ratio', 'value'], ...Object.entries(ratios).map(([k, v]) => [k, String(v)])]));
  if (yubinProblems.length) out.push('', `yubin log warnings/errors (first ones): ${yubinProblems.slice(0, 5).join('\n')}`);
  process.stdout.write(out.join('\n') + '\n');

  const date = new Date().toISOString().slice(0, 10);
  const file = o.out ?? path.join(root, 'bench/results', `antispam-${date}${o.quick ? '-quick' : ''}.json`);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(
    file,
    JSON.stringify(
      {
        benchmark: 'antispam',
        date: new Date().toISOString(),
        commit: commitOf(root),
        options: o,
        machine: { ...machine, loadAverageAtEnd: loadAverage(), ulimitN: ulimit },
        setup: {
          clients: list,
          zones: zones(list),
          primer: PRIMER,
          pluginsOn: 'rblsmtpd (3 zones) + spamdyke (rejectEmptyRdns, rejectUnresolvableRdns, s25r, graylist sender-recipient minDelay 0, primed) + rcpthosts',
          pluginsOff: 'rcpthosts',
          store: o.store,
          dns: 'dns-server (dns-packet, own process): PTR/A answered, bl*.bench.test forwarded to rbldnsd; yubin cacheSize 1e6, minTtl 1h',
          greylistPriming: primed,
        },
        latency,
        rcptRepliesByKind: codes,
        dnsQueries,
        throughput: { runs: tp, median: throughput },
        memory: mem,
        ratios,
        yubinLogProblems: yubinProblems.slice(0, 20),
      },
      null,
      2,
    ) + '\n',
  );
  process.stderr.write(`wrote ${file}\n`);
  if (!o.keep) rmSync(workdir, { recursive: true, force: true });
}

await runBench('antispam', main, stopAll);
