/**
 * bench/smtp-accept: how fast yubin takes mail, next to Haraka and Postfix.
 *
 * Postfix's smtp-source sends N messages of L bytes, each with R recipients,
 * over S parallel sessions (one message per connection, its default) to each
 * server in turn, on loopback. Every (server, sessions, recipients) run gets a
 * freshly started server in a fresh directory. Throughput is messages / wall seconds of the smtp-source
 * process (monotonic clock); a run only counts if smtp-source exited 0 and
 * the server took exactly N messages.
 *
 * Each server runs as shipped (default) and with one accepting process per
 * core (allcores: yubin `workers: auto`, Haraka `nodes=cpus`); Postfix is
 * multi-process as shipped, so its one run is in both comparisons.
 *
 *   npm run bench                                  # full: 5,000 messages x sessions 1, 20, 50 x rcpts 1, 10 x both variants
 *   npm run bench -- --quick                       # smoke: 500 messages
 *   node dist/bench/smtp-accept/run.js --help
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gitInfo, loadAverage, machineInfo, mb, parseList, positive, repoRoot, table } from '../common.js';
import { CLOCK_TICKS_PER_SECOND, MemorySampler, OtherCpu, readMemory, runCommand, sleep, treeCpuTicks } from './proc.js';
import { ensureSmtpSource, haraka, postfix, VARIANTS, yubin, type RunningServer, type ServerName, type ServerUnderTest, type Variant } from './servers.js';

const HELP = `usage: node dist/bench/smtp-accept/run.js [options]   (or: npm run bench -- [options])

  --messages N      messages per run (default 5000; env BENCH_MESSAGES)
  --quick           smoke run: 500 messages unless --messages says otherwise
  --sessions LIST   parallel smtp-source sessions, comma-separated (default 1,20,50)
  --rcpts LIST      recipients per message, comma-separated (default 1,10); smtp-source -r N
                    sends N distinct recipients (postmaster, 2postmaster, ... Npostmaster @localhost)
  --size BYTES      message payload for smtp-source -l (default 5120)
  --servers LIST    any of yubin,haraka,postfix (default all three)
  --variants LIST   default,allcores (default both): default runs yubin and Haraka as shipped
                    (one process); allcores runs yubin with workers: auto and Haraka with
                    nodes=cpus. Postfix is multi-process as shipped: it runs once, and that
                    run is compared with both
  --timeout SEC     limit for one smtp-source run (default 1800)
  --workdir DIR     where servers keep their files (default bench/.peers/run)
  --reuse           smtp-source -d: all of a session's messages over one connection
                    (default: one message per connection, smtp-source's own default)
  --postfix-main 'NAME = VALUE'
                    extra main.cf line for the Postfix peer (repeatable), for tuning experiments
  --yubin-dist DIR  yubin build to run (default: this checkout's dist/), to compare two builds
  --yubin-journal on|off
                    yubin's decision journal (default on, as shipped), to measure what it costs
  --keep            keep each run's directory (configs, logs, queues)
  --no-install      do not apt-get install postfix or npm install haraka when missing
  --out FILE        results JSON (default bench/results/smtp-accept-<date>.json,
                    -quick.json for runs with other than 5000 messages)
  -h, --help
`;

interface RunResult {
  server: ServerName;
  variant: Variant;
  sessions: number;
  /** Recipients per message (smtp-source -r). */
  recipients: number;
  messages: number;
  bytes: number;
  valid: boolean;
  error?: string;
  /** Wall time of the smtp-source process. */
  seconds: number;
  msgsPerSec: number;
  /** Messages (recipients, for Postfix) the server had taken when we stopped looking. */
  accepted: number;
  /** What accepted had to reach: messages, or messages x recipients for Postfix (one discard log line per recipient). */
  expected: number;
  /** Time after smtp-source exited until the count reached `messages` (Postfix: discard deliveries catching up). */
  settleSeconds: number;
  /** Headline peak memory, MB (see the server's memoryBasis). */
  peakRssMb: number;
  /** Peak sum of PSS (shared pages split among the processes that map them), MB; sampled once a second. */
  peakPssMb: number;
  /** Process trees only: largest VmHWM of one process, by command name, MB. */
  maxHwmByCommMb?: Record<string, number>;
  peakProcesses: number;
  /** CPU seconds used by the server (and its children) from the start of smtp-source to settle. */
  serverCpuSeconds: number;
  /** CPU used meanwhile by kernel threads and processes outside the benchmark (a large figure: the run was disturbed). */
  otherCpuSeconds?: number;
  smtpSourceExit: number | string | null;
  smtpSourceOutput?: string;
  greeting: string;
  /** Warnings and errors in the server's own log during the run (first 10; the count is in logProblemCount). */
  logProblems?: string[];
  logProblemCount?: number;
}

