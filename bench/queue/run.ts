/**
 * bench/queue: what yubin's delivery queue costs, next to Postfix (and Haraka
 * where it has the feature), on the same machine in the same run.
 *
 *   local   accept + local Maildir delivery: messages per second from the
 *           first message sent until the queue is empty (all delivered).
 *   remote  accept + relay to Postfix's smtp-sink on 127.0.0.1, 20 deliveries
 *           at once: messages per second until the queue is empty.
 *   rss     memory with 100,000 messages queued and delivery held, sampled
 *           as the queue fills, then again after a restart on the full queue.
 *
 * local and remote run in two methods: stream (smtp-source sends while the
 * server delivers; timed from the start of smtp-source to the empty queue)
 * and drain (the queue is filled with delivery held, then released; timed
 * from the release to the empty queue).
 *
 *   npm run bench:queue                         # all three, full size
 *   npm run bench:queue -- --quick              # smoke run, under 2 minutes
 *   node dist/bench/queue/run.js --help
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gitInfo, loadAverage, machineInfo, mb, parseList, positive, repoRoot, table } from '../common.js';
import { CLOCK_TICKS_PER_SECOND, MemorySampler, OtherCpu, readMemory, readPssKb, readStat, runCommand, sleep, treeCpuTicks } from '../smtp-accept/proc.js';
import { ensureSmtpSource, SENDER, type ServerName } from '../smtp-accept/servers.js';
import { harakaQ, LOCAL_RCPT, postfixQ, REMOTE_RCPT, yubinQ, type QueueServer, type QueueServerSpec, type Scenario } from './servers.js';
import { SmtpSink } from './sink.js';

const HELP = `usage: node dist/bench/queue/run.js [options]   (or: npm run bench:queue -- [options])

  --bench LIST         any of local,remote,rss (default: all three)
  --quick              smoke run (under 2 minutes): 200 messages for local/remote,
                       4 x 250 queued for rss, unless the counts are given
  --servers LIST       any of yubin,haraka,postfix (default all; Haraka has no local delivery)
  --method LIST        stream,drain (default both) for local and remote
  --messages N         messages per local/remote run (default 5000)
  --sessions N         smtp-source sessions for local/remote (default 20)
  --rcpts-local LIST   recipients per message for local (default 1,10)
  --rcpts-remote LIST  recipients per message for remote (default 1; all in one domain)
  --rss-messages N     messages queued for rss (default 100000)
  --rss-steps N        checkpoints while filling (default 4: 25k, 50k, 75k, 100k)
  --rss-sessions N     smtp-source sessions while filling (default 20)
  --size BYTES         message payload for smtp-source -l (default 5120)
  --timeout SEC        limit for one phase (one smtp-source run, one drain; default 1800)
  --workdir DIR        where servers keep their files (default bench/.peers/run)
  --yubin-dist DIR     yubin build to run (default: this checkout's dist/)
  --keep               keep each run's directory (configs, logs, queues, mailboxes)
  --no-install         do not apt-get install postfix or npm install haraka when missing
  --out FILE           results JSON (default bench/results/queue-<date>.json, -quick.json for --quick)
  -h, --help
`;

/** One local or remote delivery run. */
interface DeliveryResult {
  bench: 'local' | 'remote';
  method: 'stream' | 'drain';
  server: ServerName;
  recipients: number;
  messages: number;
  sessions: number;
  /** Deliveries that had to happen: Maildir files (messages x recipients) for local, sink transactions (messages) for remote. */
  expected: number;
  delivered: number;
  valid: boolean;
  error?: string;
  /** stream: start of smtp-source to empty queue; drain: release to empty queue. */
  seconds: number;
  msgsPerSec: number;
  /** local: recipients (Maildir files) per second. */
  deliveriesPerSec: number;
  /** Wall time of smtp-source (stream: acceptance while delivering; drain: the fill). */
  acceptSeconds: number;
  /** drain: from the end of smtp-source until every message was parked in the queue. */
  fillSettleSeconds?: number;
  /** Peak memory over the whole run (fill included): VmHWM for one process, sum of VmRSS for Postfix's tree. */
  peakRssMb: number;
  peakPssMb: number;
  peakProcesses: number;
  /** CPU of the server (and children) over the timed interval. */
  serverCpuSeconds: number;
  /** CPU used over the timed interval by kernel threads and processes outside the benchmark (a large figure: the run was disturbed). */
  otherCpuSeconds: number;
  greeting: string;
  logProblemCount?: number;
  logProblems?: string[];
}

