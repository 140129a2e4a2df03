/**
 * The shared store (Redis) as one feature sees it: up or down. A feature that
 * falls back while Redis is unreachable (local counts, accept unchecked,
 * refuse) logs one line when it starts falling back and one when Redis
 * answers again, not one per connection or message: an outage under load
 * would otherwise bury the log. Every call is still tried against Redis, so
 * sharing resumes with the first call that succeeds.
 */
import type { Logger } from 'pino';

export class StoreOutage {
  private down = false;
  /** Calls answered by the fallback during the current outage, for the recovery line. */
  private missed = 0;

  /**
   * `feature` names what is shared (`login throttle`, `connection counts`, `ratelimit`);
   * `fallback` says in words what happens meanwhile (`counting logins in this process`).
   */
  constructor(
    private readonly log: Logger,
    private readonly feature: string,
    private readonly fallback: string,
  ) {}

  get isDown(): boolean {
    return this.down;
  }

  /** A call to the store failed and the fallback answered instead. */
  failed(err: unknown): void {
    this.missed++;
    if (this.down) return;
    this.down = true;
    const message = err instanceof Error ? err.message : String(err);
    this.log.warn({ event: 'shared-store', feature: this.feature, state: 'down', err: message }, `${this.feature}: shared store unavailable (${message}); ${this.fallback} until it answers again`);
  }

  /** A call to the store succeeded. */
  ok(): void {
    if (!this.down) return;
    this.down = false;
    const missed = this.missed;
    this.missed = 0;
    this.log.info({ event: 'shared-store', feature: this.feature, state: 'up', missed }, `${this.feature}: shared store answers again (${missed} calls answered without it); shared from now on`);
  }
}
