/**
 * `yubin checkpassword`: qmail's checkpassword interface over yubin's store,
 * as vchkpw offers it over vpopmail's, so another server (Dovecot's
 * `passdb { driver = checkpassword }`) logs users in with yubin's accounts
 * and hashes and finds their Maildirs where yubin delivers.
 *
 * The caller writes `login\0password\0timestamp\0` (at most 512 octets) on
 * fd 3. On success PROGRAM runs with USER and HOME set, and for Dovecot with
 * EXTRA naming the `userdb_*` fields (mail location, uid/gid, quota rule) that
 * its checkpassword-reply writes back on fd 4. Exit codes are the interface's:
 * 1 refused, 111 temporary failure (the store cannot be read), 2 misuse; in
 * Dovecot's lookup mode (AUTHORIZED=1, no password) 3 is "no such user".
 *
 * Out of process there is no shared failed-login throttle: Dovecot has its
 * own (auth_penalty, per IP), and that is what stands in for yubin's.
 */
import { spawn } from 'node:child_process';
import { fstatSync, readSync, statSync } from 'node:fs';
import type { Command, Option } from 'commander';
import { CommandError, commandOptions, ensureMaildir, loadConfig } from '../../core/index.js';
import { maildirOf, parseLogin, userDir } from './names.js';
import { openStore, storePaths, vpopmailOptions, type VpopmailOptions } from './options.js';
import { hashPassword, needsRehash, verifyPassword, wastePasswordCheck } from './passwords.js';
import { parseQuota, type Quota } from './quota.js';
import type { MailStore, UserRecord } from './store.js';

/** qmail's limit for what fd 3 carries; Dovecot refuses longer requests itself. */
export const MAX_INPUT = 512;

export const EXIT_REFUSED = 1;
export const EXIT_MISUSE = 2;
/** Dovecot's lookup mode: the user does not exist. */
export const EXIT_NO_USER = 3;
export const EXIT_TEMPORARY = 111;

export interface CheckpasswordInput {
  readonly login: string;
  readonly password: string;
  readonly timestamp: string;
}

/** `login\0password\0timestamp\0`: the trailing fields may be missing (some callers omit the timestamp). */
export function parseInput(data: Buffer): CheckpasswordInput | undefined {
  if (data.length > MAX_INPUT) return undefined;
  const parts = data.toString('utf8').split('\0');
  const [login, password = '', timestamp = ''] = parts;
  if (!login) return undefined;
  return { login, password, timestamp };
}

/** Everything fd 3 holds, up to one octet past the limit (which is then refused). */
export function readInput(fd = 3): Buffer {
  const buf = Buffer.alloc(MAX_INPUT + 1);
  let got = 0;
  while (got < buf.length) {
    let n: number;
    try {
      n = readSync(fd, buf, got, buf.length - got, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      throw err;
    }
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

/** Dovecot's quota rule for a Maildir++ quota: bytes and messages, as `maildirsize` counts them. */
export function quotaRule(quota: Quota): string | undefined {
  const parts = [quota.bytes ? `bytes=${quota.bytes}` : '', quota.count ? `messages=${quota.count}` : ''].filter(Boolean);
  return parts.length ? `*:${parts.join(':')}` : undefined;
}

/** The variables PROGRAM gets for a user: USER, HOME, and the userdb fields EXTRA names. */
export function userEnvironment(root: string, user: UserRecord, owner: { uid: number; gid: number } | undefined): Record<string, string> {
  const maildir = maildirOf(root, user);
  const fields: Record<string, string> = {
    // Maildir++ folders (.Spam, .Trash) are the default LAYOUT of Dovecot's maildir, so one location covers them all.
    userdb_mail: `maildir:${maildir}`,
  };
  if (owner) {
    // The mail processes must run as the owner of the files yubin delivers, whoever runs this.
    fields.userdb_uid = String(owner.uid);
    fields.userdb_gid = String(owner.gid);
  }
  const rule = quotaRule(parseQuota(user.quota) ?? {});
  if (rule) {
    fields.userdb_quota_rule = rule;
    // yubin's count leaves .Trash out (deleting by moving to Trash frees space); Dovecot's must too, or the two disagree.
    fields.userdb_quota_rule2 = 'Trash:ignore';
  }
  return { USER: `${user.name}@${user.domain}`, HOME: userDir(root, user), ...fields, EXTRA: Object.keys(fields).join(' ') };
}

export type Verdict =
  | { readonly kind: 'ok'; readonly user: UserRecord }
  | { readonly kind: 'refused'; readonly why: string }
  | { readonly kind: 'no-user'; readonly why: string };

export interface CheckRequest {
  readonly input: CheckpasswordInput;
  /** Dovecot's userdb/passdb lookup: no password to check. */
  readonly lookup: boolean;
  /** Dovecot's SERVICE (imap, pop3, lmtp, doveadm...). */
  readonly service: string | undefined;
  readonly remoteIp: string | undefined;
  readonly now: number;
}

/** The login decision: the same names, hashes and flags as yubin's own POP3 login. */
export async function checkLogin(store: MailStore, options: VpopmailOptions, req: CheckRequest): Promise<Verdict> {
  const who = parseLogin(req.input.login, options.defaultDomain);
  const domain = who && (await store.getDomain(who.domain));
  const user = who && domain ? await store.getUser(who.domain, who.name) : undefined;
  if (!user) {
    if (!req.lookup) await wastePasswordCheck(req.input.password);
    return { kind: 'no-user', why: 'no such user' };
  }
  if (!req.lookup && !(await verifyPassword(req.input.password, user.passwordHash))) {
    // A legacy hash fails in microseconds: cost what an scrypt failure does.
    if (needsRehash(user.passwordHash)) await wastePasswordCheck(req.input.password);
    return { kind: 'refused', why: 'wrong password' };
  }
  // After the password check, so a disabled service tells nothing to someone without the password.
  if ((req.service === 'imap' && user.flags.noImap) || (req.service === 'pop3' && user.flags.noPop)) return { kind: 'refused', why: `${req.service} disabled for this user` };
  if (!req.lookup) {
    if (needsRehash(user.passwordHash)) await store.updateUser(user.domain, user.name, { passwordHash: await hashPassword(req.input.password) });
    await store.recordLogin(user.domain, user.name, req.now, req.remoteIp ?? '', req.service ?? 'checkpassword');
  }
  return { kind: 'ok', user };
}

/** Owner of the Maildir (made if missing, as yubin's POP3 login does), so Dovecot's mail processes run as it. */
export async function mailboxOwner(root: string, user: UserRecord): Promise<{ uid: number; gid: number } | undefined> {
  const maildir = maildirOf(root, user);
  await ensureMaildir(maildir);
  const st = statSync(maildir, { throwIfNoEntry: false });
  return st && { uid: st.uid, gid: st.gid };
}

/** A descriptor open in this process, to hand on to PROGRAM. */
function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

function say(text: string): void {
  // Dovecot logs the program's stderr with the auth process's log.
  process.stderr.write(`yubin checkpassword: ${text}\n`);
}

/**
 * Runs PROGRAM for an accepted login and resolves with its exit code. Node
 * has no exec(): PROGRAM is a child with this process's stdio and fd 4
 * (where Dovecot's checkpassword-reply writes), and its code is passed on.
 */
function runProgram(program: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(program, args, { env, stdio: ['inherit', 'inherit', 'inherit', 'ignore', isOpen(4) ? 4 : 'ignore'] });
    child.on('error', (err) => {
      say(`cannot run ${program}: ${err.message}`);
      resolve(EXIT_TEMPORARY);
    });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? EXIT_TEMPORARY : 0)));
  });
}