interface MemPoint {
  queued: number;
  rssMb: number;
  hwmMb: number;
  pssMb: number;
  processes: number;
  /** Process trees: VmRSS summed by command name (master, qmgr, smtpd, ...), MB. */
  rssByCommMb?: Record<string, number>;
  /** Postfix: VmRSS of its long-running queue daemons (master + qmgr + pickup), which hold whatever the queue costs in memory; smtpd, cleanup and the rest serve connections and exit when idle. */
  queueDaemonsRssMb?: number;
  /** Seconds smtp-source took for this step. */
  stepSeconds?: number;
}

interface RssResult {
  server: ServerName;
  messages: number;
  /** CPU used during the fill by kernel threads and processes outside the benchmark. */
  otherCpuSecondsWhileFilling?: number;
  valid: boolean;
  error?: string;
  fill: MemPoint[];
  /** Highest VmHWM (one process) or sum of VmRSS (process tree) seen while filling. */
  peakRssMbWhileFilling: number;
  /** (RSS with all messages queued - RSS with none) / messages. */
  bytesPerQueuedMessage: number;
  restart?: {
    /** From spawn until the server had taken the whole queue in (yubin: its scheduler's control socket; others: CPU idle for 2 s). */
    recoverySeconds: number;
    recoveryBasis: string;
    /** Messages still queued after the restart (must equal messages). */
    queuedAfter: number;
    atReady: MemPoint;
    recovered: MemPoint;
    /** (RSS after recovery - RSS of the fresh, empty server) / messages. */
    bytesPerQueuedMessage: number;
  };
  logProblemCount?: number;
  logProblems?: string[];
}

// Everything started by this run that a signal must stop.
const running = new Set<{ stop(): Promise<void> }>();
async function stopAll(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop().catch(() => undefined)));
  running.clear();
}

function track<T extends { stop(): Promise<void> }>(x: T): T {
  running.add(x);
  return x;
}

async function untrack(x: { stop(): Promise<void> }): Promise<void> {
  running.delete(x);
  await x.stop();
}

const QUEUE_DAEMONS = new Set(['master', 'qmgr', 'pickup']);

function memoryOf(server: QueueServer, multiProcess: boolean, queued: number): MemPoint {
  const pids = server.pids();
  let rss = 0;
  let hwm = 0;
  let pss = 0;
  let n = 0;
  let daemons = 0;
  const byComm: Record<string, number> = {};
  for (const pid of pids) {
    const m = readMemory(pid);
    if (!m) continue;
    n++;
    rss += m.rssKb;
    hwm = multiProcess ? hwm + m.hwmKb : Math.max(hwm, m.hwmKb);
    pss += readPssKb(pid) ?? 0;
    if (multiProcess) {
      const comm = readStat(pid)?.comm ?? '?';
      byComm[comm] = (byComm[comm] ?? 0) + m.rssKb;
      if (QUEUE_DAEMONS.has(comm)) daemons += m.rssKb;
    }
  }
  const point: MemPoint = { queued, rssMb: mb(rss), hwmMb: mb(hwm), pssMb: mb(pss), processes: n };
  if (multiProcess) {
    point.rssByCommMb = Object.fromEntries(Object.entries(byComm).map(([k, v]) => [k, mb(v)]));
    point.queueDaemonsRssMb = mb(daemons);
  }
  return point;
}

/** The figure bytes per queued message is computed from: the process, or Postfix's queue daemons. */
const basisMb = (p: MemPoint) => p.queueDaemonsRssMb ?? p.rssMb;

/** Polls until check() is true; false at the deadline. */
async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await sleep(everyMs);
  }
  return check();
}

