/**
 * POP3 benchmark: yubin's POP3 server next to Dovecot's, on identical copies
 * of one generated Maildir (10,000 messages by default), loopback only.
 *
 *     node dist/bench/pop3/run.js [--messages N] [--help]
 *
 * See HELP below and bench/README.md for the method.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gitInfo, loadAverage, machineInfo, positive, repoRoot, table } from '../common.js';
import { CLOCK_TICKS_PER_SECOND, freePort, mustRun, OtherCpu, sleep } from '../smtp-accept/proc.js';
import { DOVECOT_SETTINGS, dovecotVersion, findDovecot, giveToMailUser, startDovecot, type BenchUser, type PopServer } from './dovecot.js';
import { copyMaildir, generateMaildir, listMessages, type Mailbox, type MessageFile } from './mailbox.js';
import { CheckFailed, loginCycle, retrRun, sessionsRun, type Context, type LoginSample, type RetrSample, type SessionsSample, type UidlInfo } from './measure.js';
import { startYubin } from './yubin.js';

const HELP = `POP3 benchmark: yubin against Dovecot on copies of the same Maildir, 127.0.0.1 only.

usage: node dist/bench/pop3/run.js [options]

  --messages N     messages in the mailbox (default 10000)
  --cold N         cold logins: first login on a fresh copy of the mailbox, no index (default 5)
  --logins N       warm login cycles (default 20)
  --retr N         RETR-everything runs (default 5)
  --retr-warmup N  untimed RETR-everything runs per server before them (default 1; 0 for none):
                   the first big run of the bench's client and of a JIT-compiled server is slower
  --window N       RETR commands outstanding (default 50)
  --sessions N     concurrent sessions held open for the memory per session, each on its own
                   hard-linked copy of the mailbox (default 20; 0 skips it)
  --min-size B     smallest message, octets as stored (default 2048)
  --max-size B     largest message (default 20480)
  --seed N         mailbox generator seed (default 1)
  --servers LIST   yubin,dovecot (default both)
  --timeout SEC    one session's limit (default 600)
  --dovecot BIN    the dovecot binary (default /usr/sbin/dovecot or dovecot on PATH)
  --workdir DIR    where the temporary directory goes (default the system's tmp)
  --keep           keep the temporary directory (mailboxes, configs, logs)
  --yubin-dist DIR  measure another build's yubin (its dist/, e.g. of an older commit) with this bench
  --yubin-node-arg A  extra argument for yubin's node process, repeatable
                   (e.g. --yubin-node-arg=--cpu-prof --yubin-node-arg=--cpu-prof-dir=/tmp/prof)
  --out FILE       JSON results (default bench/results/pop3-<date>.json, -quick.json unless 10000 messages)
  -h, --help

Dovecot must be installed (apt-get install dovecot-pop3d); without it only
yubin is measured. Nothing needs root at run time; as root, Dovecot's mail
processes run as nobody and its copies are chowned to nobody.
`;

type Name = 'yubin' | 'dovecot';

interface ServerReport {
  name: Name;
  version?: string;
  setup: string[];
  unavailable?: string;
  greeting?: string;
  failed?: { phase: string; message: string; exchanges: string[] };
  cold: LoginSample[];
  /** The first (untimed in the warm figures) login on the main copy: builds Dovecot's index. */
  prime?: LoginSample;
  warm: LoginSample[];
  retr: RetrSample[];
  sessions?: SessionsSample;
  uidl?: UidlInfo;
  mailboxIntact?: boolean;
  logProblemCount?: number;
  logProblems?: string[];
}

/** Nearest-rank percentile. */
function pct(xs: readonly number[], p: number): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const median = (xs: readonly number[]) => {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
};
const r2 = (x: number | undefined) => (x === undefined ? undefined : Math.round(x * 100) / 100);
const fmt = (x: number | undefined, d = 1) => (x === undefined ? '-' : x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));

