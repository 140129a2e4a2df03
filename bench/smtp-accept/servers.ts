/**
 * The three servers under test. Each one is started fresh, in a directory of
 * its own, for every (server, session count) run, and stopped after it.
 *
 * - yubin: this checkout's dist/, tcprules + badmailfrom + rcpthosts, durable spool.
 * - Haraka 3.3 (bench/.peers): one process (nodes=0), a plugin that accepts
 *   every recipient and discards at queue. Nothing is written: an upper bound.
 * - Postfix 3.7: a private instance (own config, queue and data directories),
 *   durable queue files (cleanup fsyncs), discard transport for everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, cpSync, existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { mustRun, pidAlive, processTree, runCommand, sleep, stopChild, waitForGreeting, waitPidGone, freePort } from './proc.js';

export type ServerName = 'yubin' | 'haraka' | 'postfix';

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
}

export interface ServerUnderTest {
  readonly name: ServerName;
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
  /** Set by prepare() when the server cannot be run here; the run goes on without it. */
  unavailable?: string;
  version?: string;
  /** Checks and installs what the server needs. */
  prepare(): Promise<void>;
  start(dir: string): Promise<RunningServer>;
}

const SENDER = 'bench@client.bench.test';
const START_TIMEOUT_MS = 30_000;

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

