/**
 * A private Dovecot serving IMAP on a loopback port: its own config, base_dir,
 * state_dir and log in the test's directory, `dovecot -c CONF -F` as a child,
 * stopped by PID. Debian's dovecot-imapd (the system service is never used).
 *
 * Mail processes may not run as root. As root the mail files belong to an
 * unprivileged user (`mailUser`, whose uid the passdb hands out), the login
 * processes run as Debian's dovenull and the internal ones as dovecot. Not
 * as root, everything runs as the current user (Dovecot's rootless mode).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, sleep } from './net.js';

/** The repository (dist/test/peers/ is three levels down): where config/examples is. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export const DOVECOT = '/usr/sbin/dovecot';
export const CHECKPASSWORD_REPLY = '/usr/lib/dovecot/checkpassword-reply';

/** What the test needs installed: dovecot-imapd (and its core). */
export function dovecotMissing(): string | undefined {
  for (const f of [DOVECOT, '/usr/lib/dovecot/imap', CHECKPASSWORD_REPLY]) if (!existsSync(f)) return `${f} (dovecot-imapd) not installed`;
  return undefined;
}

/** What the Lua passdb needs on top: Dovecot's Lua module and luasocket's UNIX sockets for Lua 5.4 (dovecot-auth-lua, lua-socket). */
export function dovecotLuaMissing(): string | undefined {
  const missing = ['/usr/lib/dovecot/modules/auth/libauthdb_lua.so', ...['x86_64-linux-gnu', 'aarch64-linux-gnu'].map((a) => `/usr/lib/${a}/lua/5.4/socket/unix.so`)];
  if (!existsSync(missing[0]!)) return `${missing[0]} (dovecot-auth-lua) not installed`;
  if (!missing.slice(1).some((f) => existsSync(f))) return 'luasocket for Lua 5.4 (lua-socket) not installed';
  return dovecotMissing();
}

export interface MailUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/** Who owns the mail: `nobody` when run as root (mail processes may not be root), else the current user. */
export function mailUser(): MailUser {
  if (process.getuid!() !== 0) return { name: os.userInfo().username, uid: process.getuid!(), gid: process.getgid!() };
  const line = spawnSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).stdout.trim().split(':');
  return { name: 'nobody', uid: Number(line[2]), gid: Number(line[3]) };
}

/** A command run as the mail user: `setpriv` in front of it when we are root. */
export function asMailUser(user: MailUser, command: readonly string[]): string[] {
  if (process.getuid!() !== 0) return [...command];
  // Without tap's NODE_OPTIONS: its hooks write coverage data where the mail user may not.
  return ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', 'env', '-u', 'NODE_OPTIONS', ...command];
}

export interface DovecotOptions {
  /** Its directory: config, base_dir, state_dir and log go in here. */
  readonly dir: string;
  readonly user: MailUser;
  /** The passdb and userdb blocks. */
  readonly auth: string;
  /** More settings appended to the config. */
  readonly extra?: string;
}

export interface DovecotPeer {
  readonly port: number;
  readonly conf: string;
  log(): string;
  stop(): Promise<void>;
}

export async function startDovecot(options: DovecotOptions): Promise<DovecotPeer> {
  const { dir, user } = options;
  const port = await freePort();
  const root = process.getuid!() === 0;
  const logFile = path.join(dir, 'dovecot.log');
  const conf = path.join(dir, 'dovecot.conf');
  const text = `# A private instance for a test: loopback, plain text logins (no TLS on loopback).
protocols = imap
listen = 127.0.0.1
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${logFile}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
${root ? 'default_internal_user = dovecot\ndefault_login_user = dovenull' : `default_internal_user = ${user.name}\ndefault_login_user = ${user.name}`}
first_valid_uid = 1
mail_plugins = quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = maildir:User quota
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener imaps {
    port = 0
  }
${root ? '' : '  chroot =\n'}}
service anvil {
${root ? '' : '  chroot =\n'}}
service auth {
  # The checkpassword program reads yubin's store and makes Maildirs: it runs as their owner.
  user = ${user.name}
  # Its children inherit the limit, and Node reserves about 2 GB of address space at start.
  vsz_limit = 4G
}
service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
${options.auth}
${options.extra ?? ''}
`;
  await writeFile(conf, text);
  const child = spawn(DOVECOT, ['-c', conf, '-F'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const log = () => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
    await exited;
  };
  // Ready once imap-login answers on the port.
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`dovecot exited with ${child.exitCode}: ${out}${log()}`);
    if (await answers(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`dovecot did not start: ${out}${log()}`);
    }
    await sleep(100);
  }
  return { port, conf, log, stop };
}

async function answers(port: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.setTimeout(1000);
    s.once('data', (d: Buffer) => {
      s.destroy();
      resolve(d.toString().startsWith('* OK'));
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

/**
 * Dovecot logging in through a running yubin: waits for the login socket the
 * vpopmail plugin makes (`authSocket`), then starts with the Lua passdb and
 * userdb (luaAuth) asking it. Failed logins are answered at once
 * (auth_failure_delay = 0): yubin's own throttle is what tests look at.
 */
export async function startDovecotOverSocket(o: { readonly dir: string; readonly user: MailUser; readonly socket: string }): Promise<DovecotPeer> {
  for (let i = 0; i < 300 && !existsSync(o.socket); i++) await sleep(50);
  if (!existsSync(o.socket)) throw new Error(`yubin's login socket ${o.socket} did not appear within 15 s`);
  return startDovecot({ dir: o.dir, user: o.user, auth: await luaAuth(o.dir, o.socket, o.user), extra: 'auth_failure_delay = 0' });
}

/**
 * The passdb/userdb blocks for config/examples/dovecot-yubin.lua, written to
 * `dir` as an admin installs it, pointed at a yubin login socket; the auth
 * worker that runs it is the mail user, who can reach the socket.
 */
export async function luaAuth(dir: string, socket: string, user: MailUser): Promise<string> {
  const example = readFileSync(path.join(ROOT, 'config/examples/dovecot-yubin.lua'), 'utf8');
  const lua = path.join(dir, 'dovecot-yubin.lua');
  await writeFile(lua, example.replace(/^local SOCKET = ".*"$/m, `local SOCKET = ${JSON.stringify(socket)}`));
  return `passdb {
  driver = lua
  args = file=${lua} blocking=yes
}
userdb {
  driver = prefetch
}
userdb {
  driver = lua
  args = file=${lua} blocking=yes
}
service auth-worker {
  user = ${user.name}
  unix_listener auth-worker {
    user = ${user.name}
    mode = 0600
  }
}`;
}
