/**
 * A connection's time limits as plugins may lower them (Connection.limitTime):
 * the idle timeout never rises above the listener's, and the total limit
 * only ever shortens. The protocol side says how to apply an idle timeout
 * and what to say when the total runs out.
 */
import type { TimeLimits } from './hooks.js';

export class ConnectionTimeLimits {
  private idleMs: number;
  private totalMs = Infinity;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    listenerIdle: number,
    private readonly apply: { idle(ms: number): void; expired(totalMs: number): void },
  ) {
    this.idleMs = listenerIdle;
  }

  /** The idle timeout in force. */
  get idle(): number {
    return this.idleMs;
  }

  lower({ idle, total }: TimeLimits): void {
    if (idle !== undefined && idle > 0 && idle < this.idleMs) {
      this.idleMs = idle;
      this.apply.idle(idle);
    }
    if (total !== undefined && total > 0 && total < this.totalMs) {
      this.totalMs = total;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.apply.expired(total), total);
      this.timer.unref();
    }
  }

  /** The connection is gone: nothing fires any more. */
  stop(): void {
    clearTimeout(this.timer);
  }
}
