/**
 * The primary's connection counts, across workers: per listener, and per
 * (listener, client IP). Each count is what the listeners kept for
 * themselves with one process (smtp-server's connections, IpConnections),
 * so a worker applies maxConnections and maxConnectionsPerIp to these
 * numbers exactly as a single process applies them to its own.
 */
export class SlotBook {
  private readonly totals = new Map<string, number>();
  private readonly perIp = new Map<string, number>();

  /** Counts one connection; its rank among its IP's on this listener and the listener's total, itself included. */
  acquire(listener: string, ip: string): { rank: number; total: number } {
    const total = (this.totals.get(listener) ?? 0) + 1;
    this.totals.set(listener, total);
    const key = `${listener}\0${ip}`;
    const rank = (this.perIp.get(key) ?? 0) + 1;
    this.perIp.set(key, rank);
    return { rank, total };
  }

  release(listener: string, ip: string): void {
    const total = (this.totals.get(listener) ?? 1) - 1;
    if (total > 0) this.totals.set(listener, total);
    else this.totals.delete(listener);
    const key = `${listener}\0${ip}`;
    const left = (this.perIp.get(key) ?? 1) - 1;
    if (left > 0) this.perIp.set(key, left);
    else this.perIp.delete(key);
  }

  total(listener: string): number {
    return this.totals.get(listener) ?? 0;
  }
}
