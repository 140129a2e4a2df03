/**
 * Failed-login throttling shared by every protocol that takes passwords
 * (SMTP AUTH, POP3). The policy, after Dovecot's auth penalty, Postfix's
 * anvil and Stalwart's autoban, is built so a guesser gets a handful of
 * tries without handing anyone a button that locks a real user out:
 *
 * - Failures are counted three ways: per client IP, per account (whatever
 *   spelling the login used: plugins name the canonical account), and per
 *   (IP, account) pair.
 * - After `freeFailures`, each attempt waits before its password is checked:
 *   `delay`, doubling up to `maxDelay`.
 * - After `lockoutAfter`, attempts are refused for `lockout` without any
 *   password check.
 * - A client network (/24, /64) where the account logged in successfully in
 *   the last `rememberSuccess` is known for that account: the account's and
 *   the IP's counts do not apply to it, only the pair's. So ten wrong
 *   guesses from anywhere cannot lock a user out of the places they use, and
 *   one noisy NAT address does not lock out its other users.
 *
 * An attempt is counted the moment it is let through, before the password
 * is checked (`begin` reserves its slot): however many connections guess in
 * parallel, at most `lockoutAfter` passwords are checked per IP, per account
 * from unknown networks, and per pair.
 *
 * Counts live in memory, bounded in size, and fade after `window` without
 * a new failure. With `workers: N` they live in the primary, and the
 * workers' throttles ask it for each attempt (take()). With
 * `loginThrottle.shared` they live in Redis, for every node
 * (shared-login-throttle.ts).
 */
import { clientNetwork } from '../ip.js';
import type { Logger } from 'pino';
import type { Clock } from './clock.js';

export interface LoginThrottleConfig {
  /** Failures that cost nothing: the attempt after them is the first to wait. */
  readonly freeFailures: number;
  /** Wait before answering the first throttled attempt; doubles with each further failure. */
  readonly delay: number;
  /** Longest wait. */
  readonly maxDelay: number;
  /** Failures after which attempts are refused without a password check. */
  readonly lockoutAfter: number;
  /** How long a lockout lasts. */
  readonly lockout: number;
  /** Failures older than this (since the last one) are forgotten. */
  readonly window: number;
  /** How long a successful login keeps its client network known for the account; 0: never. */
  readonly rememberSuccess: number;
}

export const DEFAULT_LOGIN_THROTTLE: LoginThrottleConfig = {
  freeFailures: 2,
  delay: 1_000,
  maxDelay: 16_000,
  lockoutAfter: 10,
  lockout: 15 * 60_000,
  window: 15 * 60_000,
  rememberSuccess: 30 * 86_400_000,
};

/** Which count caused a wait or a lockout. */
export type ThrottledBy = 'ip' | 'account' | 'ip+account';

export interface ThrottleVerdict {
  /** Refuse without checking the password: too many failures lately. */
  readonly locked: boolean;
  /** Milliseconds to wait before checking the password and answering. */
  readonly wait: number;
  /** Failures (and attempts in progress) counted against the worst count that applies. */
  readonly failures: number;
  /** What caused the wait or lockout, for the log line. */
  readonly by: ThrottledBy | undefined;
  /**
   * The counts could not be read (a shared store that is down, with
   * `onStoreFailure: closed`): the attempt is refused like a locked one,
   * but as a temporary failure of the server, not of the client.
   */
  readonly unavailable?: true;
}

/** One attempt let through by the throttle; exactly one of its methods is called when the answer is known. */
export interface LoginTicket {
  readonly verdict: ThrottleVerdict;
  /** The password was right. */
  succeeded(): void;
  /** The password was wrong. */
  failed(): void;
  /** No verdict on the password (a plugin fault, a temporary failure): the slot is given back. */
  released(): void;
}

interface Entry {
  failures: number;
  /** Attempts let through whose answer is not known yet. */
  pending: number;
  last: number;
}

