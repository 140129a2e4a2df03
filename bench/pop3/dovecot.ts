/**
 * Dovecot's POP3 server as the peer: a private instance (`dovecot -F -c
 * CONF`) with its own configuration, run, state and log files in the bench's
 * temporary directory, listening on 127.0.0.1 only. Nothing of the system's
 * Dovecot (/etc/dovecot, /run/dovecot) is used or started.
 *
 * As root (this sandbox), the master runs as root as usual, login processes
 * as `dovenull`, internal ones as `dovecot` (the users the Debian package
 * creates), and the mail processes as `nobody` (65534): Dovecot refuses mail
 * access as UID 0, so the Dovecot copies of the mailbox are chowned to
 * nobody. As any other user, every process runs as that user.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidAlive, pollServer, processTree, readStat, sleep, stopChild } from '../smtp-accept/proc.js';
import { Pop3Client } from './client.js';

export interface BenchUser {
  readonly name: string;
  readonly maildir: string;
}

export interface PopServer {
  readonly name: 'yubin' | 'dovecot';
  readonly port: number;
  readonly greeting: string;
  /** The process whose tree is measured. */
  readonly rootPid: number;
  pids(): number[];
  /** Waits until no session process is left over from the last connection (Dovecot forks per login). */
  settle(): Promise<void>;
  stop(): Promise<void>;
  logTail(): string;
  problems(): string[];
}

const CANDIDATES = ['/usr/sbin/dovecot', '/usr/local/sbin/dovecot'];

