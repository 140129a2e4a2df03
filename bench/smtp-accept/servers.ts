/**
 * The three servers under test. Each one is started fresh, in a directory of
 * its own, for every (server, session count) run, and stopped after it.
 *
 * - yubin: this checkout's dist/, tcprules + badmailfrom + rcpthosts, durable spool,
 *   delivery held (queue concurrency 0: accept-only, every message stays in the spool).
 * - Haraka 3.3 (bench/.peers): one process (nodes=0), a plugin that accepts
 *   every recipient and discards at queue. Nothing is written: an upper bound.
 * - Postfix 3.7: a private instance (own config, queue and data directories),
 *   durable queue files (cleanup fsyncs), discard transport for everything.
 *
 * Each of yubin and Haraka also has an all-cores variant: yubin `workers: auto`,
 * Haraka `nodes=cpus` (both node:cluster, one process per core). Postfix is
 * multi-process as it ships: its default is its all-cores setting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, cpSync, existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, readSync, writeFileSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mustRun, pidAlive, processTree, runCommand, sleep, stopChild, waitForGreeting, waitPidGone, freePort } from './proc.js';

export type ServerName = 'yubin' | 'haraka' | 'postfix';

/** default: as shipped (yubin and Haraka one process); allcores: one accepting process per core. */
export type Variant = 'default' | 'allcores';
export const VARIANTS: readonly Variant[] = ['default', 'allcores'];

export interface RunningServer {
  readonly port: number;
  /** Greeting line the server sent to the readiness probe. */
  readonly greeting: string;
  /** The PID whose process (tree) is measured. */
  readonly rootPid: number;
  /** Processes to sample for memory. */
  pids(): number[];
  /** Messages the server has taken so far (committed to its queue, or counted by the accept plugin). */
  accepted(): number;
  /** Stops the server and every process it started; resolves once they are gone. */
  stop(): Promise<void>;
  /** Last lines of the server's own output, for error reports. */
  logTail(): string;
  /** Warnings and errors in the server's log (a clean run has none). */
  problems(): string[];
}

export interface ServerUnderTest {
  readonly name: ServerName;
  readonly variant: Variant;
  /** Postfix: its default is already all cores; one run serves both comparisons. */
  readonly sameInBothVariants?: boolean;
  /** One line on what runs and how it is set up, for the report. */
  readonly setup: string;
  readonly durable: boolean;
  /** How peak memory is measured for this server. */
  readonly memoryBasis: string;
  /** Memory is a process tree (sum over processes) rather than one process. */
  readonly multiProcess: boolean;
  /** Envelope used with smtp-source. */
  readonly sender: string;
  readonly recipient: string;
  /** accepted() counts recipients (Postfix: one delivery log line each), not messages. */
  readonly countsRecipients: boolean;
  /** Set by prepare() when the server cannot be run here; the run goes on without it. */
  unavailable?: string;
  version?: string;
  /** Checks and installs what the server needs. */
  prepare(): Promise<void>;
  start(dir: string): Promise<RunningServer>;
}

export const SENDER = 'bench@client.bench.test';
export const START_TIMEOUT_MS = 30_000;

export function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

