/**
 * Delivery concurrency: the jobs waiting for a slot, per channel, and the
 * slots taken (per channel, and per remote domain), qmail-send's
 * concurrencylocal and concurrencyremote with a per-domain cap.
 *
 * A local job carries every local recipient of one message (one read of the
 * message for all of them) and may take several local slots, one per
 * recipient it delivers at once, so `concurrencyLocal` still counts deliver
 * hooks running, as qmail's concurrencylocal counts qmail-local processes.
 * It gives each slot back as soon as it has no recipient left to start on
 * it (shrink), so the next message starts while this one's last deliveries
 * finish.
 */
import type { Channel } from './retry.js';

export type SlotJob = { readonly channel: 'local'; readonly rcpts: readonly unknown[] } | { readonly channel: 'remote'; readonly domain: string };

/** What one remote destination domain may have: deliveries at once, and the least time between two starts. */
export interface DestinationLimits {
  readonly concurrency: number;
  /** Milliseconds; 0 for none (Postfix's destination_rate_delay). */
  readonly rateDelay: number;
}

export class DeliverySlots<J extends SlotJob> {
  private readonly queues: Record<Channel, J[]> = { local: [], remote: [] };
  private readonly running: Record<Channel, number> = { local: 0, remote: 0 };
  private readonly perDomain = new Map<string, number>();
  /** Slots each running job holds (a local job may hold several). */
  private readonly held = new Map<J, number>();
  /** Per domain with a rate delay: when (performance.now()) its next delivery may start. */
  private readonly nextStart = new Map<string, number>();
  /** After take(): the earliest a remote job held back by its rate delay may start, if one is. */
  rateWake: number | undefined;

  /** Queues a job for a slot of its channel. */
  wait(job: J): void {
    this.queues[job.channel].push(job);
  }

  /**
   * The waiting jobs that may start now, in the order they came, each counted
   * as running: per channel up to its limit, a remote one only while its
   * domain has fewer than `perDomain` running. A local job takes as many slots
   * as it has recipients, up to what is free, and waits until at least half
   * the local limit (or all its recipients) is free: a job started on one
   * slot would deliver its recipients one by one. Each must be given back
   * with release().
   */
  take(limits: Record<Channel, number>, destination: (domain: string) => DestinationLimits, now = performance.now()): J[] {
    const taken: J[] = [];
    this.rateWake = undefined;
    for (const channel of ['local', 'remote'] as const) {
      const queue = this.queues[channel];
      for (let i = 0; i < queue.length && this.running[channel] < limits[channel]; ) {
        const job = queue[i]!;
        if (job.channel === 'remote') {
          const d = destination(job.domain);
          if ((this.perDomain.get(job.domain) ?? 0) >= d.concurrency) {
            i++;
            continue;
          }
          if (d.rateDelay > 0) {
            const at = this.nextStart.get(job.domain) ?? 0;
            if (at > now) {
              this.rateWake = Math.min(this.rateWake ?? at, at);
              i++;
              continue;
            }
            this.nextStart.set(job.domain, now + d.rateDelay);
          }
        }
        // In order: a wide job waiting is not overtaken by narrower ones behind it.
        if (job.channel === 'local' && limits.local - this.running.local < Math.min(job.rcpts.length, Math.ceil(limits.local / 2))) break;
        queue.splice(i, 1);
        const width = job.channel === 'local' ? Math.max(1, Math.min(job.rcpts.length, limits.local - this.running.local)) : 1;
        this.running[job.channel] += width;
        this.held.set(job, width);
        if (job.channel === 'remote') this.perDomain.set(job.domain, (this.perDomain.get(job.domain) ?? 0) + 1);
        taken.push(job);
      }
    }
    return taken;
  }

  /** Slots a running job holds: how many of its recipients it may deliver at once. */
  width(job: J): number {
    return this.held.get(job) ?? 1;
  }

  /** A running job gives back one of its slots (it keeps at least one until release()). */
  shrink(job: J): void {
    const held = this.held.get(job) ?? 1;
    if (held <= 1) return;
    this.held.set(job, held - 1);
    this.running[job.channel]--;
  }

  /** A job take() handed out is over: its slots are free. */
  release(job: J): void {
    this.running[job.channel] -= this.held.get(job) ?? 1;
    this.held.delete(job);
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
