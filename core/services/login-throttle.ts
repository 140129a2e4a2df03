/**
 * Failed-login throttling shared by every protocol that takes passwords
 * (SMTP AUTH, POP3): counts failures per client IP and per account, makes
 * the next attempt wait longer each time, and after enough failures refuses
 * attempts outright for a while. A password guesser gets a few tries an
 * hour; a user who mistyped once notices nothing.
 *
 * Counts live in memory (one process serves every listener), bounded in
 * size, and fade after `window` without a new failure.
 */
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
}

export const DEFAULT_LOGIN_THROTTLE: LoginThrottleConfig = {
  freeFailures: 2,
  delay: 1_000,
  maxDelay: 16_000,
  lockoutAfter: 10,
  lockout: 15 * 60_000,
  window: 15 * 60_000,
};

export interface ThrottleVerdict {
  /** Refuse without checking the password: too many failures lately. */
  readonly locked: boolean;
  /** Milliseconds to wait before checking the password and answering. */
  readonly wait: number;
  /** Failures counted against the worse of the IP and the account. */
  readonly failures: number;
  /** What caused the wait or lockout, for the log line. */
  readonly by: 'ip' | 'account' | undefined;
}

interface Entry {
  failures: number;
  last: number;
}

const MAX_ENTRIES = 100_000;

export class LoginThrottle {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private config: LoginThrottleConfig,
    private readonly clock: Clock,
  ) {}

  /** A reload may change the settings; counts are kept. */
  configure(config: LoginThrottleConfig): void {
    this.config = config;
  }

  /** What to do with an attempt by this client for this account (account lower-cased). */
  check(ip: string, account: string): ThrottleVerdict {
    const byIp = this.count(`ip:${ip}`);
    const byAccount = account ? this.count(`user:${account.toLowerCase()}`) : 0;
    const failures = Math.max(byIp, byAccount);
    const by = failures === 0 ? undefined : byIp >= byAccount ? 'ip' : 'account';
    const c = this.config;
    if (failures >= c.lockoutAfter) return { locked: true, wait: 0, failures, by };
    const over = failures - c.freeFailures;
    const wait = over <= 0 ? 0 : Math.min(c.maxDelay, c.delay * 2 ** (over - 1));
    return { locked: false, wait, failures, by };
  }

  failure(ip: string, account: string): void {
    this.bump(`ip:${ip}`);
    if (account) this.bump(`user:${account.toLowerCase()}`);
  }

  /** A good password clears the account's count; the IP's stays (one good login does not excuse a guessing run). */
  success(ip: string, account: string): void {
    this.entries.delete(`user:${account.toLowerCase()}`);
    void ip;
  }

  private count(key: string): number {
    const e = this.entries.get(key);
    if (!e) return 0;
    const now = this.clock.now();
    const c = this.config;
    // A lockout lasts `lockout`; below it, failures fade after `window`.
    const horizon = e.failures >= c.lockoutAfter ? c.lockout : c.window;
    if (now - e.last > horizon) {
      this.entries.delete(key);
      return 0;
    }
    return e.failures;
  }

  private bump(key: string): void {
    const failures = this.count(key) + 1;
    this.entries.delete(key); // re-inserted last: the Map's order is the eviction order
    this.entries.set(key, { failures, last: this.clock.now() });
    if (this.entries.size > MAX_ENTRIES) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }
}

/**
 * The part of a login every protocol shares: asks the throttle, and when
 * failures call for it, logs and waits before the password is checked.
 * Resolves with the verdict; a locked one means "refuse without checking".
 */
export async function loginTurn(throttle: LoginThrottle, ip: string, user: string, method: string, log: Logger): Promise<ThrottleVerdict> {
  const verdict = throttle.check(ip, user);
  if (!verdict.locked && verdict.wait > 0) {
    log.info({ event: 'auth-delay', user, method, wait: verdict.wait, failures: verdict.failures, by: verdict.by }, `delaying the login answer ${verdict.wait} ms after ${verdict.failures} failures`);
    await new Promise((r) => setTimeout(r, verdict.wait));
  }
  return verdict;
}
