/**
 * A cluster worker's failed-login throttle: the counts are the primary's,
 * so an attacker who spreads guesses over the workers (the kernel hands each
 * connection to any of them) meets one throttle, as with one process. The
 * worker's own maps stay empty; `preview` (webadmin's, which runs in the
 * primary) is not asked here.
 */
import type { Clock } from '../services/clock.js';
import { LoginThrottle, type LoginThrottleConfig, type LoginTicket } from '../services/login-throttle.js';
import type { WorkerLink } from './worker.js';

export class WorkerLoginThrottle extends LoginThrottle {
  constructor(
    config: LoginThrottleConfig,
    clock: Clock,
    private readonly link: WorkerLink,
  ) {
    super(config, clock);
  }

  override async take(ip: string, account: string): Promise<LoginTicket> {
    const { verdict, end } = await this.link.login(ip, account);
    return { verdict, succeeded: () => end('succeeded'), failed: () => end('failed'), released: () => end('released') };
  }
}