/** The dovecot binary, or undefined when it is not installed. */
export function findDovecot(): string | undefined {
  for (const c of CANDIDATES) if (existsSync(c)) return c;
  try {
    return execFileSync('sh', ['-c', 'command -v dovecot'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export function dovecotVersion(bin: string): string {
  try {
    return execFileSync(bin, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '?';
  }
}

/** Uid/gid the mail processes run as, and the users for login and internal processes. */
export function dovecotIdentity(): { uid: number; gid: number; loginUser: string; internalUser: string; firstValidUid: number } {
  const me = os.userInfo();
  if (me.uid !== 0) return { uid: me.uid, gid: me.gid, loginUser: me.username, internalUser: me.username, firstValidUid: me.uid };
  return { uid: 65534, gid: 65534, loginUser: 'dovenull', internalUser: 'dovecot', firstValidUid: 500 };
}

/** Hands a Dovecot mailbox copy to the mail process user (as root; a no-op otherwise). */
export function giveToMailUser(dir: string): void {
  const id = dovecotIdentity();
  if (os.userInfo().uid !== 0) return;
  execFileSync('chown', ['-R', `${id.uid}:${id.gid}`, dir]);
}

export const DOVECOT_SETTINGS = [
  'protocols = pop3',
  'ssl = no',
  'disable_plaintext_auth = no',
  'auth_mechanisms = plain',
  'passdb/userdb: passwd-file, one line per user: {PLAIN} password, uid/gid, userdb_mail=maildir:<copy>',
  'pop3_uidl_format = %f (the file name up to ":", as qmail-pop3d shows it; Dovecot\'s default is %08Xu%08Xv)',
  'pop3_no_flag_updates = no, Dovecot\'s default: like yubin, it marks what was RETRieved \\Seen at QUIT (renames the file to :2,S), so both do the same work',
  'everything else default (pop3-login and pop3 processes: one per connection, service_count = 1)',
];

export function dovecotConfig(dir: string, port: number, passwdFile: string): string {
  const id = dovecotIdentity();
  return `# yubin POP3 benchmark: a private Dovecot instance, loopback only.
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
instance_name = yubin-bench-pop3-${process.pid}
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = ${id.loginUser}
default_internal_user = ${id.internalUser}
first_valid_uid = ${id.firstValidUid}
pop3_uidl_format = %f
pop3_no_flag_updates = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${passwdFile}
}
userdb {
  driver = passwd-file
  args = username_format=%u ${passwdFile}
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener pop3s {
    port = 0
  }
}
`;
}

/** Dovecot's and Node's warnings worth reporting: Dovecot log lines at Warning, Error, Fatal, Panic. */
function dovecotProblems(log: string): string[] {
  return log.split('\n').filter((l) => /: (Warning|Error|Fatal|Panic): /.test(l));
}

/** Connects until the server greets with +OK; throws on a -ERR greeting or when the process is gone. */
export function waitForPop3(port: number, timeoutMs: number, isDead: () => string | undefined): Promise<string> {
  const probe = async () => {
    const { client, greeting } = await Pop3Client.connect(port);
    await client.ok('QUIT').catch(() => undefined);
    client.destroy();
    return greeting;
  };
  // A server that answers with -ERR is up but refusing: no point in waiting.
  const refusing = (err: unknown) => err instanceof Error && 'reply' in err && String((err as { reply: string }).reply).startsWith('-ERR');
  return pollServer(`POP3 server on 127.0.0.1:${port}`, probe, timeoutMs, isDead, refusing);
}

/** Starts the private Dovecot instance. `dir` must be traversable by the login and mail users. */
export async function startDovecot(bin: string, dir: string, port: number, users: readonly BenchUser[], password: string): Promise<PopServer> {
  const id = dovecotIdentity();
  for (const sub of ['run', 'state', 'home']) mkdirSync(path.join(dir, sub), { recursive: true });
  chmodSync(dir, 0o755);
  const passwd = path.join(dir, 'passwd');
  const home = path.join(dir, 'home');
  if (os.userInfo().uid === 0) execFileSync('chown', [`${id.uid}:${id.gid}`, home]);
  writeFileSync(passwd, users.map((u) => `${u.name}:{PLAIN}${password}:${id.uid}:${id.gid}::${home}::userdb_mail=maildir:${u.maildir}\n`).join(''), { mode: 0o644 });
  const conf = path.join(dir, 'dovecot.conf');
  writeFileSync(conf, dovecotConfig(dir, port, passwd));
  const logFile = path.join(dir, 'dovecot.log');
  const outFile = path.join(dir, 'dovecot.out');
  const out = openSync(outFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(bin, ['-F', '-c', conf], { stdio: ['ignore', out, out], cwd: dir });
  } finally {
    closeSync(out);
  }
  let exited: string | undefined;
  child.once('exit', (code, sig) => (exited = `dovecot exited ${code ?? sig}`));
  const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
  const logTail = () => (read(outFile) + read(logFile)).trim().split('\n').slice(-20).join('\n');
  const pid = child.pid!;
  /** Every process of the instance seen so far: after the master exits its children are reparented, so the tree alone would lose them. */
  const seen = new Map<number, string>();
  const pids = () => {
    const t = processTree(pid);
    for (const p of t) if (!seen.has(p)) seen.set(p, readStat(p)?.comm ?? '?');
    return t;
  };
  const stop = async () => {
    pids();
    await stopChild(child, 'SIGTERM', 10_000);
    // The master stops its children; kill any it left behind (ours: seen in its tree, same command name).
    const deadline = performance.now() + 5000;
    for (;;) {
      const left = [...seen].filter(([p, comm]) => pidAlive(p) && readStat(p)?.comm === comm);
      if (left.length === 0) break;
      if (performance.now() > deadline) {
        for (const [p] of left) process.kill(p, 'SIGKILL');
        await sleep(100);
        break;
      }
      await sleep(100);
    }
  };
  let greeting: string;
  try {
    greeting = await waitForPop3(port, 15_000, () => (exited ? `${exited}: ${logTail()}` : undefined));
  } catch (err) {
    await stop();
    throw err;
  }
  pids();
  return {
    name: 'dovecot',
    port,
    greeting,
    rootPid: pid,
    pids,
    async settle() {
      // pop3-login and pop3 are forked per connection and exit after it: wait for them to be reaped so their CPU is counted and the next session starts alone.
      const deadline = performance.now() + 3000;
      while (performance.now() < deadline) {
        const busy = pids().some((p) => {
          const c = readStat(p)?.comm;
          return c === 'pop3' || c === 'pop3-login';
        });
        if (!busy) return;
        await sleep(5);
      }
    },
    stop,
    logTail,
    problems: () => dovecotProblems(read(logFile)),
  };
}
