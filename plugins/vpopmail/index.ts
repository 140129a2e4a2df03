/**
 * vpopmail: virtual domains and users from a mail store. On a listener it
 * checks passwords (vchkpw: SMTP AUTH and POP3 logins), holds authenticated
 * senders to their own addresses and refuses unknown recipients at RCPT; in
 * `delivery.plugins` it delivers (vdelivermail). Its domains are local the
 * moment `yubin domain add` writes them.
 */
import { answer, definePlugin, ensureMaildir, type Address, type AuthContext, type Defer, type HookAnswers, type MailContext, type RcptContext, type VerifyContext } from '../../core/index.js';
import path from 'node:path';
import { serveAuthSocket } from './auth-socket.js';
import { registerCheckpassword } from './checkpassword.js';
import { registerMailCommands } from './cli.js';
import { deliver } from './deliver.js';
import { maildirOf, parseLogin } from './names.js';
import { openStoreWhenPresent, storePaths, vpopmailOptions, type VpopmailOptions } from './options.js';
import { hashPassword, needsRehash, verifyPassword, wastePasswordCheck } from './passwords.js';
import { checkQuota, parseQuota } from './quota.js';
import { resolveAddress } from './resolve.js';
import { StoreUnavailable, type MailStore, type UserRecord } from './store.js';
import type { Logger } from 'pino';

const BAD_LOGIN = answer.reject(535, '5.7.8', 'Authentication credentials invalid');

/** After a failed re-read of the domain list, the next try waits this long (a lookup does not wait for it). */
const DOMAIN_RETRY_MS = 1_000;

/**
 * The domain names, re-read when the store changed (the CLI writes from
 * another process or another node). Local-domain questions are synchronous:
 * SQLite answers them at once; a networked store tells of a change
 * (onChange), so the list is re-read before the next message asks.
 */
class DomainCache {
  private seen = -1;
  private names = new Set<string>();
  private clear = false;
  private loaded = false;
  private failed = false;
  private retryAt = 0;
  private pending: Promise<void> | undefined;
  private generation = 0;
  private readonly unsubscribe: () => void;

  constructor(private readonly store: MailStore) {
    this.unsubscribe = store.onChange?.(() => void this.refresh()) ?? (() => undefined);
  }

  /**
   * The list may lack domains: never read yet, or the last re-read failed (the
   * store is down). A recipient that looks foreign may be ours then.
   */
  get uncertain(): boolean {
    return !this.loaded || this.failed;
  }

  incomplete(): boolean {
    return this.uncertain;
  }

  /** Re-reads when the store changed, or after a failure; resolves when a networked store's answer is in. */
  refresh(): Promise<void> | undefined {
    const counter = this.store.changeCounter();
    const retry = this.failed && !this.pending && Date.now() >= this.retryAt;
    if (counter === this.seen && !retry) return this.pending;
    this.seen = counter;
    const listed = this.store.listDomains();
    if (Array.isArray(listed)) {
      this.apply(listed);
      return undefined;
    }
    // Answers may come back out of order: only the latest question's counts.
    const generation = ++this.generation;
    const pending: Promise<void> = listed
      .then(
        (domains) => {
          if (generation === this.generation) this.apply(domains);
        },
        () => {
          // The store logged why; the last known list stands meanwhile.
          if (generation !== this.generation) return;
          this.failed = true;
          this.retryAt = Date.now() + DOMAIN_RETRY_MS;
        },
      )
      .finally(() => {
        if (this.pending === pending) this.pending = undefined;
      });
    this.pending = pending;
    return pending;
  }

  private apply(domains: ReadonlyArray<{ name: string; clearPasswords: boolean }>): void {
    this.names = new Set(domains.map((d) => d.name));
    this.clear = domains.some((d) => d.clearPasswords);
    this.loaded = true;
    this.failed = false;
  }

  has(domain: string): boolean {
    void this.refresh();
    return this.names.has(domain);
  }

  list(): string[] {
    void this.refresh();
    return [...this.names];
  }

  /** Some domain keeps clear passwords: CRAM-MD5 and APOP can be checked there. */
  anyClearPasswords(): boolean {
    void this.refresh();
    return this.clear;
  }

  close(): void {
    this.unsubscribe();
  }
}

/** The store cannot answer (PostgreSQL down): try again later, never "no such user". The store's log line says why. */
const STORE_DOWN = answer.defer(451, '4.3.0', 'Temporary failure looking up the address, please try again later');
/** RFC 4954's answer for a login that cannot be checked now. */
const AUTH_STORE_DOWN = answer.defer(454, '4.7.0', 'Temporary authentication failure, please try again later');

async function unlessStoreDown<A>(down: Defer, fn: () => Promise<A>): Promise<A | Defer> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof StoreUnavailable) return down;
    throw err;
  }
}

