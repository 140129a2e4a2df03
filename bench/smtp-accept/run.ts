/**
 * bench/smtp-accept: how fast yubin takes mail, next to Haraka and Postfix.
 *
 * Postfix's smtp-source sends N messages of L bytes over S parallel sessions
 * (one message per connection, its default) to each server in turn, on
 * loopback. Every (server, sessions) run gets a freshly started server in a
 * fresh directory. Throughput is messages / wall seconds of the smtp-source
 * process (monotonic clock); a run only counts if smtp-source exited 0 and
 * the server took exactly N messages.
 *
 *   npm run bench                                  # full: 5,000 messages x sessions 1, 20, 50
 *   npm run bench -- --quick                       # smoke: 500 messages
 *   node dist/bench/smtp-accept/run.js --help
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CLOCK_TICKS_PER_SECOND, MemorySampler, readMemory, runCommand, sleep, treeCpuTicks } from './proc.js';
import { ensureSmtpSource, haraka, postfix, yubin, type RunningServer, type ServerName, type ServerUnderTest } from './servers.js';

const HELP = `usage: node dist/bench/smtp-accept/run.js [options]   (or: npm run bench -- [options])

  --messages N      messages per run (default 5000; env BENCH_MESSAGES)
  --quick           smoke run: 500 messages unless --messages says otherwise
  --sessions LIST   parallel smtp-source sessions, comma-separated (default 1,20,50)
  --size BYTES      message payload for smtp-source -l (default 5120)
  --servers LIST    any of yubin,haraka,postfix (default all three)
  --timeout SEC     limit for one smtp-source run (default 1800)
  --workdir DIR     where servers keep their files (default bench/.peers/run)
  --reuse           smtp-source -d: all of a session's messages over one connection
                    (default: one message per connection, smtp-source's own default)
  --postfix-main 'NAME = VALUE'
                    extra main.cf line for the Postfix peer (repeatable), for tuning experiments
  --yubin-dist DIR  yubin build to run (default: this checkout's dist/), to compare two builds
  --keep            keep each run's directory (configs, logs, queues)
  --no-install      do not apt-get install postfix or npm install haraka when missing
  --out FILE        results JSON (default bench/results/smtp-accept-<date>.json,
                    -quick.json for runs with other than 5000 messages)
  -h, --help
`;

interface RunResult {
  server: ServerName;
  sessions: number;
  messages: number;
  bytes: number;
  valid: boolean;
  error?: string;
  /** Wall time of the smtp-source process. */
  seconds: number;
  msgsPerSec: number;
  /** Messages the server had taken when we stopped looking. */
  accepted: number;
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
  smtpSourceExit: number | string | null;
  smtpSourceOutput?: string;
  greeting: string;
}

const mb = (kb: number) => Math.round((kb / 1024) * 10) / 10;

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'yubin') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the yubin checkout above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

function parseList(value: string, what: string): number[] {
  const list = value.split(',').map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`--${what}: expected positive integers separated by commas, got ${value}`);
  return list;
}