/** Starts a long-running child with stdout and stderr going to a file. */
export function spawnToFile(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv, cwd: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    return spawn(cmd, args, { cwd, env, stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
}

function exitNote(child: ChildProcess, logFile: string): string | undefined {
  if (child.exitCode === null && child.signalCode === null) return undefined;
  return `exited ${child.exitCode ?? child.signalCode} before it was ready:\n${tail(logFile)}`;
}

/** Waits for the child's 220; a child that never greets is killed. */
export async function greetingOrKill(child: ChildProcess, port: number, logFile: string): Promise<string> {
  try {
    return await waitForGreeting(port, START_TIMEOUT_MS, () => exitNote(child, logFile));
  } catch (err) {
    await stopChild(child, 'SIGKILL', 0);
    throw err;
  }
}

// ---------------------------------------------------------------- yubin

export interface YubinBenchConfig {
  readonly port: number;
  /** Lines of the tcprules file (tcp.smtp). */
  readonly tcpRules: string;
  /** queue: block, as a YAML flow mapping. */
  readonly queue: string;
  /** delivery: block, as a YAML flow mapping (omitted: yubin's default, no delivery plugin). */
  readonly delivery?: string;
  /** A closed UDP port on 127.0.0.1: any DNS query stays on loopback and fails at once. */
  readonly dnsPort: number;
  /** The decision journal (on by default, as shipped); off to measure its cost. */
  readonly journal?: boolean;
  /** The config's `workers` (omitted: the default, one process). */
  readonly workers?: number | 'auto';
}

/**
 * The bench's yubin config: one SMTP listener on loopback with tcprules +
 * badmailfrom + rcpthosts, logLevel warn, and DNS pointed at a closed
 * loopback port, so nothing the server does can leave 127.0.0.0/8.
 */
export function yubinConfig(c: YubinBenchConfig): string {
  return [
    'dataDir: ./var',
    'hostname: bench.test',
    'localDomains: [localhost, bench.test]',
    'logLevel: warn',
    `dns: { servers: ["127.0.0.1:${c.dnsPort}"], timeout: 1s, tries: 1 }`,
    `queue: ${c.queue}`,
    ...(c.workers !== undefined ? [`workers: ${c.workers}`] : []),
    ...(c.journal === false ? ['journal: { enabled: false }'] : []),
    ...(c.delivery ? [`delivery: ${c.delivery}`] : []),
    'plugins:',
    '  tcprules: { file: ./tcp.smtp, maxConnectionsPerIp: 0 }',
    '  badmailfrom: { addresses: ["@spam.example"] }',
    'listeners:',
    '  - name: smtp',
    '    protocol: smtp',
    `    listen: 127.0.0.1:${c.port}`,
    '    limits: { maxConnections: 200 }',
    '    plugins: [tcprules, badmailfrom, rcpthosts]',
    '',
  ].join('\n');
}

/** The yubin server process, started on a config written by yubinConfig(). */
export interface YubinProcess {
  readonly child: ChildProcess;
  readonly greeting: string;
  readonly logFile: string;
  readonly configFile: string;
}

/** Writes the config (and tcp.smtp) into dir and starts `yubin serve` there; resolves at its greeting. */
export async function startYubin(cli: string, dir: string, c: YubinBenchConfig): Promise<YubinProcess> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'tcp.smtp'), c.tcpRules);
  const configFile = path.join(dir, 'yubin.yaml');
  writeFileSync(configFile, yubinConfig(c));
  const logFile = path.join(dir, 'yubin.log');
  const child = spawnToFile(process.execPath, [cli, 'serve', '--config', configFile], logFile, { ...process.env, YUBIN_LOG_FORMAT: 'json' }, dir);
  const greeting = await greetingOrKill(child, c.port, logFile);
  return { child, greeting, logFile, configFile };
}

/** Lines of yubin's JSON log at level warn (40) or above: what a clean run must not have. */
export function yubinLogProblems(logFile: string): string[] {
  let text: string;
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter((line) => {
    if (!line.trim()) return false;
    try {
      return ((JSON.parse(line) as { level?: number }).level ?? 0) >= 40;
    } catch {
      return true; // not JSON: a crash trace or something printed outside the logger
    }
  });
}

/** Committed messages in yubin's spool (one envelope per message). */
export function yubinQueued(dir: string): number {
  const mess = path.join(dir, 'var/queue/mess');
  try {
    return readdirSync(mess).filter((n) => /^[A-Z0-9]+$/.test(n)).length;
  } catch {
    return 0;
  }
}