function loginStats(xs: readonly LoginSample[]) {
  const ms = xs.map((x) => x.ms);
  const step = (k: keyof LoginSample['steps']) => r2(median(xs.map((x) => x.steps[k])));
  return {
    runs: xs.length,
    medianMs: r2(median(ms)),
    p90Ms: r2(pct(ms, 90)),
    minMs: r2(pct(ms, 0)),
    maxMs: r2(pct(ms, 100)),
    /** Sum over the runs / runs: CPU times come in 10 ms clock ticks, too coarse for one login. */
    meanServerCpuMs: xs.length ? r2(xs.reduce((a, x) => a + x.serverCpuMs, 0) / xs.length) : undefined,
    medianStepsMs: { connect: step('connect'), user: step('user'), pass: step('pass'), stat: step('stat'), uidl: step('uidl'), quit: step('quit') },
  };
}

function retrStats(xs: readonly RetrSample[]) {
  const ms = xs.map((x) => x.ms);
  const med = median(ms);
  const p90 = pct(ms, 90);
  const messages = xs[0]?.messages ?? 0;
  const octets = xs[0]?.octets ?? 0;
  return {
    runs: xs.length,
    medianMs: r2(med),
    p90Ms: r2(p90),
    /** From the median time. */
    msgsPerSec: med ? Math.round(messages / (med / 1000)) : undefined,
    mbPerSec: med ? r2(octets / 1e6 / (med / 1000)) : undefined,
    /** From the p90 time (the slower runs). */
    msgsPerSecAtP90: p90 ? Math.round(messages / (p90 / 1000)) : undefined,
    mbPerSecAtP90: p90 ? r2(octets / 1e6 / (p90 / 1000)) : undefined,
    medianServerCpuSeconds: r2(median(xs.map((x) => x.serverCpuSeconds))),
    medianClientCpuSeconds: r2(median(xs.map((x) => x.clientCpuSeconds))),
    peakRssMb: xs.length ? Math.max(...xs.map((x) => x.peakRssMb)) : undefined,
    medianQuitMs: r2(median(xs.map((x) => x.quitMs))),
  };
}

// ------------------------------------------------------------------ cleanup