/** Waits until the process tree has used under 2 % of a CPU for `quietMs` in a row; seconds waited, or undefined on timeout. */
async function cpuQuiet(rootPid: number, timeoutMs: number, quietMs = 2000): Promise<number | undefined> {
  const started = performance.now();
  let quietSince = performance.now();
  let last = treeCpuTicks(rootPid);
  while (performance.now() - started < timeoutMs) {
    await sleep(500);
    const now = treeCpuTicks(rootPid);
    if (now - last > 1) quietSince = performance.now(); // more than 1 tick (10 ms) in 500 ms
    last = now;
    if (performance.now() - quietSince >= quietMs) return (quietSince - started) / 1000;
  }
  return undefined;
}

function smtpSourceArgs(o: { sessions: number; messages: number; bytes: number; rcpts: number; to: string; port: number }): string[] {
  return [...(o.rcpts > 1 ? ['-r', String(o.rcpts)] : []), '-s', String(o.sessions), '-m', String(o.messages), '-l', String(o.bytes), '-M', 'client.bench.test', '-f', SENDER, '-t', o.to, `127.0.0.1:${o.port}`];
}

const srcError = (src: { code: number | null; signal: string | null; stdout: string; stderr: string; timedOut: boolean }, timeoutMs: number) =>
  src.timedOut ? `smtp-source timed out after ${timeoutMs / 1000} s` : `smtp-source exited ${src.code ?? src.signal}: ${(src.stdout + src.stderr).trim().split('\n').slice(-3).join(' | ')}`;

// ---------------------------------------------------------------- local / remote

async function runDelivery(
  spec: QueueServerSpec,
  bench: 'local' | 'remote',
  method: 'stream' | 'drain',
  rcpts: number,
  o: { messages: number; sessions: number; bytes: number; timeoutMs: number; smtpSource: string; dir: string; keep: boolean },
): Promise<DeliveryResult> {
  const expected = bench === 'local' ? o.messages * rcpts : o.messages;
  const result: DeliveryResult = {
    bench,
    method,
    server: spec.name,
    recipients: rcpts,
    messages: o.messages,
    sessions: o.sessions,
    expected,
    delivered: 0,
    valid: false,
    seconds: 0,
    msgsPerSec: 0,
    deliveriesPerSec: 0,
    acceptSeconds: 0,
    peakRssMb: 0,
    peakPssMb: 0,
    peakProcesses: 0,
    serverCpuSeconds: 0,
    otherCpuSeconds: 0,
    greeting: '',
  };
  rmSync(o.dir, { recursive: true, force: true });
  mkdirSync(o.dir, { recursive: true });
  let sink: SmtpSink | undefined;
  let server: QueueServer | undefined;
  const errors: string[] = [];
  try {
    if (bench === 'remote') sink = track(await SmtpSink.start(o.dir));
    const srv = track(await spec.start(path.join(o.dir, spec.name), { scenario: bench, held: method === 'drain', sinkPort: sink?.port, rcpts }));
    server = srv;
    result.greeting = srv.greeting;
    const delivered = () => (sink ? sink.messages() : srv.delivered());
    const sampler = new MemorySampler(() => srv.pids(), spec.multiProcess ? 200 : 100, 1000);
    sampler.start();
    let cpuBefore = treeCpuTicks(srv.rootPid);
    const other = new OtherCpu(() => [srv.rootPid]);
    other.start();
    const t0 = performance.now();
    const src = await runCommand(o.smtpSource, smtpSourceArgs({ sessions: o.sessions, messages: o.messages, bytes: o.bytes, rcpts, to: bench === 'local' ? LOCAL_RCPT : REMOTE_RCPT, port: srv.port }), {
      timeoutMs: o.timeoutMs,
      cwd: o.dir,
    });
    result.acceptSeconds = Math.round(src.ms) / 1000;
    if (src.code !== 0) throw new Error(srcError(src, o.timeoutMs));
    let start = t0;
    if (method === 'drain') {
      const fillStart = performance.now();
      if (!(await until(() => srv.heldCount() >= o.messages, 300_000, 100))) throw new Error(`only ${srv.heldCount()} of ${o.messages} messages were queued and held 300 s after smtp-source ended`);
      result.fillSettleSeconds = Math.round(performance.now() - fillStart) / 1000;
      await sleep(1000); // let the server finish parking what it took (Postfix: qmgr's deferrals)
      const early = delivered();
      if (early > 0) errors.push(`${early} deliveries happened while delivery was held`);
      cpuBefore = treeCpuTicks(srv.rootPid);
      other.start();
      start = performance.now();
      await srv.release();
    }
    // Done when smtp-source has ended, the spool is empty and every delivery has arrived.
    let lastQueued = -1;
    let lastChange = performance.now();
    let end = 0;
    const deadline = performance.now() + o.timeoutMs;
    while (performance.now() < deadline) {
      const q = srv.queued();
      if (q !== lastQueued) {
        lastQueued = q;
        lastChange = performance.now();
      }
      if (q === 0 && delivered() >= expected) {
        end = performance.now();
        break;
      }
      if (performance.now() - lastChange > 60_000) break; // nothing moved for a minute
      await sleep(50);
    }
    const cpuTicks = treeCpuTicks(srv.rootPid) - cpuBefore;
    result.otherCpuSeconds = other.seconds();
    const peak = sampler.stop();
    result.peakRssMb = mb(spec.multiProcess ? peak.peakRssSumKb : peak.maxProcessHwmKb);
    result.peakPssMb = mb(peak.peakPssSumKb ?? 0);
    result.peakProcesses = peak.peakProcesses;
    result.serverCpuSeconds = Math.round((cpuTicks / CLOCK_TICKS_PER_SECOND) * 100) / 100;
    result.delivered = sink ? await sink.settle() : delivered();
    if (!end) errors.push(`queue not empty: ${srv.queued()} messages still queued, ${result.delivered} of ${expected} deliveries done (stalled or timed out)`);
    else {
      result.seconds = Math.round(end - start) / 1000;
      result.msgsPerSec = Math.round(o.messages / (result.seconds || 0.001));
      result.deliveriesPerSec = Math.round(expected / (result.seconds || 0.001));
    }
    if (result.delivered !== expected) errors.push(`${result.delivered} deliveries for ${expected} expected${result.delivered > expected ? ' (duplicates)' : ''}`);
  } catch (err) {
    errors.push(err instanceof Error ? err.message : String(err));
  } finally {
    if (server) {
      const problems = server.problems();
      if (problems.length) {
        result.logProblemCount = problems.length;
        result.logProblems = problems.slice(0, 10);
      }
      if (errors.length) process.stderr.write(`  ${spec.name} log tail:\n${server.logTail().replace(/^/gm, '    ')}\n`);
      await untrack(server);
    }
    if (sink) {
      if (errors.length) process.stderr.write(`  smtp-sink output tail:\n${sink.logTail().replace(/^/gm, '    ')}\n`);
      await untrack(sink);
    }
    if (!o.keep) rmSync(o.dir, { recursive: true, force: true });
  }
  result.valid = errors.length === 0;
  if (errors.length) result.error = errors.join('; ');
  return result;
}