export function yubin(repoRoot: string, dist?: string, journal = true, variant: Variant = 'default'): ServerUnderTest {
  const cli = path.join(dist ?? path.join(repoRoot, 'dist'), 'core/cli.js');
  const all = variant === 'allcores';
  return {
    name: 'yubin',
    variant,
    setup: `${dist ? `the build in ${dist}` : 'this checkout (dist/)'}, ${all ? 'workers: auto (a primary with the queue, one worker per core running the listener)' : 'one process'}, listener plugins tcprules + badmailfrom + rcpthosts, queue held (concurrencyLocal 0, concurrencyRemote 0: accept-only, messages stay in the spool), logLevel warn, decision journal ${journal ? 'on (every info line to var/journal.sqlite)' : 'off'}`,
    durable: true,
    memoryBasis: all ? 'peak sum of VmRSS over the primary and its workers, sampled every 200 ms' : 'VmHWM of the one server process',
    multiProcess: all,
    sender: SENDER,
    recipient: 'postmaster@localhost',
    countsRecipients: false,
    async prepare() {
      if (!existsSync(cli)) this.unavailable = `${cli} is missing: build with npx tsc -p . first`;
      this.version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    },
    async start(dir) {
      // logLevel warn keeps per-connection logging out of the measurement, so
      // the listen event (info) is not printed: the port is chosen here instead.
      const port = await freePort();
      // Delivery held: the scheduler runs but leaves every message in the spool,
      // so the committed messages in var/queue/mess (one file each) count what was accepted.
      const y = await startYubin(cli, dir, {
        port,
        tcpRules: '127.:allow,RBLSMTPD=""\n:allow\n',
        queue: '{ concurrencyLocal: 0, concurrencyRemote: 0 }',
        dnsPort: await freePort(),
        journal,
        ...(all ? { workers: 'auto' as const } : {}),
      });
      const rootPid = y.child.pid!;
      if (all) await waitForChildren(rootPid, os.availableParallelism(), y.logFile);
      return {
        port,
        greeting: y.greeting,
        rootPid,
        pids: () => (all ? processTree(rootPid) : [rootPid]),
        accepted: () => yubinQueued(dir),
        stop: () => stopTree(y.child, 'SIGTERM', 30_000),
        logTail: () => tail(y.logFile),
        problems: () => yubinLogProblems(y.logFile),
      };
    },
  };
}

/**
 * Waits until `want` children of rootPid run (a cluster's workers), then a
 * second more for their listeners: the first worker answers the greeting
 * probe before the others are up, and logLevel warn prints no `ready` line.
 */
async function waitForChildren(rootPid: number, want: number, logFile: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (processTree(rootPid).length - 1 < want) {
    if (Date.now() > deadline) throw new Error(`${want} worker processes not up after ${START_TIMEOUT_MS / 1000} s:\n${tail(logFile)}`);
    await sleep(100);
  }
  // A forked worker is in the tree before its listener is bound.
  await sleep(1_000);
}

