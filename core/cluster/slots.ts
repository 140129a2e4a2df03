/**
 * The primary's connection counts, across workers: per listener, and per
 * (listener, client IP). They are what the listeners keep for themselves in
 * one process (smtp-server's connections, IpConnections), so a worker
 * applies maxConnections and maxConnectionsPerIp to these numbers exactly as
 * a single process applies them to its own.
 */
import { IpConnections } from '../session/ip-connections.js';

/** One counted connection: its rank among its IP's and the listener's total when taken, itself included. */
export interface BookedSlot {
  readonly rank: number;
  readonly total: number;
  /** Uncounts it; safe to call twice. */
  release(): void;
}

/**
 * Who keeps the counts the primary hands out: the SlotBook below, or, with
 * `connectionCounts.shared`, the site's counts in Redis
 * (session/shared-connections.ts), which answer with a promise.
 */
export interface SlotKeeper {
  acquire(listener: string, ip: string): BookedSlot | Promise<BookedSlot>;
  /** Connections open on a listener in this process's workers. */
  total(listener: string): number;
}

export class SlotBook implements SlotKeeper {
  private readonly listeners = new Map<string, { total: number; perIp: IpConnections }>();

  acquire(listener: string, ip: string): BookedSlot {
    let counts = this.listeners.get(listener);
    if (!counts) this.listeners.set(listener, (counts = { total: 0, perIp: new IpConnections() }));
    const l = counts;
    const slot = l.perIp.add(ip);
    l.total++;
    let released = false;
    return {
      rank: slot.rank,
      total: l.total,
      release: () => {
        if (released) return;
        released = true;
        slot.release();
        l.total--;
      },
    };
  }

  total(listener: string): number {
    return this.listeners.get(listener)?.total ?? 0;
  }
}