// ---------------------------------------------------------------- rss

async function runRss(spec: QueueServerSpec, o: { messages: number; steps: number; sessions: number; bytes: number; timeoutMs: number; smtpSource: string; dir: string; keep: boolean }): Promise<RssResult> {
  const result: RssResult = { server: spec.name, messages: o.messages, valid: false, fill: [], peakRssMbWhileFilling: 0, bytesPerQueuedMessage: 0 };
  const errors: string[] = [];
  const serverDir = path.join(o.dir, spec.name);
  rmSync(o.dir, { recursive: true, force: true });
  mkdirSync(o.dir, { recursive: true });
  let server: QueueServer | undefined;
  const problems: string[] = [];
  const collect = (s: QueueServer) => problems.push(...s.problems());
  try {
    const srv = track(await spec.start(serverDir, { scenario: 'hold', held: true, rcpts: 1 }));
    server = srv;
    await sleep(2000);
    result.fill.push(memoryOf(srv, spec.multiProcess, 0));
    const sampler = new MemorySampler(() => srv.pids(), spec.multiProcess ? 500 : 250, undefined);
    sampler.start();
    const other = new OtherCpu(() => [srv.rootPid]);
    other.start();
    const per = Math.ceil(o.messages / o.steps);
    let sent = 0;
    for (let step = 1; step <= o.steps && sent < o.messages; step++) {
      const n = Math.min(per, o.messages - sent);
      const src = await runCommand(o.smtpSource, smtpSourceArgs({ sessions: o.sessions, messages: n, bytes: o.bytes, rcpts: 1, to: LOCAL_RCPT, port: srv.port }), { timeoutMs: o.timeoutMs, cwd: o.dir });
      if (src.code !== 0) throw new Error(`step ${step}: ${srcError(src, o.timeoutMs)}`);
      sent += n;
      if (!(await until(() => srv.heldCount() >= sent, 600_000, 200))) throw new Error(`step ${step}: only ${srv.heldCount()} of ${sent} messages queued 600 s after smtp-source ended`);
      await sleep(1000);
      result.fill.push({ ...memoryOf(srv, spec.multiProcess, sent), stepSeconds: Math.round(src.ms) / 1000 });
      process.stdout.write(`${sent} `);
    }
    const peak = sampler.stop();
    result.otherCpuSecondsWhileFilling = other.seconds();
    result.peakRssMbWhileFilling = mb(spec.multiProcess ? peak.peakRssSumKb : peak.maxProcessHwmKb);
    const first = result.fill[0]!;
    const last = result.fill[result.fill.length - 1]!;
    result.bytesPerQueuedMessage = Math.round(((basisMb(last) - basisMb(first)) * 1024 * 1024) / o.messages);
    collect(srv);
    await untrack(srv);
    server = undefined;

    // Restart on the full queue.
    process.stdout.write('restart ');
    const t0 = performance.now();
    const again = track(await spec.start(serverDir, { scenario: 'hold', held: true, rcpts: 1 }));
    server = again;
    const atReady = memoryOf(again, spec.multiProcess, o.messages);
    let basis: string;
    let recovered: boolean;
    let recoverySeconds: number;
    if (again.recovered) {
      basis = "yubin's control socket: scheduler status waiting 0, active 0 (every queued message read and parked); polled every 200 ms";
      recovered = await until(async () => (await again.recovered!()) === true, o.timeoutMs, 200);
      recoverySeconds = Math.round(performance.now() - t0) / 1000;
    } else {
      basis = 'start of the first 2 s in which the server (tree) used at most 1 clock tick (10 ms) of CPU per 500 ms';
      const startup = (performance.now() - t0) / 1000;
      const quiet = await cpuQuiet(again.rootPid, o.timeoutMs);
      recovered = quiet !== undefined;
      recoverySeconds = Math.round((startup + (quiet ?? 0)) * 1000) / 1000;
    }
    if (!recovered) errors.push(`restart: not recovered within ${o.timeoutMs / 1000} s`);
    await sleep(1000);
    const after = memoryOf(again, spec.multiProcess, o.messages);
    const queuedAfter = again.heldCount();
    if (queuedAfter !== o.messages) errors.push(`restart: ${queuedAfter} of ${o.messages} messages queued after the restart`);
    result.restart = {
      recoverySeconds,
      recoveryBasis: basis,
      queuedAfter,
      atReady,
      recovered: after,
      bytesPerQueuedMessage: Math.round(((basisMb(after) - basisMb(first)) * 1024 * 1024) / o.messages),
    };
    collect(again);
    await untrack(again);
    server = undefined;
  } catch (err) {
    errors.push(err instanceof Error ? err.message : String(err));
  } finally {
    if (server) {
      collect(server);
      if (errors.length) process.stderr.write(`  ${spec.name} log tail:\n${server.logTail().replace(/^/gm, '    ')}\n`);
      await untrack(server);
    }
    if (!o.keep) rmSync(o.dir, { recursive: true, force: true });
  }
  if (problems.length) {
    result.logProblemCount = problems.length;
    result.logProblems = problems.slice(0, 10);
  }
  result.valid = errors.length === 0;
  if (errors.length) result.error = errors.join('; ');
  return result;
}