async function passwordMatches(ctx: AuthContext, user: UserRecord): Promise<boolean> {
  if (ctx.password === undefined) {
    // Challenge-response (CRAM-MD5, APOP): only a stored clear password can answer it.
    return user.clearPassword !== undefined && ctx.verify(user.clearPassword);
  }
  return verifyPassword(ctx.password, user.passwordHash);
}

export default definePlugin({
  name: 'vpopmail',
  options: vpopmailOptions,
  // yubin domain|user|alias: vadddomain, vadduser, valias and friends; yubin checkpassword: vchkpw.
  commands: ({ program, configOption }) => {
    registerMailCommands(program, configOption);
    registerCheckpassword(program, configOption);
  },
  async setup({ options, dataDir, services, log }) {
    const paths = storePaths(options, dataDir);
    const store = openStoreWhenPresent(paths, log);
    const domains = new DomainCache(store);
    // A networked store's domains are read before the listeners open; if it is down, the server
    // starts anyway and answers 4xx for what it cannot tell until the store is back.
    await domains.refresh();
    const removeSource = services.localDomains.addSource(domains);
    const env = { store, root: paths.root, options, log };
    const stopAuthSocket = options.authSocket
      ? serveAuthSocket(path.resolve(dataDir, options.authSocket), { store, options, root: paths.root, throttle: services.loginThrottle, log, now: () => services.clock.now() })
      : undefined;
    // A socket that cannot be made is logged; the rest of the plugin works on.
    stopAuthSocket?.catch((err: Error) => log.error({ event: 'auth-socket', err: err.message }, `cannot serve the login socket ${options.authSocket}: ${err.message}`));

    return {
      authMechanisms: () => (domains.anyClearPasswords() ? ['PLAIN', 'LOGIN', 'CRAM-MD5', 'APOP'] : ['PLAIN', 'LOGIN']),
      loginAccount(username) {
        const who = parseLogin(username, options.defaultDomain);
        return who && `${who.name}@${who.domain}`;
      },
      hooks: {
        async auth(ctx) {
          return unlessStoreDown(AUTH_STORE_DOWN, () => authenticate(store, options, log, ctx, paths.root, services.clock.now()));
        },

        async mail(ctx) {
          return unlessStoreDown(STORE_DOWN, () => checkSender(store, options, ctx));
        },

        async rcpt(ctx) {
          // A foreign-looking domain may be one of ours that the list lacks while the store is down: relaying
          // or refusing it could lose mail, a 4xx cannot.
          if (!ctx.recipient.localDomain && domains.uncertain) return STORE_DOWN;
          return unlessStoreDown(STORE_DOWN, () => checkRecipient(store, options, paths.root, ctx));
        },

        async verify(ctx) {
          return unlessStoreDown(STORE_DOWN, () => verifyRecipient(store, ctx));
        },

        async deliver({ delivery }) {
          if (!delivery.local) return answer.continue();
          return unlessStoreDown(STORE_DOWN, () => deliver(env, delivery));
        },
      },
      async close() {
        removeSource();
        domains.close();
        await (await stopAuthSocket?.catch(() => undefined))?.();
        await store.close();
      },
    };
  },
});

/** An authenticated sender uses their own address or an alias that forwards to it. */
async function checkSender(store: MailStore, options: VpopmailOptions, { connection, sender }: MailContext): Promise<HookAnswers['mail']> {
  const login = connection.authUser;
  if (!login || !sender || !options.senderMustMatchLogin) return answer.continue();
  const who = parseLogin(login, options.defaultDomain);
  if (!who) return answer.continue(); // authenticated by another plugin
  const own = `${who.name}@${who.domain}`;
  const from = sender.address.toLowerCase();
  if (from === own) return answer.continue();
  const alias = await store.getAlias(sender.domain, sender.local.toLowerCase());
  if (alias?.targets.some((t) => t.toLowerCase() === own)) return answer.continue();
  return answer.reject(553, '5.7.1', `Sender address <${sender.address}> is not owned by ${own}`);
}

async function authenticate(store: MailStore, options: VpopmailOptions, log: Logger, ctx: AuthContext, root: string, now: number): Promise<HookAnswers['auth']> {
  const who = parseLogin(ctx.username, options.defaultDomain);
  const domain = who && (await store.getDomain(who.domain));
  if (!who || !domain) {
    // Not one of our domains: another auth plugin may know it. It costs what a wrong
    // password costs, so timing does not tell which domains are hosted here.
    await wasteAPasswordCheck(ctx);
    return answer.continue();
  }
  const user = await store.getUser(who.domain, who.name);
  if (!user) {
    await wasteAPasswordCheck(ctx);
    return BAD_LOGIN;
  }
  if (!(await passwordMatches(ctx, user))) {
    // An imported MD5-crypt or clear password is checked in microseconds: make its failure cost what an scrypt one does.
    if (needsRehash(user.passwordHash)) await wasteAPasswordCheck(ctx);
    return BAD_LOGIN;
  }
  const service = ctx.connection.protocol;
  if ((service === 'smtp' && user.flags.noSmtp) || (service === 'pop3' && user.flags.noPop)) {
    // After the password check, so a disabled flag tells nothing to someone who does not know the password.
    log.info({ user: `${who.name}@${who.domain}`, service }, `${service} disabled for this user`);
    return BAD_LOGIN;
  }
  if (ctx.password !== undefined && needsRehash(user.passwordHash)) {
    // An imported MD5-crypt or clear password becomes a modern hash at the first good login.
    await store.updateUser(who.domain, who.name, { passwordHash: await hashPassword(ctx.password) });
    log.info({ user: `${who.name}@${who.domain}` }, 'password re-hashed with scrypt');
  }
  await store.recordLogin(who.domain, who.name, now, ctx.connection.remoteIp, service);
  const maildir = maildirOf(root, user);
  // vdelivermail makes missing directories on delivery; a user who logs in before any mail sees an empty box.
  if (service === 'pop3') await ensureMaildir(maildir);
  ctx.mailbox(maildir);
  return answer.accept();
}