const MAX_ENTRIES = 100_000;
const MAX_KNOWN_ACCOUNTS = 100_000;
/** Networks remembered per account: a phone, a laptop at home and at work, and some. */
const MAX_KNOWN_NETWORKS = 16;

/** The fallback canonical account when no plugin names one: `User%Dom.` and `user@dom` are one account. */
export function defaultAccount(username: string): string {
  let a = username.trim().toLowerCase();
  if (!a.includes('@')) {
    const pct = a.lastIndexOf('%');
    if (pct >= 0) a = `${a.slice(0, pct)}@${a.slice(pct + 1)}`;
  }
  return a.replace(/\.+$/, '');
}

export class LoginThrottle {
  private readonly entries = new Map<string, Entry>();
  /** account → client network → when it last logged in there. */
  private readonly known = new Map<string, Map<string, number>>();
  /**
   * Since the start, by the count concerned: lockouts begun (a count reached
   * lockoutAfter) and attempts refused during one. The metrics read them.
   */
  readonly stats: { readonly lockouts: Record<ThrottledBy, number>; readonly refused: Record<ThrottledBy, number> } = {
    lockouts: { ip: 0, account: 0, 'ip+account': 0 },
    refused: { ip: 0, account: 0, 'ip+account': 0 },
  };

  constructor(
    protected config: LoginThrottleConfig,
    private readonly clock: Clock,
  ) {}

  /** A reload may change the settings; counts are kept. */
  configure(config: LoginThrottleConfig): void {
    this.config = config;
  }

  /**
   * What to do with an attempt by this client for this (canonical) account.
   * Unless it is locked out, the attempt is counted from now on, as if it
   * had failed, until the ticket says how it went.
   */
  begin(ip: string, account: string): LoginTicket {
    const keys = this.keys(ip, account);
    const verdict = this.assess(keys);
    if (verdict.locked) {
      this.stats.refused[verdict.by ?? 'ip']++;
      return { verdict, succeeded: noop, failed: noop, released: noop };
    }
    const held = keys.map(([by, key]) => [by, this.touch(key)] as const);
    for (const [, e] of held) e.pending++;
    let done = false;
    const settle = (failed: boolean) => {
      if (done) return;
      done = true;
      const now = this.clock.now();
      for (const [by, e] of held) {
        e.pending = Math.max(0, e.pending - 1);
        if (failed) {
          e.failures++;
          e.last = now;
          if (e.failures === this.config.lockoutAfter) this.stats.lockouts[by]++;
        }
      }
    };
    return {
      verdict,
      failed: () => settle(true),
      released: () => settle(false),
      succeeded: () => {
        settle(false);
        if (!account) return;
        // The pair starts afresh; the IP's and the account's counts stand (one good login
        // does not excuse a guessing run, and a user's own logins must not reset a botnet's budget).
        this.entries.delete(pairKey(ip, account));
        this.remember(account, ip);
      },
    };
  }

  /**
   * begin(), where the counts may live in another process: a cluster worker's
   * throttle (core/cluster/worker-throttle.ts) asks the primary and answers
   * with a promise. Here, in the process that keeps the counts, it is begin().
   */
  take(ip: string, account: string): LoginTicket | Promise<LoginTicket> {
    return this.begin(ip, account);
  }

  /** What the next attempt by this client for this account would meet, without counting one: a web page can say the throttle is on. */
  preview(ip: string, account: string): ThrottleVerdict | Promise<ThrottleVerdict> {
    return this.peek(ip, account);
  }

  /** preview() of the counts in this process. */
  protected peek(ip: string, account: string): ThrottleVerdict {
    return this.assess(this.keys(ip, account));
  }

  /** The account logged in successfully from this client network lately. */
  private isKnown(account: string, ip: string): boolean {
    const nets = this.known.get(account);
    const at = nets?.get(clientNetwork(ip));
    if (at === undefined) return false;
    if (this.clock.now() - at > this.config.rememberSuccess) {
      nets!.delete(clientNetwork(ip));
      return false;
    }
    return true;
  }