let current: RunningServer | undefined;

async function waitForCount(server: RunningServer, expected: number, timeoutMs: number): Promise<{ accepted: number; settleMs: number }> {
  const started = performance.now();
  let accepted = server.accepted();
  while (accepted < expected && performance.now() - started < timeoutMs) {
    await sleep(accepted === 0 ? 100 : 50);
    accepted = server.accepted();
  }
  return { accepted, settleMs: performance.now() - started };
}

async function runOne(
  sut: ServerUnderTest,
  sessions: number,
  recipients: number,
  opts: { messages: number; bytes: number; timeoutMs: number; smtpSource: string; dir: string; keep: boolean; reuse: boolean },
): Promise<RunResult> {
  const expected = opts.messages * (sut.countsRecipients ? recipients : 1);
  const base = { server: sut.name, variant: sut.variant, sessions, recipients, messages: opts.messages, expected, bytes: opts.bytes };
  rmSync(opts.dir, { recursive: true, force: true });
  let server: RunningServer;
  try {
    server = await sut.start(opts.dir);
  } catch (err) {
    if (!opts.keep) rmSync(opts.dir, { recursive: true, force: true });
    throw err;
  }
  current = server;
  try {
    // RSS every 100 ms (200 ms for a process tree), PSS once a second.
    const sampler = new MemorySampler(() => server.pids(), sut.multiProcess ? 200 : 100, 1000);
    sampler.start();
    const cpuBefore = treeCpuTicks(server.rootPid);
    const other = new OtherCpu(() => [server.rootPid]);
    other.start();
    // One message per connection unless --reuse (-d); HELO name given so smtp-source looks nothing up.
    // -r N: N recipients per transaction, smtp-source numbers them (postmaster, 2postmaster, ...).
    const args = [
      ...(opts.reuse ? ['-d'] : []),
      ...(recipients > 1 ? ['-r', String(recipients)] : []),
      '-s', String(sessions), '-m', String(opts.messages), '-l', String(opts.bytes), '-M', 'client.bench.test', '-f', sut.sender, '-t', sut.recipient, `127.0.0.1:${server.port}`,
    ];
    const src = await runCommand(opts.smtpSource, args, { timeoutMs: opts.timeoutMs, cwd: opts.dir });
    const seconds = src.ms / 1000;
    // Postfix is still discarding when smtp-source ends; wait for it (and for Haraka's 100 ms counter).
    const settleLimit = sut.name === 'postfix' ? 300_000 : 5_000;
    const { accepted, settleMs } = src.code === 0 ? await waitForCount(server, expected, settleLimit) : { accepted: server.accepted(), settleMs: 0 };
    const cpuTicks = treeCpuTicks(server.rootPid) - cpuBefore;
    const otherCpuSeconds = other.seconds();
    const peak = sampler.stop();
    const hwm = readMemory(server.rootPid)?.hwmKb ?? peak.maxProcessHwmKb;
    const errors: string[] = [];
    if (src.timedOut) errors.push(`smtp-source timed out after ${opts.timeoutMs / 1000} s`);
    if (src.code !== 0) errors.push(`smtp-source exited ${src.code ?? src.signal}: ${(src.stdout + src.stderr).trim().split('\n').slice(-3).join(' | ')}`);
    if (accepted !== expected) errors.push(`server took ${accepted} of ${expected} ${sut.countsRecipients ? 'recipients' : 'messages'}`);
    const problems = server.problems();
    const result: RunResult = {
      ...base,
      valid: errors.length === 0,
      seconds: Math.round(seconds * 1000) / 1000,
      msgsPerSec: Math.round(opts.messages / seconds),
      accepted,
      settleSeconds: Math.round(settleMs) / 1000,
      peakRssMb: mb(sut.multiProcess ? peak.peakRssSumKb : hwm),
      peakPssMb: mb(peak.peakPssSumKb ?? 0),
      peakProcesses: peak.peakProcesses,
      serverCpuSeconds: Math.round((cpuTicks / CLOCK_TICKS_PER_SECOND) * 100) / 100,
      otherCpuSeconds,
      smtpSourceExit: src.code ?? src.signal,
      greeting: server.greeting,
    };
    if (problems.length) {
      result.logProblemCount = problems.length;
      result.logProblems = problems.slice(0, 10);
    }
    if (sut.multiProcess) {
      result.maxHwmByCommMb = Object.fromEntries(Object.entries(peak.maxHwmByComm).map(([k, v]) => [k, mb(v)]));
    }
    if (errors.length) {
      result.error = errors.join('; ');
      result.smtpSourceOutput = (src.stdout + src.stderr).trim().slice(-2000);
      process.stderr.write(`  ${sut.name} log tail:\n${server.logTail().replace(/^/gm, '    ')}\n`);
    }
    return result;
  } finally {
    await server.stop();
    current = undefined;
    if (!opts.keep) rmSync(opts.dir, { recursive: true, force: true });
  }
}