/** Stops a server that may have children (cluster workers): the signal to its root, then every process of the tree gone. */
async function stopTree(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  const tree = child.pid ? processTree(child.pid) : [];
  await stopChild(child, signal, graceMs);
  for (const pid of tree) {
    if (await waitPidGone(pid, 5_000)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

// ---------------------------------------------------------------- Haraka

/** Accepts every recipient, discards at queue, counts what it took (written to a file every 100 ms). */
const HARAKA_PLUGIN = `'use strict'
// yubin bench: accept every recipient, discard every message, count them.
const fs = require('node:fs')
let accepted = 0
let written = -1
exports.register = function () {
    // One file per process: with nodes=cpus every cluster worker counts its own.
    const file = process.env.BENCH_COUNT_FILE && process.env.BENCH_COUNT_FILE + '.' + process.pid
    if (!file) return
    setInterval(() => {
        if (accepted === written) return
        fs.writeFileSync(file, String(accepted))
        written = accepted
    }, 100).unref()
}
// Answer the rDNS hook ourselves: Haraka's default is dns.reverse() of the client.
exports.hook_lookup_rdns = function (next) { next(OK, 'localhost') }
exports.hook_rcpt = function (next) { next(OK) }
exports.hook_queue = function (next) { accepted++; next(OK) }
`;

/** Haraka as installed in bench/.peers. */
export function harakaInstall(repoRoot: string): { peers: string; pkgDir: string; bin: string; version(): string | undefined } {
  const peers = path.join(repoRoot, 'bench/.peers');
  const pkgDir = path.join(peers, 'node_modules/haraka');
  return {
    peers,
    pkgDir,
    bin: path.join(pkgDir, 'bin/haraka'),
    version() {
      try {
        return (JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
      } catch {
        return undefined;
      }
    },
  };
}

/** Installs haraka@3.3 into bench/.peers when missing; the reason it cannot be run, or undefined. */
export async function ensureHaraka(repoRoot: string, install: boolean): Promise<string | undefined> {
  const h = harakaInstall(repoRoot);
  if (h.version()?.startsWith('3.3.')) return undefined;
  if (!install) return 'Haraka 3.3 is not in bench/.peers and --no-install was given';
  process.stderr.write('installing haraka@3.3 into bench/.peers ...\n');
  mkdirSync(h.peers, { recursive: true });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const r = await runCommand(npm, ['install', '--prefix', h.peers, 'haraka@3.3', '--no-audit', '--no-fund', '--loglevel', 'error'], { timeoutMs: 600_000 });
  if (r.code !== 0 || !h.version()) return `npm install haraka@3.3 failed: ${(r.stdout + r.stderr).trim().split('\n').slice(-5).join(' | ')}`;
  return undefined;
}

export interface HarakaProcess {
  readonly child: ChildProcess;
  readonly greeting: string;
  readonly logFile: string;
}

/**
 * Starts Haraka in dir: its default config, then smtp.ini (one process,
 * loopback), log level warn, the given plugin as the only one, and any
 * extra config files (outbound.ini, ...). Resolves at its greeting.
 */
export async function startHaraka(
  repoRoot: string,
  dir: string,
  o: { port: number; pluginName: string; pluginSource: string; files?: Record<string, string>; env?: NodeJS.ProcessEnv; nodes?: string },
): Promise<HarakaProcess> {
  const h = harakaInstall(repoRoot);
  mkdirSync(path.join(dir, 'plugins'), { recursive: true });
  // Haraka's own defaults first (connection.ini and the rest are required), then ours on top.
  if (!existsSync(path.join(dir, 'config'))) cpSync(path.join(h.pkgDir, 'config'), path.join(dir, 'config'), { recursive: true });
  writeFileSync(path.join(dir, 'config/smtp.ini'), `listen=127.0.0.1:${o.port}\nnodes=${o.nodes ?? '0'}\npublic_ip=127.0.0.1\n`);
  writeFileSync(path.join(dir, 'config/plugins'), `${o.pluginName}\n`);
  writeFileSync(path.join(dir, 'config/log.ini'), '[main]\nlevel=warn\ntimestamps=false\nformat=default\n');
  writeFileSync(path.join(dir, 'config/me'), 'peer-haraka.bench.test\n');
  for (const [name, text] of Object.entries(o.files ?? {})) writeFileSync(path.join(dir, 'config', name), text);
  writeFileSync(path.join(dir, `plugins/${o.pluginName}.js`), o.pluginSource);
  const logFile = path.join(dir, 'haraka.log');
  const child = spawnToFile(process.execPath, [h.bin, '-c', dir], logFile, { ...process.env, ...o.env }, dir);
  const greeting = await greetingOrKill(child, o.port, logFile);
  return { child, greeting, logFile };
}

/** Haraka's log lines at WARN or worse. */
export function harakaLogProblems(logFile: string): string[] {
  try {
    return readFileSync(logFile, 'utf8')
      .split('\n')
      .filter((l) => /\[(WARN|ERROR|CRIT|ALERT|EMERG)\]|Error:|^\s+at /.test(l))
      // No TLS is configured (none is offered): Haraka says so at start for its default key and cert.
      .filter((l) => !/\[core\] tls (key|cert) .* could not be loaded/.test(l));
  } catch {
    return [];
  }
}

export function haraka(repoRoot: string, install: boolean, variant: Variant = 'default'): ServerUnderTest {
  const h = harakaInstall(repoRoot);
  const all = variant === 'allcores';
  return {
    name: 'haraka',
    variant,
    setup: `Haraka 3.3 from npm (bench/.peers), ${all ? 'nodes=cpus (node:cluster, one worker per core)' : 'nodes=0 (one process, no cluster)'}, accept-all RCPT + discard-at-queue plugin, no DNS, log level warn`,
    durable: false,
    memoryBasis: all ? 'peak sum of VmRSS over the master and its workers, sampled every 200 ms' : 'VmHWM of the one server process',
    multiProcess: all,
    sender: SENDER,
    recipient: 'postmaster@localhost',
    countsRecipients: false,
    async prepare() {
      const why = await ensureHaraka(repoRoot, install);
      if (why) this.unavailable = why;
      this.version = h.version();
    },
    async start(dir) {
      const port = await freePort();
      const countFile = path.join(dir, 'accepted.count');
      const p = await startHaraka(repoRoot, dir, { port, pluginName: 'bench_accept', pluginSource: HARAKA_PLUGIN, env: { BENCH_COUNT_FILE: countFile }, ...(all ? { nodes: 'cpus' } : {}) });
      const rootPid = p.child.pid!;
      if (all) await waitForChildren(rootPid, os.availableParallelism(), p.logFile);
      return {
        port,
        greeting: p.greeting,
        rootPid,
        pids: () => (all ? processTree(rootPid) : [rootPid]),
        // The sum of every process's count file.
        accepted: () => {
          let n = 0;
          for (const name of readdirSync(dir)) {
            if (!name.startsWith('accepted.count.')) continue;
            try {
              n += Number(readFileSync(path.join(dir, name), 'utf8')) || 0;
            } catch {
              // being written
            }
          }
          return n;
        },
        // Haraka stops on SIGINT (SIGTERM only when it is PID 1).
        stop: () => stopTree(p.child, 'SIGINT', 15_000),
        logTail: () => tail(p.logFile),
        problems: () => harakaLogProblems(p.logFile),
      };
    },
  };
}

// ---------------------------------------------------------------- Postfix

export const POSTFIX = '/usr/sbin/postfix';
export const POSTCONF = '/usr/sbin/postconf';
export const POSTQUEUE = '/usr/sbin/postqueue';
export const POSTSUPER = '/usr/sbin/postsuper';

/** Why a private Postfix instance cannot run here (installing the package when allowed), or undefined. */
export async function preparePostfix(install: boolean): Promise<{ unavailable?: string; version?: string }> {
  if (process.getuid?.() !== 0) return { unavailable: 'a private Postfix instance needs root (master runs as root and drops to the postfix user)' };
  if (!existsSync(POSTFIX)) {
    if (!install) return { unavailable: 'postfix is not installed and --no-install was given' };
    await installPostfix();
  }
  const r = await runCommand(POSTCONF, ['-d', '-h', 'mail_version']);
  const id = await runCommand('id', ['-u', 'postfix']);
  if (id.code !== 0) return { unavailable: 'there is no postfix user (the Debian package creates it)', version: r.stdout.trim() };
  return { version: r.stdout.trim() };
}

/**
 * main.cf with each parameter once: a later `name = value` replaces the
 * earlier one in place (Postfix would use the last too, but warns about it
 * in every process it starts).
 */
export function mergeMainCf(text: string): string {
  const out: string[] = [];
  const at = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z0-9_]+)\s*=/.exec(line);
    if (m && at.has(m[1]!)) {
      out[at.get(m[1]!)!] = line;
      continue;
    }
    if (m) at.set(m[1]!, out.length);
    out.push(line);
  }
  return out.join('\n');
}

export interface PostfixInstance {
  readonly port: number;
  readonly greeting: string;
  readonly masterPid: number;
  /** The config directory (postfix -c). */
  readonly etc: string;
  readonly spool: string;
  readonly maillog: string;
  stop(): Promise<void>;
}

/**
 * Starts a private Postfix instance in dir (etc/, spool/, lib/, log/) with
 * the given main.cf and the bench's master.cf (smtpd on 127.0.0.1:port);
 * resolves once master runs and smtpd greets.
 */
export async function startPostfixInstance(dir: string, port: number, mainCf: string): Promise<PostfixInstance> {
  const etc = path.join(dir, 'etc');
  const lib = path.join(dir, 'lib');
  const spool = path.join(dir, 'spool');
  for (const d of [dir, etc, spool, lib, path.join(dir, 'log')]) {
    mkdirSync(d, { recursive: true });
    chmodSync(d, 0o755);
  }
  // master takes its lock in data_directory as the postfix user.
  const uid = Number((await mustRun('id', ['-u', 'postfix'])).stdout.trim());
  const gid = Number((await mustRun('id', ['-g', 'postfix'])).stdout.trim());
  chownSync(lib, uid, gid);
  chmodSync(lib, 0o700);
  writeFileSync(path.join(etc, 'main.cf'), mergeMainCf(mainCf));
  writeFileSync(path.join(etc, 'master.cf'), POSTFIX_MASTER_CF(port));
  const maillog = path.join(dir, 'log/maillog');
  await mustRun(POSTFIX, ['-c', etc, 'start'], { timeoutMs: 60_000 });
  const pidFile = path.join(spool, 'pid/master.pid');
  let masterPid = 0;
  const stop = async () => {
    const r = await runCommand(POSTFIX, ['-c', etc, 'stop'], { timeoutMs: 60_000 });
    if (masterPid && !(await waitPidGone(masterPid, 30_000))) {
      process.stderr.write(`postfix -c ${etc} stop did not stop master ${masterPid} (${r.code}): sending it SIGKILL\n`);
      process.kill(masterPid, 'SIGKILL');
    }
  };
  try {
    for (let i = 0; i < 100 && !masterPid; i++) {
      masterPid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) || 0 : 0;
      if (!masterPid) await sleep(100);
    }
    if (!masterPid) throw new Error(`no ${pidFile} after postfix start:\n${tail(maillog)}`);
    const pid = masterPid;
    const greeting = await waitForGreeting(port, START_TIMEOUT_MS, () => (pidAlive(pid) ? undefined : `postfix master ${pid} is gone:\n${tail(maillog)}`));
    return { port, greeting, masterPid: pid, etc, spool, maillog, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Counts the lines of a growing log file that match a pattern, reading only what was appended since the last call. */
export class LogCounter {
  private offset = 0;
  private partial = '';
  private count = 0;

  constructor(
    private readonly file: string,
    private readonly pattern: RegExp,
  ) {}

  get(): number {
    let fd: number;
    try {
      fd = openSync(this.file, 'r');
    } catch {
      return this.count;
    }
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        const lines = (this.partial + buf.subarray(0, n).toString('utf8')).split('\n');
        this.partial = lines.pop() ?? '';
        for (const line of lines) if (this.pattern.test(line)) this.count++;
      }
    } finally {
      closeSync(fd);
    }
    return this.count;
  }
}

/** Postfix's warnings, errors, fatals and panics in its maillog. */
export function postfixLogProblems(maillog: string): string[] {
  try {
    return readFileSync(maillog, 'utf8')
      .split('\n')
      .filter((l) => /: (warning|error|fatal|panic): /.test(l));
  } catch {
    return [];
  }
}

/** Files in a directory tree (0 when it does not exist). */
export function countFiles(dir: string): number {
  let n = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) n += e.isDirectory() ? countFiles(path.join(dir, e.name)) : 1;
  return n;
}