  /** The counts that apply to this attempt, each with what it is named in the log. */
  private keys(ip: string, account: string): Array<[ThrottledBy, string]> {
    if (!account) return [['ip', `ip:${ip}`]];
    const pair: [ThrottledBy, string] = ['ip+account', pairKey(ip, account)];
    return this.isKnown(account, ip) ? [pair] : [['ip', `ip:${ip}`], ['account', `user:${account}`], pair];
  }

  private assess(keys: Array<[ThrottledBy, string]>): ThrottleVerdict {
    let failures = 0;
    let by: ThrottledBy | undefined;
    for (const [name, key] of keys) {
      const n = this.count(key);
      if (n > failures) {
        failures = n;
        by = name;
      }
    }
    return this.verdict(failures, by);
  }

  /** The verdict for the worst count that applies: locked, a wait, or neither. */
  protected verdict(failures: number, by: ThrottledBy | undefined): ThrottleVerdict {
    const c = this.config;
    if (failures >= c.lockoutAfter) return { locked: true, wait: 0, failures, by };
    const over = failures - c.freeFailures;
    const wait = over <= 0 ? 0 : Math.min(c.maxDelay, c.delay * 2 ** (over - 1));
    return { locked: false, wait, failures, by };
  }

  /** Failures plus attempts in progress; a count past its time is forgotten. */
  private count(key: string): number {
    const e = this.entries.get(key);
    if (!e) return 0;
    if (e.pending === 0 && this.expired(e)) {
      this.entries.delete(key);
      return 0;
    }
    return e.failures + e.pending;
  }

  private expired(e: Entry): boolean {
    const c = this.config;
    // A lockout lasts `lockout`; below it, failures fade after `window`.
    const horizon = e.failures >= c.lockoutAfter ? c.lockout : c.window;
    return this.clock.now() - e.last > horizon;
  }

  /** The entry for a key, made or refreshed, and moved last in the eviction order. */
  private touch(key: string): Entry {
    let e = this.entries.get(key);
    if (e && e.pending === 0 && this.expired(e)) e = undefined;
    e ??= { failures: 0, pending: 0, last: this.clock.now() };
    this.entries.delete(key); // re-inserted last: the Map's order is the eviction order
    this.entries.set(key, e);
    if (this.entries.size > MAX_ENTRIES) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    return e;
  }

  private remember(account: string, ip: string): void {
    if (this.config.rememberSuccess <= 0) return;
    let nets = this.known.get(account);
    if (nets) this.known.delete(account);
    nets ??= new Map();
    this.known.set(account, nets);
    const net = clientNetwork(ip);
    nets.delete(net);
    nets.set(net, this.clock.now());
    if (nets.size > MAX_KNOWN_NETWORKS) nets.delete(nets.keys().next().value!);
    if (this.known.size > MAX_KNOWN_ACCOUNTS) this.known.delete(this.known.keys().next().value!);
  }
}

function pairKey(ip: string, account: string): string {
  return `pair:${ip}|${account}`;
}

function noop(): void {}

/**
 * The part of a login every protocol shares: takes a ticket from the
 * throttle and, when failures call for it, logs and waits before the
 * password is checked. A locked verdict means "refuse without checking".
 */
export async function loginTurn(throttle: LoginThrottle, ip: string, account: string, user: string, method: string, log: Logger): Promise<LoginTicket> {
  const ticket = await throttle.take(ip, account);
  const { verdict } = ticket;
  if (!verdict.locked && verdict.wait > 0) {
    log.info({ event: 'auth-delay', user, account, method, wait: verdict.wait, failures: verdict.failures, by: verdict.by }, `delaying the login answer ${verdict.wait} ms after ${verdict.failures} failures`);
    await new Promise((r) => setTimeout(r, verdict.wait));
  }
  return ticket;
}