let cleanupFns: Array<() => Promise<void> | void> = [];
async function cleanup(): Promise<void> {
  const fns = cleanupFns.reverse();
  cleanupFns = [];
  for (const f of fns) {
    try {
      await f();
    } catch (err) {
      process.stderr.write(`cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\n${sig}: stopping the servers and removing the temporary directory\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

process.on('unhandledRejection', (err) => {
  process.stderr.write(`bench: unhandled rejection: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  void cleanup().finally(() => process.exit(1));
});

/** The machine's CPU time by kind so far (/proc/stat, first line), seconds: the share of softirq (loopback traffic) and steal shows what "other CPU" is made of. */
function machineCpu(): Record<string, number> {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const keys = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'];
  return Object.fromEntries(keys.map((k, i) => [k, (f[i] ?? 0) / CLOCK_TICKS_PER_SECOND]));
}
const cpuDelta = (a: Record<string, number>, b: Record<string, number>) => Object.fromEntries(Object.keys(a).map((k) => [k, Math.round((b[k]! - a[k]!) * 100) / 100]));

const log = (s: string) => process.stdout.write(s);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' },
      cold: { type: 'string' },
      logins: { type: 'string' },
      retr: { type: 'string' },
      'retr-warmup': { type: 'string' },
      window: { type: 'string' },
      sessions: { type: 'string' },
      'min-size': { type: 'string' },
      'max-size': { type: 'string' },
      seed: { type: 'string' },
      servers: { type: 'string', default: 'yubin,dovecot' },
      timeout: { type: 'string' },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      dovecot: { type: 'string' },
      'yubin-node-arg': { type: 'string', multiple: true, default: [] },
      'yubin-dist': { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    log(HELP);
    return;
  }
  if (process.platform !== 'linux') throw new Error('this benchmark reads /proc: Linux only');
  const root = repoRoot();
  const messages = positive(values.messages, 'messages', 10_000);
  const coldRuns = positive(values.cold, 'cold', 5);
  const warmRuns = positive(values.logins, 'logins', 20);
  const retrRuns = positive(values.retr, 'retr', 5);
  const retrWarmup = values['retr-warmup'] === '0' ? 0 : positive(values['retr-warmup'], 'retr-warmup', 1);
  const window = positive(values.window, 'window', 50);
  const sessionCount = values.sessions === '0' ? 0 : positive(values.sessions, 'sessions', 20);
  const minSize = positive(values['min-size'], 'min-size', 2048);
  const maxSize = positive(values['max-size'], 'max-size', 20480);
  const seed = positive(values.seed, 'seed', 1);
  const timeoutMs = positive(values.timeout, 'timeout', 600) * 1000;
  if (maxSize < minSize) throw new Error('--max-size is below --min-size');
  const names = values.servers.split(',').map((s) => s.trim()) as Name[];
  for (const n of names) if (n !== 'yubin' && n !== 'dovecot') throw new Error(`--servers: unknown server ${n} (yubin, dovecot)`);
  const password = 'bench-pop3-secret';

  const reports = new Map<Name, ServerReport>();
  const dovecotBin = values.dovecot !== undefined ? (existsSync(values.dovecot) ? path.resolve(values.dovecot) : undefined) : findDovecot();
  for (const n of names) {
    const r: ServerReport = { name: n, setup: [], cold: [], warm: [], retr: [] };
    if (n === 'dovecot') {
      if (!dovecotBin) r.unavailable = `${values.dovecot ?? 'dovecot'} is not installed (apt-get install dovecot-pop3d); measuring yubin alone`;
      else r.version = dovecotVersion(dovecotBin);
      r.setup = DOVECOT_SETTINGS;
    } else {
      r.setup = [`${values['yubin-dist'] ? `the build in ${values['yubin-dist']}` : 'this checkout\'s dist/'}, one Node process (bench/pop3/yubin-server.js via startTestServer), one pop3 listener on 127.0.0.1, allowInsecureAuth, an inline auth plugin naming the Maildir, log level warn`];
    }
    if (r.unavailable) process.stderr.write(`${n}: not run: ${r.unavailable}\n`);
    reports.set(n, r);
  }
  const active = () => names.filter((n) => !reports.get(n)!.unavailable && !reports.get(n)!.failed);

  const parent = path.resolve(values.workdir ?? os.tmpdir());
  mkdirSync(parent, { recursive: true });
  const work = mkdtempSync(path.join(parent, 'yubin-bench-pop3-'));
  chmodSync(work, 0o755); // Dovecot's login and mail users must get through
  cleanupFns.push(() => {
    if (values.keep) log(`kept ${work}\n`);
    else rmSync(work, { recursive: true, force: true });
  });

  const machine = machineInfo(work);
  const git = gitInfo(root);
  log(
    `pop3: ${messages} messages of ${minSize}-${maxSize} octets (LF on disk), ${coldRuns} cold logins, ${warmRuns} warm login cycles, ${retrRuns} RETR runs with ${window} outstanding, loopback\n` +
      `machine: ${machine.cpus} cpus (${machine.cpuModel}), node ${machine.node}, workdir ${work} on ${machine.workdirFilesystem}\n`,
  );

  // ---------------------------------------------------------------- mailboxes
  let t = performance.now();
  const master = generateMaildir(path.join(work, 'master'), { count: messages, minSize, maxSize, seed, recipient: 'bench@example.test' });
  const warmupMaster = generateMaildir(path.join(work, 'warmup-master'), { count: Math.min(100, messages), minSize, maxSize, seed: seed + 1000, recipient: 'warmup@example.test' });
  const byBase = new Map<string, MessageFile>(master.messages.map((m) => [m.base, m]));
  const warmupByBase = new Map<string, MessageFile>(warmupMaster.messages.map((m) => [m.base, m]));
  log(`mailbox: ${messages} messages, ${(master.totalStored / 1e6).toFixed(1)} MB stored, ${(master.totalCrlf / 1e6).toFixed(1)} MB with CRLF, ${master.withDotLines} with dot-stuffed lines (generated in ${((performance.now() - t) / 1000).toFixed(1)} s)\n`);
  const masterListing = listMessages(master.dir).join('\n');

  t = performance.now();
  interface Boxes {
    main: Mailbox;
    warmup: Mailbox;
    cold: Mailbox[];
    sessions: Array<{ user: string; box: Mailbox }>;
    users: BenchUser[];
  }
  const boxes = new Map<Name, Boxes>();
  for (const n of active()) {
    const dir = path.join(work, n);
    mkdirSync(dir, { recursive: true });
    const b: Boxes = {
      main: await copyMaildir(master, path.join(dir, 'main')),
      warmup: await copyMaildir(warmupMaster, path.join(dir, 'warmup')),
      cold: [],
      sessions: [],
      users: [],
    };
    for (let k = 0; k < coldRuns; k++) b.cold.push(await copyMaildir(master, path.join(dir, `cold-${k + 1}`)));
    // Hard links: the same files, so the copies cost no page cache and little time.
    for (let k = 0; k < sessionCount; k++) b.sessions.push({ user: `s${k + 1}`, box: await copyMaildir(master, path.join(dir, `s-${k + 1}`), true) });
    b.users = [
      { name: 'bench', maildir: b.main.dir },
      { name: 'warmup', maildir: b.warmup.dir },
      ...b.cold.map((m, k) => ({ name: `cold${k + 1}`, maildir: m.dir })),
      ...b.sessions.map((x) => ({ name: x.user, maildir: x.box.dir })),
    ];
    if (n === 'dovecot') {
      for (const u of b.users) giveToMailUser(u.maildir);
    }
    boxes.set(n, b);
  }
  await mustRun('sync', []);
  log(`copies: ${active().length} x ${coldRuns + 1} of the mailbox (${((performance.now() - t) / 1000).toFixed(1)} s)\n`);
  await sleep(2000); // let writeback settle

  // ---------------------------------------------------------------- servers
  const servers = new Map<Name, PopServer>();
  const fail = (n: Name, phase: string, err: unknown) => {
    const r = reports.get(n)!;
    const exchanges = err instanceof CheckFailed ? err.exchanges : [];
    r.failed = { phase, message: err instanceof Error ? err.message : String(err), exchanges };
    process.stderr.write(`\n${n}: FAILED in ${phase}: ${r.failed.message}\n${exchanges.map((e) => `    ${e}`).join('\n')}\n`);
    const s = servers.get(n);
    if (s) process.stderr.write(`  ${n} log tail:\n${s.logTail().replace(/^/gm, '    ')}\n`);
  };
  for (const n of active()) {
    const dir = path.join(work, `${n}-server`);
    mkdirSync(dir, { recursive: true });
    try {
      const s = n === 'dovecot' ? await startDovecot(dovecotBin!, dir, await freePort(), boxes.get(n)!.users, password) : await startYubin(dir, boxes.get(n)!.users, password, values['yubin-node-arg'], values['yubin-dist']);
      servers.set(n, s);
      cleanupFns.push(() => s.stop());
      reports.get(n)!.greeting = s.greeting;
      log(`${n}: listening on 127.0.0.1:${s.port}, pid ${s.rootPid}, greeting ${JSON.stringify(s.greeting)}\n`);
    } catch (err) {
      fail(n, 'start (connect + greeting)', err);
    }
  }

  const ctx = (n: Name, user: string, box: Mailbox, map = byBase): Context => ({ server: servers.get(n)!, box, byBase: map, user, password, timeoutMs });
  /** Alternates which server goes first, so neither always runs right after the other. */
  const order = (k: number) => (k % 2 === 0 ? active() : [...active()].reverse());
  const other = new OtherCpu(() => []);
  const otherCpu: Record<string, number> = {};
  const machineCpuByPhase: Record<string, Record<string, number>> = {};
  let cpuMark = machineCpu();
  const phaseStart = () => {
    other.start();
    cpuMark = machineCpu();
  };
  const phaseEnd = (phase: string) => {
    otherCpu[phase] = other.seconds();
    machineCpuByPhase[phase] = cpuDelta(cpuMark, machineCpu());
  };

  // Warm-up, untimed: starts Dovecot's auth process and yubin's JIT on a 100-message box.
  for (const n of active()) {
    try {
      const b = boxes.get(n)!;
      for (let i = 0; i < 3; i++) await loginCycle(ctx(n, 'warmup', b.warmup, warmupByBase));
      await retrRun(ctx(n, 'warmup', b.warmup, warmupByBase), window, 5);
    } catch (err) {
      fail(n, 'warm-up (100-message mailbox)', err);
    }
  }

  // Cold: the first login on a copy the server has not seen (Dovecot builds its index here).
  log(`\ncold logins (first login on a fresh copy, ${messages} messages):`);
  phaseStart();
  for (let k = 0; k < coldRuns; k++) {
    for (const n of order(k)) {
      try {
        const { sample, uidl } = await loginCycle(ctx(n, `cold${k + 1}`, boxes.get(n)!.cold[k]!));
        reports.get(n)!.cold.push(sample);
        reports.get(n)!.uidl ??= uidl;
        log(` ${n} ${sample.ms.toFixed(0)} ms`);
      } catch (err) {
        fail(n, `cold login ${k + 1}`, err);
      }
    }
  }
  phaseEnd('cold');

  log(`\nwarm logins (connect, USER, PASS, STAT, UIDL, QUIT):`);
  for (const n of active()) {
    try {
      reports.get(n)!.prime = (await loginCycle(ctx(n, 'bench', boxes.get(n)!.main))).sample;
    } catch (err) {
      fail(n, 'first login on the main copy', err);
    }
  }
  phaseStart();
  for (let k = 0; k < warmRuns; k++) {
    for (const n of order(k)) {
      try {
        const { sample } = await loginCycle(ctx(n, 'bench', boxes.get(n)!.main));
        reports.get(n)!.warm.push(sample);
        log(` ${n[0]}:${sample.ms.toFixed(0)}`);
      } catch (err) {
        fail(n, `warm login ${k + 1}`, err);
      }
    }
  }
  phaseEnd('warm');

  if (sessionCount > 0) {
    log(`\nmemory per session (${sessionCount} sessions held open, each logged in to its own ${messages}-message copy):`);
    for (const n of active()) {
      try {
        const s = await sessionsRun({ server: servers.get(n)!, byBase, password, timeoutMs }, boxes.get(n)!.sessions);
        reports.get(n)!.sessions = s;
        log(` ${n} ${s.perSessionRssKb} kB RSS (${s.perSessionPssKb} kB PSS) per session`);
      } catch (err) {
        fail(n, 'sessions held open', err);
      }
    }
  }

  // Untimed, for every server alike: the first full run of this bench's own client took twice its
  // later CPU, and with the order below it always fell on the server measured first.
  for (let k = 0; k < retrWarmup; k++) {
    for (const n of active()) {
      try {
        await retrRun(ctx(n, 'bench', boxes.get(n)!.main), window, 0);
      } catch (err) {
        fail(n, `untimed RETR run ${k + 1}`, err);
      }
    }
  }
  log(`\nRETR runs (all ${messages} messages, ${window} outstanding${retrWarmup ? `, after ${retrWarmup} untimed per server` : ''}):\n`);
  phaseStart();
  for (let k = 0; k < retrRuns; k++) {
    for (const n of order(k)) {
      try {
        const { sample } = await retrRun(ctx(n, 'bench', boxes.get(n)!.main), window, 20);
        reports.get(n)!.retr.push(sample);
        log(`  ${n.padEnd(7)} ${(sample.ms / 1000).toFixed(2)} s, ${sample.msgsPerSec} msgs/s, ${sample.mbPerSec} MB/s, server CPU ${sample.serverCpuSeconds} s, client CPU ${sample.clientCpuSeconds} s\n`);
      } catch (err) {
        fail(n, `RETR run ${k + 1}`, err);
      }
    }
  }
  phaseEnd('retr');

  // No copy may have lost or gained a message; the flags in the names may change (both servers mark RETRieved mail seen).
  for (const n of names) {
    const b = boxes.get(n);
    const r = reports.get(n)!;
    if (!b) continue;
    r.mailboxIntact = [b.main, ...b.cold].every((m) => listMessages(m.dir).join('\n') === masterListing);
    const s = servers.get(n);
    if (s) {
      const problems = s.problems();
      if (problems.length) {
        r.logProblemCount = problems.length;
        r.logProblems = problems.slice(0, 10);
      }
    }
  }
  await cleanup();

  // ---------------------------------------------------------------- report
  const dv = reports.get('dovecot');
  const yb = reports.get('yubin');
  const stats = Object.fromEntries(
    names.map((n) => {
      const r = reports.get(n)!;
      return [n, { cold: loginStats(r.cold), warm: loginStats(r.warm), retr: retrStats(r.retr) }];
    }),
  ) as Record<Name, { cold: ReturnType<typeof loginStats>; warm: ReturnType<typeof loginStats>; retr: ReturnType<typeof retrStats> }>;
  const ratio = (a: number | undefined, b: number | undefined) => (a && b ? Math.round((a / b) * 100) / 100 : null);
  const sy = yb && stats.yubin;
  const sd = dv && stats.dovecot;
  const ratios = {
    /** Dovecot time / yubin time: > 1 means yubin is faster. */
    coldLoginMedian: ratio(sd?.cold.medianMs, sy?.cold.medianMs),
    coldLoginP90: ratio(sd?.cold.p90Ms, sy?.cold.p90Ms),
    warmLoginMedian: ratio(sd?.warm.medianMs, sy?.warm.medianMs),
    warmLoginP90: ratio(sd?.warm.p90Ms, sy?.warm.p90Ms),
    /** yubin / Dovecot throughput: > 1 means yubin is faster. */
    retrMsgsPerSecMedian: ratio(sy?.retr.msgsPerSec, sd?.retr.msgsPerSec),
    retrMsgsPerSecP90: ratio(sy?.retr.msgsPerSecAtP90, sd?.retr.msgsPerSecAtP90),
    /** yubin / Dovecot server CPU per RETR run: < 1 means yubin uses less. */
    retrServerCpu: ratio(sy?.retr.medianServerCpuSeconds, sd?.retr.medianServerCpuSeconds),
  };

  const loginRows = [['server', 'login', 'runs', 'median ms', 'p90 ms', 'min ms', 'server CPU ms (mean)', 'connect', 'USER', 'PASS', 'STAT', 'UIDL', 'QUIT']];
  const sessionRows = [['server', 'sessions', 'RSS before MB', 'RSS held MB', 'RSS per session kB', 'PSS before MB', 'PSS held MB', 'PSS per session kB', 'processes held']];
  const mb = (kb: number) => fmt(kb / 1024, 1);
  for (const n of names) {
    const s = reports.get(n)!.sessions;
    if (s) sessionRows.push([n, String(s.sessions), mb(s.beforeRssKb), mb(s.heldRssKb), String(s.perSessionRssKb), mb(s.beforePssKb), mb(s.heldPssKb), String(s.perSessionPssKb), String(s.processesHeld)]);
  }
  const retrRows = [['server', 'runs', 'median s', 'p90 s', 'msgs/s', 'MB/s', 'msgs/s @p90', 'server CPU s', 'client CPU s', 'peak RSS MB', 'QUIT ms']];
  for (const n of names) {
    const r = reports.get(n)!;
    if (r.unavailable) continue;
    for (const kind of ['cold', 'warm'] as const) {
      const s = stats[n][kind];
      const st = s.medianStepsMs;
      loginRows.push([n, kind, String(s.runs), fmt(s.medianMs), fmt(s.p90Ms), fmt(s.minMs), fmt(s.meanServerCpuMs, 1), fmt(st.connect), fmt(st.user), fmt(st.pass), fmt(st.stat), fmt(st.uidl), fmt(st.quit)]);
    }
    const s = stats[n].retr;
    retrRows.push([n, String(s.runs), fmt(s.medianMs && s.medianMs / 1000, 2), fmt(s.p90Ms && s.p90Ms / 1000, 2), fmt(s.msgsPerSec, 0), fmt(s.mbPerSec, 1), fmt(s.msgsPerSecAtP90, 0), fmt(s.medianServerCpuSeconds, 2), fmt(s.medianClientCpuSeconds, 2), fmt(s.peakRssMb, 1), fmt(s.medianQuitMs, 1)]);
  }
  const show = (x: number | null) => (x === null ? '-' : x.toFixed(2));
  const ratioRows = [
    ['ratio (> 1: yubin better)', 'median', 'p90'],
    ['cold login, Dovecot ms / yubin ms', show(ratios.coldLoginMedian), show(ratios.coldLoginP90)],
    ['warm login, Dovecot ms / yubin ms', show(ratios.warmLoginMedian), show(ratios.warmLoginP90)],
    ['RETR msgs/s (and MB/s), yubin / Dovecot', show(ratios.retrMsgsPerSecMedian), show(ratios.retrMsgsPerSecP90)],
  ];
  log(`\n\n${table(loginRows)}\n(login: connect + USER + PASS + STAT + UIDL + QUIT on ${messages} messages, one command at a time; step columns are medians in ms)\n\n${table(retrRows)}\n(RETR: all ${messages} messages, ${(master.totalCrlf / 1e6).toFixed(1)} MB with CRLF, ${window} RETRs outstanding; MB = 10^6 octets)\n\n${sessionRows.length > 1 ? `${table(sessionRows)}\n(memory: sums over the server's processes, before the sessions connected and with all of them logged in, STAT and UIDL answered; MB here = 2^20 octets)\n\n` : ''}${table(ratioRows)}\n`);
  log(`RETR server CPU yubin / Dovecot: ${show(ratios.retrServerCpu)}\n\n`);
  for (const n of names) {
    const r = reports.get(n)!;
    const line = r.unavailable
      ? `NOT RUN: ${r.unavailable}`
      : r.failed
        ? `FAILED in ${r.failed.phase}: ${r.failed.message}`
        : `ok; UIDL ${r.uidl?.uidlIsFileName ? 'is the file name' : `is not the file name (e.g. ${r.uidl?.example})`}; mailbox copies ${r.mailboxIntact ? 'keep every message' : 'LOST OR GAINED MESSAGES'}${r.prime ? `; first login on the main copy ${r.prime.ms.toFixed(0)} ms` : ''}`;
    log(`${n}${r.version ? ` ${r.version}` : ''}: ${line}${r.logProblemCount ? `; ${r.logProblemCount} warning/error lines in its log, e.g. ${r.logProblems![0]!.slice(0, 300)}` : ''}\n`);
  }
  log(`other CPU s (anything outside the bench's processes) during cold / warm / RETR: ${otherCpu.cold ?? '-'} / ${otherCpu.warm ?? '-'} / ${otherCpu.retr ?? '-'}; of it softirq (loopback traffic) ${machineCpuByPhase.cold?.softirq ?? '-'} / ${machineCpuByPhase.warm?.softirq ?? '-'} / ${machineCpuByPhase.retr?.softirq ?? '-'}, steal ${machineCpuByPhase.cold?.steal ?? '-'} / ${machineCpuByPhase.warm?.steal ?? '-'} / ${machineCpuByPhase.retr?.steal ?? '-'}\n`);

  const disturbed = Object.entries(otherCpu).filter(([, v]) => v > 1);
  if (disturbed.length) log(`WARNING: something else used the CPU during ${disturbed.map(([k, v]) => `${k} (${v} s)`).join(', ')}: those figures are disturbed; run again on a quiet machine\n`);

  const date = new Date();
  const out = path.resolve(values.out ?? path.join(root, 'bench/results', `pop3-${date.toISOString().slice(0, 10)}${messages === 10_000 ? '' : '-quick'}.json`));
  mkdirSync(path.dirname(out), { recursive: true });
  const report = {
    benchmark: 'pop3',
    date: date.toISOString(),
    parameters: {
      messages,
      minSize,
      maxSize,
      seed,
      coldRuns,
      warmRuns,
      retrRuns,
      retrWarmup,
      window,
      sessions: sessionCount,
      mailbox: {
        storedOctets: master.totalStored,
        crlfOctets: master.totalCrlf,
        withDotStuffedLines: master.withDotLines,
        layout: 'cur/<sec>.M<usec>P<pid>Q<n>.<host>,S=<stored>,W=<crlf>:2, (LF line ends)',
      },
      timing: {
        login: 'performance.now() from before connect() to the QUIT reply: greeting, USER, PASS, STAT, UIDL (all lines), QUIT, one command at a time',
        cold: 'first login on a fresh copy of the mailbox (Dovecot: no index files yet); the servers had already served a 100-message warm-up mailbox',
        warm: 'repeated logins on the main copy after one untimed first login',
        retr: 'first RETR written to the last reply complete, `window` RETRs outstanding; log-in, LIST and UIDL before it are untimed; QUIT after it, no DELE',
        stats: 'median and nearest-rank p90 over the runs; runs alternate between the servers',
      },
    },
    machine: { ...machine, loadAverageAtEnd: loadAverage() },
    yubin: git,
    servers: names.map((n) => reports.get(n)),
    stats,
    ratios,
    otherCpuSeconds: otherCpu,
    /** The whole machine's CPU seconds by kind (/proc/stat) during each phase. */
    machineCpuSeconds: machineCpuByPhase,
  };
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  log(`\nresults: ${path.relative(process.cwd(), out) || out}\n`);
  if (names.some((n) => reports.get(n)!.failed || reports.get(n)!.mailboxIntact === false)) process.exitCode = 1;
}

main()
  .catch(async (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
