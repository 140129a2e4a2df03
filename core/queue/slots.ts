/**
 * Delivery concurrency: the jobs waiting for a slot, per channel, and the
 * slots taken (per channel, and per remote domain), qmail-send's
 * concurrencylocal and concurrencyremote with a per-domain cap.
 */
import type { Channel } from './retry.js';

export type SlotJob = { readonly channel: 'local' } | { readonly channel: 'remote'; readonly domain: string };

export class DeliverySlots<J extends SlotJob> {
  private readonly queues: Record<Channel, J[]> = { local: [], remote: [] };
  private readonly running: Record<Channel, number> = { local: 0, remote: 0 };
  private readonly perDomain = new Map<string, number>();

  /** Queues a job for a slot of its channel. */
  wait(job: J): void {
    this.queues[job.channel].push(job);
  }

  /**
   * The waiting jobs that may start now, in the order they came, each counted
   * as running: per channel up to its limit, a remote one only while its
   * domain has fewer than `perDomain` running. Each must be given back with release().
   */
  take(limits: Record<Channel, number>, perDomain: number): J[] {
    const taken: J[] = [];
    for (const channel of ['local', 'remote'] as const) {
      const queue = this.queues[channel];
      for (let i = 0; i < queue.length && this.running[channel] < limits[channel]; ) {
        const job = queue[i]!;
        if (job.channel === 'remote' && (this.perDomain.get(job.domain) ?? 0) >= perDomain) {
          i++;
          continue;
        }
        queue.splice(i, 1);
        this.running[job.channel]++;
        if (job.channel === 'remote') this.perDomain.set(job.domain, (this.perDomain.get(job.domain) ?? 0) + 1);
        taken.push(job);
      }
    }
    return taken;
  }

  /** A job take() handed out is over: its slots are free. */
  release(job: J): void {
    this.running[job.channel]--;
    if (job.channel === 'remote') {
      const n = (this.perDomain.get(job.domain) ?? 1) - 1;
      if (n) this.perDomain.set(job.domain, n);
      else this.perDomain.delete(job.domain);
    }
  }

  waiting(channel: Channel): number {
    return this.queues[channel].length;
  }

  runningIn(channel: Channel): number {
    return this.running[channel];
  }
}
