/**
 * A connection's time limits: the idle timeout, shorter until the client's
 * first valid command (a connection that never says anything useful is let
 * go soon), the total limit, and plugins lowering either
 * (Connection.limitTime): the idle timeout never rises above the
 * listener's, and the total limit only ever shortens. The protocol side
 * says how to apply an idle timeout and what to say when the total runs out.
 */
import type { TimeLimits } from './hooks.js';

/** How the protocol side applies a changed idle timeout and what it says when the total runs out. */
export interface TimeLimitTarget {
  idle(ms: number): void;
  expired(totalMs: number): void;
}

export class ConnectionTimeLimits {
  private idleMs: number;
  /** The idle timeout until the first valid command; undefined once it came. */
  private firstMs: number | undefined;
  private totalMs = Infinity;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    listenerIdle: number,
    private apply: TimeLimitTarget,
    firstCommand?: number,
  ) {
    this.idleMs = listenerIdle;
    this.firstMs = firstCommand;
  }

  /** The idle timeout in force. */
  get idle(): number {
    return this.firstMs === undefined ? this.idleMs : Math.min(this.firstMs, this.idleMs);
  }

  lower({ idle, total }: TimeLimits): void {
    if (idle !== undefined && idle > 0 && idle < this.idleMs) {
      const before = this.idle;
      this.idleMs = idle;
      if (this.idle !== before) this.apply.idle(this.idle);
    }
    if (total !== undefined && total > 0 && total < this.totalMs) {
      this.totalMs = total;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.apply.expired(total), total);
      this.timer.unref();
    }
  }

  /** The client gave its first valid command (HELO/EHLO, a POP3 login): the listener's idle timeout applies from now. */
  passed(): void {
    if (this.firstMs === undefined) return;
    const before = this.idle;
    this.firstMs = undefined;
    if (this.idle !== before) this.apply.idle(this.idle);
  }

  /** The connection moved (parked, or taken up again): the limits, lowered or not, now apply there. */
  retarget(target: TimeLimitTarget): void {
    this.apply = target;
  }

  /** The connection is gone: nothing fires any more. */
  stop(): void {
    clearTimeout(this.timer);
  }
}

/**
 * The lower bound on the data rate of a message in transfer (Postfix's
 * smtpd_min_data_rate): after a grace period, a client must have sent
 * `minRate` bytes for every second spent, so a slow drip of bytes that
 * keeps the idle timeout from firing cannot hold a connection for ever.
 */
export class DataRate {
  private readonly started = performance.now();
  private bytes = 0;

  constructor(
    private readonly graceMs: number,
    private readonly minRate: number,
  ) {}

  /** Counts what arrived; true when the transfer has fallen behind the minimum rate. */
  add(n: number): boolean {
    this.bytes += n;
    if (this.minRate <= 0) return false;
    return performance.now() - this.started > this.graceMs + (this.bytes * 1000) / this.minRate;
  }
}