/** Messages in a Postfix queue, by queue (maildrop, incoming, active, deferred, hold). */
export function postfixQueues(spool: string): Record<'maildrop' | 'incoming' | 'active' | 'deferred' | 'hold', number> {
  const q = (name: string) => countFiles(path.join(spool, name));
  return { maildrop: q('maildrop'), incoming: q('incoming'), active: q('active'), deferred: q('deferred'), hold: q('hold') };
}

export const POSTFIX_MASTER_CF = (port: number) => `# yubin bench: a private Postfix instance, nothing chrooted, smtpd on loopback only.
127.0.0.1:${port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
virtual    unix  - n n -  - virtual
`;

/** What every private instance shares: its own directories and log, loopback only, no DNS, no restrictions but relay control. */
export const POSTFIX_BASE_CF = (d: string) => `# yubin bench: a private Postfix instance. No DNS anywhere.
compatibility_level = 3.6
queue_directory = ${d}/spool
data_directory = ${d}/lib
syslog_name = postfix-yubin-bench
maillog_file = ${d}/log/maillog
maillog_file_prefixes = ${d}/log
myhostname = peer-postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtpd_client_connection_count_limit = 0
`;

/** The accept benchmark: takes mail for localhost, durably queues it (cleanup fsyncs), then discards every message. */
const POSTFIX_MAIN_CF = (d: string) => `${POSTFIX_BASE_CF(d)}# Accepts for localhost, durably queues, then discards every message.
mydestination = localhost
default_transport = discard
local_transport = discard:
relay_transport = discard
local_recipient_maps =
`;