// ---------------------------------------------------------------- main

const ratio = (a: number | undefined, b: number | undefined) => (a && b ? Math.round((a / b) * 100) / 100 : undefined);
const show = (v: number | undefined, digits = 2) => (v === undefined ? '-' : v.toFixed(digits));

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      bench: { type: 'string', default: 'local,remote,rss' },
      quick: { type: 'boolean', default: false },
      servers: { type: 'string', default: 'yubin,haraka,postfix' },
      method: { type: 'string', default: 'stream,drain' },
      messages: { type: 'string' },
      sessions: { type: 'string' },
      'rcpts-local': { type: 'string', default: '1,10' },
      'rcpts-remote': { type: 'string', default: '1' },
      'rss-messages': { type: 'string' },
      'rss-steps': { type: 'string' },
      'rss-sessions': { type: 'string' },
      size: { type: 'string' },
      timeout: { type: 'string' },
      workdir: { type: 'string' },
      'yubin-dist': { type: 'string' },
      keep: { type: 'boolean', default: false },
      'no-install': { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (process.platform !== 'linux') throw new Error('this benchmark reads /proc and runs Postfix: Linux only');
  const root = repoRoot();
  const benches = values.bench.split(',').map((s) => s.trim());
  for (const b of benches) if (!['local', 'remote', 'rss'].includes(b)) throw new Error(`--bench: unknown benchmark ${b} (local, remote, rss)`);
  const methods = values.method.split(',').map((s) => s.trim());
  for (const m of methods) if (m !== 'stream' && m !== 'drain') throw new Error(`--method: unknown method ${m} (stream, drain)`);
  const messages = positive(values.messages, 'messages', values.quick ? 200 : 5000);
  const sessions = positive(values.sessions, 'sessions', 20);
  const rcptsLocal = parseList(values['rcpts-local'], 'rcpts-local');
  const rcptsRemote = parseList(values['rcpts-remote'], 'rcpts-remote');
  const rssMessages = positive(values['rss-messages'], 'rss-messages', values.quick ? 1000 : 100_000);
  const rssSteps = positive(values['rss-steps'], 'rss-steps', 4);
  const rssSessions = positive(values['rss-sessions'], 'rss-sessions', 20);
  const bytes = positive(values.size, 'size', 5120);
  const timeoutMs = positive(values.timeout, 'timeout', 1800) * 1000;
  const install = !values['no-install'];
  const workdir = path.resolve(values.workdir ?? path.join(root, 'bench/.peers/run'));
  const dist = values['yubin-dist'] && path.resolve(values['yubin-dist']);

  const all: Record<ServerName, () => QueueServerSpec> = { yubin: () => yubinQ(root, dist || undefined), haraka: () => harakaQ(root, install), postfix: () => postfixQ(install) };
  const specs = values.servers.split(',').map((n) => {
    const name = n.trim();
    if (!(name in all)) throw new Error(`--servers: unknown server ${name} (yubin, haraka, postfix)`);
    return all[name as ServerName]();
  });
  const smtpSource = await ensureSmtpSource(install);
  for (const s of specs) {
    await s.prepare();
    if (s.unavailable) process.stderr.write(`${s.name}: not run: ${s.unavailable}\n`);
  }
  if (benches.includes('remote') && !existsSync('/usr/sbin/smtp-sink')) throw new Error('/usr/sbin/smtp-sink is missing (Debian package postfix)');
  mkdirSync(workdir, { recursive: true });
  const machine = machineInfo(workdir);
  const git = gitInfo(root);
  process.stdout.write(
    `queue: ${benches.join(', ')}; ${messages} messages of ${bytes} bytes per local/remote run (${sessions} smtp-source sessions, methods ${methods.join(', ')}), ${rssMessages} queued for rss; loopback only\n` +
      `machine: ${machine.cpus} cpus (${machine.cpuModel}), node ${machine.node}, workdir on ${machine.workdirFilesystem}\n`,
  );

  const deliveries: DeliveryResult[] = [];
  for (const bench of ['local', 'remote'] as const) {
    if (!benches.includes(bench)) continue;
    for (const s of specs) if (!s.unavailable && !s.scenarios.includes(bench)) process.stdout.write(`  ${bench}: ${s.name} not run: ${s.describe(bench).replace(/^not run: /, '')}\n`);
    for (const rcpts of bench === 'local' ? rcptsLocal : rcptsRemote) {
      for (const method of methods as Array<'stream' | 'drain'>) {
        for (const spec of specs) {
          if (spec.unavailable || !spec.scenarios.includes(bench)) continue;
          process.stdout.write(`  ${bench.padEnd(6)} ${method.padEnd(6)} rcpts ${String(rcpts).padStart(2)} ${spec.name.padEnd(7)} ... `);
          const r = await runDelivery(spec, bench, method, rcpts, { messages, sessions, bytes, timeoutMs, smtpSource, dir: path.join(workdir, `${bench}-${method}-r${rcpts}-${spec.name}`), keep: values.keep });
          deliveries.push(r);
          process.stdout.write(
            r.valid
              ? `${r.msgsPerSec} msgs/s (${r.seconds} s${bench === 'local' && rcpts > 1 ? `, ${r.deliveriesPerSec} deliveries/s` : ''}; smtp-source ${r.acceptSeconds} s), peak ${r.peakRssMb} MB, server CPU ${r.serverCpuSeconds} s${r.logProblemCount ? `, ${r.logProblemCount} warning/error lines in its log` : ''}\n`
              : `INVALID: ${r.error}\n`,
          );
        }
      }
    }
  }

  const rss: RssResult[] = [];
  if (benches.includes('rss')) {
    for (const spec of specs) {
      if (spec.unavailable) continue;
      process.stdout.write(`  rss ${spec.name.padEnd(7)} filling to ${rssMessages}: `);
      const r = await runRss(spec, { messages: rssMessages, steps: rssSteps, sessions: rssSessions, bytes, timeoutMs, smtpSource, dir: path.join(workdir, `rss-${spec.name}`), keep: values.keep });
      rss.push(r);
      const last = r.fill[r.fill.length - 1];
      process.stdout.write(
        r.valid
          ? `... RSS ${r.fill[0]!.rssMb} -> ${last!.rssMb} MB (${r.bytesPerQueuedMessage} bytes/message); after restart ${r.restart!.recovered.rssMb} MB in ${r.restart!.recoverySeconds} s\n`
          : `INVALID: ${r.error}\n`,
      );
    }
  }

  // ---- report
  const out: string[] = [];
  const find = (bench: string, method: string, rcpts: number, server: ServerName) => deliveries.find((d) => d.bench === bench && d.method === method && d.recipients === rcpts && d.server === server && d.valid);
  const ratios: Array<{ bench: string; method: string; recipients: number; yubinVsPostfix?: number; yubinVsHaraka?: number }> = [];
  if (deliveries.length) {
    const rows = [['bench', 'method', 'rcpts', 'server', 'msgs/s', 'seconds', 'deliveries/s', 'smtp-source s', 'peak RSS MB', 'peak PSS MB', 'server CPU s', 'other CPU s', 'valid']];
    for (const d of deliveries) {
      rows.push([d.bench, d.method, String(d.recipients), d.server, d.valid ? String(d.msgsPerSec) : '-', d.valid ? d.seconds.toFixed(2) : '-', d.valid ? String(d.deliveriesPerSec) : '-', d.acceptSeconds.toFixed(2), show(d.peakRssMb, 1), show(d.peakPssMb, 1), show(d.serverCpuSeconds), show(d.otherCpuSeconds), d.valid ? 'yes' : 'NO']);
    }
    out.push(table(rows));
    const keys = [...new Set(deliveries.map((d) => `${d.bench}|${d.method}|${d.recipients}`))];
    const rrows = [['bench', 'method', 'rcpts', 'msgs/s yubin/postfix', 'msgs/s yubin/haraka']];
    for (const k of keys) {
      const [bench, method, r] = k.split('|') as [string, string, string];
      const y = find(bench, method, Number(r), 'yubin');
      const q = { bench, method, recipients: Number(r), yubinVsPostfix: ratio(y?.msgsPerSec, find(bench, method, Number(r), 'postfix')?.msgsPerSec), yubinVsHaraka: ratio(y?.msgsPerSec, find(bench, method, Number(r), 'haraka')?.msgsPerSec) };
      ratios.push(q);
      rrows.push([bench, method, r, show(q.yubinVsPostfix), bench === 'local' ? 'n/a' : show(q.yubinVsHaraka)]);
    }
    out.push(table(rrows));
  }
  if (rss.length) {
    const steps = rss[0]!.fill.map((p) => p.queued);
    const k = (q: number) => (q >= 1000 ? `${q / 1000}k` : String(q));
    const rows = [['server', ...steps.map((q) => `RSS@${k(q)}`), 'HWM@end', 'bytes/msg', 'restart s', 'RSS after restart', 'bytes/msg after restart', 'valid']];
    for (const r of rss) {
      const last = r.fill[r.fill.length - 1];
      const complete = r.fill.length === steps.length;
      const line = (label: string, pick: (p: MemPoint) => number | undefined, bytes: boolean) =>
        rows.push([
          label,
          ...steps.map((q) => {
            const p = r.fill.find((x) => x.queued === q);
            return show(p && pick(p), 1);
          }),
          bytes && r.fill[0]?.queueDaemonsRssMb === undefined ? show(last?.hwmMb, 1) : '',
          bytes && complete ? String(r.bytesPerQueuedMessage) : '',
          bytes ? show(r.restart?.recoverySeconds, 1) : '',
          show(r.restart && pick(r.restart.recovered), 1),
          bytes && r.restart ? String(r.restart.bytesPerQueuedMessage) : '',
          bytes ? (r.valid ? 'yes' : 'NO') : '',
        ]);
      if (r.fill[0]?.queueDaemonsRssMb !== undefined) {
        line(`${r.server} (whole tree)`, (p) => p.rssMb, false);
        line(`${r.server} (master+qmgr+pickup)`, (p) => p.queueDaemonsRssMb, true);
      } else {
        line(r.server, (p) => p.rssMb, true);
      }
    }
    out.push(`memory (VmRSS, MB) with N messages queued and delivery held; one process, or a sum over Postfix's processes\n${table(rows)}`);
  }
  process.stdout.write(`\n${out.join('\n\n')}\n\n`);
  for (const s of specs) {
    if (s.unavailable) {
      process.stdout.write(`${s.name}: NOT RUN: ${s.unavailable}\n`);
      continue;
    }
    for (const b of benches as Scenario[]) {
      const scen: Scenario = b === ('rss' as Scenario) ? 'hold' : b;
      process.stdout.write(`${s.name}${s.version ? ` ${s.version}` : ''} ${b}: ${s.describe(scen)}\n`);
    }
  }
  for (const d of [...deliveries, ...rss].filter((x) => x.logProblemCount)) {
    const label = 'bench' in d ? `${d.bench} ${d.method} rcpts ${d.recipients}` : 'rss';
    process.stdout.write(`${d.server} ${label}: ${d.logProblemCount} warning/error lines in its log, e.g. ${d.logProblems![0]!.slice(0, 300)}\n`);
  }

  const date = new Date();
  const quickish = messages !== 5000 || rssMessages !== 100_000;
  const file = path.resolve(values.out ?? path.join(root, 'bench/results', `queue-${date.toISOString().slice(0, 10)}${quickish ? '-quick' : ''}.json`));
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(
    file,
    JSON.stringify(
      {
        benchmark: 'queue',
        date: date.toISOString(),
        parameters: {
          benches,
          methods,
          messages,
          sessions,
          bytes,
          rcptsLocal,
          rcptsRemote,
          rssMessages,
          rssSteps,
          rssSessions,
          yubinDist: path.resolve(dist || path.join(root, 'dist')),
          client: `smtp-source [-r RCPTS] -s SESSIONS -m MESSAGES -l ${bytes} -M client.bench.test -f ${SENDER} -t (${LOCAL_RCPT} | ${REMOTE_RCPT}) 127.0.0.1:PORT (one message per connection)`,
          timing: 'stream: start of smtp-source to the first poll (every 50 ms) that finds the queue empty and every delivery made; drain: release to the same point. msgs/s = messages / seconds',
        },
        machine: { ...machine, loadAverageAtEnd: loadAverage() },
        yubin: git,
        servers: specs.map((s) => ({ name: s.name, version: s.version, unavailable: s.unavailable, setup: Object.fromEntries(benches.map((b) => [b, s.describe(b === 'rss' ? 'hold' : (b as Scenario))])) })),
        deliveries,
        ratios,
        rss,
      },
      null,
      2,
    ) + '\n',
  );
  process.stdout.write(`\nresults: ${path.relative(process.cwd(), file) || file}\n`);
  if (deliveries.some((d) => !d.valid) || rss.some((r) => !r.valid)) process.exitCode = 1;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\n${sig}: stopping the servers under test\n`);
    void stopAll().finally(() => process.exit(130));
  });
}

main().catch(async (err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  await stopAll();
  process.exit(1);
});