const fmtRatio = (a: RunResult | undefined, b: RunResult | undefined, key: 'msgsPerSec' | 'peakRssMb' | 'peakPssMb') =>
  a?.valid && b?.valid && b[key] > 0 ? Math.round((a[key] / b[key]) * 100) / 100 : undefined;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' },
      quick: { type: 'boolean', default: false },
      sessions: { type: 'string', default: '1,20,50' },
      rcpts: { type: 'string', default: '1,10' },
      size: { type: 'string' },
      servers: { type: 'string', default: 'yubin,haraka,postfix' },
      variants: { type: 'string', default: 'default,allcores' },
      timeout: { type: 'string' },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      reuse: { type: 'boolean', default: false },
      'yubin-dist': { type: 'string' },
      'yubin-journal': { type: 'string', default: 'on' },
      'postfix-main': { type: 'string', multiple: true, default: [] },
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
  const messages = positive(values.messages ?? process.env.BENCH_MESSAGES, 'messages', values.quick ? 500 : 5000);
  const sessionsList = parseList(values.sessions, 'sessions');
  const rcptsList = parseList(values.rcpts, 'rcpts');
  const bytes = positive(values.size, 'size', 5120);
  const timeoutMs = positive(values.timeout, 'timeout', 1800) * 1000;
  const install = !values['no-install'];
  const names = values.servers.split(',').map((s) => s.trim());
  const workdir = path.resolve(values.workdir ?? path.join(root, 'bench/.peers/run'));

  const variants = values.variants.split(',').map((v) => v.trim()) as Variant[];
  for (const v of variants) if (!VARIANTS.includes(v)) throw new Error(`--variants: unknown variant ${v} (default, allcores)`);
  const all: Record<ServerName, (v: Variant) => ServerUnderTest> = {
    yubin: (v) => yubin(root, values['yubin-dist'] && path.resolve(values['yubin-dist']), values['yubin-journal'] !== 'off', v),
    haraka: (v) => haraka(root, install, v),
    postfix: () => postfix(install, values['postfix-main']),
  };
  const servers: ServerUnderTest[] = names.flatMap((n) => {
    if (!(n in all)) throw new Error(`--servers: unknown server ${n} (yubin, haraka, postfix)`);
    const make = all[n as ServerName];
    // Postfix's default is its all-cores setting: one run, in both comparisons.
    if (n === 'postfix') return [make('default')];
    return variants.map((v) => make(v));
  });
  const label = (s: { name: ServerName; variant: Variant } | RunResult) => {
    const name = 'name' in s ? s.name : s.server;
    return s.variant === 'allcores' && name !== 'postfix' ? `${name}*` : name;
  };

  const smtpSource = await ensureSmtpSource(install);
  for (const s of servers) {
    await s.prepare();
    if (s.unavailable) process.stderr.write(`${label(s)}: not run: ${s.unavailable}\n`);
  }
  mkdirSync(workdir, { recursive: true });

  const machine = machineInfo(workdir);
  const git = gitInfo(root);

  process.stdout.write(
    `smtp-accept: ${messages} messages of ${bytes} bytes per run, smtp-source sessions ${sessionsList.join(', ')}, recipients per message ${rcptsList.join(', ')}, ${values.reuse ? 'one connection per session (-d)' : 'one message per connection'}, loopback\n` +
      `machine: ${machine.cpus} cpus (${machine.cpuModel}), node ${machine.node}, workdir on ${machine.workdirFilesystem}\n`,
  );

  const runs: RunResult[] = [];
  for (const rcpts of rcptsList) {
    for (const sessions of sessionsList) {
      for (const sut of servers) {
        if (sut.unavailable) continue;
        process.stdout.write(`  ${label(sut).padEnd(7)} sessions ${String(sessions).padStart(2)} rcpts ${String(rcpts).padStart(2)} ... `);
        let r: RunResult;
        try {
          r = await runOne(sut, sessions, rcpts, { messages, bytes, timeoutMs, smtpSource, dir: path.join(workdir, `${sut.name}${sut.variant === 'allcores' ? '-allcores' : ''}-s${sessions}-r${rcpts}`), keep: values.keep, reuse: values.reuse });
        } catch (err) {
          const msg = err instanceof Error ? err.message : String(err);
          r = { server: sut.name, variant: sut.variant, sessions, recipients: rcpts, messages, expected: 0, bytes, valid: false, error: msg, seconds: 0, msgsPerSec: 0, accepted: 0, settleSeconds: 0, peakRssMb: 0, peakPssMb: 0, peakProcesses: 0, serverCpuSeconds: 0, smtpSourceExit: null, greeting: '' };
        }
        runs.push(r);
        process.stdout.write(
          r.valid
            ? `${r.msgsPerSec} msgs/s (${r.seconds} s), peak ${r.peakRssMb} MB, server CPU ${r.serverCpuSeconds} s${r.settleSeconds > 0.2 ? `, settled ${r.settleSeconds} s later` : ''}${r.logProblemCount ? `, ${r.logProblemCount} warning/error lines in its log` : ''}\n`
            : `INVALID: ${r.error}\n`,
        );
      }
    }
  }

  // Postfix has one run (variant default), in both comparisons.
  const find = (server: ServerName, variant: Variant, sessions: number, rcpts: number) => runs.find((r) => r.server === server && (server === 'postfix' || r.variant === variant) && r.sessions === sessions && r.recipients === rcpts);
  const ratiosOf = (variant: Variant) => rcptsList.flatMap((recipients) =>
    sessionsList.map((sessions) => {
      const y = find('yubin', variant, sessions, recipients);
      const h = find('haraka', variant, sessions, recipients);
      const p = find('postfix', variant, sessions, recipients);
      return {
        sessions,
        recipients,
        throughputVsHaraka: fmtRatio(y, h, 'msgsPerSec'),
        throughputVsPostfix: fmtRatio(y, p, 'msgsPerSec'),
        rssVsHaraka: fmtRatio(y, h, 'peakRssMb'),
        rssVsPostfix: fmtRatio(y, p, 'peakRssMb'),
        pssVsPostfix: fmtRatio(y, p, 'peakPssMb'),
      };
    }),
  );
  // The issue's goals, at 20 sessions: at least twice Postfix (durable), at least Haraka (which writes nothing).
  const goalsOf = (rs: ReturnType<typeof ratiosOf>) =>
    rs
      .filter((q) => q.sessions === 20)
      .map((q) => ({
        sessions: q.sessions,
        recipients: q.recipients,
        vsPostfix: { goal: 2, ratio: q.throughputVsPostfix, met: q.throughputVsPostfix === undefined ? undefined : q.throughputVsPostfix >= 2 },
        vsHaraka: { goal: 1, ratio: q.throughputVsHaraka, met: q.throughputVsHaraka === undefined ? undefined : q.throughputVsHaraka >= 1 },
      }));
  const ratios = ratiosOf('default');
  const goals = goalsOf(ratios);
  // The same process count on each side: yubin workers=auto vs Haraka nodes=cpus (and Postfix as ever).
  const allCores = variants.includes('allcores');
  const ratiosAllCores = allCores ? ratiosOf('allcores') : [];
  const goalsAllCores = goalsOf(ratiosAllCores);
  const hasDefault = variants.includes('default');

  const rows = [['server', 'variant', 'sessions', 'rcpts', 'msgs/s', 'seconds', 'peak RSS MB', 'peak PSS MB', 'server CPU s', 'other CPU s', 'durable', 'valid']];
  for (const r of runs) {
    const sut = servers.find((s) => s.name === r.server && s.variant === r.variant)!;
    rows.push([label(r), r.server === 'postfix' ? 'default = all cores' : r.variant === 'allcores' ? (r.server === 'yubin' ? 'workers: auto' : 'nodes=cpus') : 'one process', String(r.sessions), String(r.recipients), r.valid ? String(r.msgsPerSec) : '-', r.valid ? r.seconds.toFixed(2) : '-', r.valid ? r.peakRssMb.toFixed(1) : '-', r.valid ? r.peakPssMb.toFixed(1) : '-', r.valid ? r.serverCpuSeconds.toFixed(2) : '-', r.otherCpuSeconds?.toFixed(2) ?? '-', sut.durable ? 'yes' : 'no', r.valid ? 'yes' : 'NO']);
  }
  const show = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(2));
  const ratioTable = (rs: ReturnType<typeof ratiosOf>, y: string, h: string) => {
    const t = [['sessions', 'rcpts', `msgs/s ${y}/${h}`, `msgs/s ${y}/postfix`, `RSS ${y}/${h}`, `RSS ${y}/postfix`, `PSS ${y}/postfix`]];
    for (const q of rs) t.push([String(q.sessions), String(q.recipients), show(q.throughputVsHaraka), show(q.throughputVsPostfix), show(q.rssVsHaraka), show(q.rssVsPostfix), show(q.pssVsPostfix)]);
    return table(t);
  };

  process.stdout.write(`\n${table(rows)}\n\n`);
  if (hasDefault) process.stdout.write(`${ratioTable(ratios, 'yubin', 'haraka')}\n\n`);
  if (allCores) process.stdout.write(`all cores (yubin* = workers: auto, haraka* = nodes=cpus, postfix as shipped):\n${ratioTable(ratiosAllCores, 'yubin*', 'haraka*')}\n\n`);
  const verdict = (g: { ratio: number | undefined; met: boolean | undefined }) => (g.met === undefined ? 'not measured' : `${g.ratio!.toFixed(2)}: ${g.met ? 'met' : 'NOT met'}`);
  if (hasDefault) {
    for (const g of goals) {
      process.stdout.write(`goals at 20 sessions, ${g.recipients} rcpt${g.recipients > 1 ? 's' : ''}/msg: yubin >= 2x Postfix ${verdict(g.vsPostfix)}; yubin >= 1x Haraka ${verdict(g.vsHaraka)}\n`);
    }
  }
  for (const g of goalsAllCores) {
    process.stdout.write(`goals at 20 sessions, ${g.recipients} rcpt${g.recipients > 1 ? 's' : ''}/msg, all cores: yubin* >= 2x Postfix ${verdict(g.vsPostfix)}; yubin* >= 1x Haraka* ${verdict(g.vsHaraka)}\n`);
  }
  if (goals.length || goalsAllCores.length) process.stdout.write('\n');
  for (const s of servers) {
    process.stdout.write(`${label(s)}${s.version ? ` ${s.version}` : ''}: ${s.unavailable ? `NOT RUN: ${s.unavailable}` : `${s.setup}; peak memory = ${s.memoryBasis}`}\n`);
  }
  const pf = runs.filter((r) => r.server === 'postfix' && r.valid && r.maxHwmByCommMb);
  for (const r of pf) {
    const m = r.maxHwmByCommMb!;
    process.stdout.write(`postfix sessions ${r.sessions} rcpts ${r.recipients}: up to ${r.peakProcesses} processes, largest smtpd ${m.smtpd ?? '-'} MB, cleanup ${m.cleanup ?? '-'} MB, master ${m.master ?? '-'} MB\n`);
  }
  for (const r of runs.filter((x) => x.logProblemCount)) {
    process.stdout.write(`${label(r)} sessions ${r.sessions} rcpts ${r.recipients}: ${r.logProblemCount} warning/error lines in its log, e.g. ${r.logProblems![0]!.slice(0, 300)}\n`);
  }

  const date = new Date();
  const out = path.resolve(values.out ?? path.join(root, 'bench/results', `smtp-accept-${date.toISOString().slice(0, 10)}${messages === 5000 ? '' : '-quick'}.json`));
  mkdirSync(path.dirname(out), { recursive: true });
  const report = {
    benchmark: 'smtp-accept',
    date: date.toISOString(),
    parameters: {
      messages,
      bytes,
      sessions: sessionsList,
      recipientsPerMessage: rcptsList,
      variants,
      reuseConnections: values.reuse,
      client: `smtp-source ${values.reuse ? '-d ' : ''}[-r RCPTS] -s SESSIONS -m ${messages} -l ${bytes} -M client.bench.test -f FROM -t TO 127.0.0.1:PORT (${values.reuse ? 'all messages of a session over one connection' : 'one message per connection'})`,
      postfixMainOverrides: values['postfix-main'],
      yubinDist: path.resolve(values['yubin-dist'] ?? path.join(root, 'dist')),
      yubinJournal: values['yubin-journal'] !== 'off',
      timing: 'wall time of the smtp-source process, monotonic clock; msgs/s = messages / seconds',
    },
    machine: { ...machine, loadAverageAtEnd: loadAverage() },
    yubin: git,
    servers: servers.map((s) => ({ name: s.name, variant: s.variant, version: s.version, durable: s.durable, setup: s.setup, memoryBasis: s.memoryBasis, unavailable: s.unavailable })),
    runs,
    ratios: hasDefault ? ratios : [],
    goals: hasDefault ? goals : [],
    ratiosAllCores,
    goalsAllCores,
  };
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(`\nresults: ${path.relative(process.cwd(), out) || out}\n`);
  if (runs.some((r) => !r.valid)) process.exitCode = 1;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\n${sig}: stopping the server under test\n`);
    const stopping = current?.stop() ?? Promise.resolve();
    void stopping.finally(() => process.exit(130));
  });
}

main().catch(async (err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  await current?.stop().catch(() => undefined);
  process.exit(1);
});