/** The whole command; resolves with the exit code. */
export async function checkpassword(configFile: string, program: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let data: Buffer;
  try {
    data = readInput(3);
  } catch (err) {
    say(`cannot read fd 3: ${(err as Error).message}`);
    return EXIT_MISUSE;
  }
  const input = parseInput(data);
  data.fill(0);
  if (!input) {
    say(data.length > MAX_INPUT ? `more than ${MAX_INPUT} octets on fd 3` : 'no login name on fd 3');
    return EXIT_REFUSED;
  }
  const lookup = env.AUTHORIZED === '1';
  let store: MailStore | undefined;
  try {
    const { config } = await loadConfig(configFile);
    const parsed = vpopmailOptions.safeParse(commandOptions(config, 'vpopmail'));
    if (!parsed.success) throw new Error(`plugins.vpopmail: ${parsed.error.issues[0]?.message ?? 'invalid options'}`);
    const paths = storePaths(parsed.data, config.dataDir);
    store = openStore(paths);
    const verdict = await checkLogin(store, parsed.data, { input, lookup, service: env.SERVICE, remoteIp: env.TCPREMOTEIP, now: Date.now() });
    if (verdict.kind !== 'ok') {
      // The caller logs a refusal itself (Dovecot: "Login failed", "User unknown"); only a reason it cannot know is said.
      if (verdict.why.endsWith('disabled for this user')) say(`${input.login}: ${verdict.why}`);
      return verdict.kind === 'no-user' && lookup ? EXIT_NO_USER : EXIT_REFUSED;
    }
    const owner = await mailboxOwner(paths.root, verdict.user);
    const fields = userEnvironment(paths.root, verdict.user, owner);
    await store.close();
    store = undefined;
    // AUTHORIZED=2 tells Dovecot's checkpassword-reply the lookup was answered (it exits 2, which Dovecot expects then).
    return await runProgram(program, args, { ...env, ...fields, ...(lookup ? { AUTHORIZED: '2' } : {}) });
  } catch (err) {
    say(`temporary failure: ${(err as Error).message}`);
    return EXIT_TEMPORARY;
  } finally {
    await store?.close();
  }
}

export function registerCheckpassword(program: Command, configOption: () => Option): void {
  program
    .command('checkpassword <program> [args...]')
    .description("qmail's checkpassword (as vchkpw) over yubin's accounts: reads login\\0password\\0 from fd 3, runs PROGRAM with USER, HOME and Dovecot's userdb fields")
    .addOption(configOption())
    // PROGRAM's own options go after `--`: `yubin checkpassword -c FILE -- prog -x`.
    .action(async (prog: string, args: string[], opts: { config: string }) => {
      if (!opts.config) throw new CommandError('checkpassword: no config (give --config FILE)');
      // Anything unforeseen is a temporary failure, never exit 1 (which the caller reads as a wrong password).
      const crash = (err: unknown) => {
        say(`temporary failure: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(EXIT_TEMPORARY);
      };
      process.on('uncaughtException', crash);
      process.on('unhandledRejection', crash);
      process.exit(await checkpassword(opts.config, prog, args));
    });
}