function positive(value: string | undefined, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${what}: expected a positive integer, got ${value}`);
  return n;
}

function sh(cmd: string, args: string[], cwd?: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
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
  opts: { messages: number; bytes: number; timeoutMs: number; smtpSource: string; dir: string; keep: boolean; reuse: boolean },
): Promise<RunResult> {
  const base = { server: sut.name, sessions, messages: opts.messages, bytes: opts.bytes };
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
    // One message per connection unless --reuse (-d); HELO name given so smtp-source looks nothing up.
    const args = [...(opts.reuse ? ['-d'] : []), '-s', String(sessions), '-m', String(opts.messages), '-l', String(opts.bytes), '-M', 'client.bench.test', '-f', sut.sender, '-t', sut.recipient, `127.0.0.1:${server.port}`];
    const src = await runCommand(opts.smtpSource, args, { timeoutMs: opts.timeoutMs, cwd: opts.dir });
    const seconds = src.ms / 1000;
    // Postfix is still discarding when smtp-source ends; wait for it (and for Haraka's 100 ms counter).
    const settleLimit = sut.name === 'postfix' ? 300_000 : 5_000;
    const { accepted, settleMs } = src.code === 0 ? await waitForCount(server, opts.messages, settleLimit) : { accepted: server.accepted(), settleMs: 0 };
    const cpuTicks = treeCpuTicks(server.rootPid) - cpuBefore;
    const peak = sampler.stop();
    const hwm = readMemory(server.rootPid)?.hwmKb ?? peak.maxProcessHwmKb;
    const errors: string[] = [];
    if (src.timedOut) errors.push(`smtp-source timed out after ${opts.timeoutMs / 1000} s`);
    if (src.code !== 0) errors.push(`smtp-source exited ${src.code ?? src.signal}: ${(src.stdout + src.stderr).trim().split('\n').slice(-3).join(' | ')}`);
    if (accepted !== opts.messages) errors.push(`server took ${accepted} of ${opts.messages} messages`);
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
      smtpSourceExit: src.code ?? src.signal,
      greeting: server.greeting,
    };
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

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

const fmtRatio = (a: RunResult | undefined, b: RunResult | undefined, key: 'msgsPerSec' | 'peakRssMb' | 'peakPssMb') =>
  a?.valid && b?.valid && b[key] > 0 ? Math.round((a[key] / b[key]) * 100) / 100 : undefined;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' },
      quick: { type: 'boolean', default: false },
      sessions: { type: 'string', default: '1,20,50' },
      size: { type: 'string' },
      servers: { type: 'string', default: 'yubin,haraka,postfix' },
      timeout: { type: 'string' },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      reuse: { type: 'boolean', default: false },
      'yubin-dist': { type: 'string' },
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
  const bytes = positive(values.size, 'size', 5120);
  const timeoutMs = positive(values.timeout, 'timeout', 1800) * 1000;
  const install = !values['no-install'];
  const names = values.servers.split(',').map((s) => s.trim());
  const workdir = path.resolve(values.workdir ?? path.join(root, 'bench/.peers/run'));

  const all: Record<ServerName, () => ServerUnderTest> = { yubin: () => yubin(root, values['yubin-dist'] && path.resolve(values['yubin-dist'])), haraka: () => haraka(root, install), postfix: () => postfix(install, values['postfix-main']) };
  const servers: ServerUnderTest[] = names.map((n) => {
    if (!(n in all)) throw new Error(`--servers: unknown server ${n} (yubin, haraka, postfix)`);
    return all[n as ServerName]();
  });

  const smtpSource = await ensureSmtpSource(install);
  for (const s of servers) {
    await s.prepare();
    if (s.unavailable) process.stderr.write(`${s.name}: not run: ${s.unavailable}\n`);
  }
  mkdirSync(workdir, { recursive: true });

  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    workdir,
    workdirFilesystem: sh('stat', ['-f', '-c', '%T', workdir]),
  };
  const git = {
    commit: sh('git', ['rev-parse', 'HEAD'], root),
    /** core/, plugins/ or config/ had uncommitted changes when the run started. */
    dirty: sh('git', ['status', '--porcelain', '--', 'core', 'plugins', 'config'], root) !== '',
  };

  process.stdout.write(
    `smtp-accept: ${messages} messages of ${bytes} bytes per run, smtp-source sessions ${sessionsList.join(', ')}, ${values.reuse ? 'one connection per session (-d)' : 'one message per connection'}, loopback\n` +
      `machine: ${machine.cpus} cpus (${machine.cpuModel}), node ${machine.node}, workdir on ${machine.workdirFilesystem}\n`,
  );

  const runs: RunResult[] = [];
  for (const sessions of sessionsList) {
    for (const sut of servers) {
      if (sut.unavailable) continue;
      process.stdout.write(`  ${sut.name.padEnd(7)} sessions ${String(sessions).padStart(2)} ... `);
      let r: RunResult;
      try {
        r = await runOne(sut, sessions, { messages, bytes, timeoutMs, smtpSource, dir: path.join(workdir, `${sut.name}-s${sessions}`), keep: values.keep, reuse: values.reuse });
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        r = { server: sut.name, sessions, messages, bytes, valid: false, error: msg, seconds: 0, msgsPerSec: 0, accepted: 0, settleSeconds: 0, peakRssMb: 0, peakPssMb: 0, peakProcesses: 0, serverCpuSeconds: 0, smtpSourceExit: null, greeting: '' };
      }
      runs.push(r);
      process.stdout.write(
        r.valid
          ? `${r.msgsPerSec} msgs/s (${r.seconds} s), peak ${r.peakRssMb} MB, server CPU ${r.serverCpuSeconds} s${r.settleSeconds > 0.2 ? `, settled ${r.settleSeconds} s later` : ''}\n`
          : `INVALID: ${r.error}\n`,
      );
    }
  }

  const find = (server: ServerName, sessions: number) => runs.find((r) => r.server === server && r.sessions === sessions);
  const ratios = sessionsList.map((sessions) => {
    const y = find('yubin', sessions);
    return {
      sessions,
      throughputVsHaraka: fmtRatio(y, find('haraka', sessions), 'msgsPerSec'),
      throughputVsPostfix: fmtRatio(y, find('postfix', sessions), 'msgsPerSec'),
      rssVsHaraka: fmtRatio(y, find('haraka', sessions), 'peakRssMb'),
      rssVsPostfix: fmtRatio(y, find('postfix', sessions), 'peakRssMb'),
      pssVsPostfix: fmtRatio(y, find('postfix', sessions), 'peakPssMb'),
    };
  });

  const rows = [['server', 'sessions', 'msgs/s', 'seconds', 'peak RSS MB', 'peak PSS MB', 'server CPU s', 'durable', 'valid']];
  for (const r of runs) {
    const sut = servers.find((s) => s.name === r.server)!;
    rows.push([r.server, String(r.sessions), r.valid ? String(r.msgsPerSec) : '-', r.valid ? r.seconds.toFixed(2) : '-', r.valid ? r.peakRssMb.toFixed(1) : '-', r.valid ? r.peakPssMb.toFixed(1) : '-', r.valid ? r.serverCpuSeconds.toFixed(2) : '-', sut.durable ? 'yes' : 'no', r.valid ? 'yes' : 'NO']);
  }
  const show = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(2));
  const ratioRows = [['sessions', 'msgs/s yubin/haraka', 'msgs/s yubin/postfix', 'RSS yubin/haraka', 'RSS yubin/postfix', 'PSS yubin/postfix']];
  for (const q of ratios) ratioRows.push([String(q.sessions), show(q.throughputVsHaraka), show(q.throughputVsPostfix), show(q.rssVsHaraka), show(q.rssVsPostfix), show(q.pssVsPostfix)]);

  process.stdout.write(`\n${table(rows)}\n\n${table(ratioRows)}\n\n`);
  for (const s of servers) {
    process.stdout.write(`${s.name}${s.version ? ` ${s.version}` : ''}: ${s.unavailable ? `NOT RUN: ${s.unavailable}` : `${s.setup}; peak memory = ${s.memoryBasis}`}\n`);
  }
  const pf = runs.filter((r) => r.server === 'postfix' && r.valid && r.maxHwmByCommMb);
  for (const r of pf) {
    const m = r.maxHwmByCommMb!;
    process.stdout.write(`postfix sessions ${r.sessions}: up to ${r.peakProcesses} processes, largest smtpd ${m.smtpd ?? '-'} MB, cleanup ${m.cleanup ?? '-'} MB, master ${m.master ?? '-'} MB\n`);
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
      reuseConnections: values.reuse,
      client: `smtp-source ${values.reuse ? '-d ' : ''}-s SESSIONS -m ${messages} -l ${bytes} -M client.bench.test -f FROM -t TO 127.0.0.1:PORT (${values.reuse ? 'all messages of a session over one connection' : 'one message per connection'})`,
      postfixMainOverrides: values['postfix-main'],
      yubinDist: path.resolve(values['yubin-dist'] ?? path.join(root, 'dist')),
      timing: 'wall time of the smtp-source process, monotonic clock; msgs/s = messages / seconds',
    },
    machine,
    yubin: git,
    servers: servers.map((s) => ({ name: s.name, version: s.version, durable: s.durable, setup: s.setup, memoryBasis: s.memoryBasis, unavailable: s.unavailable })),
    runs,
    ratios,
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