/** Starts a long-running child with stdout and stderr going to a file. */
function spawnToFile(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv, cwd: string): ChildProcess {
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
async function greetingOrKill(child: ChildProcess, port: number, logFile: string): Promise<string> {
  try {
    return await waitForGreeting(port, START_TIMEOUT_MS, () => exitNote(child, logFile));
  } catch (err) {
    await stopChild(child, 'SIGKILL', 0);
    throw err;
  }
}

// ---------------------------------------------------------------- yubin

export function yubin(repoRoot: string, dist?: string): ServerUnderTest {
  const cli = path.join(dist ?? path.join(repoRoot, 'dist'), 'core/cli.js');
  return {
    name: 'yubin',
    setup: `${dist ? `the build in ${dist}` : 'this checkout (dist/)'}, one process, listener plugins tcprules + badmailfrom + rcpthosts, logLevel warn`,
    durable: true,
    memoryBasis: 'VmHWM of the one server process',
    multiProcess: false,
    sender: SENDER,
    recipient: 'postmaster@localhost',
    async prepare() {
      if (!existsSync(cli)) this.unavailable = `${cli} is missing: build with npx tsc -p . first`;
      this.version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    },
    async start(dir) {
      mkdirSync(dir, { recursive: true });
      const port = await freePort();
      writeFileSync(path.join(dir, 'tcp.smtp'), '127.:allow,RBLSMTPD=""\n:allow\n');
      // logLevel warn keeps per-connection logging out of the measurement, so
      // the listen event (info) is not printed: the port is chosen here instead.
      writeFileSync(
        path.join(dir, 'yubin.yaml'),
        [
          'dataDir: ./var',
          'hostname: bench.test',
          'localDomains: [localhost, bench.test]',
          'logLevel: warn',
          'plugins:',
          '  tcprules: { file: ./tcp.smtp, maxConnectionsPerIp: 0 }',
          '  badmailfrom: { addresses: ["@spam.example"] }',
          'listeners:',
          '  - name: smtp',
          '    protocol: smtp',
          `    listen: 127.0.0.1:${port}`,
          '    limits: { maxConnections: 200 }',
          '    plugins: [tcprules, badmailfrom, rcpthosts]',
          '',
        ].join('\n'),
      );
      const logFile = path.join(dir, 'yubin.log');
      const child = spawnToFile(process.execPath, [cli, 'serve', '--config', path.join(dir, 'yubin.yaml')], logFile, { ...process.env, YUBIN_LOG_FORMAT: 'json' }, dir);
      const greeting = await greetingOrKill(child, port, logFile);
      const mess = path.join(dir, 'var/queue/mess');
      return {
        port,
        greeting,
        rootPid: child.pid!,
        pids: () => [child.pid!],
        accepted: () => (existsSync(mess) ? readdirSync(mess).filter((n) => n.endsWith('.json')).length : 0),
        stop: () => stopChild(child, 'SIGTERM', 30_000),
        logTail: () => tail(logFile),
      };
    },
  };
}

// ---------------------------------------------------------------- Haraka

/** Accepts every recipient, discards at queue, counts what it took (written to a file every 100 ms). */
const HARAKA_PLUGIN = `'use strict'
// yubin bench: accept every recipient, discard every message, count them.
const fs = require('node:fs')
let accepted = 0
let written = -1
exports.register = function () {
    const file = process.env.BENCH_COUNT_FILE
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

export function haraka(repoRoot: string, install: boolean): ServerUnderTest {
  const peers = path.join(repoRoot, 'bench/.peers');
  const pkgDir = path.join(peers, 'node_modules/haraka');
  const bin = path.join(pkgDir, 'bin/haraka');
  const installedVersion = (): string | undefined => {
    try {
      return (JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return undefined;
    }
  };
  return {
    name: 'haraka',
    setup: 'Haraka 3.3 from npm (bench/.peers), nodes=0 (one process, no cluster), accept-all RCPT + discard-at-queue plugin, no DNS, log level warn',
    durable: false,
    memoryBasis: 'VmHWM of the one server process',
    multiProcess: false,
    sender: SENDER,
    recipient: 'postmaster@localhost',
    async prepare() {
      if (!installedVersion()?.startsWith('3.3.')) {
        if (!install) {
          this.unavailable = 'Haraka 3.3 is not in bench/.peers and --no-install was given';
          return;
        }
        process.stderr.write('installing haraka@3.3 into bench/.peers ...\n');
        mkdirSync(peers, { recursive: true });
        const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
        const r = await runCommand(npm, ['install', '--prefix', peers, 'haraka@3.3', '--no-audit', '--no-fund', '--loglevel', 'error'], { timeoutMs: 600_000 });
        if (r.code !== 0 || !installedVersion()) {
          this.unavailable = `npm install haraka@3.3 failed: ${(r.stdout + r.stderr).trim().split('\n').slice(-5).join(' | ')}`;
          return;
        }
      }
      this.version = installedVersion();
    },
    async start(dir) {
      const port = await freePort();
      mkdirSync(path.join(dir, 'plugins'), { recursive: true });
      // Haraka's own defaults first (connection.ini and the rest are required), then ours on top.
      cpSync(path.join(pkgDir, 'config'), path.join(dir, 'config'), { recursive: true });
      writeFileSync(path.join(dir, 'config/smtp.ini'), `listen=127.0.0.1:${port}\nnodes=0\npublic_ip=127.0.0.1\n`);
      writeFileSync(path.join(dir, 'config/plugins'), 'bench_accept\n');
      writeFileSync(path.join(dir, 'config/log.ini'), '[main]\nlevel=warn\ntimestamps=false\nformat=default\n');
      writeFileSync(path.join(dir, 'config/me'), 'peer-haraka.bench.test\n');
      writeFileSync(path.join(dir, 'plugins/bench_accept.js'), HARAKA_PLUGIN);
      const countFile = path.join(dir, 'accepted.count');
      const logFile = path.join(dir, 'haraka.log');
      const child = spawnToFile(process.execPath, [bin, '-c', dir], logFile, { ...process.env, BENCH_COUNT_FILE: countFile }, dir);
      const greeting = await greetingOrKill(child, port, logFile);
      return {
        port,
        greeting,
        rootPid: child.pid!,
        pids: () => [child.pid!],
        accepted: () => {
          try {
            return Number(readFileSync(countFile, 'utf8')) || 0;
          } catch {
            return 0;
          }
        },
        // Haraka stops on SIGINT (SIGTERM only when it is PID 1).
        stop: () => stopChild(child, 'SIGINT', 15_000),
        logTail: () => tail(logFile),
      };
    },
  };
}

// ---------------------------------------------------------------- Postfix

const POSTFIX = '/usr/sbin/postfix';
const POSTCONF = '/usr/sbin/postconf';

const POSTFIX_MASTER_CF = (port: number) => `# yubin bench: a private Postfix instance, nothing chrooted, smtpd on loopback only.
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
`;

const POSTFIX_MAIN_CF = (d: string) => `# yubin bench: a private Postfix instance. Accepts for localhost, durably
# queues (cleanup fsyncs), then discards every message. No DNS anywhere.
compatibility_level = 3.6
queue_directory = ${d}/spool
data_directory = ${d}/lib
syslog_name = postfix-yubin-bench
maillog_file = ${d}/log/maillog
maillog_file_prefixes = ${d}/log
myhostname = peer-postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination = localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_transport = discard
local_transport = discard:
relay_transport = discard
local_recipient_maps =
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

export function postfix(install: boolean, mainOverrides: readonly string[] = []): ServerUnderTest {
  return {
    name: 'postfix',
    setup:
      `Postfix 3.7 (Debian), private instance started with postfix -c DIR start: own config/queue/data dirs, nothing chrooted, smtpd on 127.0.0.1 only, no peername lookup, no DNS, durable queue files (cleanup fsyncs), discard transport for every destination; other settings default (in_flow_delay 1s, default_process_limit 100)${mainOverrides.length ? `; overrides: ${mainOverrides.join('; ')}` : ''}`,
    durable: true,
    memoryBasis: 'peak sum of VmRSS over master and all its children (smtpd, cleanup, qmgr, trivial-rewrite, discard, postlogd, ...), sampled every 200 ms',
    multiProcess: true,
    sender: SENDER,
    recipient: 'postmaster@localhost',
    async prepare() {
      if (process.getuid?.() !== 0) {
        this.unavailable = 'a private Postfix instance needs root (master runs as root and drops to the postfix user)';
        return;
      }
      if (!existsSync(POSTFIX)) {
        if (!install) {
          this.unavailable = 'postfix is not installed and --no-install was given';
          return;
        }
        await installPostfix();
      }
      const r = await runCommand(POSTCONF, ['-d', '-h', 'mail_version']);
      this.version = r.stdout.trim();
      const id = await runCommand('id', ['-u', 'postfix']);
      if (id.code !== 0) this.unavailable = 'there is no postfix user (the Debian package creates it)';
    },
    async start(dir) {
      const port = await freePort();
      const etc = path.join(dir, 'etc');
      const lib = path.join(dir, 'lib');
      for (const d of [dir, etc, path.join(dir, 'spool'), lib, path.join(dir, 'log')]) {
        mkdirSync(d, { recursive: true });
        chmodSync(d, 0o755);
      }
      // master takes its lock in data_directory as the postfix user.
      const uid = Number((await mustRun('id', ['-u', 'postfix'])).stdout.trim());
      const gid = Number((await mustRun('id', ['-g', 'postfix'])).stdout.trim());
      chownSync(lib, uid, gid);
      chmodSync(lib, 0o700);
      writeFileSync(path.join(etc, 'main.cf'), POSTFIX_MAIN_CF(dir) + mainOverrides.map((l) => `${l}\n`).join(''));
      writeFileSync(path.join(etc, 'master.cf'), POSTFIX_MASTER_CF(port));
      const maillog = path.join(dir, 'log/maillog');
      await mustRun(POSTFIX, ['-c', etc, 'start'], { timeoutMs: 60_000 });
      const pidFile = path.join(dir, 'spool/pid/master.pid');
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
        const greeting = await waitForGreeting(port, START_TIMEOUT_MS, () => (pidAlive(masterPid) ? undefined : `postfix master ${masterPid} is gone:\n${tail(maillog)}`));
        const pid = masterPid;
        return {
          port,
          greeting,
          rootPid: pid,
          pids: () => processTree(pid),
          // One "status=sent" line from the discard agent per message delivered (= discarded).
          accepted: () => {
            try {
              return readFileSync(maillog, 'utf8').match(/ postfix-yubin-bench\/discard\[\d+\]: [0-9A-F]+: .* status=sent /g)?.length ?? 0;
            } catch {
              return 0;
            }
          },
          stop,
          logTail: () => tail(maillog),
        };
      } catch (err) {
        await stop();
        throw err;
      }
    },
  };
}

async function installPostfix(): Promise<void> {
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