export function postfix(install: boolean, mainOverrides: readonly string[] = []): ServerUnderTest {
  return {
    name: 'postfix',
    variant: 'default',
    sameInBothVariants: true,
    setup:
      `Postfix 3.7 (Debian), private instance started with postfix -c DIR start: own config/queue/data dirs, nothing chrooted, smtpd on 127.0.0.1 only, no peername lookup, no DNS, durable queue files (cleanup fsyncs), discard transport for every destination; other settings default (in_flow_delay 1s, default_process_limit 100)${mainOverrides.length ? `; overrides: ${mainOverrides.join('; ')}` : ''}`,
    durable: true,
    memoryBasis: 'peak sum of VmRSS over master and all its children (smtpd, cleanup, qmgr, trivial-rewrite, discard, postlogd, ...), sampled every 200 ms',
    multiProcess: true,
    sender: SENDER,
    recipient: 'postmaster@localhost',
    countsRecipients: true,
    async prepare() {
      const r = await preparePostfix(install);
      this.version = r.version;
      if (r.unavailable) this.unavailable = r.unavailable;
    },
    async start(dir) {
      const port = await freePort();
      const pf = await startPostfixInstance(dir, port, POSTFIX_MAIN_CF(dir) + mainOverrides.map((l) => `${l}\n`).join(''));
      // One "status=sent" line from the discard agent per recipient delivered (= discarded).
      const sent = new LogCounter(pf.maillog, / postfix-yubin-bench\/discard\[\d+\]: [0-9A-F]+: .* status=sent /);
      return {
        port,
        greeting: pf.greeting,
        rootPid: pf.masterPid,
        pids: () => processTree(pf.masterPid),
        accepted: () => sent.get(),
        stop: pf.stop,
        logTail: () => tail(pf.maillog),
        problems: () => postfixLogProblems(pf.maillog),
      };
    },
  };
}

export async function installPostfix(): Promise<void> {
  process.stderr.write('installing postfix (for smtp-source and the Postfix peer) with apt-get ...\n');
  // "No configuration": the package installs without writing /etc/postfix/main.cf
  // or starting a system instance; the bench runs its own private instance.
  await runCommand('sh', ['-c', 'echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections']);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await mustRun('apt-get', ['update'], { env, timeoutMs: 600_000 });
  await mustRun('apt-get', ['install', '-y', '--no-install-recommends', 'postfix'], { env, timeoutMs: 900_000 });
}

export async function ensureSmtpSource(install: boolean): Promise<string> {
  const bin = '/usr/sbin/smtp-source';
  if (!existsSync(bin)) {
    if (!install) throw new Error(`${bin} is missing (Debian package postfix) and --no-install was given`);
    if (process.getuid?.() !== 0) throw new Error(`${bin} is missing: install the Debian package postfix (needs root)`);
    await installPostfix();
  }
  if (!existsSync(bin)) throw new Error(`${bin} is still missing after installing postfix`);
  return bin;
}