/** An unknown user or domain costs as long as a wrong password (challenge-response has no password to check). */
async function wasteAPasswordCheck(ctx: AuthContext): Promise<void> {
  if (ctx.password !== undefined) await wastePasswordCheck(ctx.password);
}

const NO_MAILBOX = answer.reject(550, '5.1.1', 'Sorry, no mailbox here by that name. (#5.1.1)');
const NO_MAIL_TAKEN = answer.reject(550, '5.2.1', 'This mailbox does not take mail. (#5.2.1)');

/** What vdelivermail would do with an address of one of our domains, as far as RCPT can know it. */
type LocalVerdict =
  | { readonly kind: 'refuse'; readonly answer: HookAnswers['verify'] & { action: 'reject' } }
  | { readonly kind: 'drop' }
  | { readonly kind: 'take'; readonly user: UserRecord | undefined; readonly domain: string; readonly deliveredTo: string }
  | { readonly kind: 'not-ours' };

async function lookupLocal(store: MailStore, recipient: Address): Promise<LocalVerdict> {
  const domain = await store.getDomain(recipient.domain);
  if (!domain) return { kind: 'not-ours' };
  const resolution = await resolveAddress(store, domain, recipient.local);
  if (resolution.kind === 'catchall') {
    const c = resolution.catchall;
    if (c.kind === 'bounce-no-mailbox') return { kind: 'refuse', answer: NO_MAILBOX };
    if (c.kind === 'delete') return { kind: 'drop' };
    return { kind: 'take', user: undefined, domain: domain.name, deliveredTo: `${recipient.local.toLowerCase()}@${domain.name}` };
  }
  if (resolution.kind === 'alias') return { kind: 'take', user: undefined, domain: domain.name, deliveredTo: `${recipient.local.toLowerCase()}@${domain.name}` };
  if (resolution.user.flags.bounceMail) return { kind: 'refuse', answer: NO_MAIL_TAKEN };
  // An extension address (alice-news@) is delivered to, and its Delivered-To line names, alice@.
  return { kind: 'take', user: resolution.user, domain: domain.name, deliveredTo: `${resolution.user.name}@${domain.name}` };
}

async function verifyRecipient(store: MailStore, ctx: VerifyContext): Promise<HookAnswers['verify']> {
  const v = await lookupLocal(store, ctx.recipient);
  if (v.kind === 'not-ours') return answer.continue();
  if (v.kind === 'refuse') return v.answer;
  if (v.kind === 'take') ctx.deliveredTo(v.deliveredTo);
  return answer.accept();
}

async function checkRecipient(store: MailStore, options: VpopmailOptions, root: string, ctx: RcptContext): Promise<HookAnswers['rcpt']> {
  const { recipient, connection } = ctx;
  if (!recipient.localDomain) {
    // Relaying by an authenticated user: vpopmail's NO_RELAY flag takes it away.
    const who = connection.authUser && connection.state.relayClient === undefined ? parseLogin(connection.authUser, options.defaultDomain) : undefined;
    const user = who && (await store.getUser(who.domain, who.name));
    if (user?.flags.noRelay) return answer.reject(550, '5.7.1', 'Relaying denied for this account');
    return answer.continue();
  }
  const v = await lookupLocal(store, recipient);
  if (v.kind === 'refuse') return v.answer;
  if (v.kind === 'drop') return answer.discard('Recipient OK'); // looks like any other accept: no directory harvesting
  if (v.kind === 'take' && v.user && options.overQuotaAtRcpt !== 'off') {
    const quota = parseQuota(v.user.quota) ?? {};
    // "Already full": not even one more byte or message fits.
    if ((quota.bytes !== undefined || quota.count !== undefined) && (await checkQuota(maildirOf(root, v.user), quota, 1)).over) {
      return options.overQuotaAtRcpt === 'defer' ? answer.defer(452, '4.2.2', 'Mailbox full, try again later') : answer.reject(552, '5.2.2', 'Mailbox full');
    }
  }
  return answer.continue();
}
