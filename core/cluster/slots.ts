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

export class SlotBook {
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
